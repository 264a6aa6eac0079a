//! Secret verification: warm (the verified-digest cache, plus the durable audit entry
//! every token request writes) against cold (a full Argon2id verify with OWASP
//! parameters), in one run. Also the audit group commit on its own.
//!
//! `cargo bench -p tollgate-benches --bench secrets`

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tollgate_benches::{Operation, concurrent};
use tollgate_engine::clock::SystemClock;
use tollgate_engine::model::{DailyQuota, OrgId, SlotId};
use tollgate_engine::secret::{ClientSecret, hash_secret, verify_secret};
use tollgate_engine::storage::Storage;
use tollgate_engine::storage::audit::AuditEvent;
use tollgate_engine::{AdminContext, AuthOutcome, AuthRequest, Engine, EngineConfig, NewIntegration, RequestContext};

#[derive(Clone)]
struct WarmAuth {
    engine: Engine,
    request: Arc<AuthRequest>,
}

impl Operation for WarmAuth {
    async fn run(&self, _: u64) {
        let outcome = self
            .engine
            .authenticate((*self.request).clone())
            .await
            .expect("authenticate");
        assert!(matches!(outcome, AuthOutcome::Granted(_)));
    }
}

#[derive(Clone)]
struct AuditAppend(Engine);

impl Operation for AuditAppend {
    async fn run(&self, _: u64) {
        let event = AuditEvent {
            kind: "bench.event".into(),
            outcome: "success".into(),
            ..AuditEvent::default()
        };
        self.0.audit(event).await.expect("audit");
    }
}

fn secret_verification(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("secret_verify");
    group.throughput(Throughput::Elements(1));

    let secret = ClientSecret::generate(&SlotId::generate());
    let phc = hash_secret(secret.expose()).expect("hash");
    group.sample_size(10);
    group.bench_function("cold_argon2id_verify", |b| {
        b.iter(|| assert!(verify_secret(secret.expose(), &phc)))
    });
    group.sample_size(100);

    let dir = tempfile::tempdir().expect("temp dir");
    let engine = rt.block_on(async {
        let storage = Storage::open(dir.path()).expect("storage");
        Engine::start(storage, Arc::new(SystemClock), EngineConfig::default())
            .await
            .expect("engine")
    });
    let created = rt
        .block_on(engine.create_integration(
            NewIntegration {
                org_id: OrgId::parse("bench").expect("org"),
                name: "bench".into(),
                scopes: vec![],
                daily_quota: DailyQuota::new(1_000).expect("quota"),
                token_ttl_seconds: None,
                token_requests_per_minute: Some(10_000_000),
                secret_max_age_days: None,
            },
            &AdminContext::default(),
        ))
        .expect("create");
    let request = AuthRequest {
        client_id: created.integration.client_id.to_string(),
        client_secret: created.client_secret.expose().to_owned(),
        requested_scopes: None,
        jti: Some("bench".into()),
        context: RequestContext {
            source_ip: "127.0.0.1".into(),
            user_agent: None,
        },
        allow_slow_verify: true,
    };
    let warm = WarmAuth {
        engine: engine.clone(),
        request: Arc::new(request),
    };
    group.bench_function("warm_engine_authenticate_with_durable_audit", |b| {
        b.to_async(&rt).iter_custom(|iters| concurrent(iters, warm.clone()))
    });
    let append = AuditAppend(engine.clone());
    group.bench_function("baseline_durable_audit_append_alone", |b| {
        b.to_async(&rt).iter_custom(|iters| concurrent(iters, append.clone()))
    });
    rt.block_on(engine.shutdown()).expect("shutdown");
    group.finish();
}

criterion_group!(benches, secret_verification);
criterion_main!(benches);
