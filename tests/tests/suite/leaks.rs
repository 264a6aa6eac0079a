//! Leaked-secret reports: genuine, fake, malformed, unknown, replayed; admin-key and
//! HMAC-signed; both policies.

use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use tollgate_engine::secret::checksum;
use tollgate_tests::{ADMIN_KEY, TestApp, audit_of_kind};

const REPORT_KEY: &str = "leak-report-shared-key-0123456789";

fn sign(key: &str, t: u64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A well-formed secret (valid checksum) for `slot` that is not the stored one.
fn forged(slot: &str) -> String {
    let head = format!("tgs_{slot}_{}", "Q".repeat(43));
    let sum = checksum(&head);
    head + &sum
}

async fn report_as_admin(app: &TestApp, reports: Value) -> reqwest::Response {
    app.admin_request(Method::POST, "/admin/v1/secret-leaks", Some(reports))
        .await
}

async fn report_signed(app: &TestApp, key: &str, t: u64, body: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/admin/v1/secret-leaks", app.admin))
        .header("content-type", "application/json")
        .header("tollgate-signature", sign(key, t, body))
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

fn now_s(app: &TestApp) -> u64 {
    app.engine.now_ms() / 1000
}

#[tokio::test]
async fn a_genuine_leak_kills_its_slot_and_tokens_and_fakes_change_nothing() {
    let app = TestApp::spawn_with(|c| c.leak_report_key = Some(REPORT_KEY.into())).await;
    let leaked = app.register("acme", 100).await;
    let bystander = app.register("acme", 100).await;
    let token = app.token(&leaked.client_id, &leaked.secret).await;
    let slot = &leaked.secret[4..14];
    let mut bad_checksum = leaked.secret.clone();
    let last = if bad_checksum.ends_with('a') { "b" } else { "a" };
    bad_checksum.replace_range(63.., last);

    let before = app.engine.audit_query(&Default::default(), None, 1000).unwrap().len();
    let answer = report_as_admin(
        &app,
        json!([
            {"token": "tgs_short", "type": "tollgate_client_secret", "url": "https://example.com/a"},
            {"token": bad_checksum, "url": "https://example.com/b"},
            {"token": forged("ZZZZZZZZZZ"), "url": "https://example.com/c"},
            {"token": forged(slot), "url": "https://example.com/d"},
        ]),
    )
    .await;
    assert_eq!(answer.status(), 200);
    let text = answer.text().await.unwrap();
    assert!(
        !text.contains(&leaked.secret[15..]),
        "the answer never repeats a secret"
    );
    let answer: Value = serde_json::from_str(&text).unwrap();
    let statuses: Vec<&str> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["malformed", "malformed", "unknown", "not_genuine"]);
    assert_eq!(answer["genuine"], 0);
    assert_eq!(answer["results"][0]["type"], "tollgate_client_secret");
    let after = app.engine.audit_query(&Default::default(), None, 1000).unwrap().len();
    assert_eq!(
        before, after,
        "fake and unknown secrets change nothing, not even the audit log"
    );
    app.token(&leaked.client_id, &leaked.secret).await;

    // The real one: killed, with every token issued so far; the bystander untouched.
    app.clock.advance(std::time::Duration::from_secs(1));
    let answer: Value = report_as_admin(
        &app,
        json!([{"token": leaked.secret, "url": "https://github.com/acme/app/blob/main/.env", "source": "github"}]),
    )
    .await
    .json()
    .await
    .unwrap();
    let result = &answer["results"][0];
    assert_eq!(result["status"], "slot_killed", "{answer}");
    assert_eq!(result["genuine"], true);
    assert_eq!(result["integration_id"], leaked.id.as_str());
    assert_eq!(result["token_hint"], format!("tgs_{slot}_…"));
    let refused = app.token_response(&leaked.client_id, &leaked.secret, None).await;
    assert_eq!(refused.status(), 401);
    let check = app.check(&token).await;
    assert_eq!(check.status(), 401, "tokens issued with the leaked secret are dead");
    app.token(&bystander.client_id, &bystander.secret).await;

    let leaks = audit_of_kind(&app.engine, "secret.leaked");
    assert_eq!(leaks.len(), 1);
    let event = &leaks[0].event;
    assert_eq!(event.outcome, "slot_killed");
    assert_eq!(
        event.reason.as_deref(),
        Some("https://github.com/acme/app/blob/main/.env")
    );
    assert_eq!(event.details["source"], "github");
    assert_eq!(event.details["slot_role"], "current");
    assert_eq!(event.slot_id.as_ref().map(ToString::to_string).as_deref(), Some(slot));
    let export = app
        .admin_request(Method::GET, "/admin/v1/audit?format=jsonl", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(!export.contains(&leaked.secret), "the audit log never holds the secret");

    // Reported again: the secret no longer works, so nothing more happens.
    let again: Value = report_as_admin(&app, json!([{"token": leaked.secret}]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["results"][0]["status"], "inactive");
    assert_eq!(audit_of_kind(&app.engine, "secret.leaked").len(), 1);

    // A rotation gives the integration a working secret again.
    let rotated: Value = app
        .admin_request(
            Method::POST,
            &format!("/admin/v1/integrations/{}/rotate", leaked.id),
            Some(json!({"mode": "incident"})),
        )
        .await
        .json()
        .await
        .unwrap();
    app.token(&leaked.client_id, rotated["client_secret"].as_str().unwrap())
        .await;
    app.shutdown().await;
}

#[tokio::test]
async fn signed_reports_are_checked_for_key_time_and_replay() {
    let app = TestApp::spawn_with(|c| c.leak_report_key = Some(REPORT_KEY.into())).await;
    let leaked = app.register("acme", 100).await;
    let body = json!([{"token": leaked.secret, "url": "https://paste.example/x", "source": "scanner"}]).to_string();
    let t = now_s(&app);

    for (what, response) in [
        (
            "wrong key",
            report_signed(&app, "another-key-entirely-0000", t, &body).await,
        ),
        ("stale timestamp", report_signed(&app, REPORT_KEY, t - 600, &body).await),
        (
            "future timestamp",
            report_signed(&app, REPORT_KEY, t + 600, &body).await,
        ),
    ] {
        assert_eq!(response.status(), 401, "{what}");
    }
    let tampered = app
        .http
        .post(format!("{}/admin/v1/secret-leaks", app.admin))
        .header("content-type", "application/json")
        .header("tollgate-signature", sign(REPORT_KEY, t, &body))
        .body(body.replace("paste.example", "paste.exampl3"))
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), 401, "a changed body breaks the signature");
    let unsigned = app
        .http
        .post(format!("{}/admin/v1/secret-leaks", app.admin))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    assert!(audit_of_kind(&app.engine, "secret.leaked").is_empty());
    app.token(&leaked.client_id, &leaked.secret).await;

    let accepted = report_signed(&app, REPORT_KEY, t, &body).await;
    assert_eq!(accepted.status(), 200);
    let answer: Value = accepted.json().await.unwrap();
    assert_eq!(answer["results"][0]["status"], "slot_killed");
    assert_eq!(
        answer["results"][0]["integration_id"],
        Value::Null,
        "a scanner is not told which integration it was"
    );
    let replayed = report_signed(&app, REPORT_KEY, t, &body).await;
    assert_eq!(replayed.status(), 401);
    let error: Value = replayed.json().await.unwrap();
    assert!(error["message"].as_str().unwrap().contains("replay"), "{error}");
    let leaks = audit_of_kind(&app.engine, "secret.leaked");
    assert_eq!(leaks.len(), 1);
    assert!(leaks[0].event.admin_key_id.is_none());
    assert_eq!(leaks[0].event.source_ip.as_deref(), Some("127.0.0.1"));
    app.shutdown().await;
}

#[tokio::test]
async fn the_disable_policy_disables_once_and_reports_need_a_proper_caller_and_body() {
    let app = TestApp::spawn_with(|c| c.leak_policy = tollgate_engine::LeakPolicy::Disable).await;
    let leaked = app.register("acme", 100).await;
    let answer: Value = report_as_admin(&app, json!([{"token": leaked.secret, "url": "https://x.example/y"}]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["results"][0]["status"], "disabled");
    let shown: Value = app
        .admin_request(Method::GET, &format!("/admin/v1/integrations/{}", leaked.id), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["status"], "disabled");
    assert_eq!(shown["disabled_reason"], "secret leaked at https://x.example/y");
    assert_eq!(
        app.token_response(&leaked.client_id, &leaked.secret, None)
            .await
            .status(),
        401
    );
    let again: Value = report_as_admin(&app, json!([{"token": leaked.secret}]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["results"][0]["status"], "already_disabled");
    assert_eq!(audit_of_kind(&app.engine, "secret.leaked").len(), 1);
    let enabled = app
        .admin_request(
            Method::POST,
            &format!("/admin/v1/integrations/{}/enable", leaked.id),
            None,
        )
        .await;
    assert_eq!(enabled.status(), 200);
    app.token(&leaked.client_id, &leaked.secret).await;

    // Signed reports are off without a shared key.
    let body = json!([{"token": leaked.secret}]).to_string();
    let signed = report_signed(&app, REPORT_KEY, now_s(&app), &body).await;
    assert_eq!(signed.status(), 401);

    // Bad bodies and callers: specific errors, nothing changed.
    let post = |content_type: &'static str, body: String, key: &str| {
        app.http
            .post(format!("{}/admin/v1/secret-leaks", app.admin))
            .bearer_auth(key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let many = serde_json::to_string(&vec![json!({"token": "tgs_x"}); 101]).unwrap();
    for (content_type, body, status) in [
        ("text/plain", "[]".to_owned(), 415),
        ("application/json", "[{\"token\":".to_owned(), 400),
        ("application/json", "[]".to_owned(), 422),
        ("application/json", "{\"token\": \"tgs_x\"}".to_owned(), 422),
        (
            "application/json",
            "[{\"token\": \"tgs_x\", \"extra\": 1}]".to_owned(),
            422,
        ),
        ("application/json", many, 422),
    ] {
        let response = post(content_type, body.clone(), ADMIN_KEY).await.unwrap();
        assert_eq!(response.status(), status, "{content_type} {body:.40}");
        let error: Value = response.json().await.unwrap();
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let reader: Value = app
        .admin_request(
            Method::POST,
            "/admin/v1/admin-keys",
            Some(json!({"label": "r", "read_only": true})),
        )
        .await
        .json()
        .await
        .unwrap();
    let as_reader = post("application/json", body.clone(), reader["key"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(as_reader.status(), 403);
    assert_eq!(audit_of_kind(&app.engine, "secret.leaked").len(), 1);
    app.shutdown().await;
}
