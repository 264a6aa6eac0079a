//! Group commit: many callers, one flush.
//!
//! A single writer thread takes every durable write. It drains whatever requests are
//! waiting, applies them all, calls `flush()` once, and only then answers each caller.
//! A caller's `await` returning `Ok` therefore means "on disk". This is what makes
//! durability affordable: one fsync (≈ 185 µs here) serves every request that arrived
//! while the previous one ran. The same thread is the audit chain's only writer, so it
//! assigns sequence numbers and links without locks.

use crossbeam::channel::{Receiver, TryRecvError};
use tokio::sync::oneshot;

use crate::audit::{self, AuditEntryBody, AuditEvent, GENESIS_HASH};
use crate::{StorageError, Trees};

/// Most requests folded into one flush; bounds the latency of the first one.
const MAX_GROUP: usize = 4096;

/// One low-level write; built only by [`crate::Batch`], so sled never leaks out.
pub(crate) enum WriteOp {
    Put {
        tree: sled::Tree,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Remove {
        tree: sled::Tree,
        key: Vec<u8>,
    },
    Audit(Box<AuditEvent>),
}

pub(crate) type CommitReply = oneshot::Sender<Result<Vec<u64>, StorageError>>;

pub(crate) struct CommitRequest {
    pub(crate) ops: Vec<WriteOp>,
    /// `None` for detached commits whose caller does not wait.
    pub(crate) reply: Option<CommitReply>,
}

/// The head of the audit chain, owned by the writer thread.
pub(crate) struct ChainHead {
    pub(crate) last_seq: u64,
    pub(crate) last_hash: String,
}

impl ChainHead {
    pub(crate) fn load(trees: &Trees) -> Result<Self, StorageError> {
        match trees.audit.last()? {
            None => Ok(Self {
                last_seq: 0,
                last_hash: GENESIS_HASH.to_owned(),
            }),
            Some((key, value)) => {
                let seq = crate::be_u64(&key)
                    .ok_or_else(|| StorageError::corrupt("audit log", "a key is not a sequence number"))?;
                let (hash, _, _) = audit::decode_entry(&value)
                    .map_err(|problem| StorageError::corrupt("audit log", format!("entry {seq}: {problem}")))?;
                Ok(Self {
                    last_seq: seq,
                    last_hash: hash,
                })
            }
        }
    }
}

pub(crate) fn run(
    db: sled::Db,
    trees: Trees,
    rx: Receiver<CommitRequest>,
    mut head: ChainHead,
    failure: &std::sync::Mutex<Option<String>>,
) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(req) => group.push(req),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let results: Vec<Result<Vec<u64>, StorageError>> = group
            .iter_mut()
            .map(|req| apply(&trees, &mut head, std::mem::take(&mut req.ops)))
            .collect();
        let flushed = db.flush().map_err(StorageError::from);
        metrics::counter!("tollgate_storage_group_commits_total").increment(1);
        metrics::histogram!("tollgate_storage_group_commit_size").record(group.len() as f64);
        for (req, result) in group.into_iter().zip(results) {
            let outcome = match (&flushed, result) {
                (Err(e), _) => Err(e.clone()),
                (Ok(_), r) => r,
            };
            if let Err(e) = &outcome {
                tracing::error!(error = %e, "durable write failed");
                if matches!(e, StorageError::Io(_)) {
                    failure
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert_with(|| e.to_string());
                }
            }
            if let Some(reply) = req.reply {
                // The caller may have given up waiting; the write stands either way.
                let _ = reply.send(outcome);
            }
        }
    }
}

fn apply(trees: &Trees, head: &mut ChainHead, ops: Vec<WriteOp>) -> Result<Vec<u64>, StorageError> {
    let mut seqs = Vec::new();
    for op in ops {
        match op {
            WriteOp::Put { tree, key, value } => {
                tree.insert(key, value)?;
            }
            WriteOp::Remove { tree, key } => {
                tree.remove(key)?;
            }
            WriteOp::Audit(event) => {
                let seq = head.last_seq + 1;
                let integration = event.integration_id.clone();
                let body = AuditEntryBody {
                    seq,
                    prev_hash: head.last_hash.clone(),
                    event: *event,
                };
                let (hash, value) = audit::encode_entry(&body)?;
                trees.audit.insert(seq.to_be_bytes(), value)?;
                if let Some(id) = integration {
                    let mut key = id.as_str().as_bytes().to_vec();
                    key.extend_from_slice(&seq.to_be_bytes());
                    trees.audit_by_integration.insert(key, &[])?;
                }
                head.last_seq = seq;
                head.last_hash = hash;
                seqs.push(seq);
            }
        }
    }
    Ok(seqs)
}
