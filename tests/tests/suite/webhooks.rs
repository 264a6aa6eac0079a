//! Webhooks: every event type delivered and signed, retried with backoff until
//! accepted, given up on in the end, and delivered across SIGKILL and restart.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_tests::receiver::Receiver;
use tollgate_tests::{ADMIN_KEY, ServedBinary, TestApp, audit_of_kind, register_over_http};

/// Creates a webhook for `org` pointing at `receiver`; returns its id.
async fn create_webhook(http: &reqwest::Client, admin: &str, org: &str, receiver: &Receiver) -> String {
    let created = http
        .post(format!("{admin}/admin/v1/webhooks"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"org_id": org, "url": receiver.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    receiver.set_secret(created["secret"].as_str().unwrap());
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    created["webhook"]["id"].as_str().unwrap().to_owned()
}

async fn deliveries(http: &reqwest::Client, admin: &str, webhook: &str) -> Vec<Value> {
    let page: Value = http
        .get(format!("{admin}/admin/v1/webhooks/{webhook}/deliveries?limit=200"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["deliveries"].as_array().unwrap().clone()
}

/// Moves the manual clock in steps (so that retries fall due) until `done`.
async fn drive_until(app: &TestApp, step: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        app.clock.advance(step);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_is_delivered_signed_and_retried_until_accepted() {
    let app = TestApp::spawn_with(|c| {
        c.webhooks.poll = Duration::from_millis(20);
        c.webhooks.retry.backoff_base = Duration::from_secs(1);
        // The test jumps the clock by days; nothing may be given up meanwhile.
        c.webhooks.retry.give_up_after = Duration::from_secs(60 * 86_400);
    })
    .await;
    let receiver = Receiver::start().await;
    let before = app.register("acme", 10).await;
    app.admin_request(
        Method::POST,
        &format!("/admin/v1/integrations/{}/disable", before.id),
        None,
    )
    .await;
    let webhook = create_webhook(&app.http, &app.admin, "acme", &receiver).await;
    let other_org = app.register("globex", 10).await;
    let reg = app.register("acme", 10).await;
    let path = |tail: &str| format!("/admin/v1/integrations/{}{tail}", reg.id);
    // Every event is refused twice before it is accepted.
    receiver.fail_next(2 * 10);

    // quota.warning (80 %, 95 %) and quota.exhausted.
    let token = app.token(&reg.client_id, &reg.secret).await;
    for _ in 0..11 {
        app.check(&token).await;
    }
    // secret.rotated, then secret.grace_ending when the old secret is used in the last hour.
    let rotated: Value = app
        .admin_request(Method::POST, &path("/rotate"), Some(json!({"grace_seconds": 7200})))
        .await
        .json()
        .await
        .unwrap();
    let new_secret = rotated["client_secret"].as_str().unwrap().to_owned();
    app.clock.advance(Duration::from_secs(6600));
    app.token(&reg.client_id, &reg.secret).await;
    // secret.expiring: a 20-day maximum age, used 11 days later.
    app.admin_request(Method::PATCH, &path(""), Some(json!({"secret_max_age_days": 20})))
        .await;
    app.clock.advance(Duration::from_secs(11 * 86_400));
    app.token(&reg.client_id, &new_secret).await;
    // integration.disabled / enabled.
    app.admin_request(Method::POST, &path("/disable"), Some(json!({"reason": "odd"})))
        .await;
    app.admin_request(Method::POST, &path("/enable"), None).await;
    // auth.lockout: eleven wrong secrets.
    let mut wrong = new_secret.clone();
    wrong.replace_range(20..21, if &wrong[20..21] == "a" { "b" } else { "a" });
    for _ in 0..11 {
        app.token_response(&reg.client_id, &wrong, None).await;
    }
    // secret.leaked, then integration.revoked.
    let leak = app
        .admin_request(
            Method::POST,
            "/admin/v1/secret-leaks",
            Some(json!([{"token": new_secret}])),
        )
        .await;
    assert_eq!(leak.status(), 200);
    app.admin_request(Method::POST, &path("/revoke"), None).await;
    // Another organisation's events never reach acme's endpoint.
    app.admin_request(
        Method::POST,
        &format!("/admin/v1/integrations/{}/disable", other_org.id),
        None,
    )
    .await;

    let expected = [
        "auth.lockout",
        "integration.disabled",
        "integration.enabled",
        "integration.revoked",
        "quota.exhausted",
        "quota.warning",
        "secret.expiring",
        "secret.grace_ending",
        "secret.leaked",
        "secret.rotated",
    ];
    drive_until(&app, Duration::from_secs(30), "every event type", || {
        receiver.accepted_types() == expected && receiver.accepted_ids().len() == 11
    })
    .await;

    let received = receiver.received();
    for r in &received {
        assert!(r.signature_ok, "signed: {r:?}");
        assert_eq!(r.body["id"], r.event_id.as_str());
        assert_eq!(r.body["type"], r.event_type.as_str());
        assert_eq!(r.body["org_id"], "acme");
        assert_eq!(
            r.body["integration_id"],
            reg.id.as_str(),
            "only events after the webhook existed"
        );
        let text = r.body.to_string();
        assert!(
            !text.contains(&reg.secret) && !text.contains(&new_secret),
            "no secret in an event"
        );
    }
    let warnings = received
        .iter()
        .filter(|r| r.answered == 200 && r.event_type == "quota.warning")
        .count();
    assert_eq!(warnings, 2, "each threshold once");
    // Retried with the same event id until accepted: attempts 1, 2, … answered 503
    // until the last, 200; the 20 refusals were all retried.
    let mut refused = 0;
    for id in receiver.accepted_ids() {
        let tries: Vec<(u32, u16)> = received
            .iter()
            .filter(|r| r.event_id == id)
            .map(|r| (r.attempt, r.answered))
            .collect();
        let n = tries.len();
        assert!(
            tries.iter().enumerate().all(|(i, t)| t.0 == i as u32 + 1),
            "{id}: {tries:?}"
        );
        assert!(
            tries[..n - 1].iter().all(|t| t.1 == 503) && tries[n - 1].1 == 200,
            "{id}: {tries:?}"
        );
        refused += n - 1;
    }
    assert_eq!(refused, 20);
    let listed = deliveries(&app.http, &app.admin, &webhook).await;
    assert_eq!(listed.len(), 11);
    for d in &listed {
        assert_eq!(d["status"], "delivered", "{d}");
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(attempts.last().unwrap()["status_code"], 200);
    }
    let attempts_listed: usize = listed.iter().map(|d| d["attempts"].as_array().unwrap().len()).sum();
    assert_eq!(
        attempts_listed,
        received.len(),
        "every attempt is visible in the admin API"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_keeps_failing_is_given_up_and_audited() {
    let app = TestApp::spawn_with(|c| {
        c.webhooks.poll = Duration::from_millis(20);
        c.webhooks.retry.give_up_after = Duration::from_secs(3600);
        c.webhooks.retry.backoff_base = Duration::from_secs(60);
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.set_failing(true);
    let webhook = create_webhook(&app.http, &app.admin, "acme", &receiver).await;
    let reg = app.register("acme", 10).await;
    app.admin_request(
        Method::POST,
        &format!("/admin/v1/integrations/{}/disable", reg.id),
        None,
    )
    .await;
    drive_until(&app, Duration::from_secs(120), "the give-up", || {
        !audit_of_kind(&app.engine, "webhook.failed").is_empty()
    })
    .await;
    let listed = deliveries(&app.http, &app.admin, &webhook).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "failed");
    let attempts = listed[0]["attempts"].as_array().unwrap().len();
    assert!(attempts >= 3, "retried before giving up: {attempts}");
    assert_eq!(receiver.received().len(), attempts);
    // Deleting the endpoint stops it; bad requests are refused with reasons.
    let bad = app
        .admin_request(
            Method::POST,
            "/admin/v1/webhooks",
            Some(json!({"org_id": "acme", "url": "ftp://x", "events": []})),
        )
        .await;
    assert_eq!(bad.status(), 422);
    let bad = app
        .admin_request(
            Method::POST,
            "/admin/v1/webhooks",
            Some(json!({"org_id": "acme", "url": receiver.url, "events": ["secret.rotatd"]})),
        )
        .await;
    assert_eq!(bad.status(), 422);
    let deleted = app
        .admin_request(Method::DELETE, &format!("/admin/v1/webhooks/{webhook}"), None)
        .await;
    assert_eq!(deleted.status(), 200);
    let gone = app
        .admin_request(Method::GET, &format!("/admin/v1/webhooks/{webhook}/deliveries"), None)
        .await;
    assert_eq!(gone.status(), 404);
    app.shutdown().await;
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_survive_sigkill_and_restart() {
    let binary = env!("CARGO_BIN_EXE_tollgate-under-test");
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.set_failing(true);
    let http = reqwest::Client::new();
    let serve = |dir: &std::path::Path| {
        ServedBinary::start(binary, dir, |c| {
            c.env("TOLLGATE_ADMIN_KEY", ADMIN_KEY)
                .args(["--webhook-backoff-ms", "100"]);
        })
    };
    let mut first = serve(dir.path());
    let webhook = create_webhook(&http, &first.admin, "acme", &receiver).await;
    let (id, _, _) = register_over_http(
        &http,
        &first.admin,
        ADMIN_KEY,
        json!({"org_id": "acme", "name": "n", "daily_quota": 10}),
    )
    .await;
    let act = |admin: String, tail: &'static str, body: Value| {
        let http = http.clone();
        let id = id.clone();
        async move {
            let response = http
                .post(format!("{admin}/admin/v1/integrations/{id}{tail}"))
                .bearer_auth(ADMIN_KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{tail}");
        }
    };
    act(first.admin.clone(), "/disable", json!({})).await;
    act(first.admin.clone(), "/enable", json!({})).await;
    act(first.admin.clone(), "/rotate", json!({"grace_seconds": 60})).await;
    // All three are in the outbox and have failed at least once.
    let admin = first.admin.clone();
    wait_for("failed attempts", async || {
        let listed = deliveries(&http, &admin, &webhook).await;
        listed.len() == 3 && listed.iter().all(|d| !d["attempts"].as_array().unwrap().is_empty())
    })
    .await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    // Restarted: the outbox is still there; the receiver is back and gets all three.
    receiver.set_failing(false);
    let mut second = serve(dir.path());
    wait_for("the three events", async || receiver.accepted_ids().len() == 3).await;
    // An event acknowledged just before a SIGKILL is not lost either.
    act(second.admin.clone(), "/disable", json!({"reason": "kill right after"})).await;
    second.child.kill().unwrap();
    second.child.wait().unwrap();
    let third = serve(dir.path());
    wait_for("the event from before the kill", async || {
        receiver.accepted_ids().len() == 4
    })
    .await;
    assert!(receiver.received().iter().all(|r| r.signature_ok));
    assert_eq!(
        receiver.accepted_types(),
        ["integration.disabled", "integration.enabled", "secret.rotated"]
    );
    let listed = deliveries(&http, &third.admin, &webhook).await;
    assert!(listed.iter().all(|d| d["status"] == "delivered"), "{listed:?}");
    third.terminate();
}
