//! The [`Engine`] handle and the engine's public types.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorRef, RpcReplyPort};
use tollgate_storage::audit::{AuditEntry, AuditEvent, AuditFilter, ChainReport};
use tollgate_storage::model::{
    AdminKeyId, ClientId, DailyQuota, DayUsage, IntegrationId, IntegrationRecord, IntegrationStatus, OrgId, Scope,
    SecretSlot, SlotId, SlotUse, ValidationError,
};
use tollgate_storage::{Storage, StorageError};

use crate::client::{AdminOp, ClientMsg};
use crate::clock::{Clock, day_of};
use crate::quota::QuotaStatus;
use crate::ring::HashRing;
use crate::secret::{ClientSecret, Digester, HashJob, HashPool, SecretFormatError, hash_secret, verify_secret};
use crate::shard::{Directory, ShardActor, ShardArgs, ShardMsg};

/// Tunables. `Default` gives the production values.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Number of shard actors (fixed for the process).
    pub shard_count: u32,
    /// Timeout of every actor call.
    pub call_timeout: Duration,
    /// Largest quota reservation block. The block actually used is
    /// `min(this, max(1, daily_quota / 100))`: a crash over-counts by at most that.
    pub reservation_block_max: u64,
    /// Warning thresholds in percent of the daily quota.
    pub warning_thresholds: Arc<[u8]>,
    /// A client actor idle this long is persisted and stopped.
    pub idle_eviction_after: Duration,
    /// How often shards look for idle actors.
    pub eviction_interval: Duration,
    /// Most resident client actors per shard; the least recently used go first.
    pub max_resident_per_shard: usize,
    /// Concurrent Argon2 computations (about one per core).
    pub hash_workers: usize,
    /// Argon2 requests allowed to wait beyond those running; more are refused.
    pub hash_queue: usize,
    /// Token lifetime when an integration does not set one.
    pub default_token_ttl_seconds: u32,
    /// Token-endpoint rate when an integration does not set one.
    pub default_token_requests_per_minute: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            shard_count: 8,
            call_timeout: Duration::from_secs(5),
            reservation_block_max: 4096,
            warning_thresholds: Arc::from([80u8, 95]),
            idle_eviction_after: Duration::from_secs(600),
            eviction_interval: Duration::from_secs(30),
            max_resident_per_shard: 200_000,
            hash_workers: cores,
            hash_queue: 8 * cores,
            default_token_ttl_seconds: 3600,
            default_token_requests_per_minute: 600,
        }
    }
}

/// Longest grace window of a routine rotation.
pub const MAX_GRACE: Duration = Duration::from_secs(7 * 86_400);
/// Default grace window of a routine rotation.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(86_400);
/// Allowed token lifetimes, seconds.
pub const TOKEN_TTL_RANGE: std::ops::RangeInclusive<u32> = 60..=86_400;
/// Allowed token-endpoint rates, requests per minute.
pub const TOKEN_RATE_RANGE: std::ops::RangeInclusive<u32> = 1..=10_000_000;

/// What went wrong. Messages say what happened and what to do; never a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// No such integration.
    #[error("integration {0} does not exist")]
    NotFound(String),
    /// The change does not fit the integration's state (e.g. rotating a revoked one).
    #[error("{0}")]
    Conflict(String),
    /// A value is out of range or malformed.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Too much work queued (Argon2 pool full); try again after `retry_after`.
    #[error("the server is busy verifying secrets; retry in {} s", retry_after.as_secs().max(1))]
    Overloaded {
        /// When to retry.
        retry_after: Duration,
    },
    /// An actor did not answer in time.
    #[error("the engine did not answer in time; retry shortly")]
    Timeout,
    /// The integration's actor could not be reached after retries.
    #[error("the integration is temporarily unavailable; retry shortly")]
    Unavailable,
    /// The engine is stopping.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// Storage failed; nothing was acknowledged.
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
    /// A bug or an unexpected failure.
    #[error("internal error: {0}")]
    Internal(String),
    /// The actor was retired while the message was in flight; the engine retries.
    #[doc(hidden)]
    #[error("the integration moved; retry")]
    Moved,
}

/// Result of the engine.
pub type EngineResult<T> = Result<T, EngineError>;

/// Who performs an admin action (for the audit trail).
#[derive(Debug, Clone, Default)]
pub struct AdminContext {
    /// The admin key used.
    pub admin_key_id: Option<AdminKeyId>,
    /// Where the request came from.
    pub source_ip: Option<String>,
}

/// Where an integration's request came from (for the audit trail).
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Source IP.
    pub source_ip: String,
    /// User agent, if sent (truncated to 256 characters).
    pub user_agent: Option<String>,
}

/// A new integration to register.
#[derive(Debug, Clone)]
pub struct NewIntegration {
    /// Owning organisation.
    pub org_id: OrgId,
    /// Human-readable name (validated with [`tollgate_storage::model::parse_name`]).
    pub name: String,
    /// Scopes its tokens may carry.
    pub scopes: Vec<Scope>,
    /// Requests per UTC day.
    pub daily_quota: DailyQuota,
    /// Token lifetime; the configured default when `None`.
    pub token_ttl_seconds: Option<u32>,
    /// Token-endpoint rate; the configured default when `None`.
    pub token_requests_per_minute: Option<u32>,
    /// Secrets stop working at this age (1–3650 days); `None`: the organisation's
    /// default, or no limit.
    pub secret_max_age_days: Option<u32>,
}

/// Changes to an integration's configuration; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct IntegrationUpdate {
    /// New name.
    pub name: Option<String>,
    /// New scopes.
    pub scopes: Option<Vec<Scope>>,
    /// New quota (today's count is kept).
    pub daily_quota: Option<DailyQuota>,
    /// New token lifetime.
    pub token_ttl_seconds: Option<u32>,
    /// New token-endpoint rate.
    pub token_requests_per_minute: Option<u32>,
    /// New maximum secret age in days; `Some(0)` removes the limit.
    pub secret_max_age_days: Option<u32>,
}

/// How to rotate a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationMode {
    /// The old secret keeps working for `grace` (0 s – 7 days), then stops by itself.
    Routine {
        /// The grace window.
        grace: Duration,
    },
    /// The old secret dies now and every token issued before now is refused.
    Incident,
}

/// What a genuine leaked-secret report does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeakPolicy {
    /// Kill the leaked secret's slot and every token issued up to now (default).
    #[default]
    KillSlot,
    /// Disable the whole integration (its secrets stay, so enabling undoes it).
    Disable,
}

