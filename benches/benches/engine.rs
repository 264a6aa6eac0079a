//! Engine check-and-consume throughput next to its baselines, measured in one run:
//! an `AtomicU64::fetch_add` loop (the cost of counting alone) and a tokio mpsc +
//! oneshot round trip (the cost of asking another task), both with the same 64
//! concurrent callers as the engine checks.
//!
//! `cargo bench -p tollgate-benches --bench engine`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::sync::{mpsc, oneshot};
use tollgate_benches::{Operation, concurrent, engine_with_integrations};
use tollgate_engine::model::ClientId;
use tollgate_engine::{CheckOutcome, Engine, TokenContext};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[derive(Clone)]
struct FetchAdd(Arc<AtomicU64>);

impl Operation for FetchAdd {
    async fn run(&self, _: u64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct RoundTrip(mpsc::UnboundedSender<oneshot::Sender<u64>>);

impl Operation for RoundTrip {
    async fn run(&self, _: u64) {
        let (reply, answer) = oneshot::channel();
        self.0.send(reply).expect("server alive");
        answer.await.expect("answered");
    }
}

#[derive(Clone)]
struct Check {
    engine: Engine,
    clients: Arc<Vec<ClientId>>,
}

impl Operation for Check {
    async fn run(&self, i: u64) {
        let client = &self.clients[(i as usize) % self.clients.len()];
        let token = TokenContext {
            issued_at_ms: self.engine.now_ms(),
            jti: None,
        };
        let outcome = self.engine.check(client, token).await.expect("check");
        assert!(matches!(outcome, CheckOutcome::Admitted(_)));
    }
}

fn check_throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("check");
    group.throughput(Throughput::Elements(1));

    let counter = FetchAdd(Arc::new(AtomicU64::new(0)));
    group.bench_function("baseline_atomic_fetch_add", |b| {
        b.to_async(&rt).iter_custom(|iters| concurrent(iters, counter.clone()))
    });

    let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<u64>>();
    rt.spawn(async move {
        let mut n = 0;
        while let Some(reply) = rx.recv().await {
            n += 1;
            let _ = reply.send(n);
        }
    });
    let round_trip = RoundTrip(tx);
    group.bench_function("baseline_mpsc_oneshot_round_trip", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| concurrent(iters, round_trip.clone()))
    });

    for n in [1usize, 10_000] {
        let (engine, clients, _dir) = rt.block_on(engine_with_integrations(n));
        let check = Check {
            engine: engine.clone(),
            clients: Arc::new(clients),
        };
        group.bench_function(format!("engine_check_{n}_integrations"), |b| {
            b.to_async(&rt).iter_custom(|iters| concurrent(iters, check.clone()))
        });
        rt.block_on(engine.shutdown()).expect("shutdown");
    }
    group.finish();
}

criterion_group!(benches, check_throughput);
criterion_main!(benches);
