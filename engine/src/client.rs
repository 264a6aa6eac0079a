//! `ClientActor`: the single owner of one integration while it is resident.
//!
//! It holds the record (status, secret slots, token cut-off), revoked token ids, the
//! verified-secret digests, the token-rate bucket and the live quota counter. Each
//! message is handled to completion before the next, so check-and-consume, rotation
//! and disable never interleave. Durable changes are written (and awaited) before the
//! in-memory state changes, so a failed write changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tollgate_storage::PendingCommit;
use tollgate_storage::audit::AuditEvent;
use tollgate_storage::model::{DayUsage, IntegrationRecord, IntegrationStatus, Scope, SecretSlot, SlotId, SlotUse};

use crate::clock::day_of;
use crate::engine::{
    AdminContext, AuthOutcome, AuthRefusal, CheckOutcome, EngineError, EngineResult, Grant, IntegrationUpdate,
    IntegrationView, LeakPolicy, Refusal, RequestContext, RotationMode, Shared, TokenContext, expiry_notice_ms,
    secret_due_at_ms,
};
use crate::quota::{Admission, QuotaCounter};

/// A previous secret used this close to the end of its grace window gets one
/// `secret.grace_ending` notice (its owner has not switched yet).
pub const GRACE_ENDING_NOTICE: Duration = Duration::from_secs(3600);
use crate::secret::{SecretDigest, digests_equal};

/// Admin operations, all taken inside the owning actor.
#[derive(Debug, Clone)]
pub enum AdminOp {
    /// Change configuration.
    Update(IntegrationUpdate),
    /// Refuse everything until enabled.
    Disable {
        /// Why (shown to admins, audited).
        reason: Option<String>,
    },
    /// Undo a disable.
    Enable,
    /// Permanent off-boarding.
    Revoke,
    /// Install a new current secret.
    Rotate {
        /// The new slot (already hashed outside the actor).
        slot: SecretSlot,
        /// Routine or incident.
        mode: RotationMode,
    },
    /// End a rotation's grace window now.
    FinishRotation,
    /// A secret of this integration was found in public: act by `policy`.
    Leaked {
        /// The leaked secret's slot (verified against its hash before this is sent).
        slot_id: SlotId,
        /// What to do.
        policy: LeakPolicy,
        /// Where it was found (audited).
        url: Option<String>,
        /// Who found it (audited).
        source: Option<String>,
    },
}

/// Second step of authentication.
#[derive(Debug)]
pub enum AuthStep {
    /// Decided (granted from the cache, or refused).
    Done(AuthOutcome),
    /// Not cached: verify against this PHC string off the actor, then ask again.
    NeedsHash {
        /// The slot's Argon2id PHC string.
        phc: String,
    },
}

/// Messages to a client actor.
#[derive(Debug)]
pub enum ClientMsg {
    /// Check-and-consume one request.
    Check {
        /// What the token says.
        token: TokenContext,
        /// Past this the caller has given up: answer `Timeout` without counting.
        deadline: Instant,
        /// Reply.
        reply: RpcReplyPort<EngineResult<CheckOutcome>>,
    },
    /// Authenticate a secret: first without `verified` (cache check), then with the
    /// Argon2 result.
    Authenticate {
        /// Slot named by the secret.
        slot_id: SlotId,
        /// Keyed digest of the presented secret.
        digest: SecretDigest,
        /// The Argon2 verdict, on the second pass.
        verified: Option<bool>,
        /// Requested scopes.
        requested_scopes: Option<Vec<Scope>>,
        /// For last-use tracking.
        source_ip: String,
        /// Reply.
        reply: RpcReplyPort<EngineResult<AuthStep>>,
    },
    /// An admin operation.
    Admin {
        /// What to do.
        op: AdminOp,
        /// Who does it.
        ctx: AdminContext,
        /// Reply.
        reply: RpcReplyPort<EngineResult<IntegrationView>>,
    },
    /// Revoke one token id.
    RevokeToken {
        /// The token id.
        jti: String,
        /// Its expiry (Unix ms).
        expires_at_ms: u64,
        /// Who asked.
        context: RequestContext,
        /// Reply.
        reply: RpcReplyPort<EngineResult<()>>,
    },
    /// Would this token be refused (without counting)?
    Validate {
        /// What the token says.
        token: TokenContext,
        /// Reply: the refusal, or `None`.
        reply: RpcReplyPort<EngineResult<Option<Refusal>>>,
    },
    /// The integration with live usage.
    View {
        /// Reply.
        reply: RpcReplyPort<EngineResult<IntegrationView>>,
    },
    /// Today's live usage: (day, usage, daily quota).
    Usage {
        /// Reply.
        reply: RpcReplyPort<EngineResult<(u32, DayUsage, u64)>>,
    },
    /// Persist the exact count and refuse everything after (the shard then stops it).
    Retire {
        /// Reply.
        reply: RpcReplyPort<EngineResult<()>>,
    },
    /// Test support: panic inside the handler, to exercise supervision.
    #[doc(hidden)]
    Crash,
}

