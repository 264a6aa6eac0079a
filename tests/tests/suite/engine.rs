//! The engine through its public handle: quotas, rotation, lifecycle, residency.

use std::time::Duration;

use tollgate_engine::clock::DAY_MS;
use tollgate_engine::model::{DailyQuota, IntegrationStatus, parse_scopes};
use tollgate_engine::storage::audit::AuditFilter;
use tollgate_engine::{
    ActorHint, AdminContext, AuthOutcome, AuthRefusal, CheckOutcome, EngineConfig, EngineError, IntegrationUpdate,
    Refusal, RequestContext, RotationMode, TokenContext,
};
use tollgate_tests::{START_MS, TestEngine, audit_of_kind, auth_request};

fn token_now(t: &TestEngine) -> TokenContext {
    TokenContext {
        issued_at_ms: t.engine.now_ms(),
        jti: None,
    }
}

fn is_granted(outcome: &AuthOutcome) -> bool {
    matches!(outcome, AuthOutcome::Granted(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_hammering_one_integration_admit_exactly_the_quota() {
    let t = TestEngine::start().await;
    let quota = 1_000;
    let created = t.create("acme", quota).await;
    let client = created.integration.client_id.clone();

    let mut tasks = Vec::new();
    for _ in 0..64 {
        let engine = t.engine.clone();
        let client = client.clone();
        let token = token_now(&t);
        tasks.push(tokio::spawn(async move {
            let (mut admitted, mut refused) = (0u64, 0u64);
            for _ in 0..50 {
                match engine.check(&client, token.clone()).await.unwrap() {
                    CheckOutcome::Admitted(_) => admitted += 1,
                    CheckOutcome::QuotaExceeded(_) => refused += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
            (admitted, refused)
        }));
    }
    let (mut admitted, mut refused) = (0, 0);
    for task in tasks {
        let (a, r) = task.await.unwrap();
        admitted += a;
        refused += r;
    }
    assert_eq!(admitted, quota, "exactly the quota is admitted");
    assert_eq!(refused, 64 * 50 - quota);
    let view = t.engine.integration(&created.integration.id).await.unwrap();
    assert_eq!(view.used_today, quota, "refused requests are not charged");
}

#[tokio::test]
async fn the_decision_carries_limit_remaining_reset_and_warnings() {
    let t = TestEngine::start().await;
    let created = t.create("acme", 20).await;
    let client = created.integration.client_id;
    let mut last = None;
    for i in 1..=20u64 {
        let CheckOutcome::Admitted(status) = t.engine.check(&client, token_now(&t)).await.unwrap() else {
            panic!("request {i} should be admitted");
        };
        assert_eq!((status.limit, status.used, status.remaining), (20, i, 20 - i));
        assert_eq!(
            status.resets_at_ms,
            (START_MS / DAY_MS + 1) * DAY_MS,
            "resets at the next UTC midnight"
        );
        let expected_warning = match i {
            0..=15 => None,
            16..=18 => Some(80),
            _ => Some(95),
        };
        assert_eq!(status.warning_threshold, expected_warning, "after {i} requests");
        last = Some(status);
    }
    assert_eq!(last.unwrap().remaining, 0);
    let CheckOutcome::QuotaExceeded(status) = t.engine.check(&client, token_now(&t)).await.unwrap() else {
        panic!("the 21st request must be refused");
    };
    assert_eq!((status.used, status.remaining), (20, 0));
}

#[tokio::test]
async fn thresholds_and_exhaustion_are_audited_once_per_day() {
    let t = TestEngine::start().await;
    let created = t.create("acme", 10).await;
    let client = created.integration.client_id;
    for _ in 0..25 {
        t.engine.check(&client, token_now(&t)).await.unwrap();
    }
    // Quota audit events are written without waiting; a durable write after them
    // flushes them (the writer is FIFO).
    t.engine.storage().batch().commit().await.unwrap();
    let kinds = |kind: &str| {
        t.engine
            .audit_query(
                &AuditFilter {
                    integration_id: Some(created.integration.id.clone()),
                    kind: Some(kind.into()),
                    ..AuditFilter::default()
                },
                None,
                100,
            )
            .unwrap()
    };
    let warnings = kinds("quota.warning");
    let mut thresholds: Vec<u64> = warnings
        .iter()
        .map(|e| e.event.details["threshold_percent"].as_u64().unwrap())
        .collect();
    thresholds.sort();
    assert_eq!(thresholds, vec![80, 95]);
    assert_eq!(kinds("quota.exhausted").len(), 1);
}

#[tokio::test]
async fn the_count_resets_at_utc_midnight_when_the_clock_moves() {
    let t = TestEngine::start().await;
    let created = t.create("acme", 5).await;
    let client = created.integration.client_id;
    for _ in 0..5 {
        assert!(matches!(
            t.engine.check(&client, token_now(&t)).await.unwrap(),
            CheckOutcome::Admitted(_)
        ));
    }
    assert!(matches!(
        t.engine.check(&client, token_now(&t)).await.unwrap(),
        CheckOutcome::QuotaExceeded(_)
    ));

    let next_midnight = (START_MS / DAY_MS + 1) * DAY_MS;
    t.clock.set_ms(next_midnight - 1);
    assert!(matches!(
        t.engine.check(&client, token_now(&t)).await.unwrap(),
        CheckOutcome::QuotaExceeded(_)
    ));
    t.clock.set_ms(next_midnight);
    let CheckOutcome::Admitted(status) = t.engine.check(&client, token_now(&t)).await.unwrap() else {
        panic!("a new day must admit again");
    };
    assert_eq!(status.used, 1);

    let usage = t.engine.usage(&created.integration.id, 2).await.unwrap();
    let counts: Vec<u64> = usage.daily.iter().map(|d| d.count).collect();
    assert_eq!(
        counts,
        vec![5, 1],
        "yesterday's exact count was persisted at the roll-over"
    );
    assert_eq!(usage.hourly_today[0], 1);
}

#[tokio::test]
async fn raising_the_quota_keeps_todays_count() {
    let t = TestEngine::start().await;
    let created = t.create("acme", 3).await;
    let client = created.integration.client_id;
    for _ in 0..4 {
        t.engine.check(&client, token_now(&t)).await.unwrap();
    }
    let update = IntegrationUpdate {
        daily_quota: Some(DailyQuota::new(5).unwrap()),
        ..IntegrationUpdate::default()
    };
    let view = t
        .engine
        .update_integration(&created.integration.id, update, &AdminContext::default())
        .await
        .unwrap();
    assert_eq!((view.daily_quota.get(), view.used_today), (5, 3));
    let CheckOutcome::Admitted(status) = t.engine.check(&client, token_now(&t)).await.unwrap() else {
        panic!("room was made by raising the quota");
    };
    assert_eq!((status.used, status.remaining), (4, 1));
}

#[tokio::test]
async fn a_routine_rotation_accepts_both_secrets_until_the_grace_ends() {
    let t = TestEngine::start().await;
    let created = t.create("acme", 100).await;
    let client = created.integration.client_id.to_string();
    let old = created.client_secret.expose().to_owned();

    let rotated = t
        .engine
        .rotate(
            &created.integration.id,
            RotationMode::Routine {
                grace: Duration::from_secs(3600),
            },
            &AdminContext::default(),
        )
        .await
        .unwrap();
    let new = rotated.client_secret.expose().to_owned();
    assert_eq!(rotated.previous_secret_expires_at_ms, Some(START_MS + 3_600_000));
    assert!(
        is_granted(&t.token_request(&client, &old).await),
        "old secret works in the grace window"
    );
    assert!(
        is_granted(&t.token_request(&client, &new).await),
        "new secret works at once"
    );

    t.clock.advance(Duration::from_secs(3599));
    assert!(is_granted(&t.token_request(&client, &old).await));
    t.clock.advance(Duration::from_secs(1));
    assert_eq!(
        t.token_request(&client, &old).await,
        AuthOutcome::Refused(AuthRefusal::SecretExpired),
        "the grace window is over"
    );
    assert!(is_granted(&t.token_request(&client, &new).await));

    let view = t.engine.integration(&created.integration.id).await.unwrap();
    let previous = view
        .secrets
        .iter()
        .find(|s| s.role == tollgate_engine::SlotRole::Previous)
        .unwrap();
    assert!(previous.is_expired);
    assert_eq!(
        previous.last_used.as_ref().unwrap().ip,
        "127.0.0.1",
        "admins see when the old secret was last used"
    );
}

#[tokio::test]
async fn finishing_a_rotation_stops_the_old_secret_now() {
    let t = TestEngine::start().await;
    let created = t.create("acme", 100).await;
    let client = created.integration.client_id.to_string();
    let old = created.client_secret.expose().to_owned();
    let id = created.integration.id.clone();
    t.engine
        .rotate(
            &id,
            RotationMode::Routine {
                grace: Duration::from_secs(86_400),
            },
            &AdminContext::default(),
        )
        .await
        .unwrap();
    assert!(is_granted(&t.token_request(&client, &old).await));
    t.engine.finish_rotation(&id, &AdminContext::default()).await.unwrap();
    assert_eq!(
        t.token_request(&client, &old).await,
        AuthOutcome::Refused(AuthRefusal::WrongSecret)
    );
    let again = t.engine.finish_rotation(&id, &AdminContext::default()).await;
    assert!(matches!(again, Err(EngineError::Conflict(m)) if m.contains("no rotation in progress")));
}

#[tokio::test]
async fn an_incident_rotation_kills_the_old_secret_and_earlier_tokens_at_once() {
    let t = TestEngine::start().await;
    let created = t.create("acme", 100).await;
    let client_id = created.integration.client_id.clone();
    let old = created.client_secret.expose().to_owned();
    let issued_before = token_now(&t);
    assert!(matches!(
        t.engine.check(&client_id, issued_before.clone()).await.unwrap(),
        CheckOutcome::Admitted(_)
    ));

    t.clock.advance(Duration::from_millis(1));
    let rotated = t
        .engine
        .rotate(
            &created.integration.id,
            RotationMode::Incident,
            &AdminContext::default(),
        )
        .await
        .unwrap();
    assert_eq!(rotated.previous_secret_expires_at_ms, None);
    assert_eq!(
        t.token_request(client_id.as_str(), &old).await,
        AuthOutcome::Refused(AuthRefusal::WrongSecret),
        "the old secret is dead immediately"
    );
    assert_eq!(
        t.engine.check(&client_id, issued_before).await.unwrap(),
        CheckOutcome::Refused(Refusal::TokenIssuedBeforeCutoff),
        "tokens issued before the incident are refused"
    );
    assert!(is_granted(
        &t.token_request(client_id.as_str(), rotated.client_secret.expose())
            .await
    ));
    assert!(matches!(
        t.engine.check(&client_id, token_now(&t)).await.unwrap(),
        CheckOutcome::Admitted(_)
    ));

    let incidents = audit_of_kind(&t.engine, "secret.incident_rotated");
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].event.outcome, "incident");
}

#[tokio::test]
async fn disable_takes_effect_on_the_next_request_and_enable_restores() {
    let t = TestEngine::start().await;
    let created = t.create("acme", 100).await;
    let client_id = created.integration.client_id.clone();
    let secret = created.client_secret.expose().to_owned();
    let id = created.integration.id.clone();
    let token = token_now(&t);
    assert!(matches!(
        t.engine.check(&client_id, token.clone()).await.unwrap(),
        CheckOutcome::Admitted(_)
    ));

    let view = t
        .engine
        .disable(&id, Some("suspicious traffic".into()), &AdminContext::default())
        .await
        .unwrap();
    assert_eq!(view.status, IntegrationStatus::Disabled);
    assert_eq!(
        t.engine.check(&client_id, token.clone()).await.unwrap(),
        CheckOutcome::Refused(Refusal::Disabled)
    );
    assert_eq!(
        t.token_request(client_id.as_str(), &secret).await,
        AuthOutcome::Refused(AuthRefusal::Disabled)
    );
    assert!(matches!(
        t.engine.disable(&id, None, &AdminContext::default()).await,
        Err(EngineError::Conflict(_))
    ));

    t.engine.enable(&id, &AdminContext::default()).await.unwrap();
    assert!(matches!(
        t.engine.check(&client_id, token).await.unwrap(),
        CheckOutcome::Admitted(_)
    ));
    assert!(is_granted(&t.token_request(client_id.as_str(), &secret).await));
}

#[tokio::test]
async fn a_revoked_integration_refuses_everything_and_cannot_be_changed() {
    let t = TestEngine::start().await;
    let created = t.create("acme", 100).await;
    let client_id = created.integration.client_id.clone();
    let id = created.integration.id.clone();
    let token = token_now(&t);
    let view = t.engine.revoke(&id, &AdminContext::default()).await.unwrap();
    assert_eq!(view.status, IntegrationStatus::Revoked);
    assert!(view.secrets.is_empty(), "secrets are erased");
    let stored = t.engine.storage().integration(&id).unwrap().unwrap();
    assert!(stored.current_secret.is_none() && stored.previous_secret.is_none());

    assert_eq!(
        t.engine.check(&client_id, token).await.unwrap(),
        CheckOutcome::Refused(Refusal::Revoked)
    );
    assert_eq!(
        t.token_request(client_id.as_str(), created.client_secret.expose())
            .await,
        AuthOutcome::Refused(AuthRefusal::Revoked)
    );
    for result in [
        t.engine.revoke(&id, &AdminContext::default()).await.map(|_| ()),
        t.engine.enable(&id, &AdminContext::default()).await.map(|_| ()),
        t.engine
            .rotate(&id, RotationMode::Incident, &AdminContext::default())
            .await
            .map(|_| ()),
    ] {
        assert!(matches!(result, Err(EngineError::Conflict(m)) if m.contains("revoked")));
    }
}

#[tokio::test]
async fn a_revoked_token_id_is_refused_from_then_on() {
    let t = TestEngine::start().await;
    let created = t.create("acme", 100).await;
    let client_id = created.integration.client_id.clone();
    let token = TokenContext {
        issued_at_ms: START_MS,
        jti: Some("jti-abc".into()),
    };
    assert!(matches!(
        t.engine.check(&client_id, token.clone()).await.unwrap(),
        CheckOutcome::Admitted(_)
    ));
    t.engine
        .revoke_token(&client_id, "jti-abc", START_MS + 3_600_000, &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(
        t.engine.check(&client_id, token.clone()).await.unwrap(),
        CheckOutcome::Refused(Refusal::TokenRevoked)
    );
    let other = TokenContext {
        jti: Some("jti-other".into()),
        ..token
    };
    assert!(matches!(
        t.engine.check(&client_id, other).await.unwrap(),
        CheckOutcome::Admitted(_)
    ));
}

#[tokio::test]
async fn a_verified_secret_is_remembered_so_repeat_requests_skip_argon2() {
    let t = TestEngine::start().await;
    let created = t.create("acme", 100).await;
    let client = created.integration.client_id.to_string();
    let secret = created.client_secret.expose().to_owned();
    for _ in 0..5 {
        assert!(is_granted(&t.token_request(&client, &secret).await));
    }
    assert_eq!(t.engine.argon2_verifications(), 1, "only the first request runs Argon2");

    // A rotation drops what was remembered.
    t.engine
        .rotate(
            &created.integration.id,
            RotationMode::Routine {
                grace: Duration::from_secs(60),
            },
            &AdminContext::default(),
        )
        .await
        .unwrap();
    assert!(is_granted(&t.token_request(&client, &secret).await));
    assert_eq!(t.engine.argon2_verifications(), 2);
}

#[tokio::test]
async fn wrong_secrets_unknown_clients_and_bad_scopes_are_refused_and_audited() {
    let t = TestEngine::start().await;
    let created = t.create("acme", 100).await;
    let client = created.integration.client_id.to_string();
    let other = t.create("acme", 100).await;

    assert_eq!(
        t.token_request(&client, other.client_secret.expose()).await,
        AuthOutcome::Refused(AuthRefusal::WrongSecret),
        "another integration's secret does not work"
    );
    assert!(matches!(
        t.token_request(&client, "tgs_not-a-secret").await,
        AuthOutcome::Refused(AuthRefusal::MalformedSecret(_))
    ));
    assert_eq!(
        t.token_request("tgc_00000000000000000000", created.client_secret.expose())
            .await,
        AuthOutcome::Refused(AuthRefusal::UnknownClient)
    );
    let mut request = auth_request(&client, created.client_secret.expose());
    request.requested_scopes = Some(parse_scopes(&["admin:everything"]).unwrap());
    assert_eq!(
        t.engine.authenticate(request).await.unwrap(),
        AuthOutcome::Refused(AuthRefusal::InvalidScope)
    );
    let mut request = auth_request(&client, created.client_secret.expose());
    request.requested_scopes = Some(parse_scopes(&["conversations:read"]).unwrap());
    let AuthOutcome::Granted(grant) = t.engine.authenticate(request).await.unwrap() else {
        panic!("a subset of the scopes is granted");
    };
    assert_eq!(grant.scopes, parse_scopes(&["conversations:read"]).unwrap());

    let refused = audit_of_kind(&t.engine, "token.refused");
    let reasons: Vec<&str> = refused
        .iter()
        .rev()
        .map(|e| e.event.reason.as_deref().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["wrong_secret", "malformed_secret", "unknown_client", "invalid_scope"]
    );
    assert!(
        refused
            .iter()
            .all(|e| e.event.source_ip.as_deref() == Some("127.0.0.1"))
    );
    let issued = audit_of_kind(&t.engine, "token.issued");
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].event.org_id.as_ref().unwrap().as_str(), "acme");
    assert!(issued[0].event.jti.is_some() && issued[0].event.slot_id.is_some());
}

#[tokio::test]
async fn the_token_rate_limit_refuses_with_a_retry_time() {
    let t = TestEngine::start().await;
    let created = t
        .engine
        .create_integration(
            tollgate_engine::NewIntegration {
                org_id: tollgate_engine::model::OrgId::parse("acme").unwrap(),
                name: "slow".into(),
                scopes: vec![],
                daily_quota: DailyQuota::new(100).unwrap(),
                token_ttl_seconds: None,
                token_requests_per_minute: Some(2),
                secret_max_age_days: None,
            },
            &AdminContext::default(),
        )
        .await
        .unwrap();
    let client = created.integration.client_id.to_string();
    let secret = created.client_secret.expose().to_owned();
    assert!(is_granted(&t.token_request(&client, &secret).await));
    assert!(is_granted(&t.token_request(&client, &secret).await));
    let AuthOutcome::Refused(AuthRefusal::RateLimited { retry_after }) = t.token_request(&client, &secret).await else {
        panic!("the third request in a minute must be limited");
    };
    assert_eq!(retry_after, Duration::from_secs(30));
    t.clock.advance(retry_after);
    assert!(is_granted(&t.token_request(&client, &secret).await));
}

#[tokio::test]
async fn every_lifecycle_change_is_audited_and_the_chain_verifies() {
    let t = TestEngine::start().await;
    let created = t.create("acme", 100).await;
    let id = created.integration.id.clone();
    let ctx = AdminContext {
        admin_key_id: Some(tollgate_engine::model::AdminKeyId::generate()),
        source_ip: Some("10.0.0.9".into()),
    };
    t.engine
        .update_integration(
            &id,
            IntegrationUpdate {
                name: Some("Renamed".into()),
                ..Default::default()
            },
            &ctx,
        )
        .await
        .unwrap();
    t.engine
        .rotate(
            &id,
            RotationMode::Routine {
                grace: Duration::from_secs(60),
            },
            &ctx,
        )
        .await
        .unwrap();
    t.engine.finish_rotation(&id, &ctx).await.unwrap();
    t.engine.rotate(&id, RotationMode::Incident, &ctx).await.unwrap();
    t.engine.disable(&id, Some("why not".into()), &ctx).await.unwrap();
    t.engine.enable(&id, &ctx).await.unwrap();
    t.engine.revoke(&id, &ctx).await.unwrap();

    let entries = t
        .engine
        .audit_query(
            &AuditFilter {
                integration_id: Some(id.clone()),
                ..AuditFilter::default()
            },
            None,
            100,
        )
        .unwrap();
    let kinds: Vec<&str> = entries.iter().rev().map(|e| e.event.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "integration.created",
            "integration.updated",
            "secret.rotated",
            "secret.rotation_finished",
            "secret.incident_rotated",
            "integration.disabled",
            "integration.enabled",
            "integration.revoked"
        ]
    );
    assert!(entries[..7].iter().all(|e| e.event.admin_key_id == ctx.admin_key_id));
    let renamed = &entries[6].event.details["changed"]["name"];
    assert_eq!(
        (renamed["from"].as_str(), renamed["to"].as_str()),
        (Some("acme integration"), Some("Renamed"))
    );
    let report = t.engine.audit_verify().unwrap();
    assert_eq!(report.first_broken, None);
    assert!(report.entries_checked >= 8);
    // Nothing secret reaches the audit log.
    let raw = format!("{entries:?}");
    assert!(!raw.contains(created.client_secret.expose()));
}

#[tokio::test]
async fn invalid_input_is_refused_with_a_clear_message_and_changes_nothing() {
    let t = TestEngine::start().await;
    let created = t.create("acme", 100).await;
    let id = created.integration.id.clone();
    let ctx = AdminContext::default();
    let long_grace = t
        .engine
        .rotate(
            &id,
            RotationMode::Routine {
                grace: Duration::from_secs(8 * 86_400),
            },
            &ctx,
        )
        .await;
    assert!(matches!(&long_grace, Err(EngineError::Invalid(e)) if e.to_string().contains("0 to 604800")));
    let bad_ttl = t
        .engine
        .update_integration(
            &id,
            IntegrationUpdate {
                token_ttl_seconds: Some(5),
                ..Default::default()
            },
            &ctx,
        )
        .await;
    assert!(matches!(&bad_ttl, Err(EngineError::Invalid(e)) if e.to_string().contains("token lifetime")));
    let bad_name = t
        .engine
        .update_integration(
            &id,
            IntegrationUpdate {
                name: Some("   ".into()),
                ..Default::default()
            },
            &ctx,
        )
        .await;
    assert!(matches!(bad_name, Err(EngineError::Invalid(_))));
    let view = t.engine.integration(&id).await.unwrap();
    assert_eq!(view.updated_at_ms, view.created_at_ms, "nothing changed");
    assert_eq!(view.secrets.len(), 1);

    let unknown = tollgate_engine::model::IntegrationId::generate();
    assert!(matches!(
        t.engine.integration(&unknown).await,
        Err(EngineError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_graceful_restart_keeps_the_exact_count_and_every_change() {
    let t = TestEngine::start().await;
    let created = t.create("acme", 10_000).await;
    let client = created.integration.client_id.clone();
    for _ in 0..37 {
        t.engine.check(&client, token_now(&t)).await.unwrap();
    }
    t.engine
        .disable(&created.integration.id, None, &AdminContext::default())
        .await
        .unwrap();
    t.engine
        .enable(&created.integration.id, &AdminContext::default())
        .await
        .unwrap();

    let t = t.restart().await;
    let view = t.engine.integration(&created.integration.id).await.unwrap();
    assert_eq!(
        view.used_today, 37,
        "graceful stop persists the exact count, not the reservation"
    );
    assert_eq!(view.status, IntegrationStatus::Active);
    assert!(is_granted(
        &t.token_request(client.as_str(), created.client_secret.expose()).await
    ));
}

#[tokio::test]
async fn idle_actors_are_evicted_and_come_back_with_their_count() {
    let config = EngineConfig {
        idle_eviction_after: Duration::from_secs(60),
        ..EngineConfig::default()
    };
    let t = TestEngine::start_with(config).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(t.create("acme", 1_000).await.integration.client_id);
    }
    for client in &clients {
        for _ in 0..3 {
            t.engine.check(client, token_now(&t)).await.unwrap();
        }
    }
    assert_eq!(t.engine.resident_count(), 20);
    assert_eq!(t.engine.evict_idle_now().await.unwrap(), 0, "nothing is idle yet");

    t.clock.advance(Duration::from_secs(61));
    t.engine.check(&clients[0], token_now(&t)).await.unwrap();
    assert_eq!(t.engine.evict_idle_now().await.unwrap(), 19);
    assert_eq!(t.engine.resident_count(), 1);

    let CheckOutcome::Admitted(status) = t.engine.check(&clients[5], token_now(&t)).await.unwrap() else {
        panic!("an evicted integration comes back on use");
    };
    assert_eq!(status.used, 4, "the exact count was persisted on eviction");
}

#[tokio::test]
async fn a_remembered_actor_is_used_until_evicted_or_crashed_then_looked_up_again() {
    let config = EngineConfig {
        idle_eviction_after: Duration::from_secs(60),
        ..EngineConfig::default()
    };
    let t = TestEngine::start_with(config).await;
    let client = t.create("acme", 1_000).await.integration.client_id;
    let other = t.create("acme", 1_000).await.integration.client_id;
    let hint = ActorHint::default();
    let used = |outcome: CheckOutcome| match outcome {
        CheckOutcome::Admitted(status) => status.used,
        other => panic!("expected admission, got {other:?}"),
    };
    for expected in 1..=3 {
        let outcome = t
            .engine
            .check_hinted(&client, token_now(&t), Some(&hint))
            .await
            .unwrap();
        assert_eq!(used(outcome), expected);
    }
    assert!(hint.is_live());

    // Evicted: the remembered actor retires (its exact count persisted) and must not
    // count again, nor stay in memory through the hint; the check reaches the
    // integration's new actor.
    t.clock.advance(Duration::from_secs(61));
    t.engine.check(&other, token_now(&t)).await.unwrap();
    assert_eq!(t.engine.evict_idle_now().await.unwrap(), 1);
    assert!(!hint.is_live(), "the hint let go of the evicted actor");
    let outcome = t
        .engine
        .check_hinted(&client, token_now(&t), Some(&hint))
        .await
        .unwrap();
    assert_eq!(
        used(outcome),
        4,
        "one count, by the new actor, after the exact persisted 3"
    );
    let outcome = t
        .engine
        .check_hinted(&client, token_now(&t), Some(&hint))
        .await
        .unwrap();
    assert_eq!(used(outcome), 5);
    assert!(hint.is_live(), "the hint now leads to the new actor");

    // Crashed: same, from the reservation (never under-counts).
    t.engine.crash_client_actor_for_tests(&client).await.unwrap();
    let after_crash = used(
        t.engine
            .check_hinted(&client, token_now(&t), Some(&hint))
            .await
            .unwrap(),
    );
    assert!((6..=6 + 10).contains(&after_crash), "{after_crash}");
    let next = used(
        t.engine
            .check_hinted(&client, token_now(&t), Some(&hint))
            .await
            .unwrap(),
    );
    assert_eq!(next, after_crash + 1);
    assert_eq!(t.engine.resident_count(), 2);
}

#[tokio::test]
async fn the_resident_set_is_capped_per_shard() {
    let config = EngineConfig {
        shard_count: 2,
        max_resident_per_shard: 5,
        ..EngineConfig::default()
    };
    let t = TestEngine::start_with(config).await;
    for _ in 0..30 {
        let client = t.create("acme", 100).await.integration.client_id;
        t.engine.check(&client, token_now(&t)).await.unwrap();
    }
    t.engine.evict_idle_now().await.unwrap();
    assert!(t.engine.resident_count() <= 10, "at most 5 per shard stay resident");
}

#[tokio::test]
async fn a_crashed_client_actor_is_rebuilt_from_storage() {
    let t = TestEngine::start().await;
    let created = t.create("acme", 1_000).await;
    let client = created.integration.client_id.clone();
    for _ in 0..10 {
        t.engine.check(&client, token_now(&t)).await.unwrap();
    }
    t.engine.crash_client_actor_for_tests(&client).await.unwrap();
    // The next request finds the dead actor, gets a fresh one from storage and is
    // admitted; the count resumes at the reservation (never below what was admitted).
    let CheckOutcome::Admitted(status) = t.engine.check(&client, token_now(&t)).await.unwrap() else {
        panic!("the integration must keep working after its actor crashed");
    };
    assert!(status.used >= 11, "never under-counts: {}", status.used);
    assert!(
        status.used <= 11 + 10,
        "over-counts by at most one block (10 for a quota of 1000)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_the_data_dir_can_be_reopened_at_once() {
    // Shutdown returns only when every actor has released the storage, so a restart
    // in the same process never finds the data dir still locked.
    let mut t = TestEngine::start().await;
    let created = t.create("acme", 1_000).await;
    let client = created.integration.client_id.clone();
    for cycle in 0..20u64 {
        for _ in 0..5 {
            t.engine.check(&client, token_now(&t)).await.unwrap();
        }
        t = t.restart().await;
        let view = t.engine.integration(&created.integration.id).await.unwrap();
        assert_eq!(
            view.used_today,
            5 * (cycle + 1),
            "cycle {cycle}: exact count after each restart"
        );
    }
}

/// Resident set size of this process, bytes.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_stored_integrations_stay_within_the_resident_cap() {
    const STORED: usize = 1_000_000;
    const TOUCHED: usize = 100_000;
    const PER_SHARD: usize = 500;
    let config = EngineConfig {
        max_resident_per_shard: PER_SHARD,
        ..EngineConfig::default()
    };
    let shards = config.shard_count as usize;
    let t = TestEngine::start_with(config).await;
    let started = std::time::Instant::now();
    let org = tollgate_engine::model::OrgId::parse("bulk").unwrap();
    let clients = tollgate_engine::seed::seed_integrations(
        t.engine.storage(),
        STORED,
        &org,
        DailyQuota::new(1_000).unwrap(),
        |_| {},
    )
    .await
    .unwrap();
    eprintln!("seeded {STORED} integrations in {:?}", started.elapsed());
    let before = rss_bytes();
    // Every 10th one gets a request: far more integrations than may stay resident.
    for chunk in clients.iter().step_by(STORED / TOUCHED).collect::<Vec<_>>().chunks(500) {
        let mut checks = tokio::task::JoinSet::new();
        for client in chunk {
            let (engine, client, token) = (t.engine.clone(), (*client).clone(), token_now(&t));
            checks.spawn(async move { engine.check(&client, token).await });
        }
        while let Some(done) = checks.join_next().await {
            assert!(matches!(done.unwrap().unwrap(), CheckOutcome::Admitted(_)));
        }
        let resident = t.engine.resident_count();
        assert!(
            resident <= shards * PER_SHARD,
            "{resident} resident, cap {}",
            shards * PER_SHARD
        );
    }
    t.engine.evict_idle_now().await.unwrap();
    let resident = t.engine.resident_count();
    let grown = rss_bytes().saturating_sub(before);
    eprintln!(
        "{TOUCHED} touched in {:?} (with seeding); {resident} resident; memory grew {} MiB",
        started.elapsed(),
        grown / 1_048_576
    );
    assert!(
        resident <= shards * PER_SHARD,
        "{resident} resident, cap {}",
        shards * PER_SHARD
    );
    // Without eviction 100,000 actors would take over 1 GiB (≈ 11 KiB each); with it,
    // what grows is sled's page cache (128 MiB at most) and the capped actors.
    assert!(grown < 512 * 1_048_576, "memory grew {} MiB", grown / 1_048_576);
}