impl LeakPolicy {
    /// `kill_slot` or `disable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KillSlot => "kill_slot",
            Self::Disable => "disable",
        }
    }

    /// From `kill_slot` or `disable`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "kill_slot" => Some(Self::KillSlot),
            "disable" => Some(Self::Disable),
            _ => None,
        }
    }
}

/// One found secret, as a scanner reports it.
#[derive(Debug, Clone)]
pub struct LeakReport {
    /// The secret as found (never logged or stored).
    pub secret: String,
    /// Where it was found.
    pub url: Option<String>,
    /// Who found it (`github`, a scanner's name).
    pub source: Option<String>,
}

/// What a leak report turned out to be, and what was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeakVerdict {
    /// Not a Tollgate secret, or its checksum is wrong: nothing to look up.
    Malformed(crate::secret::SecretFormatError),
    /// Well-formed, but no integration has that secret slot.
    Unknown,
    /// The slot exists but the secret is not the one stored: a fake.
    NotGenuine,
    /// The slot no longer accepts any secret (rotated away, killed or revoked), so
    /// the found secret is harmless; nothing was changed.
    Inactive {
        /// Its integration.
        integration_id: IntegrationId,
    },
    /// Genuine and live: acted on by policy and audited as `secret.leaked`.
    Genuine {
        /// Its integration.
        integration_id: IntegrationId,
        /// `slot_killed`, `disabled`, or `already_disabled` (nothing more to do).
        action: &'static str,
    },
}

/// The role of a secret slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRole {
    /// The secret in use.
    Current,
    /// The rotated-out secret during its grace window.
    Previous,
}

/// A secret slot as shown to admins (never the hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    /// Slot id (part of the secret, safe to show).
    pub slot_id: SlotId,
    /// Current or previous.
    pub role: SlotRole,
    /// When the secret was issued (Unix ms).
    pub created_at_ms: u64,
    /// End of the grace window for a previous secret.
    pub expires_at_ms: Option<u64>,
    /// Whether a previous secret's grace window is over.
    pub is_expired: bool,
    /// When the secret reaches the integration's maximum secret age (Unix ms).
    pub due_at_ms: Option<u64>,
    /// Last successful use, if any.
    pub last_used: Option<SlotUse>,
}

/// An integration as admins see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationView {
    /// Internal id.
    pub id: IntegrationId,
    /// OAuth client id.
    pub client_id: ClientId,
    /// Organisation.
    pub org_id: OrgId,
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Daily quota.
    pub daily_quota: DailyQuota,
    /// Token lifetime.
    pub token_ttl_seconds: u32,
    /// Token-endpoint rate.
    pub token_requests_per_minute: u32,
    /// Lifecycle state.
    pub status: IntegrationStatus,
    /// Why disabled.
    pub disabled_reason: Option<String>,
    /// Secret slots (empty once revoked).
    pub secrets: Vec<SlotView>,
    /// Tokens issued before this (Unix ms) are refused.
    pub tokens_valid_after_ms: u64,
    /// Requests counted today (live).
    pub used_today: u64,
    /// Created (Unix ms).
    pub created_at_ms: u64,
    /// Last changed (Unix ms).
    pub updated_at_ms: u64,
    /// Maximum secret age in days, if limited.
    pub secret_max_age_days: Option<u32>,
}

impl IntegrationView {
    pub(crate) fn build(
        rec: &IntegrationRecord,
        now_ms: u64,
        used_today: u64,
        uses: &dyn Fn(&SlotId) -> Option<SlotUse>,
    ) -> Self {
        let mut secrets = Vec::new();
        for (slot, role) in [
            (&rec.current_secret, SlotRole::Current),
            (&rec.previous_secret, SlotRole::Previous),
        ] {
            if let Some(slot) = slot {
                secrets.push(SlotView {
                    slot_id: slot.slot_id.clone(),
                    role,
                    created_at_ms: slot.created_at_ms,
                    expires_at_ms: slot.expires_at_ms,
                    is_expired: slot.expires_at_ms.is_some_and(|e| e <= now_ms),
                    due_at_ms: secret_due_at_ms(rec, slot),
                    last_used: uses(&slot.slot_id),
                });
            }
        }
        Self {
            id: rec.id.clone(),
            client_id: rec.client_id.clone(),
            org_id: rec.org_id.clone(),
            name: rec.name.clone(),
            scopes: rec.scopes.clone(),
            daily_quota: rec.daily_quota,
            token_ttl_seconds: rec.token_ttl_seconds,
            token_requests_per_minute: rec.token_requests_per_minute,
            status: rec.status,
            disabled_reason: rec.disabled_reason.clone(),
            secrets,
            tokens_valid_after_ms: rec.tokens_valid_after_ms,
            used_today,
            created_at_ms: rec.created_at_ms,
            updated_at_ms: rec.updated_at_ms,
            secret_max_age_days: rec.secret_max_age_seconds.map(|s| (s / 86_400) as u32),
        }
    }
}

/// Longest maximum secret age, in days (ten years).
pub const MAX_SECRET_AGE_DAYS: u32 = 3650;

/// How long before a secret's maximum age `secret.expiring` is audited: 14 days, or
/// half the maximum age when that is shorter.
pub fn expiry_notice_ms(max_age_seconds: u64) -> u64 {
    (14 * 86_400_000u64).min(max_age_seconds * 500)
}

/// When `slot` reaches `rec`'s maximum secret age.
pub fn secret_due_at_ms(rec: &IntegrationRecord, slot: &SecretSlot) -> Option<u64> {
    rec.secret_max_age_seconds
        .map(|max| slot.created_at_ms.saturating_add(max * 1000))
}

/// Validates a maximum secret age in days (1–3650).
pub(crate) fn check_max_age_days(days: u32) -> EngineResult<u64> {
    if (1..=MAX_SECRET_AGE_DAYS).contains(&days) {
        Ok(u64::from(days) * 86_400)
    } else {
        Err(EngineError::Invalid(ValidationError {
            what: "secret_max_age_days",
            problem: format!("must be 1 to {MAX_SECRET_AGE_DAYS} days (got {days})"),
        }))
    }
}

/// A newly registered integration and its secret, shown this once.
#[derive(Debug, Clone)]
pub struct CreatedIntegration {
    /// The integration.
    pub integration: IntegrationView,
    /// The secret in clear; not stored anywhere.
    pub client_secret: ClientSecret,
}

/// The outcome of a rotation.
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The new secret, shown this once.
    pub client_secret: ClientSecret,
    /// When the old secret stops working; `None` when it already has.
    pub previous_secret_expires_at_ms: Option<u64>,
    /// The integration after the rotation.
    pub integration: IntegrationView,
}

