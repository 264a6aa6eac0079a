//! `tollgate-engine`: the actor-based credential and quota engine.
//!
//! Every decision about an integration — verify a secret, admit a request, rotate,
//! disable — is taken inside that integration's [`client`] actor, one message at a
//! time, so check-and-consume is a single message and never races. Client actors live
//! under [`shard`] actors chosen by a consistent hash of the client id ([`ring`]).
//! The only way in is the cloneable [`Engine`] handle; it speaks in domain types and
//! returns [`EngineError`], never a panic, and every actor call has a timeout.
//!
//! # Layout
//! - [`engine`](Engine): the handle, configuration, public request/response types.
//! - [`client`]: `ClientActor`, one per resident integration (credentials, rotation,
//!   token cut-off, revoked tokens, the live quota counter and its reservations).
//! - [`shard`]: `ShardActor`, spawns client actors lazily from storage, supervises
//!   them, evicts idle ones.
//! - [`quota`]: the pure quota counter (day window, thresholds, reservations).
//! - [`secret`]: client-secret format, Argon2id on a bounded pool, verified digests.
//! - [`ring`]: the consistent hash ring.
//! - [`seed`]: bulk seeding for benchmarks and load tests.
//! - [`clock`]: injected time.
//! - [`webhook`]: webhook events from the audit log, the durable outbox, retries.

pub mod client;
pub mod clock;
mod engine;
pub mod quota;
pub mod ring;
pub mod secret;
pub mod seed;
pub mod shard;
pub mod webhook;

pub use engine::*;
pub use tollgate_storage as storage;
pub use tollgate_storage::model;
