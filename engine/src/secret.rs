//! Client secrets: format, checksum, Argon2id hashing on a bounded pool, and the
//! in-memory verified-secret digest.
//!
//! Format (DESIGN §4): `tgs_` + slot id (10 base62) + `_` + 43 base62 (≥ 256 random
//! bits) + a 6-character base62 CRC32 of everything before it. The prefix lets secret
//! scanners recognise a Tollgate secret, the checksum lets them (and us) reject typos
//! and fakes offline, and the slot id finds the integration without a hash lookup.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
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

thread_local! {
    /// Argon2's working memory (19 MiB with the parameters above), kept by each thread
    /// that hashes and reused: allocating it for every hash cost page faults and
    /// zeroing each time, and glibc kept the freed 19 MiB of every thread that ever
    /// hashed (hundreds of MiB of resident memory after a thousand creates, measured by
    /// the load tester). Argon2 writes every block before reading it, so the previous
    /// contents never matter.
    static ARGON2_MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// The most working memory a thread keeps between hashes (blocks of 1 KiB): room for
/// the parameters above with margin. A stored hash with larger parameters still
/// verifies, in memory allocated for that one run.
const KEPT_ARGON2_BLOCKS: usize = 64 * 1024;

/// Runs `hash` with this thread's Argon2 memory, grown to `blocks` if needed.
fn with_argon2_memory<T>(blocks: usize, hash: impl FnOnce(&mut [Block]) -> T) -> T {
    if blocks > KEPT_ARGON2_BLOCKS {
        return hash(&mut vec![Block::new(); blocks]);
    }
    ARGON2_MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, Block::new());
        }
        hash(&mut memory[..blocks])
    })
}

/// Argon2 output of `secret` with `salt` into `out`, using the thread's memory.
fn argon2_into(argon2: &Argon2<'_>, params: &Params, secret: &[u8], salt: &[u8], out: &mut [u8]) -> bool {
    with_argon2_memory(params.block_count(), |memory| {
        argon2.hash_password_into_with_memory(secret, salt, out, memory).is_ok()
    })
}

/// Argon2id PHC string of `secret` (OWASP parameters: m=19456 KiB, t=2, p=1).
pub fn hash_secret(secret: &str) -> Result<String, EngineError> {
    let failed = |e: &dyn fmt::Display| EngineError::Internal(format!("hashing a secret failed: {e}"));
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = argon2::password_hash::generate_salt();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    if !argon2_into(&argon2, &params, secret.as_bytes(), &salt, &mut out) {
        return Err(failed(&"Argon2 refused its input"));
    }
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| failed(&e))?),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `secret` matches the PHC string (the outputs are compared in constant time).
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(hash.algorithm.as_str()), Params::try_from(&hash)) else {
        return false;
    };
    let Ok(version) = hash.version.map_or(Ok(Version::default()), Version::try_from) else {
        return false;
    };
    let expected = expected.as_bytes();
    let mut out = [0u8; 64];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    argon2_into(&argon2, &params, secret.as_bytes(), salt, out) && bool::from(out.ct_eq(expected))
}

/// What a [`HashPool`] job does, for its CPU accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HashJob {
    /// Hashing a new secret or key.
    Hash,
    /// Verifying a presented secret or key against its stored hash.
    Verify,
}

impl HashJob {
    fn as_str(self) -> &'static str {
        match self {
            HashJob::Hash => "hash",
            HashJob::Verify => "verify",
        }
    }
}

