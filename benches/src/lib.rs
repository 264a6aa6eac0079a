//! Shared set-up for Tollgate's criterion benchmarks (the benchmarks are in `benches/`).
//!
//! Every benchmark group runs a baseline next to the measured code in the same run, so
//! results are read as ratios (this 2-core machine is noisy: ±30 % between runs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_engine::clock::SystemClock;
use tollgate_engine::model::{ClientId, DailyQuota, OrgId};
use tollgate_engine::seed::seed_integrations;
use tollgate_engine::storage::Storage;
use tollgate_engine::{Engine, EngineConfig};

/// Concurrent callers used by the throughput benchmarks (like connections of a gateway).
pub const CALLERS: u64 = 64;

/// A started engine on a temp dir plus `n` integrations seeded straight into storage
/// (the check path never reads secrets; see `tollgate_engine::seed`).
pub async fn engine_with_integrations(n: usize) -> (Engine, Vec<ClientId>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::open(dir.path()).expect("storage");
    let org = OrgId::parse("bench").expect("org");
    let quota = DailyQuota::new(DailyQuota::MAX).expect("quota");
    let clients = seed_integrations(&storage, n, &org, quota, |_| {})
        .await
        .expect("seed integrations");
    let engine = Engine::start(storage, Arc::new(SystemClock), EngineConfig::default())
        .await
        .expect("engine");
    (engine, clients, dir)
}

/// One benchmarked operation. Each caller task clones the operation once and then
/// calls it repeatedly by reference, so neither the baselines nor the engine pay for
/// per-call handle clones (shared-counter traffic that is harness, not work).
pub trait Operation: Clone + Send + Sync + 'static {
    /// Performs operation number `i`.
    fn run(&self, i: u64) -> impl std::future::Future<Output = ()> + Send;
}

/// Runs `iters` operations split over [`CALLERS`] concurrent tasks and returns the
/// wall time: the shape criterion's `iter_custom` needs for a throughput figure.
pub async fn concurrent<O: Operation>(iters: u64, op: O) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(CALLERS as usize);
    for caller in 0..CALLERS {
        let op = op.clone();
        let share = iters / CALLERS + u64::from(caller < iters % CALLERS);
        tasks.push(tokio::spawn(async move {
            for i in 0..share {
                op.run(caller * 1_000_003 + i).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("bench task");
    }
    start.elapsed()
}
