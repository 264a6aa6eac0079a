//! The audit log: append-only, hash-chained, indexed per integration.
//!
//! Entries are written only by the group-commit thread (see [`crate::commit`]), which
//! assigns the sequence number and the link to the previous entry, so the chain has
//! one writer and no gaps. Each stored value is `hash || body`, where `body` is the
//! JSON of [`AuditEntryBody`] and `hash = SHA-256(body)`; `body` contains the previous
//! entry's hash. Verification therefore checks stored bytes, never a re-serialisation.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{AdminKeyId, ClientId, IntegrationId, OrgId, SlotId};

/// The hash that the first entry links to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, as recorded. Never carries a secret, token or admin key: only ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AuditEvent {
    /// When it happened (Unix ms).
    pub at_ms: u64,
    /// Event type, dotted (`integration.created`, `token.issued`, `quota.exhausted`, …).
    pub kind: String,
    /// Integration concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integration_id: Option<IntegrationId>,
    /// Its client id, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<ClientId>,
    /// Its organisation, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<OrgId>,
    /// The admin key that acted, for admin actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_key_id: Option<AdminKeyId>,
    /// Source IP of the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// User agent of the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// `success` or `failure` (or another short word).
    pub outcome: String,
    /// Why, for failures and admin actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Which secret slot matched or was affected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_id: Option<SlotId>,
    /// Token id issued or revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Anything else (what changed, thresholds, …).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// The hashed part of a stored entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntryBody {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// Hash of the entry before (hex), or [`GENESIS_HASH`].
    pub prev_hash: String,
    /// The event.
    pub event: AuditEvent,
}

/// An audit entry as read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log.
    pub seq: u64,
    /// This entry's hash (hex).
    pub hash: String,
    /// The previous entry's hash (hex).
    pub prev_hash: String,
    /// The event.
    pub event: AuditEvent,
}

/// Filters for audit queries; all given ones must match.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this organisation.
    pub org_id: Option<OrgId>,
    /// Only this integration.
    pub integration_id: Option<IntegrationId>,
    /// Only this event type, or a prefix ending in `.` (`token.` matches `token.issued`).
    pub kind: Option<String>,
    /// At or after (Unix ms).
    pub from_ms: Option<u64>,
    /// Before (Unix ms).
    pub to_ms: Option<u64>,
}

impl AuditFilter {
    pub(crate) fn matches(&self, e: &AuditEvent) -> bool {
        if self.org_id.as_ref().is_some_and(|org| e.org_id.as_ref() != Some(org)) {
            return false;
        }
        if self
            .integration_id
            .as_ref()
            .is_some_and(|id| e.integration_id.as_ref() != Some(id))
        {
            return false;
        }
        if let Some(kind) = &self.kind {
            let ok = if kind.ends_with('.') {
                e.kind.starts_with(kind.as_str())
            } else {
                &e.kind == kind
            };
            if !ok {
                return false;
            }
        }
        if self.from_ms.is_some_and(|from| e.at_ms < from) {
            return false;
        }
        if self.to_ms.is_some_and(|to| e.at_ms >= to) {
            return false;
        }
        true
    }
}

/// The outcome of verifying the whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// Entries checked.
    pub entries_checked: u64,
    /// `None` when the chain holds; otherwise the first broken link.
    pub first_broken: Option<BrokenLink>,
}

/// Where and why the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    /// Sequence number of the first entry that does not verify.
    pub seq: u64,
    /// What is wrong with it.
    pub problem: String,
}

pub(crate) fn hash_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Encodes a stored value: 64 hex characters of hash, then the body.
pub(crate) fn encode_entry(body: &AuditEntryBody) -> Result<(String, Vec<u8>), serde_json::Error> {
    let body_bytes = serde_json::to_vec(body)?;
    let hash = hash_hex(&body_bytes);
    let mut value = Vec::with_capacity(64 + body_bytes.len());
    value.extend_from_slice(hash.as_bytes());
    value.extend_from_slice(&body_bytes);
    Ok((hash, value))
}

/// Splits and parses a stored value; `Err` says what is malformed.
pub(crate) fn decode_entry(value: &[u8]) -> Result<(String, &[u8], AuditEntryBody), String> {
    if value.len() < 64 {
        return Err("entry is shorter than its hash".into());
    }
    let (hash, body_bytes) = value.split_at(64);
    let hash = std::str::from_utf8(hash)
        .map_err(|_| "stored hash is not text".to_string())?
        .to_owned();
    let body: AuditEntryBody =
        serde_json::from_slice(body_bytes).map_err(|e| format!("entry body does not parse: {e}"))?;
    Ok((hash, body_bytes, body))
}
