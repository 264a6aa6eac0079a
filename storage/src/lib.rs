//! `tollgate-storage`: Tollgate's persistence, a narrow typed API over sled 0.34.
//!
//! No sled type appears in the public API: callers read typed records and write
//! through a [`Batch`] whose `commit().await` returns only once the batch is on disk
//! (group commit: one flush serves every batch that arrived meanwhile).
//!
//! # Layout
//! - [`model`]: domain newtypes (`ClientId`, `OrgId`, `Scope`, …) and persisted records.
//! - [`audit`]: the hash-chained audit log's entry format, filters and verification.
//! - `commit`: the group-commit writer thread (the audit chain's only writer).
//! - this file: [`Storage`] (open, schema check, reads) and [`Batch`] (durable writes).

pub mod audit;
mod commit;
pub mod model;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crossbeam::channel::Sender;
use tokio::sync::oneshot;

use crate::audit::{AuditEntry, AuditEvent, AuditFilter, BrokenLink, ChainReport, GENESIS_HASH};
use crate::commit::{ChainHead, CommitRequest, WriteOp};
use crate::model::{
    AdminKeyId, AdminKeyRecord, ClientId, DayUsage, DeliveryRecord, DeliveryStatus, IntegrationId, IntegrationRecord,
    OrgId, OrgSettings, SigningKeyRecord, SlotId, SlotUse, WebhookId, WebhookRecord,
};

/// Meta key of the webhook fan-out cursor (an audit seq).
const WEBHOOK_CURSOR_KEY: &str = "webhook_cursor";

/// sled page-cache capacity.
pub const CACHE_CAPACITY_BYTES: u64 = 128 * 1024 * 1024;

/// The data-format version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// What went wrong in storage. Messages say what and where, never a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The disk or sled failed (I/O error, lock held by another process, …).
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// The data dir was written by another version of Tollgate.
    #[error(
        "the data directory {path} has schema version {found}, but this build of Tollgate reads only version {supported}; use a matching Tollgate version or a fresh --data-dir"
    )]
    UnsupportedSchema {
        /// The data dir.
        path: String,
        /// Version found on disk.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// Stored bytes do not decode.
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt {
        /// Which data.
        what: &'static str,
        /// How.
        detail: String,
    },
    /// A record could not be encoded.
    #[error("could not encode a record: {0}")]
    Encode(String),
    /// The writer thread is gone (the storage is shutting down).
    #[error("storage is shut down; the write was not made")]
    Closed,
}

impl StorageError {
    pub(crate) fn corrupt(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            what,
            detail: detail.into(),
        }
    }
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        Self::Io(e.to_string())
    }
}

impl From<serde_json::Error> for StorageError {
    fn from(e: serde_json::Error) -> Self {
        Self::Encode(e.to_string())
    }
}

/// Storage result.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// All sled trees, opened once.
#[derive(Clone)]
pub(crate) struct Trees {
    meta: sled::Tree,
    integrations: sled::Tree,
    by_client: sled::Tree,
    by_slot: sled::Tree,
    by_org: sled::Tree,
    usage: sled::Tree,
    slot_use: sled::Tree,
    revoked_tokens: sled::Tree,
    pub(crate) audit: sled::Tree,
    pub(crate) audit_by_integration: sled::Tree,
    admin_keys: sled::Tree,
    signing_keys: sled::Tree,
    webhooks: sled::Tree,
    org_settings: sled::Tree,
    /// Deliveries by webhook id + seq.
    deliveries: sled::Tree,
    /// Pending deliveries: seq → webhook id (the outbox).
    outbox: sled::Tree,
}

impl Trees {
    fn open(db: &sled::Db) -> Result<Self> {
        Ok(Self {
            meta: db.open_tree("meta")?,
            integrations: db.open_tree("integrations")?,
            by_client: db.open_tree("integrations_by_client")?,
            by_slot: db.open_tree("integrations_by_slot")?,
            by_org: db.open_tree("integrations_by_org")?,
            usage: db.open_tree("usage")?,
            slot_use: db.open_tree("slot_use")?,
            revoked_tokens: db.open_tree("revoked_tokens")?,
            audit: db.open_tree("audit")?,
            audit_by_integration: db.open_tree("audit_by_integration")?,
            admin_keys: db.open_tree("admin_keys")?,
            signing_keys: db.open_tree("signing_keys")?,
            webhooks: db.open_tree("webhooks")?,
            org_settings: db.open_tree("org_settings")?,
            deliveries: db.open_tree("webhook_deliveries")?,
            outbox: db.open_tree("webhook_outbox")?,
        })
    }
}

