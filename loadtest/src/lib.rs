//! `tollgate-loadtest`: drives a Tollgate server with realistic traffic and measures
//! it next to a baseline taken in the same invocation.
//!
//! It starts its own server (fresh temporary data dir, loopback port 0, in a runtime
//! of its own) or targets one given by URL and admin key; registers integrations
//! through the admin API; obtains tokens; then runs a scenario closed- or open-loop.
//! Everything is bounded in time and count and goes to loopback only.
//!
//! # Layout
//! - [`driver`]: the load loops, latency histograms, progress line.
//! - this file: arguments, targets, set-up, scenarios, the report.

pub mod ceiling;
pub mod driver;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;
use base64::Engine as _;
use clap::{Parser, ValueEnum};
use hyper::Request;
use hyper::header::HeaderValue;
use serde_json::{Value, json};

use crate::driver::{LoadSpec, MakeRequest, Outcome};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// A bare axum handler served by the load tester itself: the HTTP ceiling here.
    Baseline,
    /// A bare axum handler making one ractor call per request to one of N trivial
    /// counter actors: the ceiling of "one actor message per check" here.
    ActorBaseline,
    /// `/v1/check` with valid tokens spread over the integrations.
    Check,
    /// Requests proxied through the gateway to an upstream (the upstream called
    /// directly is this scenario's baseline).
    Proxy,
    /// Repeat token requests with already-verified secrets.
    TokenWarm,
    /// Every token request with a secret never verified before (Argon2 each time),
    /// with 1,000 checks/s beside it that must all be answered.
    TokenCold,
    /// All traffic on one integration.
    HotKey,
    /// Drive integrations past their quotas; admitted must equal the sum of quotas.
    QuotaExhaust,
    /// 80 % checks, 15 % proxied requests, 5 % warm token requests.
    Mixed,
    /// Resident memory per active integration: N integrations stored, then every one
    /// made active (its actor resident with a counter) through the engine.
    Memory,
    /// Start-up with N integrations stored: time until the server is ready to serve.
    Restart,
    /// Resident memory of N bare ractor actors (a counter each, linked to one
    /// supervisor): the floor of one actor per integration here.
    ActorFloor,
}

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "tollgate-loadtest",
    about = "Load scenarios for Tollgate, measured next to a baseline"
)]
pub struct Args {
    /// The scenario.
    #[arg(long, value_enum, default_value = "check")]
    pub scenario: Scenario,
    /// Also run the baseline in this invocation and print ratios.
    #[arg(long, value_enum)]
    pub compare: Option<CompareWith>,
    /// Integrations to register.
    #[arg(long, default_value_t = 1000)]
    pub integrations: usize,
    /// Connections (closed loop) or most requests in flight (open loop).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Most requests per run.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Open loop at this many requests per second (default: closed loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of unrecorded load before each measured run (first-touch costs such
    /// as actor start-up and the first quota reservation stay out of the figures).
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Daily quota of each integration in `quota-exhaust`.
    #[arg(long, default_value_t = 200)]
    pub quota: u64,
    /// Target a running gateway instead of starting a server (needs --admin-url).
    #[arg(long, requires = "admin_url")]
    pub url: Option<String>,
    /// The target's admin API (key in TOLLGATE_ADMIN_KEY).
    #[arg(long, requires = "url")]
    pub admin_url: Option<String>,
    /// With `--compare baseline`: run the baselines and the scenario this many times,
    /// alternating, and report each round's ratios and their median. On a shared
    /// machine the speed drifts between runs; alternating puts every round's
    /// figures under the same conditions.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// `restart` only: keep the seeded data dir here and reuse it on later runs (it is
    /// seeded only while it holds fewer than --integrations), so that a start-up can be
    /// re-measured or profiled without seeding again.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

/// What `--compare` runs next to the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompareWith {
    /// The scenario's own baseline: a bare handler; for `check` also `actor-baseline`
    /// and `contract-baseline` (its requests, one actor call, the nine headers); for
    /// `token-warm` also `token-baseline` (one durable audit entry and one signature
    /// per token); for `proxy` the upstream called directly and a bare reverse proxy.
    Baseline,
}

const ADMIN_KEY: &str = "loadtest-admin-key-0123456789";

/// Integrations whose checks run beside the `token-cold` flood, and their rate.
const CHECKERS_BESIDE: usize = 10;
const CHECKS_BESIDE_RATE: f64 = 1_000.0;

/// The server under test and the loopback helpers next to it.
pub struct Target {
    /// Gateway address.
    pub gateway: SocketAddr,
    /// Admin base URL.
    pub admin_url: String,
    /// Admin key.
    pub admin_key: String,
    /// The bare baseline handler (in the server's runtime).
    pub baseline: SocketAddr,
    /// The bare handler making one actor call per request (in the server's runtime).
    pub actor_baseline: SocketAddr,
    /// The bare actor-call handler answering with a check's headers (in the server's
    /// runtime).
    pub contract_baseline: SocketAddr,
    /// A bare token endpoint: one durable audit entry and one signature per token (in
    /// the server's runtime, with a data dir of its own).
    pub token_baseline: SocketAddr,
    /// A bare reverse proxy to the upstream (in the server's runtime).
    pub proxy_baseline: SocketAddr,
    /// The proxy upstream (in the server's runtime).
    pub upstream: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
    _baseline_dir: Option<tempfile::TempDir>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn bare_server(router: axum::Router) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

/// Starts a server, a baseline (bare, and with `actors` counter actors behind it) and
/// an upstream in a 2-worker runtime of their own.
pub fn start_own_server(actors: usize) -> anyhow::Result<Target> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().to_path_buf();
    let baseline_dir = tempfile::tempdir()?;
    let baseline_data = baseline_dir.path().to_path_buf();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new().name("server".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("server-worker")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(anyhow::anyhow!(e)));
                return;
            }
        };
        rt.block_on(async move {
            let setup = async {
                let baseline = bare_server(axum::Router::new().fallback(|| async { "ok" })).await?;
                let (counters_supervisor, counters) = ceiling::spawn_counters(actors.max(1)).await?;
                let contract_baseline = bare_server(ceiling::contract_router(counters.clone())).await?;
                let actor_baseline = bare_server(ceiling::actor_router(counters)).await?;
                let storage = tollgate_engine::storage::Storage::open(&baseline_data)?;
                let token_baseline = bare_server(ceiling::token_router(storage, actors)).await?;
                let upstream =
                    bare_server(axum::Router::new().fallback(|| async { "hello from the upstream" })).await?;
                let proxy_baseline = bare_server(ceiling::proxy_router(upstream)?).await?;
                let mut config = tollgate_gateway::serve::ServeConfig::new(data_dir);
                config.gateway_addr = "127.0.0.1:0".parse()?;
                config.admin_addr = "127.0.0.1:0".parse()?;
                config.bootstrap_admin_key = Some(ADMIN_KEY.into());
                config.upstream = Some(format!("http://{upstream}").parse()?);
                let running = tollgate_gateway::serve::start(config).await?;
                let addrs = (
                    running.gateway_addr,
                    running.admin_addr,
                    baseline,
                    actor_baseline,
                    contract_baseline,
                    token_baseline,
                    proxy_baseline,
                    upstream,
                );
                Ok::<_, anyhow::Error>((running, addrs, counters_supervisor))
            };
            match setup.await {
                Ok((running, addrs, counters_supervisor)) => {
                    let _ = ready_tx.send(Ok(addrs));
                    let _ = stop_rx.await;
                    let _ = running.shutdown().await;
                    counters_supervisor.stop(None);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
    })?;
    let (gateway, admin, baseline, actor_baseline, contract_baseline, token_baseline, proxy_baseline, upstream) =
        ready_rx.recv().context("the server thread died")??;
    Ok(Target {
        gateway,
        admin_url: format!("http://{admin}"),
        admin_key: ADMIN_KEY.into(),
        baseline,
        actor_baseline,
        contract_baseline,
        token_baseline,
        proxy_baseline,
        upstream,
        stop: Some(stop_tx),
        thread: Some(thread),
        _dir: Some(dir),
        _baseline_dir: Some(baseline_dir),
    })
}

fn loopback_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("`{url}` is not a URL"))?;
    let authority = uri.authority().context("the URL needs a host and port")?.as_str();
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("`{authority}` must be an IP:port on this machine"))?;
    if !addr.ip().is_loopback() {
        bail!("load is sent only to loopback addresses; {addr} is not one");
    }
    Ok(addr)
}