/// Runs Argon2 work on tokio's blocking threads, at most `permits` at a time, with at
/// most `max_waiting` more queued; beyond that callers are refused at once with
/// [`EngineError::Overloaded`] rather than queued without bound.
///
/// Each job's CPU time (not its wall time: a job preempted by other threads costs no
/// more) is recorded in the `tollgate_hash_pool_cpu_seconds{job}` summary, so the
/// cost of one verification on this machine, under this load, can be read off a
/// running server.
pub(crate) struct HashPool {
    permits: Arc<Semaphore>,
    in_flight: Arc<AtomicUsize>,
    limit: usize,
    /// CPU nanoseconds spent in finished jobs, by [`HashJob`] (hash, verify).
    cpu_ns: Arc<[AtomicU64; 2]>,
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
            cpu_ns: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]),
        }
    }

    pub(crate) async fn run<T: Send + 'static>(
        &self,
        job: HashJob,
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
        let cpu_ns = self.cpu_ns.clone();
        tokio::task::spawn_blocking(move || {
            let before = cpu_time::ThreadTime::try_now();
            let done = work();
            if let Ok(spent) = before.and_then(|b| b.try_elapsed()) {
                cpu_ns[job as usize].fetch_add(spent.as_nanos() as u64, Ordering::Relaxed);
                metrics::histogram!("tollgate_hash_pool_cpu_seconds", "job" => job.as_str())
                    .record(spent.as_secs_f64());
            }
            done
        })
        .await
        .map_err(|e| EngineError::Internal(format!("a hashing task failed: {e}")))
    }

    /// CPU time spent in finished jobs of one kind since the pool started.
    #[cfg(test)]
    fn cpu_time(&self, job: HashJob) -> Duration {
        Duration::from_nanos(self.cpu_ns[job as usize].load(Ordering::Relaxed))
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
    fn hashes_are_interchangeable_with_the_argon2_crates_own() {
        use argon2::{PasswordHasher, PasswordVerifier};
        let secret = ClientSecret::generate(&SlotId::generate());
        // Theirs verified by ours (data dirs written before the memory was reused).
        let theirs = Argon2::default()
            .hash_password(secret.expose().as_bytes())
            .unwrap()
            .to_string();
        assert!(verify_secret(secret.expose(), &theirs));
        assert!(!verify_secret("tgs_wrong", &theirs));
        // Ours verified by theirs, twice on one thread (the memory is reused).
        for _ in 0..2 {
            let ours = hash_secret(secret.expose()).unwrap();
            assert!(
                Argon2::default()
                    .verify_password(secret.expose().as_bytes(), ours.as_str())
                    .is_ok()
            );
            assert!(verify_secret(secret.expose(), &ours));
        }
        // A hash from other parameters (smaller memory) verifies with its own ones.
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"short")
        .unwrap()
        .to_string();
        assert!(verify_secret("short", &small));
        assert!(!verify_secret("shorT", &small));
        // Broken strings never verify.
        for broken in [
            "",
            "seeded-without-a-secret",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            &theirs[..theirs.len() - 4],
        ] {
            assert!(!verify_secret(secret.expose(), broken), "{broken}");
        }
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
                pool.run(HashJob::Verify, move || {
                    let _ = rx.lock().map(|r| r.recv());
                })
                .await
            }));
        }
        // Wait until both are accounted for (one running, one waiting).
        while pool.in_flight.load(Ordering::Acquire) < 2 {
            tokio::task::yield_now().await;
        }
        let refused = pool.run(HashJob::Verify, || ()).await;
        assert!(matches!(refused, Err(EngineError::Overloaded { .. })));
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        for task in running {
            task.await.unwrap().unwrap();
        }
        assert!(pool.run(HashJob::Verify, || ()).await.is_ok());
    }

    #[tokio::test]
    async fn the_hash_pool_counts_each_jobs_cpu_time_not_its_wall_time() {
        let pool = HashPool::new(2, 0);
        // Sleeping costs no CPU: a pool that counted wall time would count 300 ms.
        pool.run(HashJob::Hash, || std::thread::sleep(Duration::from_millis(300)))
            .await
            .unwrap();
        assert!(
            pool.cpu_time(HashJob::Hash) < Duration::from_millis(100),
            "{:?}",
            pool.cpu_time(HashJob::Hash)
        );
        // Spinning until the thread has run 200 ms counts at least that, against its
        // own kind only.
        pool.run(HashJob::Verify, || {
            let start = cpu_time::ThreadTime::now();
            while start.elapsed() < Duration::from_millis(200) {}
        })
        .await
        .unwrap();
        let verify = pool.cpu_time(HashJob::Verify);
        assert!(
            verify >= Duration::from_millis(200) && verify < Duration::from_secs(2),
            "{verify:?}"
        );
        assert!(pool.cpu_time(HashJob::Hash) < Duration::from_millis(100));
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