struct Inner {
    db: sled::Db,
    trees: Trees,
    /// `None` only while dropping.
    committer: Option<Sender<CommitRequest>>,
    writer: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
    /// The first failed durable write, if any: sled refuses every later write, so
    /// the server reports itself not ready until restarted.
    failure: Arc<Mutex<Option<String>>>,
}

impl Inner {
    fn send(&self, req: CommitRequest) -> Result<()> {
        self.committer
            .as_ref()
            .ok_or(StorageError::Closed)?
            .send(req)
            .map_err(|_| StorageError::Closed)
    }
}

impl Drop for Inner {
    /// Closes the writer's queue and waits for it, so the last handle's drop leaves
    /// every accepted write flushed and the data dir unlocked for the next opener.
    fn drop(&mut self) {
        self.committer.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "final flush of the data directory failed");
        }
    }
}

/// Handle to the data directory; cheap to clone.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("path", &self.inner.path).finish()
    }
}

pub(crate) fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn id_key(id: &IntegrationId, suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.as_str().len() + suffix.len());
    key.extend_from_slice(id.as_str().as_bytes());
    key.extend_from_slice(suffix);
    key
}

fn decode_json<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::corrupt(what, e.to_string()))
}

fn decode_id(what: &'static str, bytes: &[u8]) -> Result<IntegrationId> {
    let text = std::str::from_utf8(bytes).map_err(|e| StorageError::corrupt(what, e.to_string()))?;
    IntegrationId::parse(text).map_err(|e| StorageError::corrupt(what, e.to_string()))
}

/// How long `open` waits for a data dir whose lock is still held by a handle being
/// torn down in this process, before saying it is in use.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn open_db(path: &Path) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(path)
            // sled's default cache is 1 GiB; bound it so memory is predictable (hot
            // state lives in the engine's actors, not in sled's cache).
            .cache_capacity(CACHE_CAPACITY_BYTES)
            // No background flusher: every durable write is flushed by the group-commit
            // writer, and the flusher thread would keep the data dir locked for a while
            // after the last handle is dropped.
            .flush_every_ms(None)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(e) if e.to_string().contains("could not acquire lock") && started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => {
                return Err(StorageError::Io(format!(
                    "cannot open data directory {}: {e}{}",
                    path.display(),
                    if e.to_string().contains("could not acquire lock") {
                        " (another Tollgate process is using it)"
                    } else {
                        ""
                    }
                )));
            }
        }
    }
}