/// One registered integration with its credentials and a token; header values are
/// built once so that the load generator spends its time sending, not formatting.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Integration id (admin API).
    pub id: String,
    /// Client id.
    pub client_id: String,
    /// Secret.
    pub secret: String,
    /// `Authorization: Basic …`.
    pub basic: HeaderValue,
    /// A valid access token.
    pub token: String,
    /// `Authorization: Bearer <token>`.
    pub bearer: HeaderValue,
}

/// Registers `n` integrations (concurrently) and, unless `tokens` is false, gets a
/// token for each (which also verifies each secret once).
pub async fn register(
    target: &Target,
    n: usize,
    quota: u64,
    tokens: bool,
    quiet: bool,
) -> anyhow::Result<Vec<Credential>> {
    let http = reqwest::Client::new();
    let gateway = format!("http://{}", target.gateway);
    let started = Instant::now();
    let mut out = Vec::with_capacity(n);
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0usize;
    let parallel = 16;
    while out.len() < n {
        while next < n && tasks.len() < parallel {
            let http = http.clone();
            let admin = target.admin_url.clone();
            let key = target.admin_key.clone();
            let gateway = gateway.clone();
            let i = next;
            tasks.spawn(async move {
                let body = json!({
                    "org_id": format!("load{}", i % 10), "name": format!("load {i}"),
                    "scopes": ["items:read"], "daily_quota": quota, "token_requests_per_minute": 10_000_000
                });
                let created: Value = http
                    .post(format!("{admin}/admin/v1/integrations"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let id = created["integration"]["id"].as_str().context("no id")?.to_owned();
                let client_id = created["integration"]["client_id"]
                    .as_str()
                    .context("no client id")?
                    .to_owned();
                let secret = created["client_secret"].as_str().context("no secret")?.to_owned();
                let basic = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"))
                );
                let token = if tokens {
                    let answer: Value = http
                        .post(format!("{gateway}/oauth/token"))
                        .header("authorization", &basic)
                        .form(&[("grant_type", "client_credentials")])
                        .send()
                        .await?
                        .error_for_status()?
                        .json()
                        .await?;
                    answer["access_token"].as_str().context("no token")?.to_owned()
                } else {
                    String::new()
                };
                let bearer = HeaderValue::try_from(format!("Bearer {token}"))?;
                Ok::<_, anyhow::Error>(Credential {
                    id,
                    client_id,
                    secret,
                    basic: HeaderValue::try_from(basic)?,
                    token,
                    bearer,
                })
            });
            next += 1;
        }
        if let Some(done) = tasks.join_next().await {
            out.push(done??);
            if !quiet && out.len() % 250 == 0 {
                eprintln!("  set-up: {}/{n} integrations ({:.0?})", out.len(), started.elapsed());
            }
        }
    }
    Ok(out)
}

fn get(host: &HeaderValue, path: &'static str, bearer: Option<&HeaderValue>) -> Request<Bytes> {
    let mut builder = Request::get(path).header("host", host.clone());
    if let Some(bearer) = bearer {
        builder = builder.header("authorization", bearer.clone());
    }
    builder.body(Bytes::new()).unwrap_or_default()
}

fn token_request(host: &HeaderValue, basic: &HeaderValue) -> Request<Bytes> {
    Request::post("/oauth/token")
        .header("host", host.clone())
        .header("authorization", basic.clone())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Bytes::from_static(b"grant_type=client_credentials"))
        .unwrap_or_default()
}

fn host_header(addr: SocketAddr) -> HeaderValue {
    HeaderValue::try_from(addr.to_string()).unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

/// One measured run, ready for the report.
#[derive(Debug, Clone)]
pub struct Measured {
    /// What ran.
    pub name: String,
    /// What it measured.
    pub outcome: Outcome,
    /// A scenario-specific finding (exactness, ceilings).
    pub note: Option<String>,
    /// Which round of `--rounds` it belongs to (1 without it); ratios are taken
    /// against the first run of the same round.
    pub round: usize,
}

/// Unrecorded load before a measured run; returns how many requests were admitted.
async fn warm_up(args: &Args, mut load: LoadSpec, make: MakeRequest) -> anyhow::Result<u64> {
    if args.warmup == 0 {
        return Ok(0);
    }
    load.duration = Duration::from_secs(args.warmup);
    load.progress = false;
    Ok(driver::run(load, make).await?.count(200))
}

/// Today's count of an integration, as the admin API reports it.
async fn used_today(target: &Target, integration_id: &str) -> anyhow::Result<u64> {
    let shown: Value = reqwest::Client::new()
        .get(format!("{}/admin/v1/integrations/{integration_id}", target.admin_url))
        .bearer_auth(&target.admin_key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    shown["usage_today"]["used"]
        .as_u64()
        .context("the admin API did not report today's usage")
}

/// The server's Argon2 verifications so far and the CPU seconds they took, from the
/// `tollgate_hash_pool_cpu_seconds{job="verify"}` summary on its `/metrics`; `None`
/// when the server does not report it.
async fn verify_cpu_totals(target: &Target) -> Option<(u64, f64)> {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", target.admin_url))
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .await
        .ok()?;
    verify_cpu_in(&text)
}

/// The verify job's `_count` and `_sum` in a Prometheus text exposition.
fn verify_cpu_in(metrics: &str) -> Option<(u64, f64)> {
    let value = |name: &str| {
        metrics.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.split_once('}')?;
            labels
                .split(',')
                .any(|label| label == "job=\"verify\"")
                .then(|| value.trim().parse::<f64>().ok())?
        })
    };
    let count = value("tollgate_hash_pool_cpu_seconds_count")?;
    let sum = value("tollgate_hash_pool_cpu_seconds_sum")?;
    Some((count as u64, sum))
}