/// Spawn arguments.
pub struct ClientArgs {
    pub(crate) record: IntegrationRecord,
    pub(crate) shared: Arc<Shared>,
    pub(crate) last_active_ms: Arc<AtomicU64>,
}

/// The actor.
pub struct ClientActor;

/// A token bucket for the token endpoint: `rate` per minute, burst of a minute's worth.
#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    updated_ms: u64,
}

impl TokenBucket {
    fn take(&mut self, now_ms: u64, per_minute: u32) -> Result<(), Duration> {
        let capacity = f64::from(per_minute);
        let refill = capacity / 60_000.0 * now_ms.saturating_sub(self.updated_ms) as f64;
        self.tokens = (self.tokens + refill).min(capacity);
        self.updated_ms = now_ms;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = ((1.0 - self.tokens) * 60_000.0 / capacity).ceil() as u64;
            Err(Duration::from_millis(wait_ms.max(1)))
        }
    }
}

/// State of a resident integration.
pub struct ClientState {
    rec: IntegrationRecord,
    shared: Arc<Shared>,
    last_active_ms: Arc<AtomicU64>,
    counter: QuotaCounter,
    /// A reservation handed to the writer but not yet known durable: (target, handle).
    reservation_in_flight: Option<(u64, PendingCommit)>,
    revoked_jtis: HashMap<String, u64>,
    verified: HashMap<SlotId, SecretDigest>,
    slot_uses: HashMap<SlotId, SlotUse>,
    token_bucket: TokenBucket,
    is_retired: bool,
}

