//! Shared set-up for Tollgate's criterion benchmarks (the benchmarks are in `benches/`).
//!
//! Every benchmark group runs a baseline next to the measured code in the same run, so
//! results are read as ratios (this 2-core machine is noisy: ±30 % between runs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_engine::clock::SystemClock;
use tollgate_engine::model::{
    ClientId, DailyQuota, IntegrationId, IntegrationRecord, IntegrationStatus, OrgId, SecretSlot, SlotId,
};
use tollgate_engine::storage::Storage;
use tollgate_engine::{Engine, EngineConfig};

/// Concurrent callers used by the throughput benchmarks (like connections of a gateway).
pub const CALLERS: u64 = 64;

/// A started engine on a temp dir plus `n` integrations written straight to storage
/// (the check path never reads secrets, so the records carry a placeholder hash and
/// seeding 10,000 of them does not cost 10,000 Argon2 runs).
pub async fn engine_with_integrations(n: usize) -> (Engine, Vec<ClientId>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::open(dir.path()).expect("storage");
    let mut clients = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        let mut batch = storage.batch();
        for _ in chunk {
            let rec = record();
            clients.push(rec.client_id.clone());
            batch = batch.put_integration(&rec);
        }
        batch.commit().await.expect("seed integrations");
    }
    let engine = Engine::start(storage, Arc::new(SystemClock), EngineConfig::default())
        .await
        .expect("engine");
    (engine, clients, dir)
}

fn record() -> IntegrationRecord {
    IntegrationRecord {
        id: IntegrationId::generate(),
        client_id: ClientId::generate(),
        org_id: OrgId::parse("bench").expect("org"),
        name: "bench".into(),
        scopes: vec![],
        daily_quota: DailyQuota::new(DailyQuota::MAX).expect("quota"),
        token_ttl_seconds: 3600,
        token_requests_per_minute: 10_000_000,
        status: IntegrationStatus::Active,
        disabled_reason: None,
        current_secret: Some(SecretSlot {
            slot_id: SlotId::generate(),
            phc: "placeholder".into(),
            created_at_ms: 0,
            expires_at_ms: None,
        }),
        previous_secret: None,
        tokens_valid_after_ms: 0,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
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
