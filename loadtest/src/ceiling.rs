//! Ceilings of the design itself, measured on this machine in the same run.
//!
//! Tollgate answers every request check with one message to the integration's own
//! ractor actor (check-and-consume in one message, DESIGN.md). These baselines do
//! exactly that and nothing else, so a scenario can be compared with the most that
//! design allows here:
//! - [`actor_router`]: a bare axum handler that makes one ractor call to one of N
//!   trivial actors (each holding a counter it increments) and answers "ok";
//! - [`contract_router`]: the same, answering a request check's request with the
//!   nine headers DESIGN §7 puts on every checked answer, so that `check` can be
//!   compared with what its wire contract costs by itself;
//! - [`token_router`]: a bare token endpoint that only does what every token must
//!   cost (one durable audit entry, one Ed25519 signature), the ceiling of
//!   `token-warm`;
//! - [`proxy_router`]: a bare reverse proxy to the same upstream, the ceiling of
//!   `proxy` (two HTTP exchanges per request where the direct call has one);
//! - [`actor_floor_bytes`]: the resident memory of N such actors, linked to one
//!   supervisor as the engine's client actors are, each having handled a message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::response::IntoResponse;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

/// A message to a trivial actor: count one and answer with the count.
pub enum Count {
    /// Count one; reply with the total.
    One(RpcReplyPort<u64>),
}

/// An actor holding one counter.
pub struct Counter;

impl Actor for Counter {
    type Msg = Count;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<Count>, _args: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(&self, _myself: ActorRef<Count>, msg: Count, state: &mut u64) -> Result<(), ActorProcessingErr> {
        match msg {
            Count::One(reply) => {
                *state += 1;
                let _ = reply.send(*state);
            }
        }
        Ok(())
    }
}

/// A supervisor that does nothing but own its children, like the engine's shards.
pub struct Supervisor;

impl Actor for Supervisor {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<()>, _args: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// `n` counter actors linked to one supervisor, each having counted once.
pub async fn spawn_counters(n: usize) -> anyhow::Result<(ActorRef<()>, Vec<ActorRef<Count>>)> {
    let (supervisor, _) = Actor::spawn(None, Supervisor, ()).await?;
    let mut actors = Vec::with_capacity(n);
    for _ in 0..n {
        let (actor, _) = Actor::spawn_linked(None, Counter, (), supervisor.get_cell()).await?;
        ractor::call!(actor, Count::One)?;
        actors.push(actor);
    }
    Ok((supervisor, actors))
}

/// A bare handler making one actor call per request, over the actors round-robin.
pub fn actor_router(actors: Vec<ActorRef<Count>>) -> axum::Router {
    let actors = Arc::new(actors);
    let next = Arc::new(AtomicUsize::new(0));
    axum::Router::new().fallback(move || {
        let (actors, next) = (actors.clone(), next.clone());
        async move {
            let i = next.fetch_add(1, Ordering::Relaxed) % actors.len();
            match ractor::call!(actors[i], Count::One) {
                Ok(_) => (axum::http::StatusCode::OK, "ok"),
                Err(_) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "actor gone"),
            }
        }
    })
}

/// A bare handler answering as a request check must (DESIGN §7), without Tollgate:
/// it reads the bearer token, makes one actor call, and sends the six quota headers
/// (formatted from the actor's count) and the three identity headers. It is sent the
/// very requests `check` is sent, so the two differ only in Tollgate's own work:
/// verifying (a cached) token, the route policy, the engine's check-and-consume.
///
/// The nine headers are written by the gateway's own writer
/// ([`tollgate_gateway::error::checked_headers`]: names parsed at compile time, the
/// nine values in one buffer), so that their cost is the same on both sides.
pub fn contract_router(actors: Vec<ActorRef<Count>>) -> axum::Router {
    use axum::http::{HeaderValue, StatusCode, header};
    use tollgate_engine::quota::QuotaStatus;
    // Identities shaped like registered ones: a generated client id, the load
    // tester's organisations and scope.
    let identities: Vec<[HeaderValue; 3]> = (0..actors.len())
        .map(|i| {
            [
                HeaderValue::from_str(tollgate_engine::model::ClientId::generate().as_str()),
                HeaderValue::from_str(&format!("load{}", i % 10)),
                HeaderValue::from_str("items:read"),
            ]
            .map(|v| v.unwrap_or(HeaderValue::from_static("x")))
        })
        .collect();
    let shared = Arc::new((actors, identities));
    let next = Arc::new(AtomicUsize::new(0));
    axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (shared, next) = (shared.clone(), next.clone());
        async move {
            let bearer = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if bearer.is_none_or(str::is_empty) {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            let (actors, identities) = &*shared;
            let i = next.fetch_add(1, Ordering::Relaxed) % actors.len();
            let Ok(used) = ractor::call!(actors[i], Count::One) else {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            };
            let limit: u64 = 1_000_000_000;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let status = QuotaStatus {
                limit,
                used,
                remaining: limit.saturating_sub(used),
                resets_at_ms: (now_ms / 86_400_000 + 1) * 86_400_000,
                warning_threshold: None,
            };
            let mut response = StatusCode::OK.into_response();
            let h = response.headers_mut();
            h.reserve(9);
            let [client_id, org, scopes] = &identities[i];
            tollgate_gateway::error::checked_headers(
                h,
                &status,
                now_ms,
                [client_id.as_bytes(), org.as_bytes(), scopes.as_bytes()],
            );
            response
        }
    })
}