impl Storage {
    /// Opens (or creates) the data directory.
    ///
    /// Fails with [`StorageError::UnsupportedSchema`] for a data dir of another
    /// version, and with a clear I/O error when the directory cannot be used (for
    /// example because another process holds it).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let db = open_db(&path)?;
        let trees = Trees::open(&db)?;
        match trees.meta.get("schema_version")? {
            Some(bytes) => {
                let found = bytes
                    .as_ref()
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| StorageError::corrupt("schema version", "not a 4-byte number"))?;
                if found != SCHEMA_VERSION {
                    return Err(StorageError::UnsupportedSchema {
                        path: path.display().to_string(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
            None => {
                if !trees.integrations.is_empty() || !trees.audit.is_empty() {
                    return Err(StorageError::corrupt(
                        "schema version",
                        format!("{} holds data but no schema version", path.display()),
                    ));
                }
                trees.meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
                db.flush()?;
            }
        }
        let head = ChainHead::load(&trees)?;
        let failure = Arc::new(Mutex::new(None));
        let (tx, rx) = crossbeam::channel::unbounded();
        let thread_db = db.clone();
        let thread_trees = trees.clone();
        let writer = std::thread::Builder::new()
            .name("tollgate-commit".into())
            .spawn({
                let failure = failure.clone();
                move || commit::run(thread_db, thread_trees, rx, head, &failure)
            })
            .map_err(|e| StorageError::Io(format!("cannot start the commit thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                trees,
                committer: Some(tx),
                writer: Some(writer),
                path,
                failure,
            }),
        })
    }

    /// Why durable writes fail, once one has: the disk is full or failing. Writes stay
    /// refused until the process restarts over a healthy disk.
    pub fn failure(&self) -> Option<String> {
        self.inner.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Starts a durable write.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            storage: self,
            ops: Vec::new(),
            error: None,
        }
    }

    /// Flushes everything written so far to disk.
    pub async fn flush(&self) -> Result<()> {
        self.inner.db.flush_async().await?;
        Ok(())
    }

    // ---- integrations -------------------------------------------------------------

    /// One integration by id.
    pub fn integration(&self, id: &IntegrationId) -> Result<Option<IntegrationRecord>> {
        self.inner
            .trees
            .integrations
            .get(id.as_str())?
            .map(|v| decode_json("integration", &v))
            .transpose()
    }

    /// The integration id owning a client id.
    pub fn integration_id_by_client(&self, client: &ClientId) -> Result<Option<IntegrationId>> {
        self.inner
            .trees
            .by_client
            .get(client.as_str())?
            .map(|v| decode_id("client index", &v))
            .transpose()
    }

    /// One integration by client id.
    pub fn integration_by_client(&self, client: &ClientId) -> Result<Option<IntegrationRecord>> {
        match self.integration_id_by_client(client)? {
            Some(id) => self.integration(&id),
            None => Ok(None),
        }
    }

    /// The integration id that a secret slot belongs (or belonged) to.
    pub fn integration_id_by_slot(&self, slot: &SlotId) -> Result<Option<IntegrationId>> {
        self.inner
            .trees
            .by_slot
            .get(slot.as_str())?
            .map(|v| decode_id("slot index", &v))
            .transpose()
    }

    /// Integrations in id order after `after`, optionally of one organisation.
    pub fn list_integrations(
        &self,
        org: Option<&OrgId>,
        after: Option<&IntegrationId>,
        limit: usize,
    ) -> Result<Vec<IntegrationRecord>> {
        let mut out = Vec::with_capacity(limit.min(1024));
        match org {
            Some(org) => {
                let mut prefix = org.as_str().as_bytes().to_vec();
                prefix.push(0);
                let start = match after {
                    Some(a) => {
                        let mut k = prefix.clone();
                        k.extend_from_slice(a.as_str().as_bytes());
                        k.push(0);
                        k
                    }
                    None => prefix.clone(),
                };
                for item in self.inner.trees.by_org.range(start..) {
                    let (key, _) = item?;
                    if !key.starts_with(&prefix) || out.len() >= limit {
                        break;
                    }
                    let id = decode_id("organisation index", &key[prefix.len()..])?;
                    if let Some(rec) = self.integration(&id)? {
                        out.push(rec);
                    }
                }
            }
            None => {
                let start = match after {
                    Some(a) => {
                        let mut k = a.as_str().as_bytes().to_vec();
                        k.push(0);
                        k
                    }
                    None => Vec::new(),
                };
                for item in self.inner.trees.integrations.range(start..) {
                    if out.len() >= limit {
                        break;
                    }
                    let (_, value) = item?;
                    out.push(decode_json("integration", &value)?);
                }
            }
        }
        Ok(out)
    }

    /// How many integrations are stored.
    pub fn integration_count(&self) -> usize {
        self.inner.trees.integrations.len()
    }

    // ---- usage --------------------------------------------------------------------

    /// Persisted usage of one integration on one UTC day (days since the Unix epoch).
    pub fn day_usage(&self, id: &IntegrationId, day: u32) -> Result<Option<DayUsage>> {
        self.inner
            .trees
            .usage
            .get(id_key(id, &day.to_be_bytes()))?
            .map(|v| DayUsage::decode(&v).ok_or_else(|| StorageError::corrupt("usage", "wrong length")))
            .transpose()
    }

    /// Persisted usage for days `from_day..=to_day` that have any.
    pub fn usage_range(&self, id: &IntegrationId, from_day: u32, to_day: u32) -> Result<Vec<(u32, DayUsage)>> {
        let start = id_key(id, &from_day.to_be_bytes());
        let end = id_key(id, &to_day.to_be_bytes());
        let mut out = Vec::new();
        for item in self.inner.trees.usage.range(start..=end) {
            let (key, value) = item?;
            let day_bytes: [u8; 4] = key[key.len() - 4..]
                .try_into()
                .map_err(|_| StorageError::corrupt("usage", "bad key"))?;
            let usage = DayUsage::decode(&value).ok_or_else(|| StorageError::corrupt("usage", "wrong length"))?;
            out.push((u32::from_be_bytes(day_bytes), usage));
        }
        Ok(out)
    }

    // ---- secret slot use, revoked tokens ---------------------------------------------

    /// Records a successful use of a slot. Not flushed: last-use is informational and
    /// reaches disk with the next durable write (or the final flush on shutdown).
    pub fn record_slot_use(&self, slot: &SlotId, used: &SlotUse) -> Result<()> {
        self.inner
            .trees
            .slot_use
            .insert(slot.as_str(), serde_json::to_vec(used)?)?;
        Ok(())
    }

    /// Last successful use of a slot.
    pub fn slot_use(&self, slot: &SlotId) -> Result<Option<SlotUse>> {
        self.inner
            .trees
            .slot_use
            .get(slot.as_str())?
            .map(|v| decode_json("slot use", &v))
            .transpose()
    }

    /// Revoked token ids of an integration with their expiry (Unix ms).
    pub fn revoked_tokens(&self, id: &IntegrationId) -> Result<Vec<(String, u64)>> {
        let prefix = id_key(id, &[]);
        let mut out = Vec::new();
        for item in self.inner.trees.revoked_tokens.scan_prefix(&prefix) {
            let (key, value) = item?;
            let jti = String::from_utf8(key[prefix.len()..].to_vec())
                .map_err(|e| StorageError::corrupt("revoked token", e.to_string()))?;
            let exp = be_u64(&value).ok_or_else(|| StorageError::corrupt("revoked token", "bad expiry"))?;
            out.push((jti, exp));
        }
        Ok(out)
    }

    // ---- organisations ------------------------------------------------------------

    /// An organisation's settings, if any were made.
    pub fn org_settings(&self, org: &OrgId) -> Result<Option<OrgSettings>> {
        self.inner
            .trees
            .org_settings
            .get(org.as_str())?
            .map(|v| decode_json("organisation settings", &v))
            .transpose()
    }

    // ---- webhooks -----------------------------------------------------------------

    /// Every webhook endpoint.
    pub fn webhooks(&self) -> Result<Vec<WebhookRecord>> {
        let mut out = Vec::new();
        for item in self.inner.trees.webhooks.iter() {
            let (_, value) = item?;
            out.push(decode_json("webhook", &value)?);
        }
        Ok(out)
    }

    /// One webhook endpoint.
    pub fn webhook(&self, id: &WebhookId) -> Result<Option<WebhookRecord>> {
        self.inner
            .trees
            .webhooks
            .get(id.as_str())?
            .map(|v| decode_json("webhook", &v))
            .transpose()
    }

    /// A fresh, increasing delivery number (unique across restarts).
    pub fn next_delivery_seq(&self) -> Result<u64> {
        Ok(self.inner.db.generate_id()? + 1)
    }

    /// The last audit entry already turned into deliveries.
    pub fn webhook_cursor(&self) -> Result<u64> {
        Ok(self
            .inner
            .trees
            .meta
            .get(WEBHOOK_CURSOR_KEY)?
            .and_then(|v| be_u64(&v))
            .unwrap_or(0))
    }

    /// Pending deliveries, oldest first (at most `limit`).
    pub fn pending_deliveries(&self, limit: usize) -> Result<Vec<DeliveryRecord>> {
        let mut out = Vec::new();
        for item in self.inner.trees.outbox.iter().take(limit) {
            let (key, webhook) = item?;
            let mut full = webhook.to_vec();
            full.push(0);
            full.extend_from_slice(&key);
            if let Some(value) = self.inner.trees.deliveries.get(full)? {
                out.push(decode_json("delivery", &value)?);
            }
        }
        Ok(out)
    }

    /// A webhook's deliveries, newest first, strictly before `before_seq`.
    pub fn deliveries_of(&self, id: &WebhookId, before_seq: Option<u64>, limit: usize) -> Result<Vec<DeliveryRecord>> {
        let mut start = id.as_str().as_bytes().to_vec();
        start.push(0);
        let mut end = start.clone();
        end.extend_from_slice(&before_seq.unwrap_or(u64::MAX).to_be_bytes());
        let mut out = Vec::new();
        for item in self.inner.trees.deliveries.range(start..end).rev().take(limit) {
            let (_, value) = item?;
            out.push(decode_json("delivery", &value)?);
        }
        Ok(out)
    }

    /// The newest audit entry's sequence number (0 when the log is empty).
    pub fn last_audit_seq(&self) -> Result<u64> {
        Ok(self
            .inner
            .trees
            .audit
            .last()?
            .and_then(|(key, _)| be_u64(&key))
            .unwrap_or(0))
    }

    /// Audit entries after `seq`, oldest first (at most `limit`).
    pub fn audit_after(&self, seq: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        for item in self.inner.trees.audit.range((seq + 1).to_be_bytes()..).take(limit) {
            let (key, value) = item?;
            out.push(decode_audit(&key, &value)?);
        }
        Ok(out)
    }

    // ---- audit --------------------------------------------------------------------

    /// Audit entries matching `filter`, newest first, strictly before `before_seq`.
    pub fn audit_query(&self, filter: &AuditFilter, before_seq: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        let before = before_seq.unwrap_or(u64::MAX);
        if let Some(id) = &filter.integration_id {
            let start = id_key(id, &0u64.to_be_bytes());
            let end = id_key(id, &before.to_be_bytes());
            for item in self.inner.trees.audit_by_integration.range(start..end).rev() {
                if out.len() >= limit {
                    break;
                }
                let (key, _) = item?;
                let seq =
                    be_u64(&key[key.len() - 8..]).ok_or_else(|| StorageError::corrupt("audit index", "bad key"))?;
                if let Some(entry) = self.audit_entry(seq)?.filter(|e| filter.matches(&e.event)) {
                    out.push(entry);
                }
            }
        } else {
            for item in self.inner.trees.audit.range(..before.to_be_bytes()).rev() {
                if out.len() >= limit {
                    break;
                }
                let (key, value) = item?;
                let entry = decode_audit(&key, &value)?;
                if filter.matches(&entry.event) {
                    out.push(entry);
                }
            }
        }
        Ok(out)
    }

    /// One audit entry by sequence number.
    pub fn audit_entry(&self, seq: u64) -> Result<Option<AuditEntry>> {
        self.inner
            .trees
            .audit
            .get(seq.to_be_bytes())?
            .map(|v| decode_audit(&seq.to_be_bytes(), &v))
            .transpose()
    }

    /// Walks the whole chain and reports the first broken link, if any.
    pub fn audit_verify(&self) -> Result<ChainReport> {
        let mut expected_prev = GENESIS_HASH.to_owned();
        let mut checked = 0u64;
        for (expected_seq, item) in (1u64..).zip(self.inner.trees.audit.iter()) {
            let (key, value) = item?;
            let seq = be_u64(&key).unwrap_or(0);
            let broken = |problem: String| ChainReport {
                entries_checked: checked,
                first_broken: Some(BrokenLink { seq, problem }),
            };
            if seq != expected_seq {
                return Ok(broken(format!(
                    "expected entry {expected_seq}, found {seq}: an entry is missing"
                )));
            }
            let (hash, body_bytes, body) = match audit::decode_entry(&value) {
                Ok(parts) => parts,
                Err(problem) => return Ok(broken(problem)),
            };
            if audit::hash_hex(body_bytes) != hash {
                return Ok(broken("content does not match its hash: the entry was altered".into()));
            }
            if body.seq != seq {
                return Ok(broken(format!(
                    "entry claims sequence {} but is stored at {seq}",
                    body.seq
                )));
            }
            if body.prev_hash != expected_prev {
                return Ok(broken("does not link to the entry before it".into()));
            }
            expected_prev = hash;
            checked += 1;
        }
        Ok(ChainReport {
            entries_checked: checked,
            first_broken: None,
        })
    }

    // ---- keys -----------------------------------------------------------------------

    /// One admin key record.
    pub fn admin_key(&self, id: &AdminKeyId) -> Result<Option<AdminKeyRecord>> {
        self.inner
            .trees
            .admin_keys
            .get(id.as_str())?
            .map(|v| decode_json("admin key", &v))
            .transpose()
    }

    /// All admin key records.
    pub fn admin_keys(&self) -> Result<Vec<AdminKeyRecord>> {
        self.inner
            .trees
            .admin_keys
            .iter()
            .map(|item| decode_json("admin key", &item?.1))
            .collect()
    }

    /// All signing keys, oldest first.
    pub fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        let mut keys: Vec<SigningKeyRecord> = self
            .inner
            .trees
            .signing_keys
            .iter()
            .map(|item| decode_json("signing key", &item?.1))
            .collect::<Result<_>>()?;
        keys.sort_by_key(|k| k.created_at_ms);
        Ok(keys)
    }

