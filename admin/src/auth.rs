//! Admin keys and the [`Principal`] extractor.
//!
//! An admin key is `tga_` + its id (12 base62) + `_` + 43 random base62 + a 6-character
//! checksum, shown once and stored only as an Argon2id hash. The bootstrap key may
//! instead be any string of 16+ characters set in `TOLLGATE_ADMIN_KEY`; it is stored
//! under the id `tgk_bootstrap000`. A verified key is remembered as a keyed digest in
//! memory, so only the first request of a key pays for Argon2.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use tollgate_engine::AdminContext;
use tollgate_engine::model::{AdminKeyId, OrgId, random_base62};
use tollgate_engine::secret::{SecretDigest, checksum, digests_equal};

use crate::AdminState;
use crate::error::ApiError;

/// The id under which a free-form bootstrap key is stored.
pub const BOOTSTRAP_KEY_ID: &str = "tgk_bootstrap000";
/// Shortest free-form bootstrap key accepted.
pub const MIN_BOOTSTRAP_KEY_CHARS: usize = 16;

/// A new admin key for `id`: `tga_<id>_<43 random><checksum>`.
pub fn generate_key(id: &AdminKeyId) -> String {
    let head = format!("tga_{}_{}", &id.as_str()[4..], random_base62(43));
    let sum = checksum(&head);
    head + &sum
}

/// The key id a presented key claims (free-form text maps to the bootstrap id).
pub fn key_id_of(presented: &str) -> Result<AdminKeyId, ApiError> {
    let bytes = presented.as_bytes();
    if presented.starts_with("tga_") && presented.len() == 66 && bytes[16] == b'_' {
        let (head, sum) = presented.split_at(60);
        if checksum(head) != sum {
            return Err(ApiError::Unauthorized(
                "the admin key's checksum does not match: it was mistyped or made up".into(),
            ));
        }
        return AdminKeyId::parse(&format!("tgk_{}", &presented[4..16]))
            .map_err(|_| ApiError::Unauthorized("the admin key is malformed".into()));
    }
    Ok(AdminKeyId::parse(BOOTSTRAP_KEY_ID).unwrap_or_else(|_| AdminKeyId::generate()))
}

/// Hashes a new admin key on the engine's bounded pool and stores its record together
/// with `event` (its time is set here), durably: the one place admin keys are created.
pub(crate) async fn store_new_key(
    engine: &tollgate_engine::Engine,
    id: AdminKeyId,
    key: String,
    label: String,
    org_id: Option<OrgId>,
    is_read_only: bool,
    mut event: tollgate_engine::storage::audit::AuditEvent,
) -> tollgate_engine::EngineResult<tollgate_engine::model::AdminKeyRecord> {
    let phc = engine.hash_on_pool(key).await?;
    let now = engine.now_ms();
    let record = tollgate_engine::model::AdminKeyRecord {
        id,
        phc,
        label,
        org_id,
        is_read_only,
        created_at_ms: now,
        revoked_at_ms: None,
    };
    event.at_ms = now;
    engine
        .storage()
        .batch()
        .put_admin_key(&record)
        .audit(event)
        .commit()
        .await?;
    Ok(record)
}

/// Who is calling: an admin key and its limits.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key's id (audited).
    pub key_id: AdminKeyId,
    /// Set for keys limited to one organisation.
    pub org: Option<OrgId>,
    /// Set for read-only keys.
    pub is_read_only: bool,
    /// Source address, for the audit trail.
    pub source_ip: Option<String>,
}

impl Principal {
    /// Refuses read-only keys.
    pub fn require_write(&self) -> Result<(), ApiError> {
        if self.is_read_only {
            Err(ApiError::Forbidden(
                "this admin key is read-only; use a key with write access".into(),
            ))
        } else {
            Ok(())
        }
    }

    /// Whether the key may see `org`'s data.
    pub fn can_see(&self, org: &OrgId) -> bool {
        self.org.as_ref().is_none_or(|own| own == org)
    }

    /// The audit context of actions taken with this key.
    pub fn context(&self) -> AdminContext {
        AdminContext {
            admin_key_id: Some(self.key_id.clone()),
            source_ip: self.source_ip.clone(),
        }
    }
}

/// Verified admin keys: id → digest of the key (memory only).
#[derive(Default)]
pub(crate) struct VerifiedKeys(Mutex<HashMap<AdminKeyId, SecretDigest>>);

impl VerifiedKeys {
    fn matches(&self, id: &AdminKeyId, digest: &SecretDigest) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).is_some_and(|known| digests_equal(known, digest))
    }

    fn remember(&self, id: AdminKeyId, digest: SecretDigest) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(id, digest);
    }

    /// Forgets a key (on revocation).
    pub(crate) fn forget(&self, id: &AdminKeyId) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// The admin key presented in `Authorization: Bearer`.
pub(crate) fn presented_key(headers: &axum::http::HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value.to_str().ok()?;
        let (scheme, key) = text.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| key.trim().to_owned());
    }
    None
}

/// Checks a presented key against storage (Argon2 once, then the digest cache).
pub(crate) async fn authenticate(
    state: &AdminState,
    presented: &str,
    source_ip: Option<String>,
) -> Result<Principal, ApiError> {
    const REFUSED: &str = "the admin key is not valid (unknown, revoked or wrong)";
    if presented.is_empty() || presented.len() > 512 {
        return Err(ApiError::Unauthorized(REFUSED.into()));
    }
    let id = key_id_of(presented)?;
    let record = state
        .engine
        .storage()
        .admin_key(&id)?
        .filter(|r| r.revoked_at_ms.is_none())
        .ok_or_else(|| ApiError::Unauthorized(REFUSED.into()))?;
    let digest = state.engine.digest(presented);
    if !state.verified.matches(&id, &digest) {
        let ok = state
            .engine
            .verify_on_pool(presented.to_owned(), record.phc.clone())
            .await
            .map_err(ApiError::from)?;
        if !ok {
            return Err(ApiError::Unauthorized(REFUSED.into()));
        }
        state.verified.remember(id.clone(), digest);
    }
    Ok(Principal {
        key_id: id,
        org: record.org_id,
        is_read_only: record.is_read_only,
        source_ip,
    })
}

impl FromRequestParts<AdminState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Self::Rejection> {
        let source_ip = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        if let Some(presented) = presented_key(&parts.headers) {
            return authenticate(state, &presented, source_ip).await;
        }
        if let Some(from_session) = crate::dashboard::principal_from_session(parts, state).await {
            return from_session;
        }
        Err(ApiError::Unauthorized(
            "send an admin key: Authorization: Bearer <admin key>".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_name_their_id_and_checksum() {
        let id = AdminKeyId::generate();
        let key = generate_key(&id);
        assert_eq!(key.len(), 66);
        assert_eq!(key_id_of(&key).unwrap(), id);
        let mut typo = key.clone().into_bytes();
        typo[30] = if typo[30] == b'a' { b'b' } else { b'a' };
        assert!(key_id_of(&String::from_utf8(typo).unwrap()).is_err());
        assert_eq!(key_id_of("free-form bootstrap key").unwrap().as_str(), BOOTSTRAP_KEY_ID);
    }
}