/// A bare token endpoint: what a client-credentials grant costs at the least under
/// this design's guarantees (DESIGN §6, §8), without Tollgate's own work. For each
/// request it reads the form, appends one `token.issued` entry through the same
/// group-committed, hash-chained audit log and waits until it is durable, signs the
/// RFC 9068 claims with Ed25519, and answers with the token JSON. It authenticates
/// nobody: no secret cache, no throttles, no actor message, no scope checks.
pub fn token_router(storage: tollgate_engine::storage::Storage, identities: usize) -> axum::Router {
    use axum::http::{HeaderValue, StatusCode, header};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::Signer as _;
    use tollgate_engine::model::{ClientId, IntegrationId, OrgId, SlotId, random_base62};
    use tollgate_engine::storage::audit::AuditEvent;

    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let header_b64 = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"at+jwt","kid":"kbaseline"}"#);
    // Identities shaped like registered ones.
    let identities: Vec<(IntegrationId, ClientId, Option<OrgId>, SlotId)> = (0..identities.max(1))
        .map(|i| {
            (
                IntegrationId::generate(),
                ClientId::generate(),
                OrgId::parse(&format!("load{}", i % 10)).ok(),
                SlotId::generate(),
            )
        })
        .collect();
    let shared = Arc::new((storage, key, header_b64, identities));
    let next = Arc::new(AtomicUsize::new(0));
    axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (shared, next) = (shared.clone(), next.clone());
        async move {
            let (parts, body) = request.into_parts();
            let Ok(form) = axum::body::to_bytes(body, 4096).await else {
                return StatusCode::PAYLOAD_TOO_LARGE.into_response();
            };
            if !parts.headers.contains_key(header::AUTHORIZATION) || form.as_ref() != b"grant_type=client_credentials" {
                return StatusCode::BAD_REQUEST.into_response();
            }
            let (storage, key, header_b64, identities) = &*shared;
            let (integration, client, org, slot) = &identities[next.fetch_add(1, Ordering::Relaxed) % identities.len()];
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let jti = random_base62(22);
            let event = AuditEvent {
                at_ms: now_ms,
                kind: "token.issued".into(),
                integration_id: Some(integration.clone()),
                client_id: Some(client.clone()),
                org_id: org.clone(),
                source_ip: Some("127.0.0.1".into()),
                outcome: "success".into(),
                slot_id: Some(slot.clone()),
                jti: Some(jti.clone()),
                details: serde_json::json!({ "scopes": ["items:read"] }),
                ..AuditEvent::default()
            };
            // Durable before the token exists, as DESIGN §8 requires.
            if storage.batch().audit(event).commit().await.is_err() {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            let now = now_ms / 1000;
            let claims = serde_json::json!({
                "iss": "http://127.0.0.1", "sub": client.as_str(), "aud": "tollgate",
                "client_id": client.as_str(), "scope": "items:read",
                "org": org.as_ref().map(OrgId::as_str), "iat": now, "nbf": now, "exp": now + 3600, "jti": jti,
            });
            let mut token = String::with_capacity(512);
            token.push_str(header_b64);
            token.push('.');
            URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut token);
            let signature = key.sign(token.as_bytes());
            token.push('.');
            URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
            let mut response = axum::Json(serde_json::json!({
                "access_token": token, "token_type": "Bearer", "expires_in": 3600, "scope": "items:read",
            }))
            .into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
    })
}

/// Resident memory per actor of `n` counter actors, measured in this process: call it
/// in a process of its own (the `actor-floor` scenario) so that memory freed by other
/// work is not reused and counted as free.
pub async fn actor_floor_bytes(n: usize) -> anyhow::Result<f64> {
    let before = crate::rss_bytes();
    let (supervisor, actors) = spawn_counters(n).await?;
    let after = crate::rss_bytes();
    drop(actors);
    supervisor.stop(None);
    Ok(after.saturating_sub(before) as f64 / n.max(1) as f64)
}

/// A bare reverse proxy: forwards every request to `upstream` with the same HTTP
/// client the gateway uses, and nothing else — the ceiling of proxying here, since a
/// proxied request costs two HTTP exchanges where a direct one costs one.
pub fn proxy_router(upstream: SocketAddr) -> anyhow::Result<axum::Router> {
    let client = tollgate_gateway::check::Upstream::new(format!("http://{upstream}").parse()?).client;
    Ok(axum::Router::new().fallback(move |request: axum::extract::Request| {
        let client = client.clone();
        async move {
            let (mut parts, body) = request.into_parts();
            let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let Ok(uri) = format!("http://{upstream}{path}").parse() else {
                return axum::http::StatusCode::BAD_REQUEST.into_response();
            };
            parts.uri = uri;
            match client.request(axum::http::Request::from_parts(parts, body)).await {
                Ok(response) => response.map(axum::body::Body::new).into_response(),
                Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
            }
        }
    }))
}