/// The client actor that last answered for one integration, remembered by a caller
/// so that its next check skips the directory lookup (DESIGN.md: "a hot path may
/// cache `ActorRef`s so a check is one message"). It holds the shard's handle of that
/// actor, which the shard empties when it lets the actor go: a hint kept in a cache
/// never keeps an evicted actor in memory.
#[derive(Default)]
pub struct ActorHint(ArcSwapOption<crate::shard::LiveActor>);

impl ActorHint {
    /// Sends to the remembered actor, if there is one and it is still resident. Read
    /// without a lock or a reference count (see [`crate::shard::LiveActor`]).
    fn send<T>(&self, message: &impl Fn(RpcReplyPort<EngineResult<T>>) -> ClientMsg) -> Option<Sent<T>> {
        let live = self.0.load();
        live.as_deref()?.send(message)
    }

    fn set(&self, live: Option<Arc<crate::shard::LiveActor>>) {
        self.0.store(live);
    }

    /// Whether the hint currently leads to a resident actor.
    pub fn is_live(&self) -> bool {
        self.0
            .load()
            .as_deref()
            .is_some_and(crate::shard::LiveActor::is_resident)
    }
}

/// A message handed to a client actor, its answer still to come.
pub(crate) struct Sent<T> {
    /// The actor it went to.
    actor: ActorId,
    /// Where the answer comes; `None` when the actor no longer takes messages.
    reply: Option<ractor::concurrency::OneshotReceiver<EngineResult<T>>>,
}

impl<T> Sent<T> {
    /// Sends `message` to `actor` now: what `ActorRef::call` does, except that the
    /// `ActorRef` is not borrowed until the answer comes, so a caller reading it from
    /// a shared handle need not take a reference to it.
    pub(crate) fn to(
        actor: &ActorRef<ClientMsg>,
        message: &impl Fn(RpcReplyPort<EngineResult<T>>) -> ClientMsg,
    ) -> Self {
        let (tx, rx) = ractor::concurrency::oneshot();
        let reply = actor.send_message(message(tx.into())).ok().map(|()| rx);
        Self {
            actor: actor.get_id(),
            reply,
        }
    }

    /// The actor's answer; `Ok(None)` when none will come (the actor stopped, or
    /// dropped the message unanswered), `Err(Timeout)` past `timeout`.
    async fn answer(self, timeout: Option<Duration>) -> EngineResult<Option<EngineResult<T>>> {
        let Some(reply) = self.reply else {
            return Ok(None);
        };
        match timeout {
            None => Ok(reply.await.ok()),
            Some(limit) => match tokio::time::timeout(limit, reply).await {
                Ok(answer) => Ok(answer.ok()),
                Err(_) => Err(EngineError::Timeout),
            },
        }
    }
}

impl std::fmt::Debug for ActorHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActorHint")
    }
}

/// What a request check knows about the presented token (already signature-checked).
#[derive(Debug, Clone, Default)]
pub struct TokenContext {
    /// When the token was issued (Unix ms; seconds × 1000 is fine: rounding down
    /// only makes the cut-off stricter).
    pub issued_at_ms: u64,
    /// The token id, checked against revoked ids.
    pub jti: Option<Arc<str>>,
}

/// Why a request with a valid signature is refused anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client id is not registered.
    UnknownClient,
    /// The integration is disabled.
    Disabled,
    /// The integration is revoked.
    Revoked,
    /// The token was revoked.
    TokenRevoked,
    /// The token was issued before the integration's cut-off (incident rotation).
    TokenIssuedBeforeCutoff,
}

impl Refusal {
    /// A short machine-readable reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownClient => "unknown_client",
            Self::Disabled => "integration_disabled",
            Self::Revoked => "integration_revoked",
            Self::TokenRevoked => "token_revoked",
            Self::TokenIssuedBeforeCutoff => "token_issued_before_cutoff",
        }
    }
}

/// The decision on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Counted and allowed.
    Admitted(QuotaStatus),
    /// Refused at the limit, not counted.
    QuotaExceeded(QuotaStatus),
    /// Refused for another reason, not counted.
    Refused(Refusal),
}

/// A token request's credentials and context.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    /// The presented client id (unvalidated text).
    pub client_id: String,
    /// The presented secret (unvalidated text; never logged).
    pub client_secret: String,
    /// Requested scopes; all of the integration's when `None`.
    pub requested_scopes: Option<Vec<Scope>>,
    /// Set when a token will be issued: the audit entry records it.
    pub jti: Option<String>,
    /// Where the request came from.
    pub context: RequestContext,
    /// Whether Argon2 may run for this request. The brute-force guard clears it for
    /// locked-out sources: a secret already verified (cached) still passes, a guess
    /// is refused with [`AuthRefusal::Throttled`] at no cost.
    pub allow_slow_verify: bool,
}

/// What a successful authentication grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The integration.
    pub integration_id: IntegrationId,
    /// Its client id.
    pub client_id: ClientId,
    /// Its organisation.
    pub org_id: OrgId,
    /// The scopes granted (requested ones, or all).
    pub scopes: Vec<Scope>,
    /// Lifetime for the token.
    pub token_ttl_seconds: u32,
    /// The secret slot that matched.
    pub slot_id: SlotId,
    /// Sequence number of the durable audit entry.
    pub audit_seq: u64,
}

/// Why client authentication or a token request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRefusal {
    /// No such client id.
    UnknownClient,
    /// Not a Tollgate secret, or a bad checksum.
    MalformedSecret(SecretFormatError),
    /// The secret does not match any live slot.
    WrongSecret,
    /// The secret was rotated out and its grace window is over.
    SecretExpired,
    /// The secret is older than the integration's maximum secret age.
    SecretTooOld,
    /// The integration is disabled.
    Disabled,
    /// The integration is revoked.
    Revoked,
    /// A requested scope is not one of the integration's.
    InvalidScope,
    /// The source is locked out and the secret is not one already verified.
    Throttled,
    /// Too many token requests this minute.
    RateLimited {
        /// When the next request will be allowed.
        retry_after: Duration,
    },
}

impl AuthRefusal {
    /// A short machine-readable reason (for audit entries and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownClient => "unknown_client",
            Self::MalformedSecret(_) => "malformed_secret",
            Self::WrongSecret => "wrong_secret",
            Self::SecretExpired => "secret_expired",
            Self::SecretTooOld => "secret_max_age_exceeded",
            Self::Disabled => "integration_disabled",
            Self::Revoked => "integration_revoked",
            Self::InvalidScope => "invalid_scope",
            Self::Throttled => "throttled",
            Self::RateLimited { .. } => "rate_limited",
        }
    }
}

