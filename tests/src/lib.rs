//! `tollgate-tests`: shared helpers for Tollgate's end-to-end tests.
//!
//! The tests themselves are one binary, `tests/suite/main.rs`, with a module per
//! area. Helpers here start the real engine (and later the real server) on a fresh
//! temporary data dir with a manual clock, so tests move time instead of sleeping.
//!
//! # Layout
//! - [`TestEngine`]: an engine on a temp dir with a [`ManualClock`].
//! - [`TestApp`]: the whole server (gateway + admin) on port 0, driven over HTTP.
//! - [`receiver`]: a webhook receiver on loopback that checks signatures.
//! - [`browser`]: headless Chromium through chromedriver, for the dashboard tests.
//! - `src/bin/engine_crash_child.rs`: a child process the crash tests kill with SIGKILL.

pub mod browser;
pub mod receiver;

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
                    secret_max_age_days: None,
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

/// The admin key every [`TestApp`] bootstraps with.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// The whole server on loopback port 0 with a fresh data dir and a manual clock.
pub struct TestApp {
    /// `http://127.0.0.1:PORT` of the gateway.
    pub gateway: String,
    /// `http://127.0.0.1:PORT` of the admin side.
    pub admin: String,
    /// The engine behind it.
    pub engine: Engine,
    /// The clock; move it instead of sleeping.
    pub clock: ManualClock,
    /// An HTTP client that follows no redirects.
    pub http: reqwest::Client,
    running: Option<tollgate_gateway::serve::Running>,
    /// The data dir.
    pub dir: tempfile::TempDir,
}

/// A registered integration as the admin API returned it.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The admin API's integration JSON.
    pub integration: serde_json::Value,
    /// Its id (admin URLs).
    pub id: String,
    /// OAuth client id.
    pub client_id: String,
    /// The secret, shown once.
    pub secret: String,
}

impl TestApp {
    /// Starts with defaults.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts after `adjust` changed the configuration.
    pub async fn spawn_with(adjust: impl FnOnce(&mut tollgate_gateway::serve::ServeConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new(START_MS);
        let mut config = tollgate_gateway::serve::ServeConfig::new(dir.path().to_path_buf());
        config.gateway_addr = "127.0.0.1:0".parse().unwrap();
        config.admin_addr = "127.0.0.1:0".parse().unwrap();
        config.bootstrap_admin_key = Some(ADMIN_KEY.into());
        config.clock = Arc::new(clock.clone());
        adjust(&mut config);
        let running = tollgate_gateway::serve::start(config).await.expect("server starts");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        Self {
            gateway: format!("http://{}", running.gateway_addr),
            admin: format!("http://{}", running.admin_addr),
            engine: running.engine.clone(),
            clock,
            http,
            running: Some(running),
            dir,
        }
    }

    /// Graceful shutdown.
    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("graceful shutdown");
        }
    }

    /// `METHOD admin/path` with the bootstrap key and an optional JSON body.
    pub async fn admin_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> reqwest::Response {
        self.admin_request_as(ADMIN_KEY, method, path, body).await
    }

    /// Like [`Self::admin_request`] with another admin key.
    pub async fn admin_request_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("admin request")
    }

    /// Registers an integration through the admin API (scopes `conversations:read`,
    /// `messages:write`).
    pub async fn register(&self, org: &str, daily_quota: u64) -> Registered {
        let body = serde_json::json!({
            "org_id": org,
            "name": format!("{org} integration"),
            "scopes": ["conversations:read", "messages:write"],
            "daily_quota": daily_quota,
        });
        let response = self
            .admin_request(reqwest::Method::POST, "/admin/v1/integrations", Some(body))
            .await;
        assert_eq!(response.status(), 201, "create integration");
        let json: serde_json::Value = response.json().await.unwrap();
        Registered {
            id: json["integration"]["id"].as_str().unwrap().to_owned(),
            client_id: json["integration"]["client_id"].as_str().unwrap().to_owned(),
            secret: json["client_secret"].as_str().unwrap().to_owned(),
            integration: json["integration"].clone(),
        }
    }

    /// `POST /oauth/token` with Basic authentication and an optional scope.
    pub async fn token_response(&self, client_id: &str, secret: &str, scope: Option<&str>) -> reqwest::Response {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        self.http
            .post(format!("{}/oauth/token", self.gateway))
            .basic_auth(client_id, Some(secret))
            .form(&form)
            .send()
            .await
            .expect("token request")
    }

    /// A token, asserting success.
    pub async fn token(&self, client_id: &str, secret: &str) -> String {
        let response = self.token_response(client_id, secret, None).await;
        assert_eq!(response.status(), 200, "token request");
        let json: serde_json::Value = response.json().await.unwrap();
        json["access_token"].as_str().unwrap().to_owned()
    }

    /// A request check (`POST /v1/check/v1/things`, as for a GET) with a bearer token.
    pub async fn check(&self, token: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/check/v1/things", self.gateway))
            .bearer_auth(token)
            .header("x-forwarded-method", "GET")
            .send()
            .await
            .expect("check request")
    }

    /// `GET gateway/path` with a bearer token.
    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.gateway))
            .bearer_auth(token)
            .send()
            .await
            .expect("gateway request")
    }
}