impl Actor for ClientActor {
    type Msg = ClientMsg;
    type State = ClientState;
    type Arguments = ClientArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ClientMsg>,
        args: ClientArgs,
    ) -> Result<ClientState, ActorProcessingErr> {
        let storage = &args.shared.storage;
        let now = args.shared.clock.now_ms();
        let today = day_of(now);
        let counter = QuotaCounter::resume(today, storage.day_usage(&args.record.id, today)?);
        let revoked_jtis = storage
            .revoked_tokens(&args.record.id)?
            .into_iter()
            .filter(|(_, exp)| *exp > now)
            .collect();
        let mut slot_uses = HashMap::new();
        for slot in [&args.record.current_secret, &args.record.previous_secret]
            .into_iter()
            .flatten()
        {
            if let Some(used) = storage.slot_use(&slot.slot_id)? {
                slot_uses.insert(slot.slot_id.clone(), used);
            }
        }
        let burst = f64::from(args.record.token_requests_per_minute);
        args.last_active_ms.store(now, Ordering::Relaxed);
        Ok(ClientState {
            rec: args.record,
            shared: args.shared,
            last_active_ms: args.last_active_ms,
            counter,
            reservation_in_flight: None,
            revoked_jtis,
            verified: HashMap::new(),
            slot_uses,
            token_bucket: TokenBucket {
                tokens: burst,
                updated_ms: now,
            },
            is_retired: false,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ClientMsg>,
        msg: ClientMsg,
        state: &mut ClientState,
    ) -> Result<(), ActorProcessingErr> {
        let now = state.shared.clock.now_ms();
        state.last_active_ms.store(now, Ordering::Relaxed);
        if state.is_retired {
            refuse_moved(msg);
            return Ok(());
        }
        match msg {
            ClientMsg::Check { token, deadline, reply } => {
                let result = if Instant::now() >= deadline {
                    Err(EngineError::Timeout)
                } else {
                    state.check(now, &token, deadline).await
                };
                let _ = reply.send(result);
            }
            ClientMsg::Authenticate {
                slot_id,
                digest,
                verified,
                requested_scopes,
                source_ip,
                reply,
            } => {
                let _ = reply.send(Ok(state.authenticate(
                    now,
                    &slot_id,
                    &digest,
                    verified,
                    requested_scopes,
                    source_ip,
                )));
            }
            ClientMsg::Admin { op, ctx, reply } => {
                let result = state.admin(now, op, &ctx).await.map(|()| state.view(now));
                let _ = reply.send(result);
            }
            ClientMsg::RevokeToken {
                jti,
                expires_at_ms,
                context,
                reply,
            } => {
                let _ = reply.send(state.revoke_token(now, jti, expires_at_ms, &context).await);
            }
            ClientMsg::Validate { token, reply } => {
                let _ = reply.send(Ok(state.refusal(&token)));
            }
            ClientMsg::View { reply } => {
                let result = state.roll_day(now).await.map(|()| state.view(now));
                let _ = reply.send(result);
            }
            ClientMsg::Usage { reply } => {
                let result = state.roll_day(now).await.map(|()| {
                    (
                        state.counter.day(),
                        state.counter.exact_snapshot(),
                        state.rec.daily_quota.get(),
                    )
                });
                let _ = reply.send(result);
            }
            ClientMsg::Retire { reply } => {
                let result = state.persist_exact().await;
                state.is_retired = true;
                let _ = reply.send(result);
            }
            ClientMsg::Crash => panic!("client actor asked to crash (test support)"),
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<ClientMsg>, state: &mut ClientState) -> Result<(), ActorProcessingErr> {
        // Stopped without Retire (e.g. the shard was stopped): still leave exact counts.
        if !state.is_retired
            && let Err(e) = state.persist_exact().await
        {
            tracing::error!(integration = %state.rec.id, error = %e, "could not persist the exact count on stop");
        }
        Ok(())
    }
}

fn refuse_moved(msg: ClientMsg) {
    match msg {
        ClientMsg::Check { reply, .. } => drop(reply.send(Err(EngineError::Moved))),
        ClientMsg::Authenticate { reply, .. } => drop(reply.send(Err(EngineError::Moved))),
        ClientMsg::Admin { reply, .. } | ClientMsg::View { reply } => drop(reply.send(Err(EngineError::Moved))),
        ClientMsg::RevokeToken { reply, .. } | ClientMsg::Retire { reply } => drop(reply.send(Err(EngineError::Moved))),
        ClientMsg::Usage { reply } => drop(reply.send(Err(EngineError::Moved))),
        ClientMsg::Validate { reply, .. } => drop(reply.send(Err(EngineError::Moved))),
        ClientMsg::Crash => {}
    }
}

impl ClientState {
    fn block(&self) -> u64 {
        (self.rec.daily_quota.get() / 100).clamp(1, self.shared.config.reservation_block_max.max(1))
    }

    fn event(&self, now: u64, kind: &str, outcome: &str) -> AuditEvent {
        AuditEvent {
            at_ms: now,
            kind: kind.into(),
            integration_id: Some(self.rec.id.clone()),
            client_id: Some(self.rec.client_id.clone()),
            org_id: Some(self.rec.org_id.clone()),
            outcome: outcome.into(),
            ..AuditEvent::default()
        }
    }

    fn view(&self, now: u64) -> IntegrationView {
        IntegrationView::build(&self.rec, now, self.counter.used(), &|slot| {
            self.slot_uses.get(slot).cloned()
        })
    }

    // ---- quota ---------------------------------------------------------------------------

    /// Why a token of this integration is refused regardless of quota, if it is.
    fn refusal(&self, token: &TokenContext) -> Option<Refusal> {
        match self.rec.status {
            IntegrationStatus::Active => {}
            IntegrationStatus::Disabled => return Some(Refusal::Disabled),
            IntegrationStatus::Revoked => return Some(Refusal::Revoked),
        }
        if token.issued_at_ms < self.rec.tokens_valid_after_ms {
            return Some(Refusal::TokenIssuedBeforeCutoff);
        }
        if token
            .jti
            .as_ref()
            .is_some_and(|jti| self.revoked_jtis.contains_key(&**jti))
        {
            return Some(Refusal::TokenRevoked);
        }
        None
    }

    async fn check(&mut self, now: u64, token: &TokenContext, deadline: Instant) -> EngineResult<CheckOutcome> {
        if let Some(refusal) = self.refusal(token) {
            return Ok(CheckOutcome::Refused(refusal));
        }
        if self.counter.is_stale(now) {
            // Building a timeout touches the runtime's shared timer handle: only pay
            // for it on the rare path that awaits the disk.
            tokio::time::timeout_at(deadline.into(), self.roll_day(now))
                .await
                .map_err(|_| EngineError::Timeout)??;
        }
        let limit = self.rec.daily_quota.get();
        loop {
            match self
                .counter
                .try_admit(now, limit, &self.shared.config.warning_thresholds)
            {
                Admission::NeedsReservation { upto } => {
                    // The only await on the hot path: bounded by the caller's deadline.
                    let reserve = self.reserve(now, upto);
                    tokio::time::timeout_at(deadline.into(), reserve)
                        .await
                        .map_err(|_| EngineError::Timeout)??;
                }
                Admission::Admitted {
                    status,
                    newly_crossed,
                    is_now_exhausted,
                } => {
                    self.reserve_ahead(now);
                    if let Some(threshold) = newly_crossed {
                        let mut e = self.event(now, "quota.warning", "warning");
                        e.details =
                            serde_json::json!({ "threshold_percent": threshold, "used": status.used, "limit": limit });
                        self.audit_detached(e);
                    }
                    if is_now_exhausted {
                        let mut e = self.event(now, "quota.exhausted", "exhausted");
                        e.details = serde_json::json!({ "limit": limit });
                        self.audit_detached(e);
                    }
                    return Ok(CheckOutcome::Admitted(status));
                }
                Admission::Exceeded {
                    status,
                    is_first_refusal,
                } => {
                    if is_first_refusal {
                        let mut e = self.event(now, "quota.exhausted", "exhausted");
                        e.details = serde_json::json!({ "limit": limit, "used": status.used });
                        self.audit_detached(e);
                    }
                    return Ok(CheckOutcome::QuotaExceeded(status));
                }
            }
        }
    }

    fn audit_detached(&self, event: AuditEvent) {
        if let Err(e) = self.shared.storage.batch().audit(event).commit_detached() {
            tracing::error!(integration = %self.rec.id, error = %e, "could not write a quota audit event");
        }
    }

    /// Picks up a finished background reservation, if any.
    fn harvest_reservation(&mut self) {
        if let Some((target, pending)) = &mut self.reservation_in_flight {
            match pending.try_finish() {
                None => {}
                Some(Ok(_)) => {
                    let target = *target;
                    self.counter.reservation_durable(target);
                    self.reservation_in_flight = None;
                }
                Some(Err(e)) => {
                    tracing::error!(integration = %self.rec.id, error = %e, "a quota reservation failed to persist");
                    self.reservation_in_flight = None;
                }
            }
        }
    }

    /// Makes sure a reservation of at least `upto` is durable, waiting on the disk.
    async fn reserve(&mut self, now: u64, upto: u64) -> EngineResult<()> {
        if let Some((target, pending)) = self.reservation_in_flight.take()
            && pending.wait().await.is_ok()
        {
            self.counter.reservation_durable(target);
        }
        if self.counter.durable_reserved() >= upto {
            return Ok(());
        }
        let target = self
            .counter
            .next_reservation(upto, self.rec.daily_quota.get(), self.block());
        let snapshot = self.counter.reservation_snapshot(target, now);
        self.shared
            .storage
            .batch()
            .put_day_usage(&self.rec.id, self.counter.day(), &snapshot)
            .commit()
            .await?;
        self.counter.reservation_durable(target);
        metrics::counter!("tollgate_quota_reservations_waited_total").increment(1);
        Ok(())
    }

    /// Reserves the next block in the background before the current one runs out.
    fn reserve_ahead(&mut self, now: u64) {
        self.harvest_reservation();
        let (limit, block) = (self.rec.daily_quota.get(), self.block());
        if self.reservation_in_flight.is_some() || !self.counter.should_reserve_ahead(limit, block) {
            return;
        }
        let target = self.counter.next_reservation(self.counter.used() + 1, limit, block);
        if target <= self.counter.durable_reserved() {
            return;
        }
        let snapshot = self.counter.reservation_snapshot(target, now);
        match self
            .shared
            .storage
            .batch()
            .put_day_usage(&self.rec.id, self.counter.day(), &snapshot)
            .submit()
        {
            Ok(pending) => self.reservation_in_flight = Some((target, pending)),
            Err(e) => {
                tracing::error!(integration = %self.rec.id, error = %e, "could not submit a quota reservation")
            }
        }
    }

    /// Moves the counter to a new UTC day: the old day's exact count is persisted.
    async fn roll_day(&mut self, now: u64) -> EngineResult<()> {
        if !self.counter.is_stale(now) {
            return Ok(());
        }
        self.persist_exact().await?;
        let today = day_of(now);
        self.counter = QuotaCounter::resume(today, self.shared.storage.day_usage(&self.rec.id, today)?);
        Ok(())
    }

    /// Writes the exact count (after any reservation in flight, which it supersedes).
    async fn persist_exact(&mut self) -> EngineResult<()> {
        if let Some((_, pending)) = self.reservation_in_flight.take() {
            let _ = pending.wait().await;
        }
        let exact = self.counter.exact_snapshot();
        self.shared
            .storage
            .batch()
            .put_day_usage(&self.rec.id, self.counter.day(), &exact)
            .commit()
            .await?;
        self.counter.exact_durable();
        Ok(())
    }

    // ---- credentials ---------------------------------------------------------------------

    /// The slot a presented slot id may use now, or why not.
    fn live_slot(&self, now: u64, slot_id: &SlotId) -> Result<&SecretSlot, AuthRefusal> {
        match self.rec.status {
            IntegrationStatus::Active => {}
            IntegrationStatus::Disabled => return Err(AuthRefusal::Disabled),
            IntegrationStatus::Revoked => return Err(AuthRefusal::Revoked),
        }
        if let Some(current) = self.rec.current_secret.as_ref().filter(|s| &s.slot_id == slot_id) {
            return Ok(current);
        }
        match self.rec.previous_secret.as_ref().filter(|s| &s.slot_id == slot_id) {
            Some(prev) if prev.expires_at_ms.is_some_and(|e| e > now) => Ok(prev),
            Some(_) => Err(AuthRefusal::SecretExpired),
            None => Err(AuthRefusal::WrongSecret),
        }
    }

    fn authenticate(
        &mut self,
        now: u64,
        slot_id: &SlotId,
        digest: &SecretDigest,
        verified: Option<bool>,
        requested_scopes: Option<Vec<Scope>>,
        source_ip: String,
    ) -> AuthStep {
        let slot = match self.live_slot(now, slot_id) {
            Ok(slot) => slot,
            Err(refusal) => return AuthStep::Done(AuthOutcome::Refused(refusal)),
        };
        let is_cached = self
            .verified
            .get(slot_id)
            .is_some_and(|known| digests_equal(known, digest));
        match (is_cached, verified) {
            (true, _) | (false, Some(true)) => {}
            (false, Some(false)) => {
                return AuthStep::Done(AuthOutcome::Refused(AuthRefusal::WrongSecret));
            }
            (false, None) => {
                return AuthStep::NeedsHash { phc: slot.phc.clone() };
            }
        }
        let due = secret_due_at_ms(&self.rec, slot).map(|due| (due, slot.expiry_noticed));
        let grace_end = slot.expires_at_ms.filter(|_| !slot.grace_noticed);
        self.verified.insert(slot_id.clone(), *digest);
        // The maximum secret age is checked only once the secret is known to be
        // right, so a guesser learns nothing from it.
        if let (Some(max_age), Some((due, noticed))) = (self.rec.secret_max_age_seconds, due) {
            if due <= now {
                return AuthStep::Done(AuthOutcome::Refused(AuthRefusal::SecretTooOld));
            }
            if due - now <= expiry_notice_ms(max_age) && !noticed {
                let details = serde_json::json!({ "due_at_ms": due, "days_left": (due - now) / 86_400_000 });
                self.notice(now, slot_id, "secret.expiring", details, |s| s.expiry_noticed = true);
            }
        }
        // The old secret still in use near the end of its grace window.
        if let Some(end) = grace_end
            && end.saturating_sub(now) <= GRACE_ENDING_NOTICE.as_millis() as u64
        {
            let details =
                serde_json::json!({ "grace_ends_at_ms": end, "seconds_left": end.saturating_sub(now) / 1000 });
            self.notice(now, slot_id, "secret.grace_ending", details, |s| s.grace_noticed = true);
        }
        let scopes = match requested_scopes {
            None => self.rec.scopes.clone(),
            Some(requested) if requested.iter().all(|s| self.rec.scopes.contains(s)) => requested,
            Some(_) => return AuthStep::Done(AuthOutcome::Refused(AuthRefusal::InvalidScope)),
        };
        if let Err(retry_after) = self.token_bucket.take(now, self.rec.token_requests_per_minute) {
            return AuthStep::Done(AuthOutcome::Refused(AuthRefusal::RateLimited { retry_after }));
        }
        let used = SlotUse {
            at_ms: now,
            ip: source_ip,
        };
        // Last use is exact in memory; on disk it is refreshed at most once a second
        // per slot (or when the address changes): a sled write per token would cost
        // more than the rest of a warm token request.
        let is_stale_on_disk = self
            .slot_uses
            .get(slot_id)
            .is_none_or(|last| now.saturating_sub(last.at_ms) >= 1_000 || last.ip != used.ip);
        if is_stale_on_disk && let Err(e) = self.shared.storage.record_slot_use(slot_id, &used) {
            tracing::warn!(integration = %self.rec.id, error = %e, "could not record secret last use");
        }
        self.slot_uses.insert(slot_id.clone(), used);
        AuthStep::Done(AuthOutcome::Granted(Grant {
            integration_id: self.rec.id.clone(),
            client_id: self.rec.client_id.clone(),
            org_id: self.rec.org_id.clone(),
            scopes,
            token_ttl_seconds: self.rec.token_ttl_seconds,
            slot_id: slot_id.clone(),
            audit_seq: 0,
        }))
    }

    /// Audits a notice about a secret slot once (`mark` sets the slot's flag, which is
    /// persisted in the same commit).
    fn notice(
        &mut self,
        now: u64,
        slot_id: &SlotId,
        kind: &str,
        details: serde_json::Value,
        mark: fn(&mut SecretSlot),
    ) {
        let mut rec = self.rec.clone();
        for slot in [&mut rec.current_secret, &mut rec.previous_secret]
            .into_iter()
            .flatten()
        {
            if &slot.slot_id == slot_id {
                mark(slot);
            }
        }
        let mut event = self.event(now, kind, "notice");
        event.slot_id = Some(slot_id.clone());
        event.details = details;
        match self
            .shared
            .storage
            .batch()
            .put_integration(&rec)
            .audit(event)
            .commit_detached()
        {
            Ok(()) => self.rec = rec,
            Err(e) => tracing::warn!(integration = %self.rec.id, error = %e, kind, "could not record a secret notice"),
        }
    }

    async fn revoke_token(
        &mut self,
        now: u64,
        jti: String,
        expires_at_ms: u64,
        ctx: &RequestContext,
    ) -> EngineResult<()> {
        self.revoked_jtis.retain(|_, exp| *exp > now);
        if self.revoked_jtis.contains_key(&jti) {
            return Ok(());
        }
        let mut event = self.event(now, "token.revoked", "success");
        event.jti = Some(jti.clone());
        event.source_ip = Some(ctx.source_ip.clone());
        self.shared
            .storage
            .batch()
            .put_revoked_token(&self.rec.id, &jti, expires_at_ms)
            .audit(event)
            .commit()
            .await?;
        self.revoked_jtis.insert(jti, expires_at_ms);
        Ok(())
    }

    // ---- admin -----------------------------------------------------------------------------

    async fn admin(&mut self, now: u64, op: AdminOp, ctx: &AdminContext) -> EngineResult<()> {
        if self.rec.status == IntegrationStatus::Revoked {
            return Err(EngineError::Conflict(format!(
                "integration {} is revoked; revoked integrations cannot be changed (create a new one)",
                self.rec.id
            )));
        }
        let mut rec = self.rec.clone();
        let (kind, outcome, mut details) = match &op {
            AdminOp::Update(update) => {
                let mut changed = serde_json::Map::new();
                if let Some(name) = &update.name {
                    changed.insert("name".into(), serde_json::json!({ "from": rec.name, "to": name }));
                    rec.name = name.clone();
                }
                if let Some(scopes) = &update.scopes {
                    changed.insert("scopes".into(), serde_json::json!({ "from": rec.scopes, "to": scopes }));
                    rec.scopes = scopes.clone();
                }
                if let Some(quota) = update.daily_quota {
                    changed.insert(
                        "daily_quota".into(),
                        serde_json::json!({ "from": rec.daily_quota, "to": quota }),
                    );
                    rec.daily_quota = quota;
                }
                if let Some(ttl) = update.token_ttl_seconds {
                    changed.insert(
                        "token_ttl_seconds".into(),
                        serde_json::json!({ "from": rec.token_ttl_seconds, "to": ttl }),
                    );
                    rec.token_ttl_seconds = ttl;
                }
                if let Some(rate) = update.token_requests_per_minute {
                    changed.insert(
                        "token_requests_per_minute".into(),
                        serde_json::json!({ "from": rec.token_requests_per_minute, "to": rate }),
                    );
                    rec.token_requests_per_minute = rate;
                }
                if let Some(days) = update.secret_max_age_days {
                    let seconds = (days > 0).then_some(u64::from(days) * 86_400);
                    changed.insert(
                        "secret_max_age_days".into(),
                        serde_json::json!({ "from": rec.secret_max_age_seconds.map(|s| s / 86_400), "to": seconds.map(|s| s / 86_400) }),
                    );
                    rec.secret_max_age_seconds = seconds;
                }
                (
                    "integration.updated",
                    "success",
                    serde_json::json!({ "changed": changed }),
                )
            }
            AdminOp::Disable { reason } => {
                if rec.status == IntegrationStatus::Disabled {
                    return Err(EngineError::Conflict(format!(
                        "integration {} is already disabled",
                        rec.id
                    )));
                }
                rec.status = IntegrationStatus::Disabled;
                rec.disabled_reason = reason.clone();
                (
                    "integration.disabled",
                    "success",
                    serde_json::json!({ "reason": reason }),
                )
            }
            AdminOp::Enable => {
                if rec.status == IntegrationStatus::Active {
                    return Err(EngineError::Conflict(format!(
                        "integration {} is already active",
                        rec.id
                    )));
                }
                rec.status = IntegrationStatus::Active;
                rec.disabled_reason = None;
                ("integration.enabled", "success", serde_json::Value::Null)
            }
            AdminOp::Revoke => {
                rec.status = IntegrationStatus::Revoked;
                rec.current_secret = None;
                rec.previous_secret = None;
                rec.tokens_valid_after_ms = now;
                ("integration.revoked", "success", serde_json::Value::Null)
            }
            AdminOp::Rotate { slot, mode } => {
                let old = rec.current_secret.take();
                let old_slot = old.as_ref().map(|s| s.slot_id.clone());
                rec.current_secret = Some(slot.clone());
                match mode {
                    RotationMode::Routine { grace } => {
                        let expires = now + grace.as_millis() as u64;
                        rec.previous_secret = old.map(|mut s| {
                            s.expires_at_ms = Some(expires);
                            s
                        });
                        (
                            "secret.rotated",
                            "success",
                            serde_json::json!({ "mode": "routine", "grace_seconds": grace.as_secs(),
                                "previous_slot_id": old_slot, "previous_expires_at_ms": expires }),
                        )
                    }
                    RotationMode::Incident => {
                        rec.previous_secret = None;
                        rec.tokens_valid_after_ms = now;
                        (
                            "secret.incident_rotated",
                            "incident",
                            serde_json::json!({ "mode": "incident", "previous_slot_id": old_slot,
                                "tokens_valid_after_ms": now }),
                        )
                    }
                }
            }
            AdminOp::Leaked {
                slot_id,
                policy,
                url,
                source,
            } => {
                let role = if rec.current_secret.as_ref().is_some_and(|s| &s.slot_id == slot_id) {
                    "current"
                } else if rec.previous_secret.as_ref().is_some_and(|s| &s.slot_id == slot_id) {
                    "previous"
                } else {
                    return Err(EngineError::Conflict(format!(
                        "secret slot {slot_id} of integration {} no longer accepts secrets",
                        rec.id
                    )));
                };
                let action = match policy {
                    LeakPolicy::KillSlot => {
                        if role == "current" {
                            rec.current_secret = None;
                        } else {
                            rec.previous_secret = None;
                        }
                        // Tokens do not name their slot: every token issued up to now dies.
                        rec.tokens_valid_after_ms = now;
                        "slot_killed"
                    }
                    LeakPolicy::Disable => {
                        if rec.status == IntegrationStatus::Disabled {
                            return Err(EngineError::Conflict(format!(
                                "integration {} is already disabled",
                                rec.id
                            )));
                        }
                        rec.status = IntegrationStatus::Disabled;
                        rec.disabled_reason = Some(format!(
                            "secret leaked{}",
                            url.as_deref().map(|u| format!(" at {u}")).unwrap_or_default()
                        ));
                        "disabled"
                    }
                };
                (
                    "secret.leaked",
                    action,
                    serde_json::json!({ "slot_role": role, "policy": policy.as_str(), "url": url,
                        "source": source, "tokens_valid_after_ms": (action == "slot_killed").then_some(now) }),
                )
            }
            AdminOp::FinishRotation => {
                let Some(prev) = rec
                    .previous_secret
                    .take()
                    .filter(|p| p.expires_at_ms.is_some_and(|e| e > now))
                else {
                    return Err(EngineError::Conflict(format!(
                        "integration {} has no rotation in progress: there is no previous secret still in its grace window",
                        rec.id
                    )));
                };
                (
                    "secret.rotation_finished",
                    "success",
                    serde_json::json!({ "previous_slot_id": prev.slot_id }),
                )
            }
        };
        rec.updated_at_ms = now;
        let mut event = self.event(now, kind, outcome);
        event.admin_key_id = ctx.admin_key_id.clone();
        event.source_ip = ctx.source_ip.clone();
        if let AdminOp::Rotate { slot, .. } = &op {
            event.slot_id = Some(slot.slot_id.clone());
        }
        if let AdminOp::Disable { reason } = &op {
            event.reason = reason.clone();
        }
        if let AdminOp::Leaked { slot_id, url, .. } = &op {
            event.slot_id = Some(slot_id.clone());
            event.reason = url.clone();
        }
        if details.is_object() && details.as_object().is_some_and(|m| m.is_empty()) {
            details = serde_json::Value::Null;
        }
        event.details = details;
        self.shared
            .storage
            .batch()
            .put_integration(&rec)
            .audit(event)
            .commit()
            .await?;
        // Credentials changed: forget every remembered verification.
        if !matches!(op, AdminOp::Update(_)) {
            self.verified.clear();
        }
        self.rec = rec;
        Ok(())
    }
}
