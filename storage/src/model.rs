//! Domain values and the records Tollgate persists.
//!
//! Every identifier is a newtype with a private field and a validating `parse`, so a
//! value that exists has already been checked; HTTP crates convert request DTOs into
//! these at the handler boundary.

use std::fmt;

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};

/// Why a value was refused by a `parse`: says what was wrong and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {problem}")]
pub struct ValidationError {
    /// Which kind of value was being parsed (`"client id"`, `"scope"`, …).
    pub what: &'static str,
    /// What is wrong with it and what would be accepted.
    pub problem: String,
}

impl ValidationError {
    pub(crate) fn new(what: &'static str, problem: impl Into<String>) -> Self {
        Self {
            what,
            problem: problem.into(),
        }
    }
}

/// `n` characters drawn uniformly from the 62 letters and digits.
pub fn random_base62(n: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(n).map(char::from).collect()
}

fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Declares a string newtype with `parse`, `as_str`, `Display` and serde that
/// validates on the way in (a tampered record fails to load rather than smuggling an
/// invalid id through).
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `s` and wraps it.
            pub fn parse(s: &str) -> Result<Self, ValidationError> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(s).map_err(|problem| ValidationError::new($what, problem))?;
                Ok(Self(s.to_owned()))
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
    };
}

fn prefixed_base62(s: &str, prefix: &str, len: usize) -> Result<(), String> {
    match s.strip_prefix(prefix) {
        Some(rest) if rest.len() == len && is_base62(rest) => Ok(()),
        _ => Err(format!("expected `{prefix}` followed by {len} letters or digits")),
    }
}

string_id!(
    /// A webhook endpoint's id: `whk_` + 12 base62 characters.
    WebhookId,
    "webhook id",
    |s| prefixed_base62(s, "whk_", 12)
);

string_id!(
    /// The integration's public OAuth client id: `tgc_` + 20 base62 characters.
    ClientId,
    "client id",
    |s| prefixed_base62(s, "tgc_", 20)
);

string_id!(
    /// Tollgate's internal id of an integration: `int_` + 16 base62 characters.
    /// Separate from the client id so that admin URLs do not expose the OAuth id.
    IntegrationId,
    "integration id",
    |s| prefixed_base62(s, "int_", 16)
);

string_id!(
    /// Identifies one secret slot (10 base62); it is embedded in the secret so that a
    /// presented secret finds its integration without any hash lookup.
    SlotId,
    "secret slot id",
    |s| if s.len() == 10 && is_base62(s) {
        Ok(())
    } else {
        Err("expected 10 letters or digits".into())
    }
);

string_id!(
    /// An organisation (tenant) id: 1–64 of `a-z 0-9 _ -`, starting with a letter or digit.
    OrgId,
    "organisation id",
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(())
        } else {
            Err("use 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit".into())
        }
    }
);

string_id!(
    /// An OAuth scope: 1–64 of `a-z 0-9 _ . : -` (e.g. `conversations:read`).
    Scope,
    "scope",
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':' | b'-')
            });
        if ok {
            Ok(())
        } else {
            Err("use 1 to 64 of a-z, 0-9, '_', '.', ':' and '-'".into())
        }
    }
);

string_id!(
    /// Id of an admin key (`tgk_` + 12 base62); the key itself is never stored.
    AdminKeyId,
    "admin key id",
    |s| prefixed_base62(s, "tgk_", 12)
);

impl ClientId {
    /// A fresh random client id.
    pub fn generate() -> Self {
        Self(format!("tgc_{}", random_base62(20)))
    }
}

impl IntegrationId {
    /// A fresh random integration id.
    pub fn generate() -> Self {
        Self(format!("int_{}", random_base62(16)))
    }
}

impl SlotId {
    /// A fresh random slot id.
    pub fn generate() -> Self {
        Self(random_base62(10))
    }
}

impl WebhookId {
    /// A fresh random webhook id.
    pub fn generate() -> Self {
        Self(format!("whk_{}", random_base62(12)))
    }
}

