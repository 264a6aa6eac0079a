//! Webhook events: which audit entries become events, their JSON body, the
//! signature, the fan-out into the durable outbox, and the retry schedule. The HTTP
//! sending lives with the server (`tollgate-gateway`); everything that decides what
//! is sent, when, and what survives a crash lives here.
//!
//! The audit log is the source: every event is an audit entry written in the same
//! commit as the change it reports, so nothing can change without its event. The
//! fan-out turns entries after a persisted cursor into one delivery per matching
//! endpoint and advances the cursor in the same commit — after a crash it resumes
//! exactly where it stopped. Deliveries stay in the outbox until answered with 2xx
//! or given up on (at-least-once; receivers de-duplicate by event id).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tollgate_storage::audit::AuditEntry;
use tollgate_storage::model::{DeliveryAttempt, DeliveryRecord, DeliveryStatus, IntegrationId, OrgId, WebhookRecord};
use tollgate_storage::{Storage, StorageError};

/// Every event type an endpoint can receive.
pub const EVENT_TYPES: &[&str] = &[
    "secret.rotated",
    "secret.grace_ending",
    "secret.expiring",
    "secret.leaked",
    "integration.disabled",
    "integration.enabled",
    "integration.revoked",
    "quota.warning",
    "quota.exhausted",
    "auth.lockout",
];

/// Attempts kept on a delivery record (the oldest are dropped).
pub const MAX_ATTEMPTS_KEPT: usize = 20;

/// How deliveries are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay before the second attempt; doubles with every failure.
    pub backoff_base: Duration,
    /// The longest delay between attempts.
    pub backoff_max: Duration,
    /// After this long since the event, a failing delivery is marked failed.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The delay after `failures` failed attempts: exponential, capped, with "full
    /// jitter" between half and all of it so that endpoints coming back are not hit
    /// by every delivery at once. `jitter` is in `[0, 1)`.
    pub fn delay_ms(&self, failures: u32, jitter: f64) -> u64 {
        let base = self.backoff_base.as_millis() as u64;
        let exp = base.saturating_mul(1u64 << failures.saturating_sub(1).min(30));
        let capped = exp.min(self.backoff_max.as_millis() as u64);
        capped / 2 + ((capped / 2) as f64 * jitter.clamp(0.0, 1.0)) as u64
    }

    /// Records an attempt: delivered on 2xx, otherwise retried later or failed.
    pub fn record(&self, delivery: &mut DeliveryRecord, attempt: DeliveryAttempt, jitter: f64) {
        let now = attempt.at_ms;
        let ok = attempt.is_success();
        delivery.attempts.push(attempt);
        if delivery.attempts.len() > MAX_ATTEMPTS_KEPT {
            delivery.attempts.remove(0);
        }
        if ok {
            delivery.status = DeliveryStatus::Delivered;
            return;
        }
        let failures = delivery.attempts.iter().filter(|a| !a.is_success()).count() as u32;
        let next = now + self.delay_ms(failures, jitter);
        if next.saturating_sub(delivery.created_at_ms) > self.give_up_after.as_millis() as u64 {
            delivery.status = DeliveryStatus::Failed;
        } else {
            delivery.next_attempt_at_ms = next;
        }
    }
}

/// The webhook event type of an audit entry's kind, if it is one.
pub fn event_type_of(kind: &str) -> Option<&'static str> {
    match kind {
        "secret.rotated" | "secret.incident_rotated" => Some("secret.rotated"),
        other => EVENT_TYPES.iter().copied().find(|t| *t == other),
    }
}

/// `Tollgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, unix_seconds: u64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("t={unix_seconds},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The event's id: stable across retries and restarts (derived from the audit entry).
pub fn event_id(entry: &AuditEntry) -> String {
    format!("evt_{:016}", entry.seq)
}

fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Whose event an audit entry is: its organisation and integration, looked up by
/// client id when the entry names only that (a client lockout).
#[derive(Debug, Clone)]
pub struct Owner {
    /// The organisation.
    pub org_id: OrgId,
    /// The integration, if the event is about one.
    pub integration_id: Option<IntegrationId>,
}