/// How the cores' time was shared during a token-cold run: verifying, the rest of the
/// server, the load generator, and the remainder (idle, or taken by other processes).
/// The parts known are named; the server's and the generator's share need the server
/// in this process.
fn where_the_cores_went(
    core_seconds: f64,
    verifying: f64,
    server_cpu: Option<Duration>,
    process_cpu: Option<Duration>,
) -> String {
    let pct = |seconds: f64| 100.0 * seconds / core_seconds.max(f64::MIN_POSITIVE);
    match (server_cpu, process_cpu) {
        (Some(server), Some(process)) => {
            let (server, process) = (server.as_secs_f64(), process.as_secs_f64());
            format!(
                "the cores' time went to verifying {:.0} %, the rest of the server {:.0} %, the generator {:.0} %, elsewhere or idle {:.0} %; ",
                pct(verifying),
                pct((server - verifying).max(0.0)),
                pct((process - server).max(0.0)),
                pct((core_seconds - process).max(0.0))
            )
        }
        _ => format!("the cores' time went to verifying {:.0} %; ", pct(verifying)),
    }
}

/// The time of one Argon2id verify with production parameters, measured here now.
fn argon2_verify_time() -> Duration {
    match argon2_parallel_rate(1) {
        rate if rate > 0.0 => Duration::from_secs_f64(1.0 / rate),
        _ => Duration::from_millis(20),
    }
}

/// Argon2 verifications per second with `threads` threads verifying at once and
/// nothing else running: what the cores deliver together, memory bandwidth and shared
/// caches included (two vCPUs may not make twice one).
fn argon2_parallel_rate(threads: usize) -> f64 {
    let slot = tollgate_engine::model::SlotId::generate();
    let secret = tollgate_engine::secret::ClientSecret::generate(&slot);
    let Ok(phc) = tollgate_engine::secret::hash_secret(secret.expose()) else {
        return 0.0;
    };
    let rounds = 10;
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                for _ in 0..rounds {
                    tollgate_engine::secret::verify_secret(secret.expose(), &phc);
                }
            });
        }
    });
    (threads.max(1) * rounds) as f64 / start.elapsed().as_secs_f64()
}

/// A warm-up, then one measured run.
async fn measure(args: &Args, name: &str, load: LoadSpec, make: MakeRequest, round: usize) -> anyhow::Result<Measured> {
    warm_up(args, load.clone(), make.clone()).await?;
    Ok(Measured {
        name: name.into(),
        outcome: driver::run(load, make).await?,
        note: None,
        round,
    })
}

/// The first run of `m`'s round: what its `ratio` is taken against.
fn round_base<'a>(results: &'a [Measured], m: &Measured) -> Option<&'a Measured> {
    results.iter().find(|r| r.round == m.round)
}

/// Each run's ratio to its round's first run, over all rounds: the median and the
/// range, by name (and the scenario's ratio to the ceiling before it, for `check`).
fn rounds_summary(results: &[Measured]) -> String {
    let rounds = results.iter().map(|m| m.round).max().unwrap_or(1);
    let mut names: Vec<&str> = Vec::new();
    for m in results.iter().filter(|m| m.round == 1).skip(1) {
        names.push(&m.name);
    }
    let ratios = |name: &str, against: Option<&str>| -> Vec<f64> {
        (1..=rounds)
            .filter_map(|round| {
                let of = |n: &str| results.iter().find(|m| m.round == round && m.name == n);
                let base = match against {
                    Some(against) => of(against)?,
                    None => results.iter().find(|m| m.round == round)?,
                };
                Some(of(name)?.outcome.throughput() / base.outcome.throughput().max(f64::MIN_POSITIVE))
            })
            .collect()
    };
    let describe = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        let median = match values.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => values[n / 2],
            n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        };
        format!(
            "{median:.2} ({:.2}-{:.2})",
            values.first().copied().unwrap_or(f64::NAN),
            values.last().copied().unwrap_or(f64::NAN)
        )
    };
    let base = results.first().map_or("baseline", |m| m.name.as_str());
    let mut parts: Vec<String> = names
        .iter()
        .map(|name| format!("{name} {}", describe(ratios(name, None))))
        .collect();
    if let [.., ceiling, scenario] = names.as_slice()
        && ["contract-baseline", "proxy-baseline", "token-baseline"].contains(ceiling)
    {
        parts.push(format!(
            "{scenario} to {ceiling} {}",
            describe(ratios(scenario, Some(ceiling)))
        ));
    }
    format!(
        "over {rounds} rounds, median ratio to {base} (range): {}",
        parts.join(", ")
    )
}

fn spec(args: &Args, addr: SocketAddr, label: &str) -> LoadSpec {
    LoadSpec {
        addr,
        connections: args.connections,
        duration: Duration::from_secs(args.duration),
        max_requests: args.requests,
        rate: args.rate,
        progress: !args.quiet,
        label: label.into(),
    }
}

/// Seeds `n` integrations into a data dir (see `tollgate_engine::seed`).
fn seed(dir: &std::path::Path, n: usize, quiet: bool) -> anyhow::Result<Vec<tollgate_engine::model::ClientId>> {
    let storage = tollgate_engine::storage::Storage::open(dir)?;
    let stored = storage.integration_count();
    if stored >= n {
        if !quiet {
            eprintln!(
                "  {stored} integrations already stored in {}: not seeding",
                dir.display()
            );
        }
        return Ok(Vec::new());
    }
    let n = n - stored;
    let org = tollgate_engine::model::OrgId::parse("seeded")?;
    let quota = tollgate_engine::model::DailyQuota::new(1_000_000)?;
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let clients = rt.block_on(tollgate_engine::seed::seed_integrations(
        &storage,
        n,
        &org,
        quota,
        |done| {
            if !quiet && done % 100_000 == 0 {
                eprintln!("  seeded {done}/{n} integrations ({:.0?})", started.elapsed());
            }
        },
    ))?;
    Ok(clients)
}