/// The outcome of [`Engine::authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Authenticated; the audit entry is durable.
    Granted(Grant),
    /// Refused; the audit entry is durable.
    Refused(AuthRefusal),
}

/// One day of usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayCount {
    /// UTC day (days since the Unix epoch).
    pub day: u32,
    /// Requests counted.
    pub count: u64,
}

/// Usage history of an integration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    /// The last N days, oldest first, today last (live).
    pub daily: Vec<DayCount>,
    /// Today by UTC hour (live).
    pub hourly_today: [u64; 24],
    /// Today's daily quota.
    pub daily_quota: u64,
}

/// What client actors share: cheap handles, built once.
pub(crate) struct Shared {
    pub(crate) storage: Storage,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: EngineConfig,
    pub(crate) digester: Digester,
}

struct ShardHandle {
    actor: ActorRef<ShardMsg>,
    directory: Directory,
}

struct Inner {
    shared: Arc<Shared>,
    shards: Vec<ShardHandle>,
    ring: HashRing,
    hash_pool: HashPool,
    /// Argon2 verifications run (the cache's misses), for stats and tests.
    argon2_verifications: AtomicU64,
}

/// The engine: cloneable, the only way in.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("shards", &self.inner.shards.len())
            .finish()
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

impl Engine {
    /// Starts the shard actors over `storage`.
    pub async fn start(storage: Storage, clock: Arc<dyn Clock>, config: EngineConfig) -> EngineResult<Self> {
        if config.warning_thresholds.iter().any(|&t| t == 0 || t > 100) {
            return Err(EngineError::Invalid(ValidationError {
                what: "warning thresholds",
                problem: "each must be a percentage from 1 to 100".into(),
            }));
        }
        let hash_pool = HashPool::new(config.hash_workers, config.hash_queue);
        let shared = Arc::new(Shared {
            storage,
            clock,
            config,
            digester: Digester::new(),
        });
        let ring = HashRing::new(shared.config.shard_count);
        let mut shards = Vec::new();
        for index in 0..ring.shard_count() {
            let directory = Directory::default();
            let (actor, _) = Actor::spawn(
                None,
                ShardActor,
                ShardArgs {
                    index,
                    shared: shared.clone(),
                    directory: directory.clone(),
                },
            )
            .await
            .map_err(|e| EngineError::Internal(format!("shard {index} failed to start: {e}")))?;
            shards.push(ShardHandle { actor, directory });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                shards,
                ring,
                hash_pool,
                argon2_verifications: AtomicU64::new(0),
            }),
        })
    }

    /// The storage behind the engine.
    pub fn storage(&self) -> &Storage {
        &self.inner.shared.storage
    }

    /// Now, by the engine's clock.
    pub fn now_ms(&self) -> u64 {
        self.inner.shared.clock.now_ms()
    }

    /// The configuration in force.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.shared.config
    }

    fn shard_of(&self, client: &ClientId) -> &ShardHandle {
        &self.inner.shards[self.inner.ring.shard_for(client.as_str().as_bytes()) as usize]
    }

    async fn resolve(&self, client: &ClientId, stale: Option<ActorId>) -> EngineResult<Option<ActorRef<ClientMsg>>> {
        let shard = self.shard_of(client);
        if stale.is_none()
            && let Some(actor) = shard.directory.get(client)
        {
            return Ok(Some(actor));
        }
        let client = client.clone();
        match shard
            .actor
            .call(
                |reply| ShardMsg::Lookup { client, stale, reply },
                Some(self.inner.shared.config.call_timeout),
            )
            .await
        {
            Ok(CallResult::Success(result)) => result,
            Ok(CallResult::Timeout) => Err(EngineError::Timeout),
            Ok(CallResult::SenderError) | Err(_) => Err(EngineError::ShuttingDown),
        }
    }

    /// Sends a request to the integration's actor, re-resolving it if it moved or died
    /// in between. `Ok(None)`: no such client.
    async fn route<T: Send + 'static>(
        &self,
        client: &ClientId,
        message: impl Fn(RpcReplyPort<EngineResult<T>>) -> ClientMsg,
    ) -> EngineResult<Option<T>> {
        self.route_with(client, Some(self.inner.shared.config.call_timeout), message)
            .await
    }

    /// [`Self::route`] with an explicit call timeout. `None` is used only by the check
    /// hot path, where arming a timer per call costs ~40 % of the throughput (measured
    /// in `benches/engine.rs`); that message carries a deadline instead, which the
    /// actor enforces on dequeue and on its only await (a durable reservation), so the
    /// reply still comes within the timeout, and a dead actor drops the reply port.
    async fn route_with<T: Send + 'static>(
        &self,
        client: &ClientId,
        timeout: Option<Duration>,
        message: impl Fn(RpcReplyPort<EngineResult<T>>) -> ClientMsg,
    ) -> EngineResult<Option<T>> {
        self.route_hinted(client, None, timeout, message).await
    }

    /// [`Self::route_with`], trying the actor remembered in `hint` first (and
    /// remembering the one that answered). A remembered actor that was evicted or
    /// died answers `Moved` or not at all, and is then looked up again, so a hint can
    /// never reach anything but the one live actor of the integration.
    async fn route_hinted<T: Send + 'static>(
        &self,
        client: &ClientId,
        hint: Option<&ActorHint>,
        timeout: Option<Duration>,
        message: impl Fn(RpcReplyPort<EngineResult<T>>) -> ClientMsg,
    ) -> EngineResult<Option<T>> {
        let mut stale = None;
        let mut hinted = hint;
        for _ in 0..4 {
            let sent = match hinted.take().and_then(|hint| hint.send(&message)) {
                Some(sent) => sent,
                None => {
                    let Some(actor) = self.resolve(client, stale.take()).await? else {
                        return Ok(None);
                    };
                    if let Some(hint) = hint {
                        hint.set(self.shard_of(client).directory.live(client));
                    }
                    Sent::to(&actor, &message)
                }
            };
            let actor = sent.actor;
            match sent.answer(timeout).await? {
                Some(Err(EngineError::Moved)) | None => {
                    stale = Some(actor);
                    if let Some(hint) = hint {
                        hint.set(None);
                    }
                }
                Some(result) => return result.map(Some),
            }
        }
        Err(EngineError::Unavailable)
    }

    fn client_of(&self, id: &IntegrationId) -> EngineResult<ClientId> {
        Ok(self
            .storage()
            .integration(id)?
            .ok_or_else(|| EngineError::NotFound(id.to_string()))?
            .client_id)
    }

    async fn route_admin<T: Send + 'static>(
        &self,
        id: &IntegrationId,
        message: impl Fn(RpcReplyPort<EngineResult<T>>) -> ClientMsg,
    ) -> EngineResult<T> {
        let client = self.client_of(id)?;
        self.route(&client, message)
            .await?
            .ok_or_else(|| EngineError::NotFound(id.to_string()))
    }

    async fn hash_new_secret(&self) -> EngineResult<(ClientSecret, SecretSlot)> {
        let slot_id = SlotId::generate();
        let secret = ClientSecret::generate(&slot_id);
        let exposed = secret.expose().to_owned();
        let phc = self
            .inner
            .hash_pool
            .run(HashJob::Hash, move || hash_secret(&exposed))
            .await??;
        let slot = SecretSlot {
            slot_id,
            phc,
            created_at_ms: self.now_ms(),
            expires_at_ms: None,
            expiry_noticed: false,
            grace_noticed: false,
        };
        Ok((secret, slot))
    }

    // ---- lifecycle --------------------------------------------------------------------

    /// Registers an integration; returns its secret once. Durable before it returns.
    pub async fn create_integration(
        &self,
        new: NewIntegration,
        ctx: &AdminContext,
    ) -> EngineResult<CreatedIntegration> {
        let config = &self.inner.shared.config;
        let name = tollgate_storage::model::parse_name(&new.name)?;
        let token_ttl_seconds = check_ttl(new.token_ttl_seconds.unwrap_or(config.default_token_ttl_seconds))?;
        let token_requests_per_minute = check_token_rate(
            new.token_requests_per_minute
                .unwrap_or(config.default_token_requests_per_minute),
        )?;
        // Unset: the organisation's default, if it has one.
        let max_age_days = match new.secret_max_age_days {
            Some(days) => Some(days),
            None => self
                .storage()
                .org_settings(&new.org_id)?
                .and_then(|s| s.secret_max_age_days),
        };
        let secret_max_age_seconds = max_age_days.map(check_max_age_days).transpose()?;
        let (secret, slot) = self.hash_new_secret().await?;
        let now = self.now_ms();
        let rec = IntegrationRecord {
            id: IntegrationId::generate(),
            client_id: ClientId::generate(),
            org_id: new.org_id,
            name,
            scopes: new.scopes,
            daily_quota: new.daily_quota,
            token_ttl_seconds,
            token_requests_per_minute,
            status: IntegrationStatus::Active,
            disabled_reason: None,
            current_secret: Some(slot),
            previous_secret: None,
            tokens_valid_after_ms: 0,
            created_at_ms: now,
            updated_at_ms: now,
            secret_max_age_seconds,
        };
        let event = AuditEvent {
            at_ms: now,
            kind: "integration.created".into(),
            integration_id: Some(rec.id.clone()),
            client_id: Some(rec.client_id.clone()),
            org_id: Some(rec.org_id.clone()),
            admin_key_id: ctx.admin_key_id.clone(),
            source_ip: ctx.source_ip.clone(),
            outcome: "success".into(),
            slot_id: rec.current_secret.as_ref().map(|s| s.slot_id.clone()),
            details: serde_json::json!({
                "name": rec.name,
                "scopes": rec.scopes,
                "daily_quota": rec.daily_quota,
                "token_ttl_seconds": rec.token_ttl_seconds,
                "token_requests_per_minute": rec.token_requests_per_minute,
            }),
            ..AuditEvent::default()
        };
        self.storage()
            .batch()
            .put_integration(&rec)
            .audit(event)
            .commit()
            .await?;
        metrics::counter!("tollgate_integrations_created_total").increment(1);
        Ok(CreatedIntegration {
            integration: IntegrationView::build(&rec, now, 0, &|_| None),
            client_secret: secret,
        })
    }

    /// One integration with live usage.
    pub async fn integration(&self, id: &IntegrationId) -> EngineResult<IntegrationView> {
        self.route_admin(id, |reply| ClientMsg::View { reply }).await
    }

    /// Integrations in id order. `used_today` is live for resident integrations
    /// (asked of their actor) and exact for the others (eviction and shutdown persist
    /// the exact count; only after a crash can a stored count be up to one block ahead).
    pub async fn list_integrations(
        &self,
        org: Option<&OrgId>,
        after: Option<&IntegrationId>,
        limit: usize,
    ) -> EngineResult<Vec<IntegrationView>> {
        let now = self.now_ms();
        let today = day_of(now);
        let storage = self.storage();
        let mut views = Vec::new();
        for rec in storage.list_integrations(org, after, limit)? {
            if self.shard_of(&rec.client_id).directory.get(&rec.client_id).is_some() {
                views.push(self.integration(&rec.id).await?);
                continue;
            }
            let used = storage.day_usage(&rec.id, today)?.map_or(0, |u| u.reserved);
            views.push(IntegrationView::build(&rec, now, used, &|slot| {
                storage.slot_use(slot).ok().flatten()
            }));
        }
        Ok(views)
    }

    /// Changes name, scopes, quota or token settings. Today's count is kept.
    pub async fn update_integration(
        &self,
        id: &IntegrationId,
        update: IntegrationUpdate,
        ctx: &AdminContext,
    ) -> EngineResult<IntegrationView> {
        let mut update = update;
        if let Some(name) = &update.name {
            update.name = Some(tollgate_storage::model::parse_name(name)?);
        }
        if let Some(ttl) = update.token_ttl_seconds {
            check_ttl(ttl)?;
        }
        if let Some(rate) = update.token_requests_per_minute {
            check_token_rate(rate)?;
        }
        if let Some(days) = update.secret_max_age_days.filter(|d| *d != 0) {
            check_max_age_days(days)?;
        }
        self.admin(id, AdminOp::Update(update), ctx).await
    }

    /// Refuses everything from the integration from the next request on.
    pub async fn disable(
        &self,
        id: &IntegrationId,
        reason: Option<String>,
        ctx: &AdminContext,
    ) -> EngineResult<IntegrationView> {
        let reason = reason.map(|r| truncate(r.trim(), 500)).filter(|r| !r.is_empty());
        self.admin(id, AdminOp::Disable { reason }, ctx).await
    }

    /// Re-enables a disabled integration.
    pub async fn enable(&self, id: &IntegrationId, ctx: &AdminContext) -> EngineResult<IntegrationView> {
        self.admin(id, AdminOp::Enable, ctx).await
    }

    /// Permanently off-boards: secrets erased, tokens dead, record kept.
    pub async fn revoke(&self, id: &IntegrationId, ctx: &AdminContext) -> EngineResult<IntegrationView> {
        self.admin(id, AdminOp::Revoke, ctx).await
    }

    /// Issues a new secret; see [`RotationMode`].
    pub async fn rotate(&self, id: &IntegrationId, mode: RotationMode, ctx: &AdminContext) -> EngineResult<Rotated> {
        if let RotationMode::Routine { grace } = mode
            && grace > MAX_GRACE
        {
            return Err(EngineError::Invalid(ValidationError {
                what: "grace period",
                problem: format!(
                    "{} s is too long: use 0 to {} seconds",
                    grace.as_secs(),
                    MAX_GRACE.as_secs()
                ),
            }));
        }
        let (secret, slot) = self.hash_new_secret().await?;
        let integration = self.admin(id, AdminOp::Rotate { slot, mode }, ctx).await?;
        let previous_secret_expires_at_ms = integration
            .secrets
            .iter()
            .find(|s| s.role == SlotRole::Previous && !s.is_expired)
            .and_then(|s| s.expires_at_ms);
        Ok(Rotated {
            client_secret: secret,
            previous_secret_expires_at_ms,
            integration,
        })
    }

    /// Ends a rotation's grace window now: only the new secret works from here on.
    pub async fn finish_rotation(&self, id: &IntegrationId, ctx: &AdminContext) -> EngineResult<IntegrationView> {
        self.admin(id, AdminOp::FinishRotation, ctx).await
    }

    /// Checks a reported secret (shape, checksum, slot, Argon2 hash) and, when it is
    /// genuine and still accepted, acts by `policy` in the integration's actor and
    /// audits `secret.leaked`. Unknown, fake and dead secrets change nothing.
    pub async fn report_leak(
        &self,
        report: LeakReport,
        policy: LeakPolicy,
        ctx: &AdminContext,
    ) -> EngineResult<LeakVerdict> {
        let secret = match crate::secret::ClientSecret::parse(&report.secret) {
            Ok(secret) => secret,
            Err(e) => return Ok(LeakVerdict::Malformed(e)),
        };
        let slot_id = secret.slot_id();
        let Some(id) = self.storage().integration_id_by_slot(&slot_id)? else {
            return Ok(LeakVerdict::Unknown);
        };
        let Some(record) = self.storage().integration(&id)? else {
            return Ok(LeakVerdict::Unknown);
        };
        let now = self.now_ms();
        let live_slot = [&record.current_secret, &record.previous_secret]
            .into_iter()
            .flatten()
            .find(|s| s.slot_id == slot_id && s.expires_at_ms.is_none_or(|e| e > now));
        let Some(slot) = live_slot else {
            return Ok(LeakVerdict::Inactive { integration_id: id });
        };
        if !self
            .verify_on_pool(secret.expose().to_owned(), slot.phc.clone())
            .await?
        {
            return Ok(LeakVerdict::NotGenuine);
        }
        let op = AdminOp::Leaked {
            slot_id,
            policy,
            url: report.url.map(|u| truncate(&u, 500)),
            source: report.source.map(|s| truncate(&s, 100)),
        };
        metrics::counter!("tollgate_leaked_secrets_total", "policy" => policy.as_str()).increment(1);
        match self.admin(&id, op, ctx).await {
            Ok(_) => Ok(LeakVerdict::Genuine {
                integration_id: id,
                action: match policy {
                    LeakPolicy::KillSlot => "slot_killed",
                    LeakPolicy::Disable => "disabled",
                },
            }),
            Err(EngineError::Conflict(_)) if policy == LeakPolicy::Disable => Ok(LeakVerdict::Genuine {
                integration_id: id,
                action: "already_disabled",
            }),
            // Revoked meanwhile, or the slot went away between the check and the actor.
            Err(EngineError::Conflict(_)) => Ok(LeakVerdict::Inactive { integration_id: id }),
            Err(e) => Err(e),
        }
    }

    async fn admin(&self, id: &IntegrationId, op: AdminOp, ctx: &AdminContext) -> EngineResult<IntegrationView> {
        self.route_admin(id, |reply| ClientMsg::Admin {
            op: op.clone(),
            ctx: ctx.clone(),
            reply,
        })
        .await
    }

    /// Refuses a token id from now on (until `expires_at_ms`, when it is dead anyway).
    pub async fn revoke_token(
        &self,
        client: &ClientId,
        jti: &str,
        expires_at_ms: u64,
        ctx: &RequestContext,
    ) -> EngineResult<()> {
        let jti = truncate(jti, 128);
        self.route(client, |reply| ClientMsg::RevokeToken {
            jti: jti.clone(),
            expires_at_ms,
            context: ctx.clone(),
            reply,
        })
        .await?
        .ok_or_else(|| EngineError::NotFound(client.to_string()))
    }

    /// Usage for the last `days` days (1–90), today live.
    pub async fn usage(&self, id: &IntegrationId, days: u32) -> EngineResult<UsageReport> {
        if !(1..=90).contains(&days) {
            return Err(EngineError::Invalid(ValidationError {
                what: "days",
                problem: format!("{days} is out of range: use 1 to 90"),
            }));
        }
        let (today, live, daily_quota): (u32, DayUsage, u64) =
            self.route_admin(id, |reply| ClientMsg::Usage { reply }).await?;
        let first = today.saturating_sub(days - 1);
        let stored = self.storage().usage_range(id, first, today.saturating_sub(1))?;
        let daily = (first..=today)
            .map(|day| DayCount {
                day,
                count: if day == today {
                    live.reserved
                } else {
                    stored.iter().find(|(d, _)| *d == day).map_or(0, |(_, u)| u.reserved)
                },
            })
            .collect();
        Ok(UsageReport {
            daily,
            hourly_today: live.hourly,
            daily_quota,
        })
    }

    // ---- the hot paths ----------------------------------------------------------------

    /// Check-and-consume one request for `client` whose token is already
    /// signature-checked: one message to the integration's actor.
    pub async fn check(&self, client: &ClientId, token: TokenContext) -> EngineResult<CheckOutcome> {
        self.check_hinted(client, token, None).await
    }

    /// [`Self::check`] for a caller that keeps an [`ActorHint`] per client (the
    /// gateway keeps one per cached token): a check is then one message, with no
    /// directory lookup.
    pub async fn check_hinted(
        &self,
        client: &ClientId,
        token: TokenContext,
        hint: Option<&ActorHint>,
    ) -> EngineResult<CheckOutcome> {
        let deadline = Instant::now() + self.inner.shared.config.call_timeout;
        let outcome = self
            .route_hinted(client, hint, None, |reply| ClientMsg::Check {
                token: token.clone(),
                deadline,
                reply,
            })
            .await?;
        Ok(outcome.unwrap_or(CheckOutcome::Refused(Refusal::UnknownClient)))
    }

    /// Why a signature-checked token would be refused now (disabled, revoked, cut
    /// off, revoked jti), without counting anything; `None` when it is acceptable.
    pub async fn token_refusal(&self, client: &ClientId, token: TokenContext) -> EngineResult<Option<Refusal>> {
        let refusal = self
            .route(client, |reply| ClientMsg::Validate {
                token: token.clone(),
                reply,
            })
            .await?;
        Ok(refusal.unwrap_or(Some(Refusal::UnknownClient)))
    }

    /// Verifies client credentials (cached digest, else Argon2 on the bounded pool,
    /// never inside an actor), checks requested scopes and the token rate, and writes
    /// the audit entry; returns only after that entry is durable.
    pub async fn authenticate(&self, request: AuthRequest) -> EngineResult<AuthOutcome> {
        let now = self.now_ms();
        let client = ClientId::parse(&request.client_id).ok();
        let outcome = match &client {
            None => Ok(AuthOutcome::Refused(AuthRefusal::UnknownClient)),
            Some(client) => self.authenticate_known(client, &request).await,
        };
        let outcome = outcome?;
        // Audited: every token request, and every failed authentication. Not audited:
        // a successful client authentication for introspection or revocation (the
        // revocation itself is), and throttled attempts (summarised by the gateway).
        let is_audited = match &outcome {
            AuthOutcome::Granted(_) => request.jti.is_some(),
            AuthOutcome::Refused(AuthRefusal::Throttled) => false,
            AuthOutcome::Refused(_) => true,
        };
        if !is_audited {
            return Ok(outcome);
        }
        let mut event = AuditEvent {
            at_ms: now,
            client_id: client.clone(),
            source_ip: Some(request.context.source_ip.clone()),
            user_agent: request.context.user_agent.as_deref().map(|ua| truncate(ua, 256)),
            ..AuditEvent::default()
        };
        match &outcome {
            AuthOutcome::Granted(grant) => {
                event.kind = if request.jti.is_some() {
                    "token.issued"
                } else {
                    "client.authenticated"
                }
                .into();
                event.outcome = "success".into();
                event.integration_id = Some(grant.integration_id.clone());
                event.org_id = Some(grant.org_id.clone());
                event.slot_id = Some(grant.slot_id.clone());
                event.jti = request.jti.clone();
                event.details = serde_json::json!({ "scopes": grant.scopes });
            }
            AuthOutcome::Refused(refusal) => {
                event.kind = if request.jti.is_some() {
                    "token.refused"
                } else {
                    "client.auth_failed"
                }
                .into();
                event.outcome = "failure".into();
                event.reason = Some(refusal.as_str().into());
                if let Some(client) = &client
                    && let Ok(Some(rec)) = self.storage().integration_by_client(client)
                {
                    event.integration_id = Some(rec.id);
                    event.org_id = Some(rec.org_id);
                }
            }
        }
        let receipt = self.storage().batch().audit(event).commit().await?;
        metrics::counter!("tollgate_authentications_total", "outcome" => match &outcome {
            AuthOutcome::Granted(_) => "granted",
            AuthOutcome::Refused(r) => r.as_str(),
        })
        .increment(1);
        Ok(match outcome {
            AuthOutcome::Granted(mut grant) => {
                grant.audit_seq = receipt.audit_seqs.first().copied().unwrap_or_default();
                AuthOutcome::Granted(grant)
            }
            refused => refused,
        })
    }

    async fn authenticate_known(&self, client: &ClientId, request: &AuthRequest) -> EngineResult<AuthOutcome> {
        let secret = match ClientSecret::parse(&request.client_secret) {
            Ok(secret) => secret,
            Err(e) => return Ok(AuthOutcome::Refused(AuthRefusal::MalformedSecret(e))),
        };
        let slot_id = secret.slot_id();
        let digest = self.inner.shared.digester.digest(secret.expose());
        let step = self
            .route(client, |reply| ClientMsg::Authenticate {
                slot_id: slot_id.clone(),
                digest,
                verified: None,
                requested_scopes: request.requested_scopes.clone(),
                source_ip: request.context.source_ip.clone(),
                reply,
            })
            .await?;
        let phc = match step {
            None => return Ok(AuthOutcome::Refused(AuthRefusal::UnknownClient)),
            Some(crate::client::AuthStep::Done(outcome)) => return Ok(outcome),
            Some(crate::client::AuthStep::NeedsHash { .. }) if !request.allow_slow_verify => {
                return Ok(AuthOutcome::Refused(AuthRefusal::Throttled));
            }
            Some(crate::client::AuthStep::NeedsHash { phc }) => phc,
        };
        let exposed = secret.expose().to_owned();
        let is_match = self
            .inner
            .hash_pool
            .run(HashJob::Verify, move || verify_secret(&exposed, &phc))
            .await?;
        metrics::counter!("tollgate_argon2_verifications_total").increment(1);
        self.inner.argon2_verifications.fetch_add(1, Ordering::Relaxed);
        let step = self
            .route(client, |reply| ClientMsg::Authenticate {
                slot_id: slot_id.clone(),
                digest,
                verified: Some(is_match),
                requested_scopes: request.requested_scopes.clone(),
                source_ip: request.context.source_ip.clone(),
                reply,
            })
            .await?;
        match step {
            None => Ok(AuthOutcome::Refused(AuthRefusal::UnknownClient)),
            Some(crate::client::AuthStep::Done(outcome)) => Ok(outcome),
            // The slot changed between the two messages (rotated meanwhile): refuse
            // rather than loop; the client retries with its current secret.
            Some(crate::client::AuthStep::NeedsHash { .. }) => Ok(AuthOutcome::Refused(AuthRefusal::WrongSecret)),
        }
    }

    // ---- audit --------------------------------------------------------------------------

    /// Appends an audit event and waits until it is durable.
    pub async fn audit(&self, event: AuditEvent) -> EngineResult<u64> {
        let receipt = self.storage().batch().audit(event).commit().await?;
        Ok(receipt.audit_seqs.first().copied().unwrap_or_default())
    }

    /// Audit entries, newest first, before `before_seq`.
    pub fn audit_query(
        &self,
        filter: &AuditFilter,
        before_seq: Option<u64>,
        limit: usize,
    ) -> EngineResult<Vec<AuditEntry>> {
        Ok(self.storage().audit_query(filter, before_seq, limit)?)
    }

    /// Verifies the audit hash chain.
    pub fn audit_verify(&self) -> EngineResult<ChainReport> {
        Ok(self.storage().audit_verify()?)
    }

    // ---- hashing for other credentials (admin keys) ----------------------------------------

    /// Argon2id-hashes `secret` on the engine's bounded pool.
    pub async fn hash_on_pool(&self, secret: String) -> EngineResult<String> {
        self.inner
            .hash_pool
            .run(HashJob::Hash, move || hash_secret(&secret))
            .await?
    }

    /// Verifies `secret` against `phc` on the engine's bounded pool.
    pub async fn verify_on_pool(&self, secret: String, phc: String) -> EngineResult<bool> {
        self.inner
            .hash_pool
            .run(HashJob::Verify, move || verify_secret(&secret, &phc))
            .await
    }

    /// The keyed in-memory digest of a verified credential (never persisted).
    pub fn digest(&self, secret: &str) -> crate::secret::SecretDigest {
        self.inner.shared.digester.digest(secret)
    }

    // ---- residency ----------------------------------------------------------------------

    /// How many Argon2 verifications have run since start (verified-cache misses).
    pub fn argon2_verifications(&self) -> u64 {
        self.inner.argon2_verifications.load(Ordering::Relaxed)
    }

    /// Test support: makes the integration's actor panic, to exercise supervision.
    #[doc(hidden)]
    pub async fn crash_client_actor_for_tests(&self, client: &ClientId) -> EngineResult<()> {
        if let Some(actor) = self.resolve(client, None).await? {
            let _ = actor.send_message(ClientMsg::Crash);
        }
        Ok(())
    }

    /// How many client actors are resident.
    pub fn resident_count(&self) -> usize {
        self.inner.shards.iter().map(|s| s.directory.len()).sum()
    }

    /// Runs an eviction pass on every shard now; returns how many actors were evicted.
    pub async fn evict_idle_now(&self) -> EngineResult<usize> {
        let mut evicted = 0;
        for shard in &self.inner.shards {
            match shard
                .actor
                .call(
                    |reply| ShardMsg::EvictIdle { reply: Some(reply) },
                    Some(self.inner.shared.config.call_timeout * 4),
                )
                .await
            {
                Ok(CallResult::Success(n)) => evicted += n,
                Ok(CallResult::Timeout) => return Err(EngineError::Timeout),
                _ => return Err(EngineError::ShuttingDown),
            }
        }
        Ok(evicted)
    }

    /// Graceful stop: every client actor persists its exact count, shards stop, and
    /// storage is flushed.
    pub async fn shutdown(&self) -> EngineResult<()> {
        let mut failures = HashSet::new();
        for (i, shard) in self.inner.shards.iter().enumerate() {
            let result = shard
                .actor
                .call(|reply| ShardMsg::RetireAll { reply }, Some(Duration::from_secs(60)))
                .await;
            if !matches!(result, Ok(CallResult::Success(()))) {
                failures.insert(i);
            }
            let _ = shard.actor.stop_and_wait(None, Some(Duration::from_secs(10))).await;
        }
        self.storage().flush().await?;
        // ractor can report an actor stopped before its state is dropped (and hands a
        // stopped child's state to its supervisor in the termination event), so wait
        // until every actor has let go of the shared handles: once the last `Engine`
        // clone is dropped, the data dir is then free for the next opener.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&self.inner.shared) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let holders = Arc::strong_count(&self.inner.shared) - 1;
        match (failures.is_empty(), holders) {
            (true, 0) => Ok(()),
            (true, n) => Err(EngineError::Internal(format!(
                "{n} actors still hold the storage 10 s after shutdown"
            ))),
            (false, _) => Err(EngineError::Internal(format!(
                "shards {failures:?} did not stop cleanly"
            ))),
        }
    }
}

