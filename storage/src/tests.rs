use super::*;
use crate::model::*;

fn sample_integration() -> IntegrationRecord {
    IntegrationRecord {
        id: IntegrationId::generate(),
        client_id: ClientId::generate(),
        org_id: OrgId::parse("acme").unwrap(),
        name: "CRM sync".into(),
        scopes: parse_scopes(&["conversations:read"]).unwrap(),
        daily_quota: DailyQuota::new(10_000).unwrap(),
        token_ttl_seconds: 3600,
        token_requests_per_minute: 600,
        status: IntegrationStatus::Active,
        disabled_reason: None,
        current_secret: Some(SecretSlot {
            slot_id: SlotId::generate(),
            phc: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            created_at_ms: 1,
            expires_at_ms: None,
            expiry_noticed: false,
            grace_noticed: false,
        }),
        previous_secret: Some(SecretSlot {
            slot_id: SlotId::generate(),
            phc: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$b2xk".into(),
            created_at_ms: 0,
            expires_at_ms: Some(99),
            expiry_noticed: false,
            grace_noticed: false,
        }),
        tokens_valid_after_ms: 5,
        created_at_ms: 1,
        secret_max_age_seconds: Some(90 * 86_400),
        updated_at_ms: 2,
    }
}

fn event(kind: &str, integration: Option<&IntegrationRecord>) -> AuditEvent {
    AuditEvent {
        at_ms: 1_000,
        kind: kind.into(),
        integration_id: integration.map(|i| i.id.clone()),
        org_id: integration.map(|i| i.org_id.clone()),
        outcome: "success".into(),
        ..AuditEvent::default()
    }
}

#[tokio::test]
async fn every_record_type_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let rec = sample_integration();
    let usage = DayUsage {
        reserved: 42,
        hourly: {
            let mut h = [0; 24];
            h[3] = 40;
            h[4] = 2;
            h
        },
    };
    let admin = AdminKeyRecord {
        id: AdminKeyId::generate(),
        phc: "$argon2id$x".into(),
        label: "bootstrap".into(),
        org_id: None,
        is_read_only: false,
        created_at_ms: 3,
        revoked_at_ms: None,
    };
    let signing = SigningKeyRecord {
        kid: "k1".into(),
        private_pem: "-----BEGIN PRIVATE KEY-----".into(),
        public_x: "abc".into(),
        created_at_ms: 4,
        retired_at_ms: None,
    };
    let slot = rec.current_secret.as_ref().unwrap().slot_id.clone();
    {
        let storage = Storage::open(dir.path()).unwrap();
        storage
            .batch()
            .put_integration(&rec)
            .put_day_usage(&rec.id, 20_000, &usage)
            .put_revoked_token(&rec.id, "jti-1", 777)
            .put_admin_key(&admin)
            .put_signing_key(&signing)
            .audit(event("integration.created", Some(&rec)))
            .commit()
            .await
            .unwrap();
        storage
            .record_slot_use(
                &slot,
                &SlotUse {
                    at_ms: 9,
                    ip: "127.0.0.1".into(),
                },
            )
            .unwrap();
        storage.flush().await.unwrap();
    }
    let storage = Storage::open(dir.path()).unwrap();
    assert_eq!(storage.integration(&rec.id).unwrap(), Some(rec.clone()));
    assert_eq!(
        storage.integration_by_client(&rec.client_id).unwrap(),
        Some(rec.clone())
    );
    assert_eq!(storage.integration_id_by_slot(&slot).unwrap(), Some(rec.id.clone()));
    let prev_slot = &rec.previous_secret.as_ref().unwrap().slot_id;
    assert_eq!(storage.integration_id_by_slot(prev_slot).unwrap(), Some(rec.id.clone()));
    assert_eq!(storage.day_usage(&rec.id, 20_000).unwrap(), Some(usage));
    assert_eq!(
        storage.usage_range(&rec.id, 19_990, 20_010).unwrap(),
        vec![(20_000, usage)]
    );
    assert_eq!(
        storage.revoked_tokens(&rec.id).unwrap(),
        vec![("jti-1".to_string(), 777)]
    );
    assert_eq!(storage.admin_key(&admin.id).unwrap(), Some(admin));
    assert_eq!(storage.signing_keys().unwrap(), vec![signing]);
    assert_eq!(storage.slot_use(&slot).unwrap().unwrap().ip, "127.0.0.1");
    let entries = storage.audit_query(&AuditFilter::default(), None, 10).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].event.kind, "integration.created");
}