/// The name of the load generator's threads (its runtime's workers and the pacer):
/// every other thread of this process belongs to the server under test.
pub const GENERATOR_THREAD: &str = "loadgen";

/// CPU time each thread of this process other than the load generator's has run, in
/// nanoseconds by thread id (`/proc/self/task/*/schedstat`): when the server runs in
/// this process, its CPU cost. `None` where `/proc` cannot be read.
pub fn server_cpu_ns() -> Option<HashMap<u64, u64>> {
    let main = u64::from(std::process::id());
    let mut threads = HashMap::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u64>().ok()) else {
            continue;
        };
        if tid == main {
            // The main thread only waits for the run to end.
            continue;
        }
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() == GENERATOR_THREAD {
            continue;
        }
        let ran = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()));
        if let Some(ran) = ran {
            threads.insert(tid, ran);
        }
    }
    Some(threads)
}

/// The server's CPU time since `before` (a [`server_cpu_ns`] reading), thread by
/// thread: a thread that ended meanwhile (an idle blocking-pool thread, say) is not
/// counted, so this can only under-count.
pub fn server_cpu_since(before: &HashMap<u64, u64>) -> Option<Duration> {
    let now = server_cpu_ns()?;
    let ran = now
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum();
    Some(Duration::from_nanos(ran))
}

/// Resident set size of this process, bytes.
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

fn engine_config() -> tollgate_engine::EngineConfig {
    tollgate_engine::EngineConfig::default()
}

/// Starts a server on `path`; returns it and the time until it answered a request.
async fn start_measured(path: &std::path::Path) -> anyhow::Result<(tollgate_gateway::serve::Running, Duration)> {
    let mut config = tollgate_gateway::serve::ServeConfig::new(path.to_path_buf());
    config.gateway_addr = "127.0.0.1:0".parse()?;
    config.admin_addr = "127.0.0.1:0".parse()?;
    config.bootstrap_admin_key = Some(ADMIN_KEY.into());
    config.engine = engine_config();
    let started = Instant::now();
    let running = tollgate_gateway::serve::start(config).await?;
    // Ready means answering: one real request through the gateway.
    let probe = reqwest::get(format!("http://{}/.well-known/jwks.json", running.gateway_addr)).await?;
    anyhow::ensure!(probe.status().is_success(), "the started server did not answer");
    Ok((running, started.elapsed()))
}

/// The `actor-floor` scenario run in a process of its own (this binary again), so that
/// memory this process already freed is not reused and counted as free.
fn actor_floor_in_child(n: usize) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let output = std::process::Command::new(exe)
        .args(["--scenario", "actor-floor", "--quiet", "--json", "--integrations"])
        .arg(n.to_string())
        .output()
        .context("running the actor-floor scenario")?;
    anyhow::ensure!(
        output.status.success(),
        "the actor-floor scenario failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).context("reading the actor-floor report")?;
    Ok(report["runs"][0]["note"]
        .as_str()
        .context("the actor-floor report has no finding")?
        .to_owned())
}

/// `memory` and `restart`: in this process, against the engine and the server start.
async fn run_footprint(args: &Args) -> anyhow::Result<Vec<Measured>> {
    let n = args.integrations;
    let temp = tempfile::tempdir()?;
    let path = args.data_dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    let quiet = args.quiet;
    let clients = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || seed(&path, n, quiet)).await??
    };
    let (mut running, first_start) = start_measured(&path).await?;
    let mut answered_in = first_start;
    let note = if args.scenario == Scenario::Restart {
        // The first start replays what sled logged since its previous open (the
        // seeding, when this run seeded); a restart after a clean stop does not.
        running.shutdown().await?;
        let restarted;
        (running, restarted) = start_measured(&path).await?;
        answered_in = restarted;
        format!(
            "restart: {n} integrations stored; first start {} answering in {:.0} ms; after a graceful shutdown, restarted and answering in {:.0} ms (integrations load lazily, on first use)",
            if clients.is_empty() {
                "(nothing seeded by this run)"
            } else {
                "right after seeding them (sled replays the seeding's log)"
            },
            first_start.as_secs_f64() * 1000.0,
            restarted.as_secs_f64() * 1000.0
        )
    } else {
        let before = rss_bytes();
        let engine = running.engine.clone();
        let token = tollgate_engine::TokenContext {
            issued_at_ms: engine.now_ms(),
            jti: None,
        };
        for chunk in clients.chunks(1_000) {
            let mut checks = tokio::task::JoinSet::new();
            for client in chunk {
                let (engine, client, token) = (engine.clone(), client.clone(), token.clone());
                checks.spawn(async move { engine.check(&client, token).await });
            }
            while let Some(result) = checks.join_next().await {
                anyhow::ensure!(
                    matches!(result??, tollgate_engine::CheckOutcome::Admitted(_)),
                    "a seeded integration was not admitted"
                );
            }
        }
        let after = rss_bytes();
        let resident = engine.resident_count();
        format!(
            "memory: {resident} integrations active; resident memory {:.1} MiB -> {:.1} MiB: {:.0} bytes ({:.2} KiB) per active integration; {}",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            after.saturating_sub(before) as f64 / resident.max(1) as f64,
            after.saturating_sub(before) as f64 / resident.max(1) as f64 / 1024.0,
            actor_floor_in_child(resident)?
        )
    };
    running.shutdown().await?;
    if !args.quiet {
        eprintln!("  {note}");
    }
    let mut outcome = Outcome::empty()?;
    outcome.elapsed = answered_in;
    Ok(vec![Measured {
        name: format!("{:?}", args.scenario).to_lowercase(),
        outcome,
        note: Some(note),
        round: 1,
    }])
}

/// The baselines to run before the scenario: name, address, path.
fn baselines(args: &Args, target: &Target) -> Vec<(&'static str, SocketAddr, &'static str)> {
    let bare = ("baseline", target.baseline, "/");
    let actor = ("actor-baseline", target.actor_baseline, "/");
    match (args.scenario, args.compare) {
        (Scenario::Baseline, _) => vec![bare],
        (Scenario::ActorBaseline, None) => vec![actor],
        (Scenario::ActorBaseline, Some(CompareWith::Baseline)) => vec![bare, actor],
        // A proxied request is two HTTP exchanges: a bare proxy is measured too.
        (Scenario::Proxy, Some(CompareWith::Baseline)) => vec![
            ("upstream-direct", target.upstream, "/v1/items"),
            ("proxy-baseline", target.proxy_baseline, "/v1/items"),
        ],
        // A request check is one actor message: its ceiling is measured too.
        (Scenario::Check, Some(CompareWith::Baseline)) => vec![bare, actor],
        (Scenario::TokenWarm, Some(CompareWith::Baseline)) => {
            vec![bare, ("token-baseline", target.token_baseline, "/oauth/token")]
        }
        (_, Some(CompareWith::Baseline)) => vec![bare],
        (_, None) => vec![],
    }
}