fn owner_of(storage: &Storage, entry: &AuditEntry) -> Result<Option<Owner>, StorageError> {
    let e = &entry.event;
    if let Some(org_id) = &e.org_id {
        return Ok(Some(Owner {
            org_id: org_id.clone(),
            integration_id: e.integration_id.clone(),
        }));
    }
    // An address locked out across clients belongs to no organisation.
    let Some(client) = &e.client_id else { return Ok(None) };
    Ok(storage.integration_by_client(client)?.map(|r| Owner {
        org_id: r.org_id,
        integration_id: Some(r.id),
    }))
}

/// The JSON body of an event (never a secret: audit entries hold none).
pub fn event_body(entry: &AuditEntry, event_type: &str, owner: &Owner) -> String {
    let e = &entry.event;
    serde_json::json!({
        "id": event_id(entry),
        "type": event_type,
        "created_at": rfc3339(e.at_ms),
        "org_id": owner.org_id,
        "integration_id": owner.integration_id,
        "client_id": e.client_id,
        "data": {
            "audit_type": e.kind,
            "outcome": e.outcome,
            "reason": e.reason,
            "slot_id": e.slot_id,
            "source_ip": e.source_ip,
            "details": e.details,
        },
    })
    .to_string()
}

fn wants(hook: &WebhookRecord, entry: &AuditEntry, event_type: &str, owner: &Owner) -> bool {
    entry.seq > hook.from_audit_seq
        && hook.org_id == owner.org_id
        && hook
            .integration_id
            .as_ref()
            .is_none_or(|id| owner.integration_id.as_ref() == Some(id))
        && (hook.events.is_empty() || hook.events.iter().any(|t| t == event_type))
}

/// What one fan-out step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FanOut {
    /// Audit entries read (fewer than the limit: caught up).
    pub read: usize,
    /// Deliveries queued from them.
    pub queued: usize,
}

