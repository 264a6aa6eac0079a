//! Access tokens: RFC 9068 JWTs signed with Ed25519, and their verification with a
//! bounded cache of already-verified tokens (the hot path's answer to the ≈ 50 µs an
//! EdDSA verify costs).
//!
//! The algorithm is pinned to EdDSA: `none`, HS*/RS* and any other `alg` are refused
//! before a key is even looked up, so there is no algorithm confusion. `exp` and `nbf`
//! are checked against the engine's clock (not jsonwebtoken's), so tests move time.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, Mutex};

use axum::http::HeaderValue;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use tollgate_engine::Grant;
use tollgate_engine::model::{ClientId, Scope};

use crate::keys::Keys;

/// The claims of a Tollgate access token (RFC 9068 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer URL.
    pub iss: String,
    /// The client id (RFC 9068: the subject of a client-credentials token).
    pub sub: String,
    /// The audience (the protected APIs).
    pub aud: String,
    /// The client id.
    pub client_id: String,
    /// Space-separated scopes.
    pub scope: String,
    /// The organisation.
    pub org: String,
    /// Issued at (Unix s).
    pub iat: u64,
    /// Not before (Unix s).
    pub nbf: u64,
    /// Expires (Unix s).
    pub exp: u64,
    /// Token id.
    pub jti: String,
}

/// A token whose signature, issuer, audience and times were checked.
#[derive(Debug)]
pub struct VerifiedToken {
    /// The claims.
    pub claims: AccessClaims,
    /// The client id, parsed.
    pub client_id: ClientId,
    /// Scopes, split.
    pub scopes: Vec<String>,
    /// The identity headers, built once per token (the token is cached, so every
    /// later request reuses them without allocating).
    pub identity: IdentityHeaders,
    /// The client actor that answered this token's last check.
    pub actor: tollgate_engine::ActorHint,
    /// The token id, shared with every check of this token (no copy per request).
    pub jti: Arc<str>,
}

/// `X-Tollgate-Client-Id`, `-Org`, `-Scopes` values of a token.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    /// Client id.
    pub client_id: HeaderValue,
    /// Organisation.
    pub org: HeaderValue,
    /// Space-separated scopes.
    pub scopes: HeaderValue,
}

/// Why a bearer token is not acceptable (said in `error_description`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT at all.
    #[error("the access token is malformed")]
    Malformed,
    /// `alg` is not EdDSA, or `typ` is not `at+jwt`.
    #[error("the access token uses an algorithm or type this server does not accept")]
    WrongAlgorithm,
    /// Unknown `kid` or a bad signature.
    #[error("the access token's signature is not valid")]
    BadSignature,
    /// Wrong issuer.
    #[error("the access token was not issued by this server")]
    WrongIssuer,
    /// Wrong audience.
    #[error("the access token is not meant for this API (wrong audience)")]
    WrongAudience,
    /// Past `exp`.
    #[error("the access token has expired; request a new one")]
    Expired,
    /// Before `nbf`.
    #[error("the access token is not valid yet")]
    NotYetValid,
}

/// Signs and verifies access tokens.
#[derive(Clone)]
pub struct TokenService {
    keys: Keys,
    issuer: String,
    audience: String,
    cache: Arc<TokenCache>,
}

impl TokenService {
    /// A service for `issuer`/`audience` with a cache of `cache_capacity` tokens.
    pub fn new(keys: Keys, issuer: String, audience: String, cache_capacity: usize) -> Self {
        Self {
            keys,
            issuer,
            audience,
            cache: Arc::new(TokenCache::new(cache_capacity)),
        }
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The signing keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Signs a token for `grant`, issued at `now_ms`, with token id `jti`: the JWS
    /// compact form of RFC 7515 with the current Ed25519 key (verified by
    /// jsonwebtoken like any other token).
    pub fn sign(&self, grant: &Grant, jti: &str, now_ms: u64) -> Result<(String, AccessClaims), serde_json::Error> {
        let now = now_ms / 1000;
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: grant.client_id.to_string(),
            aud: self.audience.clone(),
            client_id: grant.client_id.to_string(),
            scope: join_scopes(&grant.scopes),
            org: grant.org_id.to_string(),
            iat: now,
            nbf: now,
            exp: now + u64::from(grant.token_ttl_seconds),
            jti: jti.to_owned(),
        };
        let keys = self.keys.current();
        let mut token = String::with_capacity(512);
        token.push_str(&keys.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(&claims)?, &mut token);
        let signature = keys.signing.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok((token, claims))
    }

