//! `ShardActor`: owns the client actors of the integrations that hash to it.
//!
//! It spawns a client actor on first use (from storage), supervises it (a failed actor
//! is dropped from the directory and rebuilt from storage on the next request, the
//! failure logged), and evicts idle ones — persisting their exact counts first — so
//! memory stays bounded however many integrations exist. Its [`Directory`] is shared
//! read-mostly with the [`crate::Engine`] so that a hot check is one message to the
//! client actor, not two.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwapOption;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::task::JoinSet;
use tollgate_storage::model::ClientId;

use crate::client::{ClientActor, ClientArgs, ClientMsg};
use crate::engine::{EngineError, EngineResult, Sent, Shared};

#[derive(Clone)]
struct Resident {
    actor: ActorRef<ClientMsg>,
    last_active_ms: Arc<AtomicU64>,
    live: Arc<LiveActor>,
}

/// The actor of one resident integration, shared by its directory entry and the
/// callers' [`crate::ActorHint`]s; emptied when the shard lets the actor go, so that
/// a remembered hint never keeps an evicted actor (and its channels) in memory.
///
/// Read on every hinted check, by both cores, so reading writes nothing they share:
/// a mutex, or a clone of the `ActorRef`, would write a lock word or a reference
/// count that the cores then pass back and forth.
pub(crate) struct LiveActor(ArcSwapOption<ActorRef<ClientMsg>>);

impl LiveActor {
    fn new(actor: ActorRef<ClientMsg>) -> Self {
        Self(ArcSwapOption::from_pointee(actor))
    }

    /// Sends to the actor while it is resident (`None` once it was let go).
    pub(crate) fn send<T>(&self, message: &impl Fn(RpcReplyPort<EngineResult<T>>) -> ClientMsg) -> Option<Sent<T>> {
        let actor = self.0.load();
        actor.as_deref().map(|actor| Sent::to(actor, message))
    }

    /// Whether the actor is still resident.
    pub(crate) fn is_resident(&self) -> bool {
        self.0.load().is_some()
    }

    fn clear(&self) {
        self.0.store(None);
    }
}

/// Client id → resident actor, written only by the shard, read by the engine.
#[derive(Clone, Default)]
pub struct Directory {
    map: Arc<RwLock<HashMap<ClientId, Resident>>>,
}

impl Directory {
    pub(crate) fn get(&self, client: &ClientId) -> Option<ActorRef<ClientMsg>> {
        let map = self.map.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(client).map(|r| r.actor.clone())
    }

    /// The shared handle of `client`'s resident actor, for callers to remember.
    pub(crate) fn live(&self, client: &ClientId) -> Option<Arc<LiveActor>> {
        let map = self.map.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(client).map(|r| r.live.clone())
    }