/// Turns audit entries after the cursor into pending deliveries, durably and
/// together with the new cursor.
pub async fn fan_out(storage: &Storage, now_ms: u64, limit: usize) -> Result<FanOut, StorageError> {
    let cursor = storage.webhook_cursor()?;
    let entries = storage.audit_after(cursor, limit)?;
    let Some(last) = entries.last().map(|e| e.seq) else {
        return Ok(FanOut::default());
    };
    let mut queued = 0;
    let hooks = storage.webhooks()?;
    let mut batch = storage.batch();
    for entry in &entries {
        let Some(event_type) = event_type_of(&entry.event.kind) else {
            continue;
        };
        let Some(owner) = owner_of(storage, entry)? else {
            continue;
        };
        for hook in hooks.iter().filter(|h| wants(h, entry, event_type, &owner)) {
            let delivery = DeliveryRecord {
                seq: storage.next_delivery_seq()?,
                webhook_id: hook.id.clone(),
                event_id: event_id(entry),
                event_type: event_type.to_owned(),
                body: event_body(entry, event_type, &owner),
                status: DeliveryStatus::Pending,
                attempts: Vec::new(),
                next_attempt_at_ms: now_ms,
                created_at_ms: now_ms,
            };
            batch = batch.put_delivery(&delivery);
            queued += 1;
        }
    }
    batch.set_webhook_cursor(last).commit().await?;
    Ok(FanOut {
        read: entries.len(),
        queued,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery() -> DeliveryRecord {
        DeliveryRecord {
            seq: 1,
            webhook_id: tollgate_storage::model::WebhookId::generate(),
            event_id: "evt_1".into(),
            event_type: "secret.rotated".into(),
            body: "{}".into(),
            status: DeliveryStatus::Pending,
            attempts: vec![],
            next_attempt_at_ms: 0,
            created_at_ms: 0,
        }
    }

    fn failed_at(at_ms: u64) -> DeliveryAttempt {
        DeliveryAttempt {
            at_ms,
            status_code: Some(500),
            error: None,
            duration_ms: 1,
        }
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay_ms(1, 1.0), 5_000);
        assert_eq!(policy.delay_ms(1, 0.0), 2_500);
        assert_eq!(policy.delay_ms(3, 1.0), 20_000);
        assert_eq!(policy.delay_ms(40, 1.0), 3_600_000);
        for failures in 1..10 {
            let d = policy.delay_ms(failures, 0.37);
            assert!(d >= policy.delay_ms(failures, 1.0) / 2 && d <= policy.delay_ms(failures, 1.0));
        }
    }

    #[test]
    fn deliveries_succeed_on_2xx_retry_otherwise_and_give_up_in_the_end() {
        let policy = RetryPolicy::default();
        let mut d = delivery();
        policy.record(&mut d, failed_at(1_000), 1.0);
        assert_eq!((d.status, d.next_attempt_at_ms), (DeliveryStatus::Pending, 6_000));
        policy.record(&mut d, failed_at(6_000), 1.0);
        assert_eq!(d.next_attempt_at_ms, 16_000);
        let ok = DeliveryAttempt {
            status_code: Some(204),
            ..failed_at(16_000)
        };
        policy.record(&mut d, ok, 1.0);
        assert_eq!(d.status, DeliveryStatus::Delivered);

        let mut d = delivery();
        policy.record(&mut d, failed_at(24 * 3_600_000), 1.0);
        assert_eq!(d.status, DeliveryStatus::Failed);
        assert_eq!(event_type_of("secret.incident_rotated"), Some("secret.rotated"));
        assert_eq!(event_type_of("token.issued"), None);
    }

    fn event(kind: &str, org: &str) -> tollgate_storage::audit::AuditEvent {
        tollgate_storage::audit::AuditEvent {
            kind: kind.into(),
            org_id: Some(OrgId::parse(org).unwrap()),
            outcome: "success".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn fan_out_queues_only_what_a_hook_wants_once_and_nothing_from_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let before = event("integration.enabled", "acme");
        storage.batch().audit(before).commit().await.unwrap();
        // The fan-out has not run yet when the hook is created.
        let hook = WebhookRecord {
            id: tollgate_storage::model::WebhookId::generate(),
            org_id: OrgId::parse("acme").unwrap(),
            integration_id: None,
            url: "http://127.0.0.1:9/".into(),
            secret: "s".into(),
            events: vec!["integration.enabled".into(), "secret.rotated".into()],
            from_audit_seq: storage.last_audit_seq().unwrap(),
            created_at_ms: 0,
        };
        storage.batch().put_webhook(&hook).commit().await.unwrap();
        for (kind, org) in [
            ("integration.enabled", "acme"),
            ("token.issued", "acme"),
            ("integration.disabled", "acme"),
            ("integration.enabled", "globex"),
            ("secret.incident_rotated", "acme"),
        ] {
            storage.batch().audit(event(kind, org)).commit().await.unwrap();
        }
        assert_eq!(fan_out(&storage, 5, 100).await.unwrap(), FanOut { read: 6, queued: 2 });
        let queued: Vec<(String, String)> = storage
            .pending_deliveries(100)
            .unwrap()
            .into_iter()
            .map(|d| (d.event_id, d.event_type))
            .collect();
        assert_eq!(
            queued,
            [
                ("evt_0000000000000002".to_owned(), "integration.enabled".to_owned()),
                ("evt_0000000000000006".to_owned(), "secret.rotated".to_owned()),
            ]
        );
        assert_eq!(storage.webhook_cursor().unwrap(), 6);
        assert_eq!(
            fan_out(&storage, 5, 100).await.unwrap(),
            FanOut::default(),
            "caught up: nothing twice"
        );
        assert_eq!(storage.pending_deliveries(100).unwrap().len(), 2);
    }

    #[test]
    fn signatures_cover_time_and_body() {
        let a = signature("k", 10, "{}");
        assert!(a.starts_with("t=10,v1=") && a.len() == 8 + 64);
        assert_ne!(a, signature("k", 11, "{}"));
        assert_ne!(a, signature("k", 10, "{ }"));
        assert_ne!(a, signature("j", 10, "{}"));
    }
}