    /// Verifies `token` at `now_ms`: from the cache when it was verified before.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Arc<VerifiedToken>, TokenError> {
        let now = now_ms / 1000;
        if let Some(hit) = self.cache.get(token) {
            check_times(&hit.claims, now)?;
            return Ok(hit);
        }
        let verified = Arc::new(self.verify_uncached(token, now)?);
        self.cache.insert(token, verified.clone(), now);
        Ok(verified)
    }

    fn verify_uncached(&self, token: &str, now: u64) -> Result<VerifiedToken, TokenError> {
        if token.len() > 4096 {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::WrongAlgorithm);
        }
        let typ_ok = header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt"));
        if !typ_ok {
            return Err(TokenError::WrongAlgorithm);
        }
        let keys = self.keys.current();
        let entry = header
            .kid
            .as_deref()
            .and_then(|kid| keys.verifying.get(kid))
            .ok_or(TokenError::BadSignature)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = ["exp", "iat", "nbf", "iss", "aud", "sub"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let data = jsonwebtoken::decode::<AccessClaims>(token, &entry.decoding, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidEddsaKey => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                _ => TokenError::Malformed,
            }
        })?;
        let claims = data.claims;
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if claims.aud != self.audience {
            return Err(TokenError::WrongAudience);
        }
        check_times(&claims, now)?;
        let client_id = ClientId::parse(&claims.client_id).map_err(|_| TokenError::Malformed)?;
        if claims.sub != claims.client_id {
            return Err(TokenError::Malformed);
        }
        let scopes = claims
            .scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let header = |v: &str| HeaderValue::try_from(v.to_owned()).map_err(|_| TokenError::Malformed);
        let identity = IdentityHeaders {
            client_id: header(&claims.client_id)?,
            org: header(&claims.org)?,
            scopes: header(&claims.scope)?,
        };
        let claims_jti = Arc::from(claims.jti.as_str());
        Ok(VerifiedToken {
            claims,
            client_id,
            scopes,
            identity,
            actor: tollgate_engine::ActorHint::default(),
            jti: claims_jti,
        })
    }
}

fn check_times(claims: &AccessClaims, now: u64) -> Result<(), TokenError> {
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    if now < claims.nbf {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// Space-separated scopes, as OAuth writes them.
pub fn join_scopes(scopes: &[Scope]) -> String {
    scopes.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ")
}

const CACHE_SHARDS: usize = 16;

/// Verified tokens, sharded to keep lock hold times short; entries leave at expiry,
/// and a full shard drops expired entries first, then arbitrary ones. Keyed by a keyed
/// hash (SipHash, random key) of the signature segment only: a lookup hashes ~86 bytes
/// once instead of the whole token twice (for the shard and again in the map). The
/// stored token is compared in full, so a token that merely shares a signature (or,
/// with negligible odds, a hash) is a miss and is verified in full.
struct TokenCache {
    shards: Vec<Mutex<CacheShard>>,
    per_shard: usize,
    hasher: RandomState,
}

type CacheShard = HashMap<u64, (Box<str>, Arc<VerifiedToken>), BuildHasherDefault<PreHashed>>;

/// The map's keys are already uniformly distributed hashes: used as they are.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl TokenCache {
    fn new(capacity: usize) -> Self {
        Self {
            shards: (0..CACHE_SHARDS).map(|_| Mutex::new(HashMap::default())).collect(),
            per_shard: (capacity / CACHE_SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    fn key(&self, token: &str) -> u64 {
        let signature = token.rsplit_once('.').map_or(token, |(_, signature)| signature);
        self.hasher.hash_one(signature)
    }

    /// The shard, chosen by the hash's top bits (the map uses the low ones).
    fn shard(&self, key: u64) -> &Mutex<CacheShard> {
        &self.shards[(key >> 32) as usize % CACHE_SHARDS]
    }

    fn get(&self, token: &str) -> Option<Arc<VerifiedToken>> {
        let key = self.key(token);
        let shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        shard
            .get(&key)
            .filter(|(stored, _)| **stored == *token)
            .map(|(_, verified)| verified.clone())
    }

    fn insert(&self, token: &str, verified: Arc<VerifiedToken>, now: u64) {
        let key = self.key(token);
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, (_, v)| v.claims.exp > now);
            if shard.len() >= self.per_shard
                && let Some(victim) = shard.keys().next().copied()
            {
                shard.remove(&victim);
            }
        }
        shard.insert(key, (token.into(), verified));
    }
}
