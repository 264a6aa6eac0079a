//! Client secrets: format, checksum, Argon2id hashing on a bounded pool, and the
//! in-memory verified-secret digest.
//!
//! Format (DESIGN §4): `tgs_` + slot id (10 base62) + `_` + 43 base62 (≥ 256 random
//! bits) + a 6-character base62 CRC32 of everything before it. The prefix lets secret
//! scanners recognise a Tollgate secret, the checksum lets them (and us) reject typos
//! and fakes offline, and the slot id finds the integration without a hash lookup.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tollgate_storage::model::{SlotId, random_base62};

use crate::EngineError;

const PREFIX: &str = "tgs_";
const BODY_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
/// Total length of a client secret.
pub const SECRET_LEN: usize = PREFIX.len() + 10 + 1 + BODY_LEN + CHECKSUM_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` in base62, left-padded with `0` to `width` characters.
fn base62_fixed(mut n: u64, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The 6-character base62 CRC32 that ends Tollgate's prefixed credentials.
pub fn checksum(text: &str) -> String {
    base62_fixed(u64::from(crc32fast::hash(text.as_bytes())), CHECKSUM_LEN)
}

/// Why a presented secret is not even well-formed. Never contains the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretFormatError {
    /// Not `tgs_…` or not 64 characters.
    #[error("the client secret is not a Tollgate secret (expected `tgs_` and 64 characters)")]
    NotASecret,
    /// Well-shaped but the checksum does not match: a typo or a made-up secret.
    #[error("the client secret's checksum does not match: it was mistyped or made up")]
    BadChecksum,
}

/// A client secret in clear: exists only between generation and the response that
/// shows it, or between a request and its verification. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientSecret(slot {}, redacted)", self.slot_id())
    }
}

impl ClientSecret {
    /// A fresh secret for `slot`.
    pub fn generate(slot: &SlotId) -> Self {
        let head = format!("{PREFIX}{slot}_{}", random_base62(BODY_LEN));
        let sum = checksum(&head);
        Self(head + &sum)
    }

    /// Checks the shape and the checksum (no hash is consulted).
    pub fn parse(text: &str) -> Result<Self, SecretFormatError> {
        let bytes = text.as_bytes();
        let shaped = text.len() == SECRET_LEN
            && text.starts_with(PREFIX)
            && bytes[PREFIX.len() + 10] == b'_'
            && bytes
                .iter()
                .enumerate()
                .all(|(i, b)| i < PREFIX.len() || i == PREFIX.len() + 10 || b.is_ascii_alphanumeric());
        if !shaped {
            return Err(SecretFormatError::NotASecret);
        }
        let (head, sum) = text.split_at(SECRET_LEN - CHECKSUM_LEN);
        if checksum(head).as_bytes().ct_eq(sum.as_bytes()).unwrap_u8() != 1 {
            return Err(SecretFormatError::BadChecksum);
        }
        Ok(Self(text.to_owned()))
    }

    /// The slot the secret claims to belong to.
    pub fn slot_id(&self) -> SlotId {
        SlotId::parse(&self.0[PREFIX.len()..PREFIX.len() + 10]).unwrap_or_else(|_| SlotId::generate())
    }

    /// The secret itself, to show once or to hash.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A keyed digest of a verified secret, remembered in memory only so that repeat
/// token requests skip Argon2. The key is random per process, so a memory dump of
/// digests is useless elsewhere and nothing of it is ever persisted.
pub type SecretDigest = [u8; 32];

/// Computes [`SecretDigest`]s with a per-process key.
#[derive(Clone)]
pub(crate) struct Digester {
    key: Arc<[u8; 32]>,
}

impl Digester {
    pub(crate) fn new() -> Self {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        Self { key: Arc::new(key) }
    }

    pub(crate) fn digest(&self, secret: &str) -> SecretDigest {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// Constant-time equality of two digests.
pub fn digests_equal(a: &SecretDigest, b: &SecretDigest) -> bool {
    a.ct_eq(b).into()
}

/// Argon2id PHC string of `secret` (OWASP parameters: m=19456 KiB, t=2, p=1).
pub fn hash_secret(secret: &str) -> Result<String, EngineError> {
    Argon2::default()
        .hash_password(secret.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| EngineError::Internal(format!("hashing a secret failed: {e}")))
}

/// Whether `secret` matches the PHC string (constant-time inside argon2).
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    Argon2::default().verify_password(secret.as_bytes(), phc).is_ok()
}

/// Runs Argon2 work on tokio's blocking threads, at most `permits` at a time, with at
/// most `max_waiting` more queued; beyond that callers are refused at once with
/// [`EngineError::Overloaded`] rather than queued without bound.
pub(crate) struct HashPool {
    permits: Arc<Semaphore>,
    in_flight: Arc<AtomicUsize>,
    limit: usize,
}

struct InFlight(Arc<AtomicUsize>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HashPool {
    pub(crate) fn new(permits: usize, max_waiting: usize) -> Self {
        let permits = permits.max(1);
        Self {
            permits: Arc::new(Semaphore::new(permits)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            limit: permits + max_waiting,
        }
    }

    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, EngineError> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("tollgate_hash_pool_rejected_total").increment(1);
            return Err(EngineError::Overloaded {
                retry_after: Duration::from_secs(1),
            });
        }
        let _guard = InFlight(self.in_flight.clone());
        let _permit = self.permits.acquire().await.map_err(|_| EngineError::ShuttingDown)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| EngineError::Internal(format!("a hashing task failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_secrets_parse_and_name_their_slot() {
        let slot = SlotId::generate();
        let secret = ClientSecret::generate(&slot);
        assert_eq!(secret.expose().len(), SECRET_LEN);
        assert!(secret.expose().starts_with("tgs_"));
        let parsed = ClientSecret::parse(secret.expose()).unwrap();
        assert_eq!(parsed.slot_id(), slot);
    }

    #[test]
    fn a_single_changed_character_fails_the_checksum() {
        let secret = ClientSecret::generate(&SlotId::generate());
        let mut chars: Vec<char> = secret.expose().chars().collect();
        chars[20] = if chars[20] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(ClientSecret::parse(&typo), Err(SecretFormatError::BadChecksum));
    }

    #[test]
    fn debug_output_never_contains_the_secret() {
        let secret = ClientSecret::generate(&SlotId::generate());
        let shown = format!("{secret:?}");
        assert!(!shown.contains(secret.expose()), "{shown}");
        assert!(!shown.contains(&secret.expose()[15..40]));
    }

    #[test]
    fn hashing_is_argon2id_with_owasp_parameters_and_verifies() {
        let secret = ClientSecret::generate(&SlotId::generate());
        let phc = hash_secret(secret.expose()).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_secret(secret.expose(), &phc));
        let other = ClientSecret::generate(&SlotId::generate());
        assert!(!verify_secret(other.expose(), &phc));
    }

    #[test]
    fn digests_depend_on_the_process_key() {
        let a = Digester::new();
        let b = Digester::new();
        assert!(digests_equal(&a.digest("x"), &a.digest("x")));
        assert!(!digests_equal(&a.digest("x"), &b.digest("x")));
    }

    #[tokio::test]
    async fn the_hash_pool_refuses_work_beyond_its_bound() {
        let pool = Arc::new(HashPool::new(1, 1));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        let mut running = Vec::new();
        for _ in 0..2 {
            let pool = pool.clone();
            let rx = release_rx.clone();
            running.push(tokio::spawn(async move {
                pool.run(move || {
                    let _ = rx.lock().map(|r| r.recv());
                })
                .await
            }));
        }
        // Wait until both are accounted for (one running, one waiting).
        while pool.in_flight.load(Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        let refused = pool.run(|| ()).await;
        assert!(matches!(refused, Err(EngineError::Overloaded { .. })));
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        for task in running {
            task.await.unwrap().unwrap();
        }
        assert!(pool.run(|| ()).await.is_ok());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_only_checksummed_secrets(s in "\\PC{0,80}") {
            if let Ok(secret) = ClientSecret::parse(&s) {
                prop_assert_eq!(secret.expose(), s.as_str());
                prop_assert_eq!(s.len(), SECRET_LEN);
            }
        }

        #[test]
        fn base62_is_fixed_width(n in 0u64..(1u64 << 32)) {
            prop_assert_eq!(base62_fixed(n, 6).len(), 6);
        }
    }
}