    pub(crate) fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ClientId, Resident>> {
        self.map.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Messages to a shard.
pub enum ShardMsg {
    /// The resident actor for `client`, spawning it from storage if needed; `None`
    /// when no such integration exists. `stale` names an actor the caller found dead
    /// or retired, to be replaced.
    Lookup {
        /// The client.
        client: ClientId,
        /// A dead or retired actor to replace.
        stale: Option<ActorId>,
        /// Reply.
        reply: RpcReplyPort<EngineResult<Option<ActorRef<ClientMsg>>>>,
    },
    /// Evict idle actors (and the least recently used beyond the cap).
    EvictIdle {
        /// Replies with how many were evicted, when asked.
        reply: Option<RpcReplyPort<usize>>,
    },
    /// Retire every client actor (graceful shutdown).
    RetireAll {
        /// Reply.
        reply: RpcReplyPort<()>,
    },
}

/// Spawn arguments.
pub struct ShardArgs {
    pub(crate) index: u32,
    pub(crate) shared: Arc<Shared>,
    pub(crate) directory: Directory,
}

/// The actor.
pub struct ShardActor;

/// Shard state.
pub struct ShardState {
    index: u32,
    shared: Arc<Shared>,
    directory: Directory,
    by_actor: HashMap<ActorId, ClientId>,
}

impl Actor for ShardActor {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(&self, myself: ActorRef<ShardMsg>, args: ShardArgs) -> Result<ShardState, ActorProcessingErr> {
        myself.send_interval(args.shared.config.eviction_interval, || ShardMsg::EvictIdle {
            reply: None,
        });
        Ok(ShardState {
            index: args.index,
            shared: args.shared,
            directory: args.directory,
            by_actor: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Lookup { client, stale, reply } => {
                let result = state.lookup(&myself, client, stale).await;
                let _ = reply.send(result);
            }
            ShardMsg::EvictIdle { reply } => {
                let evicted = state.evict_idle().await;
                if let Some(reply) = reply {
                    let _ = reply.send(evicted);
                }
            }
            ShardMsg::RetireAll { reply } => {
                let all: Vec<ClientId> = state.directory.write().keys().cloned().collect();
                state.retire(all).await;
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ShardMsg>,
        event: SupervisionEvent,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let client = state.forget(cell.get_id());
                tracing::error!(
                    shard = state.index,
                    client_id = ?client.as_ref().map(ClientId::as_str),
                    %error,
                    "client actor failed; it will be rebuilt from storage on its next request"
                );
                metrics::counter!("tollgate_client_actor_failures_total").increment(1);
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.forget(cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

impl ShardState {
    /// Drops a dead actor from the directory if it is still the one listed.
    fn forget(&mut self, actor: ActorId) -> Option<ClientId> {
        let client = self.by_actor.remove(&actor)?;
        {
            let mut directory = self.directory.write();
            if directory.get(&client).is_some_and(|r| r.actor.get_id() == actor)
                && let Some(gone) = directory.remove(&client)
            {
                gone.live.clear();
            }
        }
        self.report_resident();
        Some(client)
    }

    async fn lookup(
        &mut self,
        myself: &ActorRef<ShardMsg>,
        client: ClientId,
        stale: Option<ActorId>,
    ) -> EngineResult<Option<ActorRef<ClientMsg>>> {
        let existing = self.directory.get(&client);
        if let Some(actor) = existing {
            if Some(actor.get_id()) != stale {
                return Ok(Some(actor));
            }
            // The caller found it dead or retired: it must not serve again.
            self.forget(actor.get_id());
            actor.stop(None);
        }
        let Some(record) = self.shared.storage.integration_by_client(&client)? else {
            return Ok(None);
        };
        let last_active_ms = Arc::new(AtomicU64::new(self.shared.clock.now_ms()));
        let (actor, _) = Actor::spawn_linked(
            None,
            ClientActor,
            ClientArgs {
                record,
                shared: self.shared.clone(),
                last_active_ms: last_active_ms.clone(),
            },
            myself.get_cell(),
        )
        .await
        .map_err(|e| EngineError::Internal(format!("could not start the actor for {client}: {e}")))?;
        self.by_actor.insert(actor.get_id(), client.clone());
        self.directory.write().insert(
            client.clone(),
            Resident {
                actor: actor.clone(),
                last_active_ms,
                live: Arc::new(LiveActor::new(actor.clone())),
            },
        );
        // The cap holds at every moment, not only at the next eviction tick: beyond
        // it the least recently used go now (a tenth of the cap at once, so that one
        // group commit serves many), before this shard serves another lookup — so an
        // evicted integration's exact count is on disk before it can be loaded again.
        let cap = self.shared.config.max_resident_per_shard;
        if self.directory.len() > cap {
            let keep = cap.saturating_sub((cap / 10).max(1));
            let victims = self.least_recently_used(self.directory.len().saturating_sub(keep), &client);
            self.retire(victims).await;
        }
        self.report_resident();
        Ok(Some(actor))
    }

    /// The `n` least recently active residents, never `protect`.
    fn least_recently_used(&self, n: usize, protect: &ClientId) -> Vec<ClientId> {
        let directory = self.directory.write();
        let mut by_age: Vec<(u64, &ClientId)> = directory
            .iter()
            .filter(|(client, _)| *client != protect)
            .map(|(client, r)| (r.last_active_ms.load(Ordering::Relaxed), client))
            .collect();
        by_age.sort_unstable();
        by_age.into_iter().take(n).map(|(_, c)| c.clone()).collect()
    }

    /// Idle actors, plus the least recently used beyond the per-shard cap.
    async fn evict_idle(&mut self) -> usize {
        let now = self.shared.clock.now_ms();
        let idle_ms = self.shared.config.idle_eviction_after.as_millis() as u64;
        let cap = self.shared.config.max_resident_per_shard;
        let victims: Vec<ClientId> = {
            let directory = self.directory.write();
            let mut by_age: Vec<(u64, &ClientId)> = directory
                .iter()
                .map(|(client, r)| (r.last_active_ms.load(Ordering::Relaxed), client))
                .collect();
            by_age.sort_unstable();
            let over_cap = by_age.len().saturating_sub(cap);
            by_age
                .iter()
                .enumerate()
                .filter(|(i, (last, _))| *i < over_cap || now.saturating_sub(*last) >= idle_ms)
                .map(|(_, (_, client))| (*client).clone())
                .collect()
        };
        let count = victims.len();
        if count > 0 {
            self.retire(victims).await;
            tracing::debug!(shard = self.index, evicted = count, "evicted idle client actors");
        }
        count
    }

    /// Removes actors from the directory, has each persist its exact count
    /// (concurrently, so one group commit serves many), then stops them.
    async fn retire(&mut self, clients: Vec<ClientId>) {
        let residents: Vec<Resident> = {
            let mut directory = self.directory.write();
            clients.iter().filter_map(|c| directory.remove(c)).collect()
        };
        for resident in &residents {
            resident.live.clear();
        }
        let timeout = self.shared.config.call_timeout;
        let mut calls = JoinSet::new();
        for resident in residents {
            calls.spawn(async move {
                let result = resident
                    .actor
                    .call(|reply| ClientMsg::Retire { reply }, Some(timeout))
                    .await;
                let _ = resident.actor.stop_and_wait(None, Some(timeout)).await;
                (resident.actor.get_id(), result)
            });
        }
        while let Some(joined) = calls.join_next().await {
            match joined {
                Ok((_, Ok(CallResult::Success(Ok(()))))) => {}
                Ok((id, other)) => {
                    let detail = match other {
                        Ok(CallResult::Success(Err(e))) => e.to_string(),
                        Ok(CallResult::Timeout) => "timed out".into(),
                        _ => "actor gone".into(),
                    };
                    tracing::warn!(shard = self.index, actor = %id, detail, "a client actor did not persist its exact count on retire");
                }
                Err(e) => tracing::warn!(shard = self.index, error = %e, "a retire task failed"),
            }
        }
        self.report_resident();
    }

    fn report_resident(&self) {
        metrics::gauge!("tollgate_resident_integrations", "shard" => self.index.to_string())
            .set(self.directory.len() as f64);
    }
}
