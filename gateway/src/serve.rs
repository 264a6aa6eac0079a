//! Starting and stopping a whole Tollgate server: storage, engine, signing keys,
//! the gateway listener and the admin listener (admin API, dashboard, `/metrics`,
//! `/healthz`, `/readyz`).
//!
//! Graceful shutdown: stop accepting, let in-flight requests finish, stop the actors
//! (each persists its exact count), flush storage.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tollgate_engine::clock::{Clock, SystemClock};
use tollgate_engine::storage::Storage;
use tollgate_engine::{Engine, EngineConfig};

use crate::check::Upstream;
use crate::jwt::TokenService;
use crate::keys::Keys;
use crate::policy::RoutePolicy;
use crate::throttle::{Throttle, ThrottleConfig};
use crate::{GatewayShared, GatewayState, app};

/// Everything a server needs; [`ServeConfig::new`] gives the documented defaults.
#[derive(Clone)]
pub struct ServeConfig {
    /// Gateway listener (default `127.0.0.1:8080`; port 0 picks one).
    pub gateway_addr: SocketAddr,
    /// Admin listener (default `127.0.0.1:8081`).
    pub admin_addr: SocketAddr,
    /// The data directory (default `./tollgate-data`).
    pub data_dir: PathBuf,
    /// Proxy target; `None` serves the demo upstream.
    pub upstream: Option<axum::http::Uri>,
    /// Route policy.
    pub policy: RoutePolicy,
    /// Token issuer; `None`: `http://<gateway address>`.
    pub issuer: Option<String>,
    /// Token audience.
    pub audience: String,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Requests in flight on the gateway before it sheds load.
    pub max_in_flight: usize,
    /// Verified tokens remembered.
    pub token_cache_capacity: usize,
    /// Engine tunables.
    pub engine: EngineConfig,
    /// Brute-force guard tunables.
    pub throttle: ThrottleConfig,
    /// How often refused attempts of locked-out keys are summarised in the audit log.
    pub throttle_summary_every: Duration,
    /// Bootstrap admin key (`TOLLGATE_ADMIN_KEY`) used on first start.
    pub bootstrap_admin_key: Option<String>,
    /// Shared key for HMAC-signed leaked-secret reports (`TOLLGATE_LEAK_REPORT_KEY`);
    /// without it only admin keys may report.
    pub leak_report_key: Option<String>,
    /// What a genuine leak report does.
    pub leak_policy: tollgate_engine::LeakPolicy,
    /// The webhook sender.
    pub webhooks: crate::webhooks::WebhookSettings,
    /// The clock (tests inject a manual one).
    pub clock: Arc<dyn Clock>,
}

impl ServeConfig {
    /// Defaults for `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            gateway_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            data_dir,
            upstream: None,
            policy: RoutePolicy::default(),
            issuer: None,
            audience: "tollgate-api".into(),
            trusted_proxies: Vec::new(),
            max_in_flight: 4096,
            token_cache_capacity: 100_000,
            engine: EngineConfig::default(),
            throttle: ThrottleConfig::default(),
            bootstrap_admin_key: None,
            leak_report_key: None,
            throttle_summary_every: Duration::from_secs(60),
            leak_policy: tollgate_engine::LeakPolicy::default(),
            webhooks: crate::webhooks::WebhookSettings::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// A running server.
pub struct Running {
    /// Where the gateway listens.
    pub gateway_addr: SocketAddr,
    /// Where the admin side listens.
    pub admin_addr: SocketAddr,
    /// The engine (tests use it to arrange state).
    pub engine: Engine,
    /// Set when a bootstrap admin key was generated (print it once).
    pub generated_admin_key: Option<String>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<std::io::Result<()>>>,
}

/// The process-wide Prometheus recorder: `metrics` has one global recorder per
/// process, so servers started in one process (tests) share it.
fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        handle
    })
}

#[derive(Clone)]
struct OpsState {
    /// Becomes true when the server starts stopping.
    ready: watch::Receiver<bool>,
    /// Its storage's health.
    engine: Engine,
}

fn ops_router(state: OpsState) -> Router {
    Router::new()
        .route("/metrics", get(|| async { prometheus().render() }))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(state): State<OpsState>| async move {
                if *state.ready.borrow() {
                    (StatusCode::SERVICE_UNAVAILABLE, "stopping").into_response()
                } else if let Some(failure) = state.engine.storage().failure() {
                    let message = format!(
                        "storage failed ({failure}); writes are refused: fix the disk (free space) and restart tollgate"
                    );
                    (StatusCode::SERVICE_UNAVAILABLE, message).into_response()
                } else {
                    "ready".into_response()
                }
            }),
        )
        .with_state(state)
}