    /// Test support: overwrite raw bytes of one audit entry, as an attacker with disk
    /// access would. Hidden from docs; used to prove that verification catches it.
    #[doc(hidden)]
    pub fn tamper_audit_entry_for_tests(&self, seq: u64, replace: &str, with: &str) -> Result<bool> {
        let tree = &self.inner.trees.audit;
        let Some(value) = tree.get(seq.to_be_bytes())? else {
            return Ok(false);
        };
        let text = String::from_utf8_lossy(&value).replace(replace, with);
        tree.insert(seq.to_be_bytes(), text.as_bytes())?;
        self.inner.db.flush()?;
        Ok(true)
    }
}

fn decode_audit(key: &[u8], value: &[u8]) -> Result<AuditEntry> {
    let seq = be_u64(key).ok_or_else(|| StorageError::corrupt("audit log", "bad key"))?;
    let (hash, _, body) = audit::decode_entry(value)
        .map_err(|problem| StorageError::corrupt("audit log", format!("entry {seq}: {problem}")))?;
    Ok(AuditEntry {
        seq,
        hash,
        prev_hash: body.prev_hash,
        event: body.event,
    })
}

/// A set of writes that becomes durable together.
///
/// Build with the `put_*` methods and finish with [`Batch::commit`] (wait for the
/// flush) or [`Batch::commit_detached`] (write and flush without waiting).
#[must_use = "a batch does nothing until committed"]
pub struct Batch<'a> {
    storage: &'a Storage,
    ops: Vec<WriteOp>,
    error: Option<StorageError>,
}

