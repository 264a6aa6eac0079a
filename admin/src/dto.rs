//! Response shapes of the admin API and RFC 3339 time formatting.

use serde::Serialize;
use serde_json::Value;
use tollgate_engine::storage::audit::AuditEntry;
use tollgate_engine::{IntegrationView, SlotRole};
use utoipa::ToSchema;

/// Unix ms as RFC 3339 (UTC, seconds precision).
pub fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Parses RFC 3339 into Unix ms.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    // Times before 1970 come first of all: the start of the log.
    Some(u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
}

/// A secret slot as shown (never the hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretDto {
    /// Slot id (part of the secret; safe to show).
    pub slot_id: String,
    /// `current` or `previous`.
    pub role: &'static str,
    /// When issued.
    pub created_at: String,
    /// Age in seconds.
    pub age_seconds: u64,
    /// End of the grace window (previous secret).
    pub expires_at: Option<String>,
    /// Seconds left of the grace window (server time), for countdowns.
    pub expires_in_seconds: Option<u64>,
    /// Whether the grace window is over.
    pub expired: bool,
    /// When the secret reaches the integration's maximum secret age and stops working.
    pub due_at: Option<String>,
    /// Seconds until then (server time); 0 once passed.
    pub due_in_seconds: Option<u64>,
    /// Last successful use.
    pub last_used_at: Option<String>,
    /// From where.
    pub last_used_ip: Option<String>,
}

/// Today's usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageTodayDto {
    /// Requests counted today.
    pub used: u64,
    /// The daily quota.
    pub limit: u64,
    /// What is left.
    pub remaining: u64,
}

/// An integration as the admin API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationDto {
    /// Internal id (used in URLs).
    pub id: String,
    /// OAuth client id.
    pub client_id: String,
    /// Organisation.
    pub org_id: String,
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Requests per UTC day.
    pub daily_quota: u64,
    /// Token lifetime.
    pub token_ttl_seconds: u32,
    /// Token-endpoint rate.
    pub token_requests_per_minute: u32,
    /// Secrets stop working at this age in days; `null`: no limit.
    pub secret_max_age_days: Option<u32>,
    /// `active`, `disabled` or `revoked`.
    pub status: &'static str,
    /// Why disabled.
    pub disabled_reason: Option<String>,
    /// Secret slots.
    pub secrets: Vec<SecretDto>,
    /// A rotation's grace window is running.
    pub rotation_in_progress: bool,
    /// Tokens issued before this are refused.
    pub tokens_valid_after: Option<String>,
    /// Today's usage (live).
    pub usage_today: UsageTodayDto,
    /// Created.
    pub created_at: String,
    /// Last changed.
    pub updated_at: String,
}

impl IntegrationDto {
    /// From the engine's view at `now_ms`.
    pub fn from_view(v: &IntegrationView, now_ms: u64) -> Self {
        let secrets: Vec<SecretDto> = v
            .secrets
            .iter()
            .map(|s| SecretDto {
                slot_id: s.slot_id.to_string(),
                role: match s.role {
                    SlotRole::Current => "current",
                    SlotRole::Previous => "previous",
                },
                created_at: rfc3339(s.created_at_ms),
                age_seconds: now_ms.saturating_sub(s.created_at_ms) / 1000,
                expires_at: s.expires_at_ms.map(rfc3339),
                expires_in_seconds: s.expires_at_ms.map(|at| at.saturating_sub(now_ms) / 1000),
                expired: s.is_expired,
                due_at: s.due_at_ms.map(rfc3339),
                due_in_seconds: s.due_at_ms.map(|due| due.saturating_sub(now_ms) / 1000),
                last_used_at: s.last_used.as_ref().map(|u| rfc3339(u.at_ms)),
                last_used_ip: s.last_used.as_ref().map(|u| u.ip.clone()),
            })
            .collect();
        let rotation_in_progress = secrets.iter().any(|s| s.role == "previous" && !s.expired);
        let limit = v.daily_quota.get();
        Self {
            id: v.id.to_string(),
            client_id: v.client_id.to_string(),
            org_id: v.org_id.to_string(),
            name: v.name.clone(),
            scopes: v.scopes.iter().map(ToString::to_string).collect(),
            daily_quota: limit,
            token_ttl_seconds: v.token_ttl_seconds,
            token_requests_per_minute: v.token_requests_per_minute,
            secret_max_age_days: v.secret_max_age_days,
            status: v.status.as_str(),
            disabled_reason: v.disabled_reason.clone(),
            secrets,
            rotation_in_progress,
            tokens_valid_after: (v.tokens_valid_after_ms > 0).then(|| rfc3339(v.tokens_valid_after_ms)),
            usage_today: UsageTodayDto {
                used: v.used_today,
                limit,
                remaining: limit.saturating_sub(v.used_today),
            },
            created_at: rfc3339(v.created_at_ms),
            updated_at: rfc3339(v.updated_at_ms),
        }
    }
}

