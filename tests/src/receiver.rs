//! A webhook receiver on loopback for the tests: records every delivery, checks its
//! `Tollgate-Signature` with its own HMAC (not Tollgate's code), and answers 200 or,
//! while told to fail, 503.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `Tollgate-Event-Id`.
    pub event_id: String,
    /// `Tollgate-Event-Type`.
    pub event_type: String,
    /// `Tollgate-Delivery-Attempt`.
    pub attempt: u32,
    /// The JSON body.
    pub body: serde_json::Value,
    /// Whether the signature verified with the endpoint's secret.
    pub signature_ok: bool,
    /// What the receiver answered.
    pub answered: u16,
}

#[derive(Default)]
struct Inner {
    secret: Mutex<String>,
    received: Mutex<Vec<Received>>,
    failing: AtomicBool,
    fail_first: AtomicUsize,
}

/// The receiver; dropping it does not stop the server (the test runtime does).
#[derive(Clone)]
pub struct Receiver {
    /// Where to point a webhook.
    pub url: String,
    inner: Arc<Inner>,
}

/// Checks `t=<unix>,v1=<hex>` against HMAC-SHA256(secret, "<t>.<body>").
pub fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_owned()),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let secret = inner.secret.lock().unwrap().clone();
    let signature_ok = verify(&secret, &header("tollgate-signature"), &body);
    let fail = inner.failing.load(Ordering::SeqCst)
        || inner
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let answered = if fail { 503 } else { 200 };
    inner.received.lock().unwrap().push(Received {
        event_id: header("tollgate-event-id"),
        event_type: header("tollgate-event-type"),
        attempt: header("tollgate-delivery-attempt").parse().unwrap_or(0),
        body: serde_json::from_slice(&body).unwrap_or_default(),
        signature_ok,
        answered,
    });
    StatusCode::from_u16(answered).unwrap()
}

impl Receiver {
    /// Listens on 127.0.0.1, port 0.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hooks/tollgate", listener.local_addr().expect("addr"));
        let app = axum::Router::new()
            .route("/hooks/tollgate", axum::routing::post(receive))
            .with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, inner }
    }

    /// The endpoint's signing secret (known once the webhook is created).
    pub fn set_secret(&self, secret: &str) {
        *self.inner.secret.lock().unwrap() = secret.to_owned();
    }

    /// Answer 503 to everything while `failing`.
    pub fn set_failing(&self, failing: bool) {
        self.inner.failing.store(failing, Ordering::SeqCst);
    }

    /// Answer 503 to the next `n` deliveries.
    pub fn fail_next(&self, n: usize) {
        self.inner.fail_first.store(n, Ordering::SeqCst);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// Event types accepted (answered 200) so far, sorted, each once.
    pub fn accepted_types(&self) -> Vec<String> {
        let mut types: Vec<String> = self
            .received()
            .into_iter()
            .filter(|r| r.answered == 200)
            .map(|r| r.event_type)
            .collect();
        types.sort();
        types.dedup();
        types
    }

    /// Event ids accepted (answered 200) so far.
    pub fn accepted_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .received()
            .into_iter()
            .filter(|r| r.answered == 200)
            .map(|r| r.event_id)
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}