impl AdminKeyId {
    /// A fresh random admin key id.
    pub fn generate() -> Self {
        Self(format!("tgk_{}", random_base62(12)))
    }
}

/// Largest number of scopes one integration may hold.
pub const MAX_SCOPES: usize = 64;
/// Longest integration name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// Parses a list of scopes: each valid, no duplicates, at most [`MAX_SCOPES`].
pub fn parse_scopes<S: AsRef<str>>(items: &[S]) -> Result<Vec<Scope>, ValidationError> {
    if items.len() > MAX_SCOPES {
        return Err(ValidationError::new(
            "scopes",
            format!("{} scopes given, at most {MAX_SCOPES} are allowed", items.len()),
        ));
    }
    let mut out: Vec<Scope> = Vec::with_capacity(items.len());
    for item in items {
        let scope = Scope::parse(item.as_ref())?;
        if out.contains(&scope) {
            return Err(ValidationError::new("scopes", format!("`{scope}` is listed twice")));
        }
        out.push(scope);
    }
    Ok(out)
}

/// Validates a human-readable integration name: 1–200 characters, no control characters.
pub fn parse_name(name: &str) -> Result<String, ValidationError> {
    let trimmed = name.trim();
    let count = trimmed.chars().count();
    if count == 0 || count > MAX_NAME_CHARS {
        return Err(ValidationError::new(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters (got {count})"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ValidationError::new("name", "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

/// A daily request quota: 1 to 1,000,000,000 requests per UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct DailyQuota(u64);

impl DailyQuota {
    /// The largest quota accepted.
    pub const MAX: u64 = 1_000_000_000;

    /// Validates the range.
    pub fn new(n: u64) -> Result<Self, ValidationError> {
        if (1..=Self::MAX).contains(&n) {
            Ok(Self(n))
        } else {
            Err(ValidationError::new(
                "daily quota",
                format!("{n} is out of range: use 1 to {}", Self::MAX),
            ))
        }
    }

    /// Requests per day.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for DailyQuota {
    type Error = ValidationError;
    fn try_from(n: u64) -> Result<Self, Self::Error> {
        Self::new(n)
    }
}

impl From<DailyQuota> for u64 {
    fn from(q: DailyQuota) -> u64 {
        q.0
    }
}

/// Where an integration is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntegrationStatus {
    /// Can obtain tokens and make requests.
    Active,
    /// Refused everything until enabled again.
    Disabled,
    /// Permanently off-boarded: secrets erased, tokens dead; the record is kept for audit.
    Revoked,
}

impl IntegrationStatus {
    /// The lowercase name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Revoked => "revoked",
        }
    }
}

/// One stored secret: only its Argon2id PHC string, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSlot {
    /// Embedded in the secret, so the secret finds this slot directly.
    pub slot_id: SlotId,
    /// Argon2id PHC string of the full secret.
    pub phc: String,
    /// When the secret was issued (Unix ms).
    pub created_at_ms: u64,
    /// Set on the previous slot during a rotation: the end of its grace window.
    pub expires_at_ms: Option<u64>,
    /// Whether `secret.expiring` was already audited for this slot (max secret age).
    #[serde(default)]
    pub expiry_noticed: bool,
    /// Whether `secret.grace_ending` was already audited for this (previous) slot.
    #[serde(default)]
    pub grace_noticed: bool,
}