/// An audit entry as shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryDto {
    /// Sequence number (also the pagination cursor).
    pub seq: u64,
    /// When.
    pub at: String,
    /// Event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Integration.
    pub integration_id: Option<String>,
    /// Client id.
    pub client_id: Option<String>,
    /// Organisation.
    pub org_id: Option<String>,
    /// Admin key that acted.
    pub admin_key_id: Option<String>,
    /// Source IP.
    pub source_ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// Reason.
    pub reason: Option<String>,
    /// Secret slot.
    pub slot_id: Option<String>,
    /// Token id.
    pub jti: Option<String>,
    /// Details.
    #[schema(value_type = Object)]
    pub details: Value,
    /// This entry's hash.
    pub hash: String,
    /// The previous entry's hash.
    pub prev_hash: String,
}

impl From<&AuditEntry> for AuditEntryDto {
    fn from(e: &AuditEntry) -> Self {
        let ev = &e.event;
        Self {
            seq: e.seq,
            at: rfc3339(ev.at_ms),
            kind: ev.kind.clone(),
            integration_id: ev.integration_id.as_ref().map(ToString::to_string),
            client_id: ev.client_id.as_ref().map(ToString::to_string),
            org_id: ev.org_id.as_ref().map(ToString::to_string),
            admin_key_id: ev.admin_key_id.as_ref().map(ToString::to_string),
            source_ip: ev.source_ip.clone(),
            user_agent: ev.user_agent.clone(),
            outcome: ev.outcome.clone(),
            reason: ev.reason.clone(),
            slot_id: ev.slot_id.as_ref().map(ToString::to_string),
            jti: ev.jti.clone(),
            details: match &ev.details {
                Value::Null => Value::Object(serde_json::Map::new()),
                other => other.clone(),
            },
            hash: e.hash.clone(),
            prev_hash: e.prev_hash.clone(),
        }
    }
}

/// Every error: a stable code and a readable message.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code (`unauthorized`, `not_found`, `conflict`, …).
    pub error: String,
    /// What happened and what to do.
    pub message: String,
}

/// `POST /admin/v1/integrations` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedDto {
    /// The integration.
    pub integration: IntegrationDto,
    /// The secret, shown this once and stored only as a hash.
    pub client_secret: String,
}

/// A page of integrations.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationPage {
    /// This page.
    pub integrations: Vec<IntegrationDto>,
    /// Pass as `cursor` for the next page; `null` at the end.
    pub next_cursor: Option<String>,
}

/// `POST .../rotate` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedDto {
    /// The new secret, shown this once.
    pub client_secret: String,
    /// When the old secret stops working; `null` when it already has (incident).
    pub previous_secret_expires_at: Option<String>,
    /// The integration after the rotation.
    pub integration: IntegrationDto,
}

/// One day of usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayDto {
    /// UTC date, `YYYY-MM-DD`.
    pub date: String,
    /// Requests counted.
    pub count: u64,
}

/// `GET .../usage` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageDto {
    /// Today's daily quota.
    pub daily_quota: u64,
    /// Oldest first, today last (live).
    pub days: Vec<DayDto>,
    /// Today by UTC hour, 24 numbers (live).
    pub hourly_today: Vec<u64>,
}

/// A page of audit entries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// This page.
    pub entries: Vec<AuditEntryDto>,
    /// Pass as `cursor` for the next page; `null` at the end.
    pub next_cursor: Option<u64>,
}

/// Where the audit chain breaks.
#[derive(Debug, Serialize, ToSchema)]
pub struct BrokenLinkDto {
    /// The first entry that does not verify.
    pub seq: u64,
    /// What is wrong with it.
    pub problem: String,
}

/// `GET /admin/v1/audit/verify` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyDto {
    /// The whole chain verifies.
    pub ok: bool,
    /// Entries checked.
    pub entries_checked: u64,
    /// The first broken link, if any.
    pub first_broken: Option<BrokenLinkDto>,
}
