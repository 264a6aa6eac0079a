//! Maximum secret age: due dates shown, `secret.expiring` audited once ahead of time,
//! the secret refused with a clear `invalid_client` once due — driven by the clock.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_tests::{START_MS, TestApp, audit_of_kind};

const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test]
async fn secrets_past_their_maximum_age_stop_working_after_a_notice() {
    let app = TestApp::spawn().await;
    for days in [0, 3651] {
        let refused = app
            .admin_request(
                Method::POST,
                "/admin/v1/integrations",
                Some(json!({"org_id": "acme", "name": "x", "daily_quota": 10, "secret_max_age_days": days})),
            )
            .await;
        assert_eq!(refused.status(), 422, "max age {days}");
    }
    let created: Value = app
        .admin_request(
            Method::POST,
            "/admin/v1/integrations",
            Some(json!({"org_id": "acme", "name": "Billing export", "daily_quota": 100, "secret_max_age_days": 30})),
        )
        .await
        .json()
        .await
        .unwrap();
    let it = &created["integration"];
    let (id, client_id) = (it["id"].as_str().unwrap(), it["client_id"].as_str().unwrap());
    let secret = created["client_secret"].as_str().unwrap();
    assert_eq!(it["secret_max_age_days"], 30);
    assert_eq!(it["secrets"][0]["due_at"], "2026-12-28T10:00:00Z");
    assert_eq!(it["secrets"][0]["due_in_seconds"], 30 * 86_400);

    // Half-way: fine, and no notice yet.
    app.clock.advance(15 * DAY);
    app.token(client_id, secret).await;
    assert!(audit_of_kind(&app.engine, "secret.expiring").is_empty());

    // 13 days before: one notice, however often the secret is used.
    app.clock.advance(2 * DAY);
    app.token(client_id, secret).await;
    app.token(client_id, secret).await;
    let notices = audit_of_kind(&app.engine, "secret.expiring");
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].event.details["days_left"], 13);
    assert_eq!(notices[0].event.integration_id.as_ref().unwrap().as_str(), id);

    // Due: the right secret is refused and told why; a wrong one learns nothing.
    app.clock.set_ms(START_MS + 30 * 86_400_000);
    let refused = app.token_response(client_id, secret, None).await;
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("maximum secret age"),
        "{body}"
    );
    let refusals = audit_of_kind(&app.engine, "token.refused");
    assert_eq!(refusals[0].event.reason.as_deref(), Some("secret_max_age_exceeded"));
    let mut wrong = secret.to_owned();
    wrong.replace_range(20..21, if &wrong[20..21] == "a" { "b" } else { "a" });
    let wrong = app.token_response(client_id, &wrong, None).await;
    let body: Value = wrong.json().await.unwrap();
    assert!(
        !body["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("maximum secret age")
    );
    let shown: Value = app
        .admin_request(Method::GET, &format!("/admin/v1/integrations/{id}"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["secrets"][0]["due_in_seconds"], 0);

    // A rotation starts the clock again; removing the limit lifts it.
    let rotated: Value = app
        .admin_request(
            Method::POST,
            &format!("/admin/v1/integrations/{id}/rotate"),
            Some(json!({"mode": "incident"})),
        )
        .await
        .json()
        .await
        .unwrap();
    let fresh = rotated["client_secret"].as_str().unwrap();
    app.token(client_id, fresh).await;
    assert_eq!(rotated["integration"]["secrets"][0]["due_at"], "2027-01-27T10:00:00Z");
    app.clock.advance(31 * DAY);
    assert_eq!(app.token_response(client_id, fresh, None).await.status(), 401);
    let patched = app
        .admin_request(
            Method::PATCH,
            &format!("/admin/v1/integrations/{id}"),
            Some(json!({"secret_max_age_days": 0})),
        )
        .await;
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["secret_max_age_days"], Value::Null);
    assert_eq!(patched["secrets"][0]["due_at"], Value::Null);
    app.token(client_id, fresh).await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_organisation_default_applies_to_new_integrations_that_set_none() {
    let app = TestApp::spawn().await;
    let put = |days: Value| {
        app.admin_request(
            Method::PUT,
            "/admin/v1/orgs/acme/settings",
            Some(json!({"secret_max_age_days": days})),
        )
    };
    assert_eq!(put(json!(0)).await.status(), 422);
    assert_eq!(put(json!(90)).await.status(), 200);
    let shown: Value = app
        .admin_request(Method::GET, "/admin/v1/orgs/acme/settings", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["secret_max_age_days"], 90);
    let defaulted = app.register("acme", 10).await;
    assert_eq!(defaulted.integration["secret_max_age_days"], 90);
    assert_eq!(defaulted.integration["secrets"][0]["due_at"], "2027-02-26T10:00:00Z");
    let own: Value = app
        .admin_request(
            Method::POST,
            "/admin/v1/integrations",
            Some(json!({"org_id": "acme", "name": "own", "daily_quota": 10, "secret_max_age_days": 7})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(own["integration"]["secret_max_age_days"], 7, "an explicit value wins");
    let elsewhere = app.register("globex", 10).await;
    assert_eq!(elsewhere.integration["secret_max_age_days"], Value::Null);
    assert_eq!(put(Value::Null).await.status(), 200);
    assert_eq!(
        app.register("acme", 10).await.integration["secret_max_age_days"],
        Value::Null
    );
    assert_eq!(audit_of_kind(&app.engine, "org.settings_updated").len(), 2);
    app.shutdown().await;
}