/// Everything Tollgate knows about one integration, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrationRecord {
    /// Internal id used in admin URLs.
    pub id: IntegrationId,
    /// Public OAuth client id.
    pub client_id: ClientId,
    /// Owning organisation.
    pub org_id: OrgId,
    /// Human-readable name.
    pub name: String,
    /// Scopes tokens may carry.
    pub scopes: Vec<Scope>,
    /// Requests per UTC day.
    pub daily_quota: DailyQuota,
    /// Lifetime of issued access tokens.
    pub token_ttl_seconds: u32,
    /// Token-endpoint rate limit for this integration.
    pub token_requests_per_minute: u32,
    /// Lifecycle state.
    pub status: IntegrationStatus,
    /// Why it was disabled, when it is.
    pub disabled_reason: Option<String>,
    /// The secret in use; `None` once revoked.
    pub current_secret: Option<SecretSlot>,
    /// The rotated-out secret while its grace window runs.
    pub previous_secret: Option<SecretSlot>,
    /// Tokens issued before this instant (Unix ms) are refused (incident rotation, revoke).
    pub tokens_valid_after_ms: u64,
    /// Creation time (Unix ms).
    pub created_at_ms: u64,
    /// Last change (Unix ms).
    pub updated_at_ms: u64,
    /// Secrets older than this stop working (`None`: no limit).
    #[serde(default)]
    pub secret_max_age_seconds: Option<u64>,
}

/// When and from where a secret slot was last used successfully.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotUse {
    /// Unix ms of the last successful authentication with this slot.
    pub at_ms: u64,
    /// Source IP of that request.
    pub ip: String,
}

/// The persisted usage of one integration on one UTC day.
///
/// `reserved` runs *ahead* of the live count (see the engine's quota counter): after
/// a crash the count resumes here, so it can over-count by at most one block but
/// never under-count. `hourly` sums to `reserved`: the reserved-ahead part is booked
/// to the hour in which it was reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DayUsage {
    /// Requests counted (or reserved) for the day.
    pub reserved: u64,
    /// Per UTC hour of the day.
    pub hourly: [u64; 24],
}

impl DayUsage {
    pub(crate) const ENCODED_LEN: usize = 8 * 25;

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::ENCODED_LEN);
        out.extend_from_slice(&self.reserved.to_be_bytes());
        for h in self.hourly {
            out.extend_from_slice(&h.to_be_bytes());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::ENCODED_LEN {
            return None;
        }
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_be_bytes(b)
        };
        let mut hourly = [0u64; 24];
        for (h, slot) in hourly.iter_mut().enumerate() {
            *slot = word(h + 1);
        }
        Some(Self {
            reserved: word(0),
            hourly,
        })
    }
}

/// A stored admin key: the key is shown once and kept only as an Argon2id hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminKeyRecord {
    /// Public id, embedded in the key.
    pub id: AdminKeyId,
    /// Argon2id PHC string of the key.
    pub phc: String,
    /// What the key is for.
    pub label: String,
    /// Limits the key to one organisation.
    pub org_id: Option<OrgId>,
    /// Limits the key to reading.
    pub is_read_only: bool,
    /// Creation time (Unix ms).
    pub created_at_ms: u64,
    /// Set when the key was revoked.
    pub revoked_at_ms: Option<u64>,
}

/// A token-signing key pair (Ed25519).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    /// Key id, the JWT `kid`.
    pub kid: String,
    /// PKCS#8 private key, PEM.
    pub private_pem: String,
    /// Raw public key, base64url (the JWK `x`).
    pub public_x: String,
    /// Creation time (Unix ms).
    pub created_at_ms: u64,
    /// When a newer key replaced it; it stays published until its tokens expire.
    pub retired_at_ms: Option<u64>,
}

/// Settings of one organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgSettings {
    /// The organisation.
    pub org_id: OrgId,
    /// Maximum secret age given to its new integrations that do not set their own.
    pub secret_max_age_days: Option<u32>,
    /// Last change (Unix ms).
    pub updated_at_ms: u64,
}

/// A webhook endpoint: where an organisation's (or one integration's) events go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRecord {
    /// Its id.
    pub id: WebhookId,
    /// Whose events.
    pub org_id: OrgId,
    /// Only this integration's events, when set.
    pub integration_id: Option<IntegrationId>,
    /// Where to POST (`http` or `https`).
    pub url: String,
    /// The HMAC key deliveries are signed with (shown once at creation; kept in clear
    /// because signing needs it, like the token-signing keys).
    pub secret: String,
    /// Event types to send; empty means all.
    pub events: Vec<String>,
    /// Only audit entries after this one become its events (none from before it existed).
    pub from_audit_seq: u64,
    /// Creation time (Unix ms).
    pub created_at_ms: u64,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not yet answered with 2xx; retried until it is or until it gives up.
    Pending,
    /// Answered with 2xx.
    Delivered,
    /// Given up on.
    Failed,
}

