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
use tollgate_benches::{concurrent, engine_with_integrations};
use tollgate_engine::{CheckOutcome, TokenContext};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn check_throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("check");
    group.throughput(Throughput::Elements(1));

    let counter = Arc::new(AtomicU64::new(0));
    group.bench_function("baseline_atomic_fetch_add", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let counter = counter.clone();
            concurrent(iters, move |_| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
    });

    let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<u64>>();
    rt.spawn(async move {
        let mut n = 0;
        while let Some(reply) = rx.recv().await {
            n += 1;
            let _ = reply.send(n);
        }
    });
    group.bench_function("baseline_mpsc_oneshot_round_trip", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let tx = tx.clone();
            concurrent(iters, move |_| {
                let tx = tx.clone();
                async move {
                    let (reply, answer) = oneshot::channel();
                    tx.send(reply).expect("server alive");
                    answer.await.expect("answered");
                }
            })
        })
    });

    for n in [1usize, 10_000] {
        let (engine, clients, _dir) = rt.block_on(engine_with_integrations(n));
        let clients = Arc::new(clients);
        group.bench_function(format!("engine_check_{n}_integrations"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let engine = engine.clone();
                let clients = clients.clone();
                concurrent(iters, move |i| {
                    let engine = engine.clone();
                    let clients = clients.clone();
                    async move {
                        let client = &clients[(i as usize) % clients.len()];
                        let token = TokenContext {
                            issued_at_ms: engine.now_ms(),
                            jti: None,
                        };
                        let outcome = engine.check(client, token).await.expect("check");
                        assert!(matches!(outcome, CheckOutcome::Admitted(_)));
                    }
                })
            })
        });
        rt.block_on(engine.shutdown()).expect("shutdown");
    }
    group.finish();
}

criterion_group!(benches, check_throughput);
criterion_main!(benches);