#[tokio::test]
async fn listing_filters_by_organisation_and_pages_by_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    let mut acme = Vec::new();
    for i in 0..5 {
        let mut rec = sample_integration();
        if i % 2 == 1 {
            rec.org_id = OrgId::parse("globex").unwrap();
        } else {
            acme.push(rec.id.clone());
        }
        storage.batch().put_integration(&rec).commit().await.unwrap();
    }
    acme.sort();
    let org = OrgId::parse("acme").unwrap();
    let first = storage.list_integrations(Some(&org), None, 2).unwrap();
    let rest = storage.list_integrations(Some(&org), Some(&first[1].id), 10).unwrap();
    let ids: Vec<_> = first.iter().chain(&rest).map(|r| r.id.clone()).collect();
    assert_eq!(ids, acme);
    assert_eq!(storage.list_integrations(None, None, 100).unwrap().len(), 5);
    assert_eq!(storage.integration_count(), 5);
}

#[tokio::test]
async fn audit_chain_verifies_and_a_tampered_entry_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    let rec = sample_integration();
    for kind in ["a.one", "a.two", "a.three", "a.four"] {
        storage.batch().audit(event(kind, Some(&rec))).commit().await.unwrap();
    }
    let report = storage.audit_verify().unwrap();
    assert_eq!(report.entries_checked, 4);
    assert_eq!(report.first_broken, None);

    assert!(storage.tamper_audit_entry_for_tests(3, "a.three", "a.THREE").unwrap());
    let report = storage.audit_verify().unwrap();
    let broken = report.first_broken.expect("tampering must be detected");
    assert_eq!(broken.seq, 3);
    assert!(broken.problem.contains("altered"), "{}", broken.problem);
}

#[tokio::test]
async fn audit_chain_continues_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(dir.path()).unwrap();
        storage.batch().audit(event("x.one", None)).commit().await.unwrap();
    }
    let storage = Storage::open(dir.path()).unwrap();
    let receipt = storage.batch().audit(event("x.two", None)).commit().await.unwrap();
    assert_eq!(receipt.audit_seqs, vec![2]);
    assert_eq!(storage.audit_verify().unwrap().first_broken, None);
}

#[tokio::test]
async fn concurrent_commits_share_flushes_and_keep_the_chain_gapless() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    let rec = sample_integration();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let storage = storage.clone();
        let e = event("token.issued", Some(&rec));
        tasks.push(tokio::spawn(async move {
            storage.batch().audit(e).commit().await.unwrap().audit_seqs[0]
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    let report = storage.audit_verify().unwrap();
    assert_eq!((report.entries_checked, report.first_broken), (200, None));
    let filter = AuditFilter {
        integration_id: Some(rec.id.clone()),
        ..AuditFilter::default()
    };
    let page = storage.audit_query(&filter, None, 50).unwrap();
    assert_eq!(page.len(), 50);
    assert_eq!(page[0].seq, 200, "newest first");
    let next = storage.audit_query(&filter, Some(page[49].seq), 500).unwrap();
    assert_eq!(next.len(), 150);
}

#[tokio::test]
async fn audit_filters_by_type_prefix_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    for (i, kind) in ["token.issued", "token.refused", "integration.disabled"]
        .iter()
        .enumerate()
    {
        let mut e = event(kind, None);
        e.at_ms = 1_000 * (i as u64 + 1);
        storage.batch().audit(e).commit().await.unwrap();
    }
    let by_prefix = AuditFilter {
        kind: Some("token.".into()),
        ..AuditFilter::default()
    };
    assert_eq!(storage.audit_query(&by_prefix, None, 10).unwrap().len(), 2);
    let by_time = AuditFilter {
        from_ms: Some(2_000),
        to_ms: Some(3_000),
        ..AuditFilter::default()
    };
    let hits = storage.audit_query(&by_time, None, 10).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].event.kind, "token.refused");
}

#[test]
fn a_data_dir_of_another_schema_version_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(dir.path()).unwrap();
        storage
            .inner
            .trees
            .meta
            .insert("schema_version", &99u32.to_be_bytes())
            .unwrap();
        storage.inner.db.flush().unwrap();
    }
    let err = Storage::open(dir.path()).unwrap_err();
    assert!(matches!(err, StorageError::UnsupportedSchema { found: 99, .. }));
    let message = err.to_string();
    assert!(
        message.contains("schema version 99") && message.contains("fresh --data-dir"),
        "{message}"
    );
}

#[test]
fn a_data_dir_in_use_by_another_handle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Storage::open(dir.path()).unwrap();
    // sled takes an exclusive file lock: a second opener must fail, not share.
    match Storage::open(dir.path()) {
        Err(StorageError::Io(msg)) => assert!(msg.contains("cannot open data directory"), "{msg}"),
        other => panic!("expected a lock error, got {other:?}"),
    }
}

#[test]
fn records_written_before_secret_max_age_still_read() {
    let mut value = serde_json::to_value(sample_integration()).unwrap();
    let object = value.as_object_mut().unwrap();
    object.remove("secret_max_age_seconds");
    object["current_secret"]
        .as_object_mut()
        .unwrap()
        .remove("expiry_noticed");
    let old: IntegrationRecord = serde_json::from_value(value).unwrap();
    assert_eq!(old.secret_max_age_seconds, None);
    assert!(!old.current_secret.unwrap().expiry_noticed);
}