/// One try at delivering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// When (Unix ms).
    pub at_ms: u64,
    /// The HTTP status answered, if any.
    pub status_code: Option<u16>,
    /// What went wrong (connection, timeout), if anything.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

impl DeliveryAttempt {
    /// Answered with 2xx.
    pub fn is_success(&self) -> bool {
        self.status_code.is_some_and(|c| (200..300).contains(&c))
    }
}

/// One event on its way to one webhook: the durable outbox entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// Unique, increasing.
    pub seq: u64,
    /// The endpoint.
    pub webhook_id: WebhookId,
    /// The event's id (`evt_<audit seq>`): the same in every retry, for de-duplication.
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// The exact JSON body sent.
    pub body: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Every try so far, oldest first (the last 20 are kept).
    pub attempts: Vec<DeliveryAttempt>,
    /// When to try next (Unix ms), while pending.
    pub next_attempt_at_ms: u64,
    /// When the event was queued (Unix ms).
    pub created_at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_ids_parse_back() {
        for _ in 0..100 {
            let c = ClientId::generate();
            assert_eq!(ClientId::parse(c.as_str()).unwrap(), c);
            let i = IntegrationId::generate();
            assert_eq!(IntegrationId::parse(i.as_str()).unwrap(), i);
            let s = SlotId::generate();
            assert_eq!(SlotId::parse(s.as_str()).unwrap(), s);
        }
    }

    #[test]
    fn ids_with_wrong_prefix_or_length_are_refused() {
        assert!(ClientId::parse("tgx_aaaaaaaaaaaaaaaaaaaa").is_err());
        assert!(ClientId::parse("tgc_aaaa").is_err());
        assert!(ClientId::parse("tgc_aaaaaaaaaaaaaaaaaaa!").is_err());
        let err = OrgId::parse("Acme").unwrap_err();
        assert!(err.to_string().contains("organisation id"), "{err}");
    }

    #[test]
    fn scope_lists_refuse_duplicates_and_bad_syntax() {
        assert!(parse_scopes(&["a:read", "b:write"]).is_ok());
        assert!(parse_scopes(&["a:read", "a:read"]).is_err());
        assert!(parse_scopes(&["A:read"]).is_err());
        assert!(parse_scopes(&[""]).is_err());
        let many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
        assert!(parse_scopes(&many).is_err());
    }

    #[test]
    fn quota_range_is_enforced() {
        assert!(DailyQuota::new(0).is_err());
        assert!(DailyQuota::new(1).is_ok());
        assert!(DailyQuota::new(DailyQuota::MAX + 1).is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(parse_name("  CRM sync ").unwrap(), "CRM sync");
        assert!(parse_name("   ").is_err());
        assert!(parse_name(&"x".repeat(201)).is_err());
        assert!(parse_name("a\u{0}b").is_err());
        assert_eq!(parse_name("Zoë's CRM ✓").unwrap(), "Zoë's CRM ✓");
    }

    proptest! {
        #[test]
        fn scope_parse_accepts_exactly_the_documented_alphabet(s in "\\PC{0,70}") {
            let expected = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':' | b'-')
            });
            prop_assert_eq!(Scope::parse(&s).is_ok(), expected);
        }

        #[test]
        fn day_usage_round_trips(reserved in any::<u64>(), hourly in proptest::array::uniform24(any::<u64>())) {
            let usage = DayUsage { reserved, hourly };
            prop_assert_eq!(DayUsage::decode(&usage.encode()), Some(usage));
        }
    }
}
