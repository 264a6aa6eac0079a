//! The webhook sender: a background task that fans new audit entries out into the
//! durable outbox and POSTs due deliveries, signed, recording every attempt.
//! What is sent and when is decided in `tollgate_engine::webhook`; this is the HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tollgate_engine::Engine;
use tollgate_engine::model::{DeliveryAttempt, DeliveryRecord, DeliveryStatus};
use tollgate_engine::webhook::{RetryPolicy, fan_out, signature};

/// How the sender runs.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Retries and giving up.
    pub retry: RetryPolicy,
    /// Per-attempt timeout (connect + answer).
    pub timeout: Duration,
    /// How often the outbox is looked at.
    pub poll: Duration,
    /// Most deliveries in flight at once.
    pub concurrency: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(10),
            poll: Duration::from_millis(250),
            concurrency: 16,
        }
    }
}

/// Runs until `stopping` turns true.
pub async fn run(engine: Engine, settings: WebhookSettings, mut stopping: watch::Receiver<bool>) {
    let http = match reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tollgate-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "webhook sender could not start");
            return;
        }
    };
    let settings = Arc::new(settings);
    let mut tick = tokio::time::interval(settings.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the outbox next needs a look (Unix ms): a new delivery or the earliest
    // retry. Until then a round only catches up the fan-out.
    let mut next_look_ms = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        match round(&engine, &http, &settings, next_look_ms).await {
            Ok(next) => next_look_ms = next,
            Err(e) => tracing::warn!(error = %e, "webhook round failed; retrying on the next tick"),
        }
    }
}

/// One round: catch up the fan-out, then send what is due. Returns when the outbox
/// next needs a look.
async fn round(
    engine: &Engine,
    http: &reqwest::Client,
    settings: &Arc<WebhookSettings>,
    next_look_ms: u64,
) -> anyhow::Result<u64> {
    let storage = engine.storage();
    let mut queued = 0;
    loop {
        let step = fan_out(storage, engine.now_ms(), 500).await?;
        queued += step.queued;
        if step.read < 500 {
            break;
        }
    }
    let now = engine.now_ms();
    if queued == 0 && now < next_look_ms {
        return Ok(next_look_ms);
    }
    let pending = storage.pending_deliveries(10_000)?;
    let due: Vec<DeliveryRecord> = pending
        .iter()
        .filter(|d| d.next_attempt_at_ms <= now)
        .take(settings.concurrency)
        .cloned()
        .collect();
    // Sent ones get new times (or leave): look again next round. Otherwise at the
    // earliest retry.
    let next_look = if due.is_empty() {
        pending.iter().map(|d| d.next_attempt_at_ms).min().unwrap_or(u64::MAX)
    } else {
        now
    };
    let mut sending = JoinSet::new();
    for delivery in due {
        let (engine, http, settings) = (engine.clone(), http.clone(), settings.clone());
        sending.spawn(async move { deliver(&engine, &http, &settings, delivery).await });
    }
    while let Some(done) = sending.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "could not record a webhook attempt");
        }
    }
    Ok(next_look)
}

/// Sends one delivery and records the attempt (durably, before the next try).
async fn deliver(
    engine: &Engine,
    http: &reqwest::Client,
    settings: &WebhookSettings,
    mut delivery: DeliveryRecord,
) -> anyhow::Result<()> {
    let storage = engine.storage();
    let Some(hook) = storage.webhook(&delivery.webhook_id)? else {
        delivery.status = DeliveryStatus::Failed;
        delivery.attempts.push(DeliveryAttempt {
            at_ms: engine.now_ms(),
            status_code: None,
            error: Some("the webhook endpoint was deleted".into()),
            duration_ms: 0,
        });
        storage.batch().put_delivery(&delivery).commit().await?;
        return Ok(());
    };
    let now = engine.now_ms();
    let attempt_no = delivery.attempts.len() + 1;
    let started = Instant::now();
    let sent = http
        .post(&hook.url)
        .header("content-type", "application/json")
        .header(
            "tollgate-signature",
            signature(&hook.secret, now / 1000, &delivery.body),
        )
        .header("tollgate-event-id", &delivery.event_id)
        .header("tollgate-event-type", &delivery.event_type)
        .header("tollgate-delivery-attempt", attempt_no.to_string())
        .body(delivery.body.clone())
        .send()
        .await;
    let (status_code, error) = match sent {
        Ok(response) => (Some(response.status().as_u16()), None),
        // Without the URL: it may carry credentials of the receiving side.
        Err(e) => (None, Some(describe(&e))),
    };
    let attempt = DeliveryAttempt {
        at_ms: now,
        status_code,
        error,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    settings.retry.record(&mut delivery, attempt, rand::random::<f64>());
    let outcome = match delivery.status {
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Pending => "retrying",
        DeliveryStatus::Failed => "failed",
    };
    metrics::counter!("tollgate_webhook_attempts_total", "outcome" => outcome).increment(1);
    let mut batch = storage.batch().put_delivery(&delivery);
    if delivery.status == DeliveryStatus::Failed {
        batch = batch.audit(tollgate_engine::storage::audit::AuditEvent {
            at_ms: now,
            kind: "webhook.failed".into(),
            org_id: Some(hook.org_id.clone()),
            outcome: "failure".into(),
            reason: Some(format!(
                "gave up on event {} after {} attempts",
                delivery.event_id,
                delivery.attempts.len()
            )),
            details: serde_json::json!({ "webhook_id": hook.id, "event_type": delivery.event_type,
                "delivery_seq": delivery.seq }),
            ..Default::default()
        });
    }
    batch.commit().await?;
    Ok(())
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        "the request failed".into()
    }
}