fn check_ttl(ttl: u32) -> EngineResult<u32> {
    if TOKEN_TTL_RANGE.contains(&ttl) {
        Ok(ttl)
    } else {
        Err(EngineError::Invalid(ValidationError {
            what: "token lifetime",
            problem: format!(
                "{ttl} s is out of range: use {} to {} seconds",
                TOKEN_TTL_RANGE.start(),
                TOKEN_TTL_RANGE.end()
            ),
        }))
    }
}

fn check_token_rate(rate: u32) -> EngineResult<u32> {
    if TOKEN_RATE_RANGE.contains(&rate) {
        Ok(rate)
    } else {
        Err(EngineError::Invalid(ValidationError {
            what: "token requests per minute",
            problem: format!(
                "{rate} is out of range: use {} to {}",
                TOKEN_RATE_RANGE.start(),
                TOKEN_RATE_RANGE.end()
            ),
        }))
    }
}

#[cfg(test)]
mod tests {
    use ractor::ActorProcessingErr;

    use super::*;

    /// Takes every message and answers none: it holds them (the caller waits), or
    /// drops them (the reply port goes with them, unanswered).
    struct Silent {
        hold: bool,
    }

    impl Actor for Silent {
        type Msg = ClientMsg;
        type State = Vec<ClientMsg>;
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<ClientMsg>,
            _args: (),
        ) -> Result<Vec<ClientMsg>, ActorProcessingErr> {
            Ok(Vec::new())
        }