/// The real `tollgate` command line serving a data dir on loopback port 0, as a child
/// process (the crash, signal and log tests drive it this way).
pub struct ServedBinary {
    /// The process.
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT` of the gateway.
    pub gateway: String,
    /// `http://127.0.0.1:PORT` of the admin side.
    pub admin: String,
    /// The rest of its stdout (the bootstrap banner, when it generated a key).
    pub stdout: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl ServedBinary {
    /// `binary serve` over `dir` with both listeners on loopback port 0, not started.
    pub fn command(binary: &str, dir: &std::path::Path) -> std::process::Command {
        let mut command = std::process::Command::new(binary);
        command
            .args([
                "serve",
                "--gateway-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir);
        command
    }

    /// Runs `binary serve` over `dir` (pass `env!("CARGO_BIN_EXE_tollgate-under-test")`);
    /// `configure` may set env vars or pipe stderr. Returns once both listeners are up.
    pub fn start(binary: &str, dir: &std::path::Path, configure: impl FnOnce(&mut std::process::Command)) -> Self {
        use std::io::BufRead;
        let mut command = Self::command(binary, dir);
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        configure(&mut command);
        let mut child = command.spawn().expect("start tollgate");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut listener = |prefix: &str| {
            let line = stdout.next().expect("a listener line").expect("stdout");
            assert!(line.starts_with(prefix), "expected `{prefix}…`, got `{line}`");
            line.trim_start_matches(prefix).to_owned()
        };
        let gateway = listener("gateway listening on ");
        let admin = listener("admin listening on ");
        Self {
            child,
            gateway,
            admin,
            stdout,
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let sent = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "SIGTERM could not be sent");
        self.child.wait().expect("wait for tollgate")
    }
}

/// Registers an integration through an admin API; returns (id, client id, secret).
pub async fn register_over_http(
    http: &reqwest::Client,
    admin: &str,
    key: &str,
    body: serde_json::Value,
) -> (String, String, String) {
    let created: serde_json::Value = http
        .post(format!("{admin}/admin/v1/integrations"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("create integration")
        .json()
        .await
        .expect("a JSON answer");
    let field = |v: &serde_json::Value| v.as_str().expect("a string field").to_owned();
    (
        field(&created["integration"]["id"]),
        field(&created["integration"]["client_id"]),
        field(&created["client_secret"]),
    )
}

/// An access token from a gateway (client_secret_basic).
pub async fn token_over_http(http: &reqwest::Client, gateway: &str, client_id: &str, secret: &str) -> String {
    let answer: serde_json::Value = http
        .post(format!("{gateway}/oauth/token"))
        .basic_auth(client_id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("a JSON answer");
    answer["access_token"].as_str().expect("an access token").to_owned()
}

/// Asserts, through a served binary's APIs, that each integration (id, client id,
/// secret) exists and its secret still gets a token — after a crash, say.
pub async fn assert_integrations_work(http: &reqwest::Client, server: &ServedBinary, all: &[(String, String, String)]) {
    for (id, client, secret) in all {
        let shown = http
            .get(format!("{}/admin/v1/integrations/{id}", server.admin))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("admin request");
        assert_eq!(shown.status(), 200, "acknowledged integration {id} is there");
        token_over_http(http, &server.gateway, client, secret).await;
    }
}

/// Asserts that a served binary's audit chain verifies.
pub async fn assert_audit_chain_verifies(http: &reqwest::Client, server: &ServedBinary) {
    let verify: serde_json::Value = http
        .get(format!("{}/admin/v1/audit/verify", server.admin))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("admin request")
        .json()
        .await
        .expect("a JSON answer");
    assert_eq!(verify["ok"], true, "the audit chain verifies: {verify}");
}

/// The newest (up to 100) audit entries of one event type, newest first.
pub fn audit_of_kind(engine: &Engine, kind: &str) -> Vec<tollgate_engine::storage::audit::AuditEntry> {
    let filter = tollgate_engine::storage::audit::AuditFilter {
        kind: Some(kind.into()),
        ..Default::default()
    };
    engine.audit_query(&filter, None, 100).expect("audit query")
}