/// Runs the chosen scenario (and its baseline with `--compare baseline`).
pub async fn run(args: Args) -> anyhow::Result<Vec<Measured>> {
    let rounds = args.rounds.max(1);
    if rounds > 1
        && !(args.compare.is_some()
            && matches!(
                args.scenario,
                Scenario::Check | Scenario::Proxy | Scenario::TokenWarm | Scenario::Mixed
            ))
    {
        bail!(
            "--rounds repeats a scenario next to its baselines: use it with --compare baseline and check, proxy, token-warm or mixed"
        );
    }
    if args.data_dir.is_some() && args.scenario != Scenario::Restart {
        bail!("--data-dir is for the restart scenario only");
    }
    if args.scenario == Scenario::ActorFloor {
        let per_actor = ceiling::actor_floor_bytes(args.integrations).await?;
        return Ok(vec![Measured {
            name: "actor-floor".into(),
            outcome: Outcome::empty()?,
            note: Some(format!(
                "actor-floor: {} bare ractor actors: {per_actor:.0} bytes ({:.2} KiB) each",
                args.integrations,
                per_actor / 1024.0
            )),
            round: 1,
        }]);
    }
    if matches!(args.scenario, Scenario::Memory | Scenario::Restart) {
        if args.url.is_some() {
            bail!("memory and restart measure a server in this process: run them without --url");
        }
        return run_footprint(&args).await;
    }
    let target = match (&args.url, &args.admin_url) {
        (Some(url), Some(admin)) => {
            let gateway = loopback_addr(url)?;
            loopback_addr(admin)?;
            let key = std::env::var("TOLLGATE_ADMIN_KEY").context("set TOLLGATE_ADMIN_KEY for --admin-url")?;
            if matches!(
                args.scenario,
                Scenario::Baseline | Scenario::ActorBaseline | Scenario::Proxy
            ) || args.compare.is_some()
            {
                bail!(
                    "baselines need the load tester's own server: run without --url for baseline, proxy or --compare"
                );
            }
            Target {
                gateway,
                admin_url: admin.trim_end_matches('/').to_owned(),
                admin_key: key,
                baseline: gateway,
                actor_baseline: gateway,
                contract_baseline: gateway,
                token_baseline: gateway,
                proxy_baseline: gateway,
                upstream: gateway,
                stop: None,
                thread: None,
                _dir: None,
                _baseline_dir: None,
            }
        }
        _ => start_own_server(args.integrations)?,
    };
    let mut results = Vec::new();
    let gw = target.gateway;
    // Every run to repeat in later rounds: the baselines, then (for check) the
    // contract's ceiling, then the scenario.
    let mut repeated: Vec<(String, LoadSpec, MakeRequest)> = Vec::new();
    for (name, addr, path) in baselines(&args, &target) {
        let host = host_header(addr);
        let make: MakeRequest = if name == "token-baseline" {
            // Any Basic credentials: the bare endpoint authenticates nobody.
            let basic = HeaderValue::from_static("Basic dGdjX2Jhc2VsaW5lOnRnc19iYXNlbGluZQ==");
            Arc::new(move |_| token_request(&host, &basic))
        } else {
            Arc::new(move |_| get(&host, path, None))
        };
        results.push(measure(&args, name, spec(&args, addr, name), make.clone(), 1).await?);
        repeated.push((name.into(), spec(&args, addr, name), make));
    }
    if matches!(args.scenario, Scenario::Baseline | Scenario::ActorBaseline) {
        return Ok(results);
    }
    let needs_tokens = !matches!(args.scenario, Scenario::TokenCold);
    let count = match args.scenario {
        Scenario::HotKey => 1,
        Scenario::TokenCold => {
            // Enough fresh secrets for the whole run at the Argon2 ceiling, and a few more.
            args.requests.unwrap_or(args.duration * 120).max(1) as usize
        }
        _ => args.integrations.max(1),
    };
    let quota = match args.scenario {
        Scenario::QuotaExhaust => args.quota,
        _ => 1_000_000_000,
    };
    if !args.quiet {
        eprintln!(
            "  set-up: registering {count} integrations{}",
            if needs_tokens { " and getting tokens" } else { "" }
        );
    }
    let creds = Arc::new(register(&target, count, quota, needs_tokens, args.quiet).await?);
    let name = format!("{:?}", args.scenario).to_lowercase();
    let mut load = spec(&args, gw, &name);
    let host = host_header(gw);
    if args.scenario == Scenario::QuotaExhaust {
        // Twice the total quota, spread round-robin.
        load.max_requests = Some(2 * quota * creds.len() as u64);
        load.duration = load.duration.max(Duration::from_secs(600));
    }
    let make: MakeRequest = match args.scenario {
        Scenario::Check | Scenario::HotKey | Scenario::QuotaExhaust => {
            let creds = creds.clone();
            Arc::new(move |i| {
                get(
                    &host,
                    "/v1/check/v1/items",
                    Some(&creds[i as usize % creds.len()].bearer),
                )
            })
        }
        Scenario::Proxy => {
            let creds = creds.clone();
            Arc::new(move |i| get(&host, "/v1/items", Some(&creds[i as usize % creds.len()].bearer)))
        }
        Scenario::TokenWarm => {
            let creds = creds.clone();
            Arc::new(move |i| token_request(&host, &creds[i as usize % creds.len()].basic))
        }
        Scenario::TokenCold => {
            // Each secret is used once: the request count is bounded by them. About as
            // many connections as the Argon2 pool admits (workers + queue); beyond that
            // the server answers 503 + Retry-After by design.
            load.max_requests = Some(creds.len() as u64);
            load.connections = load.connections.min(16);
            let creds = creds.clone();
            Arc::new(move |i| token_request(&host, &creds[i as usize % creds.len()].basic))
        }
        Scenario::Mixed => {
            let creds = creds.clone();
            Arc::new(move |i| {
                let c = &creds[i as usize % creds.len()];
                match i % 20 {
                    0 => token_request(&host, &c.basic),
                    1..=3 => get(&host, "/v1/items", Some(&c.bearer)),
                    _ => get(&host, "/v1/check/v1/items", Some(&c.bearer)),
                }
            })
        }
        Scenario::Baseline | Scenario::ActorBaseline | Scenario::Memory | Scenario::Restart | Scenario::ActorFloor => {
            unreachable!("handled above")
        }
    };
    if args.scenario == Scenario::Check && args.compare.is_some() {
        // The same requests, answered by a bare handler that sends what a check must.
        let contract = spec(&args, target.contract_baseline, "contract-baseline");
        results.push(measure(&args, "contract-baseline", contract.clone(), make.clone(), 1).await?);
        repeated.push(("contract-baseline".into(), contract, make.clone()));
    }
    repeated.push((name.clone(), load.clone(), make.clone()));
    let warm_admitted = if matches!(args.scenario, Scenario::QuotaExhaust | Scenario::TokenCold) {
        0
    } else {
        warm_up(&args, load.clone(), make.clone()).await?
    };
    // token-cold: a modest, paced stream of checks runs beside the Argon2 flood, to
    // show that the rest of the server still answers while the hashing pool is full.
    let beside = if args.scenario == Scenario::TokenCold {
        let checkers = register(&target, CHECKERS_BESIDE, quota, true, args.quiet).await?;
        let bearers: Vec<HeaderValue> = checkers.into_iter().map(|c| c.bearer).collect();
        let host = host_header(gw);
        let make_check: MakeRequest =
            Arc::new(move |i| get(&host, "/v1/check/v1/items", Some(&bearers[i as usize % bearers.len()])));
        let mut checks = spec(&args, gw, "checks-beside");
        checks.rate = Some(CHECKS_BESIDE_RATE);
        checks.connections = 16;
        checks.max_requests = None;
        checks.progress = false;
        Some((checks, make_check))
    } else {
        None
    };
    // token-cold accounts for the cores' time over the run: the server's verifications
    // (from its metrics) and this process's CPU time, against the wall time.
    let (verified_before, process_before) = if args.scenario == Scenario::TokenCold {
        (verify_cpu_totals(&target).await, cpu_time::ProcessTime::try_now().ok())
    } else {
        (None, None)
    };
    let wall_before = Instant::now();
    let (outcome, beside) = match beside {
        Some((checks, make_check)) => {
            let (outcome, beside) = tokio::join!(driver::run(load, make), driver::run(checks, make_check));
            (outcome?, Some(beside?))
        }
        None => (driver::run(load, make).await?, None),
    };
    let process_cpu = process_before.and_then(|before| before.try_elapsed().ok());
    let wall = wall_before.elapsed();
    let mut note = None;
    let mut beside_row = None;
    if let Some(mut beside) = beside {
        // Both ran at once: the server's CPU is counted once, on the token row.
        beside.server_cpu = None;
        let answered = beside.count(200);
        if beside.requests == 0 || answered != beside.requests || beside.transport_errors > 0 {
            bail!(
                "token-cold: the checks sent beside the Argon2 flood were not all answered: {answered} of {} allowed, {} transport errors",
                beside.requests,
                beside.transport_errors
            );
        }
        note = Some(format!(
            "checks beside the flood: {CHECKS_BESIDE_RATE:.0}/s sent, all {answered} allowed, p99 {:.2} ms",
            ms(beside.latency_us.value_at_quantile(0.99))
        ));
        beside_row = Some(Measured {
            name: "checks-beside".into(),
            outcome: beside,
            note: None,
            round: 1,
        });
    }
    if args.scenario == Scenario::TokenCold {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as f64;
        let admitted = outcome.count(200) as f64 / outcome.elapsed.as_secs_f64();
        // The verify time of the target's formula, from the run's own verifications:
        // the CPU time each took on its hashing thread, at the speed the machine had
        // during those seconds. A quiet measurement afterwards follows it for context;
        // on this VM it drifts by a fifth from one run to the next.
        let in_run = match (verified_before, verify_cpu_totals(&target).await) {
            (Some((count0, sum0)), Some((count1, sum1))) if count1 > count0 => Some((count1 - count0, sum1 - sum0)),
            _ => None,
        };
        let quiet = argon2_verify_time();
        let parallel = argon2_parallel_rate(cores as usize);
        let quiet_ceiling = cores / quiet.as_secs_f64();
        let share = |ceiling: f64| 100.0 * admitted / ceiling.max(f64::MIN_POSITIVE);
        let measured = match in_run {
            Some((count, verifying)) => {
                let per_verify = verifying / count as f64;
                let ceiling = cores / per_verify;
                format!(
                    "Argon2 ceiling {ceiling:.1}/s ({cores} cores / {:.1} ms of CPU per verify, the mean of this run's {count} verifications): {:.0} % of it; {}",
                    per_verify * 1000.0,
                    share(ceiling),
                    where_the_cores_went(cores * wall.as_secs_f64(), verifying, outcome.server_cpu, process_cpu)
                )
            }
            None => "the server did not report its verifications' CPU time; ".into(),
        };
        let line = format!(
            "token-cold: {admitted:.1} tokens/s admitted; {measured}measured quietly after the run: {cores} cores / {:.1} ms per verify = {quiet_ceiling:.1}/s ({:.0} % of it), {cores} threads verifying at once {parallel:.1}/s ({:.0} % of it)",
            quiet.as_secs_f64() * 1000.0,
            share(quiet_ceiling),
            share(parallel)
        );
        note = Some(match note {
            Some(beside) => format!("{line}; {beside}"),
            None => line,
        });
    }
    if args.scenario == Scenario::HotKey {
        // Exact accounting under contention: the one integration's count is every
        // admitted answer (warm-up included), no more and no less.
        let admitted = warm_admitted + outcome.count(200);
        let used = used_today(&target, &creds[0].id).await?;
        if used != admitted {
            bail!("hot-key: the server counted {used} requests but admitted {admitted}");
        }
        note = Some(format!("hot-key: counted {used} == admitted {admitted}, exactly"));
    }
    if args.scenario == Scenario::QuotaExhaust {
        let expected = quota * creds.len() as u64;
        let admitted = outcome.count(200);
        if admitted != expected {
            bail!("quota-exhaust: admitted {admitted} requests but the quotas add up to {expected}");
        }
        note = Some(format!(
            "quota-exhaust: admitted {admitted} == sum of quotas {expected}, exactly"
        ));
    }
    let ceilings = results.iter().filter_map(|m| match m.name.as_str() {
        "actor-baseline" => Some((m, "HTTP + one actor message, the ceiling of this design here")),
        "contract-baseline" => Some((
            m,
            "the same requests and answer headers with one actor message, the ceiling of this contract here",
        )),
        "proxy-baseline" => Some((m, "a bare reverse proxy, the ceiling of proxying here")),
        "token-baseline" => Some((
            m,
            "a bare token endpoint: one durable audit entry and one Ed25519 signature per token, the ceiling of durable tokens here",
        )),
        _ => None,
    });
    for (ceiling, what) in ceilings {
        let ratio = outcome.throughput() / ceiling.outcome.throughput().max(f64::MIN_POSITIVE);
        let line = format!("{name}: {:.0} % of {} ({what})", 100.0 * ratio, ceiling.name);
        note = Some(match note {
            Some(n) => format!("{n}; {line}"),
            None => line,
        });
    }
    results.push(Measured {
        name,
        outcome,
        note,
        round: 1,
    });
    results.extend(beside_row);
    if rounds > 1 {
        for round in 2..=rounds {
            for (label, load, make) in &repeated {
                results.push(measure(&args, label, load.clone(), make.clone(), round).await?);
            }
        }
        let summary = rounds_summary(&results);
        if let Some(last) = results.last_mut() {
            last.note = Some(match last.note.take() {
                Some(n) => format!("{n}; {summary}"),
                None => summary,
            });
        }
    }
    drop(target);
    if args.url.is_some() {
        // The server runs elsewhere: this process's threads are not its cost.
        for m in &mut results {
            m.outcome.server_cpu = None;
        }
    }
    Ok(results)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The report as JSON.
pub fn report_json(results: &[Measured]) -> Value {
    json!({
        "runs": results.iter().map(|m| {
            let o = &m.outcome;
            let h = &o.latency_us;
            let base = round_base(results, m).map(|b| b.outcome.throughput());
            json!({
                "scenario": m.name,
                "round": m.round,
                "requests": o.requests,
                "seconds": o.elapsed.as_secs_f64(),
                "throughput_per_s": o.throughput(),
                "ratio_to_first": base.map(|b| o.throughput() / b),
                "latency_ms": {
                    "p50": ms(h.value_at_quantile(0.50)), "p90": ms(h.value_at_quantile(0.90)),
                    "p99": ms(h.value_at_quantile(0.99)), "p99_9": ms(h.value_at_quantile(0.999)),
                    "max": ms(h.max()),
                },
                "statuses": o.statuses,
                "transport_errors": o.transport_errors,
                "rss_mib": o.rss_bytes as f64 / 1_048_576.0,
                "server_cpu_us_per_request": o.server_cpu_per_request().map(|d| d.as_secs_f64() * 1e6),
                "note": m.note,
            })
        }).collect::<Vec<_>>()
    })
}

/// The report as a table.
pub fn report_table(results: &[Measured]) -> String {
    if results.iter().all(|m| m.outcome.requests == 0) {
        // memory / restart: the finding is the note.
        return results
            .iter()
            .filter_map(|m| m.note.clone())
            .map(|n| n + "\n")
            .collect();
    }
    let mut out = format!(
        "{:<21} {:>9} {:>11} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}  {}\n",
        "scenario",
        "requests",
        "req/s",
        "ratio",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "rss MiB",
        "cpu µs",
        "statuses"
    );
    let rounds = results.iter().any(|m| m.round > 1);
    for m in results {
        let o = &m.outcome;
        let h = &o.latency_us;
        let base = round_base(results, m).map_or(1.0, |b| b.outcome.throughput());
        let name = if rounds {
            format!("{} #{}", m.name, m.round)
        } else {
            m.name.clone()
        };
        let statuses = o
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .chain((o.transport_errors > 0).then(|| format!("transport:{}", o.transport_errors)))
            .collect::<Vec<_>>()
            .join(" ");
        out.push_str(&format!(
            "{:<21} {:>9} {:>11.0} {:>7.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.0} {:>7}  {}\n",
            name,
            o.requests,
            o.throughput(),
            o.throughput() / base,
            ms(h.value_at_quantile(0.50)),
            ms(h.value_at_quantile(0.90)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
            o.rss_bytes as f64 / 1_048_576.0,
            o.server_cpu_per_request()
                .map_or_else(|| "—".to_owned(), |d| format!("{:.1}", d.as_secs_f64() * 1e6)),
            statuses
        ));
    }
    for note in results.iter().filter_map(|m| m.note.as_deref()) {
        out.push_str(note);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, round: usize, requests: u64) -> Measured {
        let mut outcome = Outcome::empty().unwrap();
        outcome.requests = requests;
        outcome.elapsed = Duration::from_secs(1);
        Measured {
            name: name.into(),
            outcome,
            note: None,
            round,
        }
    }

    #[test]
    fn rounds_are_compared_within_themselves_and_summarised_by_their_median() {
        let results = [
            row("baseline", 1, 100),
            row("contract-baseline", 1, 60),
            row("check", 1, 50),
            row("baseline", 2, 200),
            row("contract-baseline", 2, 140),
            row("check", 2, 100),
            row("baseline", 3, 100),
            row("contract-baseline", 3, 70),
            row("check", 3, 55),
        ];
        let summary = rounds_summary(&results);
        assert!(
            summary.starts_with("over 3 rounds, median ratio to baseline"),
            "{summary}"
        );
        assert!(summary.contains("contract-baseline 0.70 (0.60-0.70)"), "{summary}");
        assert!(summary.contains("check 0.50 (0.50-0.55)"), "{summary}");
        assert!(
            summary.contains("check to contract-baseline 0.79 (0.71-0.83)"),
            "{summary}"
        );
        // In the table, round 2's rows are taken against round 2's baseline (200),
        // not round 1's (100).
        let table = report_table(&results);
        let round_two_contract = table
            .lines()
            .filter(|l| l.starts_with("contract-baseline"))
            .nth(1)
            .unwrap();
        assert!(round_two_contract.contains(" 0.70 "), "{round_two_contract}");
    }

    #[tokio::test]
    async fn rounds_are_refused_where_a_run_cannot_repeat() {
        for scenario in ["hot-key", "quota-exhaust", "token-cold", "check"] {
            let mut argv = vec!["tollgate-loadtest", "--scenario", scenario, "--rounds", "2"];
            if scenario != "check" {
                argv.extend(["--compare", "baseline"]);
            }
            let refused = run(Args::parse_from(argv)).await.expect_err("refused");
            assert!(refused.to_string().contains("--rounds"), "{refused}");
        }
    }

    #[test]
    fn the_verify_jobs_cpu_time_is_picked_out_of_the_metrics() {
        let text = "# TYPE tollgate_hash_pool_cpu_seconds summary
tollgate_hash_pool_cpu_seconds{job=\"hash\",quantile=\"0.5\"} 0.02
tollgate_hash_pool_cpu_seconds_sum{job=\"hash\"} 9.5
tollgate_hash_pool_cpu_seconds_count{job=\"hash\"} 400
tollgate_hash_pool_cpu_seconds{job=\"verify\",quantile=\"0.5\"} 0.021
tollgate_hash_pool_cpu_seconds_sum{job=\"verify\"} 2.25
tollgate_hash_pool_cpu_seconds_count{job=\"verify\"} 100
";
        assert_eq!(verify_cpu_in(text), Some((100, 2.25)));
        assert_eq!(verify_cpu_in(&text.replace("job=\"verify\"", "job=\"other\"")), None);
    }

    #[test]
    fn the_servers_verifications_and_their_cpu_time_are_read_off_its_metrics() {
        let target = start_own_server(1).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            // Before the first verification the summary may not exist yet.
            let (count0, sum0) = verify_cpu_totals(&target).await.unwrap_or((0, 0.0));
            register(&target, 2, 1_000, true, true).await.unwrap();
            let (count1, sum1) = verify_cpu_totals(&target)
                .await
                .expect("the server reports its verifications");
            assert!(count1 >= count0 + 2, "{count0} -> {count1}");
            // Argon2id with the production parameters takes milliseconds of CPU.
            let mean = (sum1 - sum0) / (count1 - count0) as f64;
            assert!(mean > 0.001, "{mean} s per verification");
        });
    }

    #[test]
    fn load_goes_only_to_loopback() {
        assert!(loopback_addr("http://127.0.0.1:8080").is_ok());
        assert!(loopback_addr("http://[::1]:8080").is_ok());
        let refused = loopback_addr("http://10.0.0.7:8080").unwrap_err();
        assert!(refused.to_string().contains("loopback"), "{refused}");
        assert!(loopback_addr("http://example.com:80").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_driver_sends_exactly_the_bounded_count_and_tallies_statuses() {
        let addr = bare_server(axum::Router::new().fallback(|uri: axum::http::Uri| async move {
            if uri.path() == "/teapot" {
                axum::http::StatusCode::IM_A_TEAPOT
            } else {
                axum::http::StatusCode::OK
            }
        }))
        .await
        .unwrap();
        let host = host_header(addr);
        let make: MakeRequest = Arc::new(move |i| get(&host, if i % 4 == 0 { "/teapot" } else { "/" }, None));
        let load = LoadSpec {
            addr,
            connections: 8,
            duration: Duration::from_secs(30),
            max_requests: Some(400),
            rate: None,
            progress: false,
            label: "test".into(),
        };
        let outcome = driver::run(load, make).await.unwrap();
        assert_eq!(outcome.requests, 400);
        assert_eq!(outcome.count(418), 100);
        assert_eq!(outcome.count(200), 300);
        assert_eq!(outcome.latency_us.len(), 400);
        let report = report_table(&[Measured {
            name: "test".into(),
            outcome,
            note: None,
            round: 1,
        }]);
        assert!(report.contains("200:300 418:100"), "{report}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_open_loop_sends_exactly_rate_times_duration_requests() {
        let addr = bare_server(axum::Router::new().fallback(|| async { "ok" }))
            .await
            .unwrap();
        let host = host_header(addr);
        let make: MakeRequest = Arc::new(move |_| get(&host, "/", None));
        let load = LoadSpec {
            addr,
            connections: 16,
            duration: Duration::from_millis(1500),
            max_requests: None,
            rate: Some(400.0),
            progress: false,
            label: "test".into(),
        };
        let outcome = driver::run(load, make).await.unwrap();
        // Request i is due at i / 400 s; those due before 1.5 s are sent: 0..600.
        assert_eq!(outcome.requests, 600);
        assert_eq!(outcome.count(200), 600);
        assert!(outcome.elapsed >= Duration::from_millis(1490), "{:?}", outcome.elapsed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_ceilings_answer_like_the_server_they_stand_for() {
        let (supervisor, counters) = ceiling::spawn_counters(3).await.unwrap();
        let actor = bare_server(ceiling::actor_router(counters.clone())).await.unwrap();
        let upstream = bare_server(axum::Router::new().fallback(|| async { "from upstream" }))
            .await
            .unwrap();
        let proxy = bare_server(ceiling::proxy_router(upstream).unwrap()).await.unwrap();
        let http = reqwest::Client::new();
        for _ in 0..6 {
            let answer = http.get(format!("http://{actor}/")).send().await.unwrap();
            assert_eq!(answer.status(), 200);
        }
        // Every request reached an actor: 3 actors, one message each at spawn, then 6
        // spread round-robin.
        for counter in &counters {
            assert_eq!(ractor::call!(counter, ceiling::Count::One).unwrap(), 4);
        }
        let proxied = http.get(format!("http://{proxy}/v1/items?x=1")).send().await.unwrap();
        assert_eq!(proxied.status(), 200);
        assert_eq!(proxied.text().await.unwrap(), "from upstream");

        // The contract ceiling wants a bearer token and answers with a check's nine
        // headers, counting in the actors.
        let contract = bare_server(ceiling::contract_router(counters.clone())).await.unwrap();
        let refused = http.get(format!("http://{contract}/v1/check/x")).send().await.unwrap();
        assert_eq!(refused.status(), 401);
        let answer = http
            .get(format!("http://{contract}/v1/check/x"))
            .bearer_auth("a.b.c")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let h = answer.headers();
        for name in [
            "ratelimit-policy",
            "ratelimit",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-used",
            "x-ratelimit-reset",
            "x-tollgate-client-id",
            "x-tollgate-org",
            "x-tollgate-scopes",
        ] {
            assert!(h.contains_key(name), "{name} missing: {h:?}");
        }
        assert_eq!(h["x-ratelimit-used"], "5");
        assert_eq!(h["ratelimit-policy"], "\"daily\";q=1000000000;w=86400");
        assert!(h["x-tollgate-client-id"].to_str().unwrap().starts_with("tgc_"));
        supervisor.stop(None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_token_ceiling_signs_only_after_a_durable_audit_entry() {
        let dir = tempfile::tempdir().unwrap();
        let storage = tollgate_engine::storage::Storage::open(dir.path()).unwrap();
        let token = bare_server(ceiling::token_router(storage.clone(), 3)).await.unwrap();
        let http = reqwest::Client::new();
        let refused = http
            .post(format!("http://{token}/oauth/token"))
            .body("grant_type=password")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400);
        for _ in 0..4 {
            let answer = http
                .post(format!("http://{token}/oauth/token"))
                .basic_auth("a", Some("b"))
                .body("grant_type=client_credentials")
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
            assert_eq!(answer.headers()["cache-control"], "no-store");
            let body: Value = answer.json().await.unwrap();
            let jwt = body["access_token"].as_str().unwrap();
            assert_eq!(jwt.split('.').count(), 3, "{jwt}");
        }
        // One chained entry per token, none for the refused request.
        let report = storage.audit_verify().unwrap();
        assert_eq!(report.entries_checked, 4);
        assert!(report.first_broken.is_none());
        let entries = storage.audit_query(&Default::default(), None, 10).unwrap();
        assert!(
            entries
                .iter()
                .all(|e| e.event.kind == "token.issued" && e.event.jti.is_some())
        );
    }
}
