//! `tollgate-gateway`: the integration-facing HTTP side of Tollgate, and the
//! `tollgate` binary's wiring.
//!
//! Integrations trade credentials for tokens at `/oauth/token` and send those tokens
//! with every request, which is checked (`/v1/check/...`) or proxied (any other
//! path). All decisions are the engine's; this crate speaks HTTP and the RFCs.
//!
//! # Layout
//! - [`cli`]: the `tollgate` command line (the binary is one line calling it).
//! - [`admin_cli`]: its admin sub-commands, a client of the admin REST API.
//! - [`oauth`]: token, introspection, revocation, JWKS, server metadata.
//! - [`check`]: the check endpoint and the reverse proxy (with the demo upstream).
//! - [`jwt`]: RFC 9068 access tokens and the verified-token cache.
//! - [`keys`]: Ed25519 signing keys kept in storage.
//! - [`policy`]: the route policy (method + path → scopes).
//! - [`throttle`]: the brute-force guard on client authentication.
//! - [`error`]: RFC 6749 / RFC 6750 / RFC 9457 responses and the quota headers.
//! - [`serve`]: start both listeners, graceful shutdown.

pub mod admin_cli;
pub mod check;
pub mod cli;
pub mod error;
pub mod jwt;
pub mod keys;
pub mod oauth;
pub mod policy;
pub mod serve;
pub mod throttle;
pub mod webhooks;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tollgate_engine::Engine;

use crate::check::Upstream;
use crate::jwt::TokenService;
use crate::policy::RoutePolicy;
use crate::throttle::Throttle;

/// What every gateway handler shares, behind one `Arc`: axum clones the state for
/// every handler and middleware, and one reference count is far cheaper than ten.
#[derive(Clone)]
pub struct GatewayState(Arc<GatewayShared>);

impl GatewayState {
    /// Wraps the shared parts.
    pub fn new(shared: GatewayShared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for GatewayState {
    type Target = GatewayShared;
    fn deref(&self) -> &GatewayShared {
        &self.0
    }
}

/// The gateway's handles.
pub struct GatewayShared {
    /// The engine.
    pub engine: Engine,
    /// Token signing and verification.
    pub tokens: TokenService,
    /// Scopes per route.
    pub policy: Arc<RoutePolicy>,
    /// Brute-force guard.
    pub throttle: Arc<Throttle>,
    /// Where proxied requests go (`None`: the demo upstream).
    pub upstream: Option<Upstream>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<[IpAddr]>,
    /// Bounds requests in flight; beyond it the gateway sheds load.
    pub in_flight: Arc<Semaphore>,
    /// `tollgate_checks_total{outcome="admitted"}`, looked up once: the metrics
    /// registry lookup by name and label cost more than the increment on every check.
    pub checks_admitted: metrics::Counter,
}

/// The client's address: the socket peer, or — when the peer is a trusted proxy —
/// the right-most untrusted address in `X-Forwarded-For`.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<GatewayState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &GatewayState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        if !state.trusted_proxies.contains(&peer) {
            return Ok(Self(peer));
        }
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        let client = forwarded
            .iter()
            .rev()
            .find(|ip| !state.trusted_proxies.contains(ip))
            .copied()
            .unwrap_or(peer);
        Ok(Self(client))
    }
}

/// Sheds load beyond the gateway's in-flight permits: 503 + `Retry-After`, never an
/// unbounded queue. A tower layer rather than `middleware::from_fn`, which boxes the
/// rest of the router and the request's future on every request.
#[derive(Clone)]
struct ShedLoad {
    permits: Arc<Semaphore>,
}

impl<S> tower_layer::Layer<S> for ShedLoad {
    type Service = ShedLoadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ShedLoadService {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// [`ShedLoad`] around one service.
#[derive(Clone)]
struct ShedLoadService<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S> tower_service::Service<Request> for ShedLoadService<S>
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Shed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Shed::Admitted {
                answer: self.inner.call(request),
                _permit: permit,
            },
            Err(_) => {
                metrics::counter!("tollgate_gateway_shed_total").increment(1);
                Shed::Refused {
                    answer: Some(at_capacity()),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`ShedLoadService`]: the inner service's, holding its permit
    /// until it is ready, or the 503.
    #[project = ShedProjection]
    enum Shed<F> {
        Admitted { #[pin] answer: F, _permit: OwnedSemaphorePermit },
        Refused { answer: Option<Response> },
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Shed<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ShedProjection::Admitted { answer, .. } => answer.poll(cx),
            // Polled again after its answer: answer again rather than panic.
            ShedProjection::Refused { answer } => Poll::Ready(Ok(answer.take().unwrap_or_else(at_capacity))),
        }
    }
}

fn at_capacity() -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "error": "temporarily_unavailable",
            "error_description": "the gateway is at capacity; retry after the time in Retry-After"
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The gateway router (tests drive it with `oneshot` or a real listener).
pub fn app(state: GatewayState) -> Router {
    Router::new()
        .merge(oauth::router())
        .fallback(check::unreserved)
        .layer(ShedLoad {
            permits: state.in_flight.clone(),
        })
        .with_state(state)
}
