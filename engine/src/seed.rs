//! Bulk seeding for benchmarks and load tests.
//!
//! Writes integrations straight to storage with a placeholder secret hash that no
//! secret can ever verify against, so that seeding thousands (or a million) does not
//! cost one Argon2 run each. Checks, quotas and residency behave as for any
//! integration; token requests for seeded integrations are refused.

use tollgate_storage::model::{
    ClientId, DailyQuota, IntegrationId, IntegrationRecord, IntegrationStatus, OrgId, SecretSlot, SlotId,
};
use tollgate_storage::{Storage, StorageError};

/// Integrations written per durable batch.
const BATCH: usize = 10_000;

/// Writes `n` active integrations of `org` with `daily_quota`; returns their client
/// ids. `progress` is called with the running count after each batch.
pub async fn seed_integrations(
    storage: &Storage,
    n: usize,
    org: &OrgId,
    daily_quota: DailyQuota,
    mut progress: impl FnMut(usize),
) -> Result<Vec<ClientId>, StorageError> {
    let mut clients = Vec::with_capacity(n);
    while clients.len() < n {
        let chunk = (n - clients.len()).min(BATCH);
        let mut batch = storage.batch();
        for _ in 0..chunk {
            let rec = IntegrationRecord {
                id: IntegrationId::generate(),
                client_id: ClientId::generate(),
                org_id: org.clone(),
                name: "seeded".into(),
                scopes: vec![],
                daily_quota,
                token_ttl_seconds: 3600,
                token_requests_per_minute: 10_000_000,
                status: IntegrationStatus::Active,
                disabled_reason: None,
                current_secret: Some(SecretSlot {
                    slot_id: SlotId::generate(),
                    // Not a PHC string: verification of any secret against it fails.
                    phc: "seeded-without-a-secret".into(),
                    created_at_ms: 0,
                    expires_at_ms: None,
                    expiry_noticed: false,
                    grace_noticed: false,
                }),
                previous_secret: None,
                tokens_valid_after_ms: 0,
                secret_max_age_seconds: None,
                created_at_ms: 0,
                updated_at_ms: 0,
            };
            clients.push(rec.client_id.clone());
            batch = batch.put_integration(&rec);
        }
        batch.commit().await?;
        progress(clients.len());
    }
    Ok(clients)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn seeded_integrations_are_stored_and_their_placeholder_never_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let org = OrgId::parse("seeded").unwrap();
        let mut reported = Vec::new();
        let clients = seed_integrations(&storage, 3, &org, DailyQuota::new(5).unwrap(), |n| reported.push(n))
            .await
            .unwrap();
        assert_eq!(reported, vec![3]);
        let rec = storage.integration_by_client(&clients[0]).unwrap().unwrap();
        let phc = &rec.current_secret.unwrap().phc;
        assert!(!crate::secret::verify_secret("", phc));
        assert!(!crate::secret::verify_secret("seeded-without-a-secret", phc));
    }
}