/// What a durable commit produced.
#[derive(Debug, Clone, Default)]
pub struct CommitReceipt {
    /// Sequence numbers assigned to the batch's audit events, in order.
    pub audit_seqs: Vec<u64>,
}

/// A submitted batch whose flush may still be running.
#[derive(Debug)]
pub struct PendingCommit {
    rx: oneshot::Receiver<Result<Vec<u64>>>,
}

impl PendingCommit {
    /// Waits until the batch is durable.
    pub async fn wait(self) -> Result<CommitReceipt> {
        let audit_seqs = self.rx.await.map_err(|_| StorageError::Closed)??;
        Ok(CommitReceipt { audit_seqs })
    }

    /// The outcome if the flush has finished, without waiting.
    pub fn try_finish(&mut self) -> Option<Result<CommitReceipt>> {
        match self.rx.try_recv() {
            Ok(result) => Some(result.map(|audit_seqs| CommitReceipt { audit_seqs })),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(StorageError::Closed)),
        }
    }
}

impl Batch<'_> {
    fn put(&mut self, tree: sled::Tree, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        self.ops.push(WriteOp::Put {
            tree,
            key: key.into(),
            value,
        });
    }

    fn put_json<T: serde::Serialize>(&mut self, tree: sled::Tree, key: impl Into<Vec<u8>>, value: &T) {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.put(tree, key, bytes),
            Err(e) => {
                self.error.get_or_insert(StorageError::Encode(e.to_string()));
            }
        }
    }

    /// Writes an integration and its indexes (client id, secret slots, organisation).
    pub fn put_integration(mut self, rec: &IntegrationRecord) -> Self {
        let trees = &self.storage.inner.trees;
        let id = rec.id.as_str().as_bytes().to_vec();
        self.put_json(trees.integrations.clone(), id.clone(), rec);
        self.put(trees.by_client.clone(), rec.client_id.as_str(), id.clone());
        for slot in [&rec.current_secret, &rec.previous_secret].into_iter().flatten() {
            self.put(trees.by_slot.clone(), slot.slot_id.as_str(), id.clone());
        }
        let mut org_key = rec.org_id.as_str().as_bytes().to_vec();
        org_key.push(0);
        org_key.extend_from_slice(&id);
        self.put(trees.by_org.clone(), org_key, Vec::new());
        self
    }

    /// Writes one day's usage (reservation and hourly buckets).
    pub fn put_day_usage(mut self, id: &IntegrationId, day: u32, usage: &DayUsage) -> Self {
        let tree = self.storage.inner.trees.usage.clone();
        self.put(tree, id_key(id, &day.to_be_bytes()), usage.encode());
        self
    }

    /// Records a revoked token id until it expires (Unix ms).
    pub fn put_revoked_token(mut self, id: &IntegrationId, jti: &str, expires_at_ms: u64) -> Self {
        let tree = self.storage.inner.trees.revoked_tokens.clone();
        self.put(tree, id_key(id, jti.as_bytes()), expires_at_ms.to_be_bytes().to_vec());
        self
    }

    /// Forgets a revoked token id (after it expired).
    pub fn remove_revoked_token(mut self, id: &IntegrationId, jti: &str) -> Self {
        let tree = self.storage.inner.trees.revoked_tokens.clone();
        self.ops.push(WriteOp::Remove {
            tree,
            key: id_key(id, jti.as_bytes()),
        });
        self
    }

    /// Writes an admin key record.
    pub fn put_admin_key(mut self, rec: &AdminKeyRecord) -> Self {
        let tree = self.storage.inner.trees.admin_keys.clone();
        self.put_json(tree, rec.id.as_str(), rec);
        self
    }

    /// Writes a signing key record.
    pub fn put_signing_key(mut self, rec: &SigningKeyRecord) -> Self {
        let tree = self.storage.inner.trees.signing_keys.clone();
        self.put_json(tree, rec.kid.as_str(), rec);
        self
    }

    /// Writes an organisation's settings.
    pub fn put_org_settings(mut self, rec: &OrgSettings) -> Self {
        let tree = self.storage.inner.trees.org_settings.clone();
        self.put_json(tree, rec.org_id.as_str(), rec);
        self
    }

    /// Writes a webhook endpoint.
    pub fn put_webhook(mut self, rec: &WebhookRecord) -> Self {
        let tree = self.storage.inner.trees.webhooks.clone();
        self.put_json(tree, rec.id.as_str(), rec);
        self
    }

    /// Deletes a webhook endpoint (its delivery history stays).
    pub fn remove_webhook(mut self, id: &WebhookId) -> Self {
        let tree = self.storage.inner.trees.webhooks.clone();
        self.ops.push(WriteOp::Remove {
            tree,
            key: id.as_str().as_bytes().to_vec(),
        });
        self
    }

    /// Writes a delivery; a pending one is (still) in the outbox, a finished one leaves it.
    pub fn put_delivery(mut self, rec: &DeliveryRecord) -> Self {
        let trees = &self.storage.inner.trees;
        let (deliveries, outbox) = (trees.deliveries.clone(), trees.outbox.clone());
        let mut key = rec.webhook_id.as_str().as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&rec.seq.to_be_bytes());
        self.put_json(deliveries, key, rec);
        let seq = rec.seq.to_be_bytes().to_vec();
        if rec.status == DeliveryStatus::Pending {
            self.put(outbox, seq, rec.webhook_id.as_str().as_bytes().to_vec());
        } else {
            self.ops.push(WriteOp::Remove { tree: outbox, key: seq });
        }
        self
    }

    /// Remembers that audit entries up to `seq` were turned into deliveries.
    pub fn set_webhook_cursor(mut self, seq: u64) -> Self {
        let tree = self.storage.inner.trees.meta.clone();
        self.put(tree, WEBHOOK_CURSOR_KEY, seq.to_be_bytes().to_vec());
        self
    }

    /// Appends an audit event to the chain.
    pub fn audit(mut self, event: AuditEvent) -> Self {
        self.ops.push(WriteOp::Audit(Box::new(event)));
        self
    }

    /// Writes the batch and waits until it is flushed to disk.
    pub async fn commit(self) -> Result<CommitReceipt> {
        self.submit()?.wait().await
    }

    /// Hands the batch to the writer now (so it is ordered before any later batch)
    /// and returns a handle to learn when it is durable.
    pub fn submit(self) -> Result<PendingCommit> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let (tx, rx) = oneshot::channel();
        self.storage.inner.send(CommitRequest {
            ops: self.ops,
            reply: Some(tx),
        })?;
        Ok(PendingCommit { rx })
    }

    /// Writes the batch (flushed with the next group) without waiting for it.
    pub fn commit_detached(self) -> Result<()> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.storage.inner.send(CommitRequest {
            ops: self.ops,
            reply: None,
        })
    }
}

#[cfg(test)]
mod tests;
