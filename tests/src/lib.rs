//! `tollgate-tests`: shared helpers for Tollgate's end-to-end tests.
//!
//! The tests themselves are one binary, `tests/suite/main.rs`, with a module per
//! area. Helpers here start the real engine (and later the real server) on a fresh
//! temporary data dir with a manual clock, so tests move time instead of sleeping.
//!
//! # Layout
//! - [`TestEngine`]: an engine on a temp dir with a [`ManualClock`].
//! - `src/bin/engine_crash_child.rs`: a child process the crash tests kill with SIGKILL.

use std::sync::Arc;

use tollgate_engine::clock::ManualClock;
use tollgate_engine::model::{DailyQuota, OrgId, parse_scopes};
use tollgate_engine::storage::Storage;
use tollgate_engine::{
    AdminContext, AuthOutcome, AuthRequest, CreatedIntegration, Engine, EngineConfig, NewIntegration, RequestContext,
};

/// 2026-11-28T10:00:00Z, a fixed start so day arithmetic in tests is predictable.
pub const START_MS: u64 = 1_795_860_000_000;

/// An engine over a fresh temporary data dir, with time under the test's control.
pub struct TestEngine {
    /// The engine.
    pub engine: Engine,
    /// Its clock.
    pub clock: ManualClock,
    /// The data dir (deleted on drop).
    pub dir: tempfile::TempDir,
}

impl TestEngine {
    /// Starts with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(EngineConfig::default()).await
    }

    /// Starts with `config`.
    pub async fn start_with(config: EngineConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(START_MS);
        let engine = open_engine(dir.path(), clock.clone(), config).await;
        Self { engine, clock, dir }
    }

    /// Shuts the engine down gracefully and opens it again on the same data dir.
    pub async fn restart(self) -> Self {
        let Self { engine, clock, dir } = self;
        engine.shutdown().await.expect("graceful shutdown");
        let config = engine.config().clone();
        // The last handle must go before sled releases the data dir.
        drop(engine);
        let engine = open_engine(dir.path(), clock.clone(), config).await;
        Self { engine, clock, dir }
    }

    /// Registers an integration of `org` with `quota` requests a day and scopes
    /// `conversations:read` and `messages:write`.
    pub async fn create(&self, org: &str, quota: u64) -> CreatedIntegration {
        self.engine
            .create_integration(
                NewIntegration {
                    org_id: OrgId::parse(org).unwrap(),
                    name: format!("{org} integration"),
                    scopes: parse_scopes(&["conversations:read", "messages:write"]).unwrap(),
                    daily_quota: DailyQuota::new(quota).unwrap(),
                    token_ttl_seconds: None,
                    token_requests_per_minute: None,
                },
                &AdminContext::default(),
            )
            .await
            .expect("create integration")
    }

    /// Authenticates as a token request would (with a jti), from 127.0.0.1.
    pub async fn token_request(&self, client_id: &str, secret: &str) -> AuthOutcome {
        self.engine
            .authenticate(auth_request(client_id, secret))
            .await
            .expect("authenticate")
    }
}

/// A token request's credentials from 127.0.0.1 with a fresh jti.
pub fn auth_request(client_id: &str, secret: &str) -> AuthRequest {
    AuthRequest {
        client_id: client_id.into(),
        client_secret: secret.into(),
        requested_scopes: None,
        jti: Some(format!("jti-{}", tollgate_engine::model::random_base62(16))),
        context: RequestContext {
            source_ip: "127.0.0.1".into(),
            user_agent: Some("tollgate-tests".into()),
        },
        allow_slow_verify: true,
    }
}

async fn open_engine(path: &std::path::Path, clock: ManualClock, config: EngineConfig) -> Engine {
    let storage = Storage::open(path).expect("open storage");
    Engine::start(storage, Arc::new(clock), config)
        .await
        .expect("start engine")
}