/// Opens the data dir, starts the engine and both listeners.
pub async fn start(config: ServeConfig) -> anyhow::Result<Running> {
    // Install the recorder before anything records a metric.
    let metrics = prometheus();
    let opening = std::time::Instant::now();
    let storage = Storage::open(&config.data_dir)
        .with_context(|| format!("failed to open the data directory {}", config.data_dir.display()))?;
    // sled 0.34 replays its log since the previous open (it writes its snapshot only
    // when opening), so this grows with what the previous run wrote.
    tracing::info!(
        data_dir = %config.data_dir.display(),
        elapsed_ms = opening.elapsed().as_millis() as u64,
        "data directory opened"
    );
    let engine = Engine::start(storage.clone(), config.clock.clone(), config.engine.clone())
        .await
        .context("failed to start the engine")?;
    let keys = Keys::load_or_create(storage.clone(), engine.now_ms())
        .await
        .context("failed to load the token-signing keys")?;
    let gateway_listener = TcpListener::bind(config.gateway_addr)
        .await
        .with_context(|| format!("failed to listen on {} (gateway)", config.gateway_addr))?;
    let admin_listener = TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("failed to listen on {} (admin)", config.admin_addr))?;
    let gateway_addr = gateway_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let issuer = config
        .issuer
        .clone()
        .unwrap_or_else(|| format!("http://{gateway_addr}"));
    let tokens = TokenService::new(
        keys.clone(),
        issuer,
        config.audience.clone(),
        config.token_cache_capacity,
    );
    let throttle = Arc::new(Throttle::new(config.throttle.clone()));
    let gateway_state = GatewayState::new(GatewayShared {
        engine: engine.clone(),
        tokens,
        policy: Arc::new(config.policy.clone()),
        throttle: throttle.clone(),
        upstream: config.upstream.clone().map(Upstream::new),
        trusted_proxies: config.trusted_proxies.clone().into(),
        in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
        checks_admitted: metrics::counter!("tollgate_checks_total", "outcome" => "admitted"),
    });
    let admin = tollgate_admin::AdminState::start(engine.clone(), Arc::new(keys), config.bootstrap_admin_key.clone())
        .await
        .context("failed to start the admin API")?
        .with_leak_reports(config.leak_report_key.clone(), config.leak_policy);
    let generated_admin_key = admin.generated_bootstrap_key();

    let (stop, stopping) = watch::channel(false);
    let ops = ops_router(OpsState {
        ready: stopping.clone(),
        engine: engine.clone(),
    });
    let admin_app = tollgate_admin::app(admin).merge(ops);
    let gateway_app = app(gateway_state);

    let mut servers = Vec::new();
    for (listener, router) in [(gateway_listener, gateway_app), (admin_listener, admin_app)] {
        let mut stopping = stopping.clone();
        servers.push(tokio::spawn(async move {
            axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move {
                    let _ = stopping.wait_for(|stop| *stop).await;
                })
                .await
        }));
    }
    tokio::spawn(summarise_throttling(
        engine.clone(),
        throttle,
        config.throttle_summary_every,
        stopping.clone(),
    ));
    tokio::spawn(crate::webhooks::run(
        engine.clone(),
        config.webhooks.clone(),
        stopping.clone(),
    ));
    tokio::spawn(metrics_upkeep(metrics, stopping));
    Ok(Running {
        gateway_addr,
        admin_addr,
        engine,
        generated_admin_key,
        stop,
        servers,
    })
}

/// Drains histogram buffers now and then (what the exporter's own listener would do).
async fn metrics_upkeep(handle: &'static PrometheusHandle, mut stopping: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}

/// Every `throttle_summary_every` (a minute by default), one audit entry per throttled
/// key with how many attempts were refused, instead of one entry per attempt.
async fn summarise_throttling(
    engine: Engine,
    throttle: Arc<Throttle>,
    every: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        for (key, refused) in throttle.drain_refusals() {
            let (source_ip, client_id) = match &key {
                crate::throttle::ThrottleKey::Ip(ip) => (Some(ip.to_string()), None),
                crate::throttle::ThrottleKey::Client(c) => (None, tollgate_engine::model::ClientId::parse(c).ok()),
            };
            let event = tollgate_engine::storage::audit::AuditEvent {
                at_ms: engine.now_ms(),
                kind: "auth.throttled".into(),
                source_ip,
                client_id,
                outcome: "refused".into(),
                reason: Some(format!("{refused} attempts refused while locked out")),
                details: serde_json::json!({ "refused": refused }),
                ..Default::default()
            };
            if let Err(e) = engine.audit(event).await {
                tracing::error!(error = %e, "could not write a throttling summary");
            }
        }
    }
}

impl Running {
    /// Graceful stop: stop accepting, drain HTTP, stop actors with exact counts, flush.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for server in self.servers {
            server.await.context("a listener task failed")??;
        }
        self.engine
            .shutdown()
            .await
            .context("failed to stop the engine cleanly")?;
        Ok(())
    }
}