        async fn handle(
            &self,
            _myself: ActorRef<ClientMsg>,
            message: ClientMsg,
            held: &mut Vec<ClientMsg>,
        ) -> Result<(), ActorProcessingErr> {
            if self.hold {
                held.push(message);
            }
            Ok(())
        }
    }

    fn check(reply: RpcReplyPort<EngineResult<CheckOutcome>>) -> ClientMsg {
        ClientMsg::Check {
            token: TokenContext::default(),
            deadline: Instant::now(),
            reply,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_limit_times_out() {
        let (actor, handle) = Actor::spawn(None, Silent { hold: true }, ()).await.unwrap();
        let sent = Sent::to(&actor, &check);
        assert!(sent.reply.is_some(), "a running actor takes the message");
        assert!(matches!(
            sent.answer(Some(Duration::from_secs(5))).await,
            Err(EngineError::Timeout)
        ));
        actor.stop(None);
        handle.await.unwrap();
    }

    #[tokio::test]
    async fn a_message_dropped_unanswered_or_refused_has_no_answer() {
        let (actor, handle) = Actor::spawn(None, Silent { hold: false }, ()).await.unwrap();
        let sent = Sent::to(&actor, &check);
        assert_eq!(sent.actor, actor.get_id());
        assert!(matches!(sent.answer(None).await, Ok(None)));

        actor.stop(None);
        handle.await.unwrap();
        let sent = Sent::to(&actor, &check);
        assert!(sent.reply.is_none(), "a stopped actor takes no message");
        assert!(matches!(sent.answer(Some(Duration::from_secs(5))).await, Ok(None)));
    }
}
