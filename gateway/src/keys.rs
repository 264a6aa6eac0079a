//! Token-signing keys: Ed25519, created on first start and kept in storage.
//!
//! The current key signs; every key retired less than `max token lifetime` ago is
//! still published in JWKS and still verifies, so rotating the signing key never
//! breaks tokens already handed out.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::DecodingKey;
use tollgate_engine::model::{SigningKeyRecord, random_base62};
use tollgate_engine::storage::Storage;
use tollgate_engine::{EngineError, EngineResult};

/// How long a retired key stays published: the longest token lifetime allowed.
pub const RETIRED_KEY_PUBLISHED_MS: u64 = 86_400_000;

/// One usable key.
pub struct SigningKeyEntry {
    /// The JWT `kid`.
    pub kid: String,
    /// The public key, base64url (JWK `x`).
    pub public_x: String,
    /// Verifies signatures.
    pub decoding: DecodingKey,
    /// When it was retired, if it was.
    pub retired_at_ms: Option<u64>,
}

/// The keys in force: one signing, several verifying.
pub struct KeySet {
    /// kid of the signing key.
    pub current_kid: String,
    /// Signs new tokens; parsed once (jsonwebtoken re-parses its PKCS#8 key on every
    /// signature, which costs more than the signature itself).
    pub signing: SigningKey,
    /// The JOSE header of tokens signed now, base64url-encoded once.
    pub header_b64: String,
    /// Every key that still verifies, by kid.
    pub verifying: HashMap<String, Arc<SigningKeyEntry>>,
}

/// Shared, swappable key set.
#[derive(Clone)]
pub struct Keys {
    set: Arc<RwLock<Arc<KeySet>>>,
    storage: Storage,
}

fn new_record(now_ms: u64) -> EngineResult<SigningKeyRecord> {
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    let private_pem = key
        .to_pkcs8_pem(Default::default())
        .map_err(|e| EngineError::Internal(format!("could not encode a signing key: {e}")))?
        .to_string();
    Ok(SigningKeyRecord {
        kid: format!("k{}", random_base62(11)),
        private_pem,
        public_x: URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
        created_at_ms: now_ms,
        retired_at_ms: None,
    })
}

fn build(records: &[SigningKeyRecord], now_ms: u64) -> EngineResult<KeySet> {
    let current = records
        .iter()
        .rev()
        .find(|r| r.retired_at_ms.is_none())
        .ok_or_else(|| EngineError::Internal("no current signing key".into()))?;
    let signing = SigningKey::from_pkcs8_pem(&current.private_pem)
        .map_err(|e| EngineError::Internal(format!("stored signing key {} is unreadable: {e}", current.kid)))?;
    let header = serde_json::json!({ "typ": "at+jwt", "alg": "EdDSA", "kid": current.kid });
    let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
    let mut verifying = HashMap::new();
    for r in records {
        if r.retired_at_ms
            .is_some_and(|at| now_ms.saturating_sub(at) > RETIRED_KEY_PUBLISHED_MS)
        {
            continue;
        }
        let decoding = DecodingKey::from_ed_components(&r.public_x)
            .map_err(|e| EngineError::Internal(format!("stored public key {} is unreadable: {e}", r.kid)))?;
        verifying.insert(
            r.kid.clone(),
            Arc::new(SigningKeyEntry {
                kid: r.kid.clone(),
                public_x: r.public_x.clone(),
                decoding,
                retired_at_ms: r.retired_at_ms,
            }),
        );
    }
    Ok(KeySet {
        current_kid: current.kid.clone(),
        signing,
        header_b64,
        verifying,
    })
}

impl Keys {
    /// Loads the keys, creating (durably) the first one on a fresh data dir.
    pub async fn load_or_create(storage: Storage, now_ms: u64) -> EngineResult<Self> {
        let mut records = storage.signing_keys()?;
        if !records.iter().any(|r| r.retired_at_ms.is_none()) {
            let record = new_record(now_ms)?;
            storage.batch().put_signing_key(&record).commit().await?;
            tracing::info!(kid = %record.kid, "created the token-signing key");
            records.push(record);
        }
        let set = build(&records, now_ms)?;
        Ok(Self {
            set: Arc::new(RwLock::new(Arc::new(set))),
            storage,
        })
    }

    /// The keys in force.
    pub fn current(&self) -> Arc<KeySet> {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes a new signing key; the old one keeps verifying until its tokens expire.
    /// Returns the new kid.
    pub async fn rotate(&self, now_ms: u64) -> EngineResult<String> {
        let mut records = self.storage.signing_keys()?;
        let mut batch = self.storage.batch();
        for r in records.iter_mut().filter(|r| r.retired_at_ms.is_none()) {
            r.retired_at_ms = Some(now_ms);
            batch = batch.put_signing_key(r);
        }
        let record = new_record(now_ms)?;
        batch.put_signing_key(&record).commit().await?;
        records.push(record.clone());
        let set = build(&records, now_ms)?;
        *self.set.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(record.kid)
    }
}

impl tollgate_admin::SigningKeyAdmin for Keys {
    fn rotate(&self, now_ms: u64) -> tollgate_admin::KeyFuture<'_, String> {
        Box::pin(Keys::rotate(self, now_ms))
    }

    fn list(&self) -> Vec<tollgate_admin::SigningKeyInfo> {
        let set = self.current();
        let mut keys: Vec<_> = set
            .verifying
            .values()
            .map(|k| tollgate_admin::SigningKeyInfo {
                kid: k.kid.clone(),
                is_current: k.kid == set.current_kid,
                retired_at_ms: k.retired_at_ms,
            })
            .collect();
        keys.sort_by(|a, b| b.is_current.cmp(&a.is_current).then(a.kid.cmp(&b.kid)));
        keys
    }
}
