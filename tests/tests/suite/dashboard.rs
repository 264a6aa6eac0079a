//! The web dashboard in a real (headless) Chromium against the real server, and its
//! session rules over plain HTTP.

use std::sync::Arc;

use anyhow::{Context, ensure};
use reqwest::Method;
use serde_json::{Value, json};
use tollgate_tests::browser::{Browser, run_scenario};
use tollgate_tests::{ADMIN_KEY, TestApp};

/// Signs in through the form and waits for the integrations list.
async fn sign_in(browser: &Browser, app: &TestApp) -> anyhow::Result<()> {
    browser.goto(&format!("{}/", app.admin)).await?;
    browser.fill("#admin-key", "not the key at all").await?;
    browser.click("#sign-in button[type=submit]").await?;
    browser
        .wait_text("#sign-in-error", "a refusal", |t| t.contains("not valid"))
        .await?;
    browser.fill("#admin-key", ADMIN_KEY).await?;
    browser.click("#sign-in button[type=submit]").await?;
    browser.find("#integrations").await?;
    Ok(())
}

async fn token_status(app: &TestApp, client_id: &str, secret: &str) -> (u16, Value) {
    let response = app.token_response(client_id, secret, None).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn audit_kinds_shown(browser: &Browser, table: &str) -> anyhow::Result<Vec<String>> {
    let rows = browser
        .client
        .find_all(fantoccini::Locator::Css(&format!("{table} tbody tr[data-type]")))
        .await?;
    let mut kinds = Vec::new();
    for row in rows {
        kinds.push(row.attr("data-type").await?.unwrap_or_default());
    }
    Ok(kinds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_runs_the_whole_lifecycle_in_the_browser() {
    let app = Arc::new(TestApp::spawn().await);
    let scenario_app = app.clone();
    run_scenario("lifecycle", |browser| async move {
        let app = scenario_app;
        sign_in(&browser, &app).await?;

        // Create: validation messages first, then a real integration.
        browser.click("nav a[href='#/integrations/new']").await?;
        browser.find("#create-form").await?;
        browser.click("#create-form button[type=submit]").await?;
        browser
            .wait_text("#name-error", "the missing-name message", |t| t == "Enter a name.")
            .await?;
        browser
            .wait_text("#quota-error", "the quota message", |t| t.contains("whole number"))
            .await?;
        browser.fill("#name", "CRM sync").await?;
        browser.fill("#org", "acme").await?;
        browser.fill("#scopes", "conversations:read messages:write").await?;
        browser.fill("#quota", "1000").await?;
        browser.fill("#max-age", "99999").await?;
        browser.click("#create-form button[type=submit]").await?;
        browser
            .wait_text("#max-age-error", "the max-age message", |t| t.contains("3650"))
            .await?;
        browser.fill("#max-age", "90").await?;
        browser.click("#create-form button[type=submit]").await?;
        let secret = browser.value("#new-secret").await?;
        let client_id = browser.text("#new-client-id").await?;
        ensure!(secret.starts_with("tgs_"), "the secret is shown once: {secret:?}");
        ensure!(
            browser.text("#secret-once").await?.contains("will not be shown again"),
            "the one-time warning is there"
        );
        browser.click("#copy-secret").await?;
        browser
            .wait_text("#copy-secret", "copy feedback", |t| t != "Copy")
            .await?;

        // The secret from the page works over HTTP.
        let (status, body) = token_status(&app, &client_id, &secret).await;
        ensure!(status == 200, "token with the dashboard's secret: {status} {body}");
        let token = body["access_token"].as_str().context("access token")?;
        for _ in 0..7 {
            let checked = app.check(token).await;
            ensure!(checked.status() == 200, "a request check: {}", checked.status());
        }

        // The integration page never shows the secret again.
        browser.click("#go-integration").await?;
        browser.find("#secrets").await?;
        browser
            .wait_text("#max-age", "the maximum secret age", |t| t == "90 days")
            .await?;
        let due = browser.text("#secrets tr[data-role='current']").await?;
        ensure!(due.contains("2027-02-26 10:00:00 UTC"), "the secret's due date: {due}");
        browser.find("#chart-days").await?;
        browser
            .wait_text("#used-today", "today's usage", |t| t.contains("7 of 1,000"))
            .await?;
        let bars = browser
            .client
            .find_all(fantoccini::Locator::Css("#chart-hours rect[data-value]"))
            .await?;
        let mut hourly = Vec::new();
        for bar in bars {
            hourly.push(bar.attr("data-value").await?.unwrap_or_default());
        }
        ensure!(
            hourly.len() == 24 && hourly[10] == "7" && hourly.iter().filter(|v| *v != "0").count() == 1,
            "the hourly chart has today's 7 requests at 10:00: {hourly:?}"
        );
        let daily = browser
            .find("#chart-days")
            .await?
            .attr("aria-label")
            .await?
            .unwrap_or_default();
        ensure!(
            daily.contains("7 requests in all"),
            "the daily chart sums the month: {daily}"
        );
        let page = browser.client.source().await?;
        ensure!(!page.contains(&secret), "the secret is not on the integration page");
        let shown = audit_kinds_shown(&browser, "#activity").await?;
        ensure!(
            shown.contains(&"token.issued".to_owned()) && shown.contains(&"integration.created".to_owned()),
            "activity shows the creation and the token: {shown:?}"
        );
        let id = browser
            .find("#props code")
            .await?
            .text()
            .await
            .context("integration id")?;

        // Edit the quota.
        browser.fill("#edit-quota", "2500").await?;
        browser.click("#save-settings").await?;
        browser
            .wait_text("#quota-value", "the new quota", |t| t == "2,500")
            .await?;
        let shown: Value = app
            .admin_request(Method::GET, &format!("/admin/v1/integrations/{id}"), None)
            .await
            .json()
            .await?;
        ensure!(shown["daily_quota"] == 2500, "the quota edit reached the API: {shown}");

        // Guided routine rotation: new secret once, countdown, old secret still works.
        browser.click("#rotate-link").await?;
        browser.find("#rotate-form").await?;
        browser.click("#rotate-now").await?;
        let new_secret = browser.value("#new-secret").await?;
        ensure!(
            new_secret.starts_with("tgs_") && new_secret != secret,
            "a new secret is shown"
        );
        let countdown = browser.text("#grace-countdown").await?;
        ensure!(
            countdown == "1 d 00:00:00" || countdown.starts_with("23:59:"),
            "a 24 h countdown runs: {countdown:?}"
        );
        let last_use = browser.text("#old-secret-last-use").await?;
        ensure!(
            last_use.contains("Last used 2026-11-28 10:00:00 UTC from 127.0.0.1"),
            "the old secret's last use: {last_use:?}"
        );
        app.clock.advance(std::time::Duration::from_secs(3600));
        let (status, _) = token_status(&app, &client_id, &secret).await;
        ensure!(status == 200, "the old secret works during the grace window: {status}");
        let (status, _) = token_status(&app, &client_id, &new_secret).await;
        ensure!(status == 200, "the new secret works: {status}");
        browser.click("#back-to-integration").await?;
        browser
            .wait_text("#old-secret-last-use", "when the old secret was last used", |t| {
                t.contains("Last used 2026-11-28 11:00:00 UTC from 127.0.0.1")
            })
            .await?;
        browser.click("#finish-rotation").await?;
        browser
            .wait_text("#page-title", "the reloaded page", |t| t == "CRM sync")
            .await?;
        for _ in 0..50 {
            if !browser.exists("#grace-panel").await {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        ensure!(
            !browser.exists("#grace-panel").await,
            "the grace panel is gone after finishing"
        );
        let (status, body) = token_status(&app, &client_id, &secret).await;
        ensure!(status == 401, "the old secret is dead after finishing: {status} {body}");

        // One click disables; the next token request fails.
        browser
            .fill("#disable-reason", "odd traffic from a new network")
            .await?;
        browser.click("#disable").await?;
        browser
            .wait_text("#status-badge", "the disabled badge", |t| t.contains("disabled"))
            .await?;
        let (status, body) = token_status(&app, &client_id, &new_secret).await;
        ensure!(
            status == 401 && body["error"] == "invalid_client",
            "a disabled integration gets no token: {status} {body}"
        );
        browser.client.refresh().await?;
        browser
            .find("#activity tbody tr[data-type='integration.disabled']")
            .await?;
        let shown = audit_kinds_shown(&browser, "#activity").await?;
        for kind in [
            "secret.rotated",
            "secret.rotation_finished",
            "integration.updated",
            "token.refused",
        ] {
            ensure!(shown.contains(&kind.to_owned()), "activity shows {kind}: {shown:?}");
        }
        let row = browser.text("#activity tbody tr[data-type='token.refused']").await?;
        ensure!(
            row.contains("127.0.0.1") && row.contains("integration_disabled"),
            "the refused token request shows its IP and why: {row:?}"
        );

        // Enable again, then revoke with typed confirmation.
        browser.click("#enable").await?;
        browser
            .wait_text("#status-badge", "the active badge", |t| t.contains("active"))
            .await?;
        let revoke = browser.find("#revoke").await?;
        ensure!(!revoke.is_enabled().await?, "revoke waits for the typed name");
        browser.fill("#revoke-confirm", "CRM syn").await?;
        ensure!(
            !browser.find("#revoke").await?.is_enabled().await?,
            "a wrong name keeps it disabled"
        );
        browser.fill("#revoke-confirm", "CRM sync").await?;
        browser.click("#revoke").await?;
        browser
            .wait_text("#status-badge", "the revoked badge", |t| t.contains("revoked"))
            .await?;

        // The list finds it by search, with its badge; the audit view verifies the chain.
        browser.click("nav a[href='#/integrations']").await?;
        browser.fill("#search", "crm").await?;
        browser
            .wait_text("#integrations tbody", "the revoked integration", |t| {
                t.contains("CRM sync") && t.contains("revoked")
            })
            .await?;
        browser.click("nav a[href='#/audit']").await?;
        browser
            .wait_text("#chain-status", "the chain verified", |t| {
                t.starts_with("Chain verified")
            })
            .await?;
        browser.fill("#audit-type", "integration.").await?;
        browser.click("#audit-filters button[type=submit]").await?;
        browser.find("#audit tbody tr[data-type='integration.revoked']").await?;
        let shown = audit_kinds_shown(&browser, "#audit").await?;
        ensure!(
            !shown.is_empty() && shown.iter().all(|k| k.starts_with("integration.")),
            "the type filter applies: {shown:?}"
        );

        // Sign out: the next visit asks for the key again.
        browser.click("#sign-out").await?;
        browser.find("#admin-key").await?;
        browser.goto(&format!("{}/#/integrations", app.admin)).await?;
        browser.find("#admin-key").await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_rotation_in_the_browser_kills_the_old_secret_at_once() {
    let app = Arc::new(TestApp::spawn().await);
    let registered = app.register("globex", 100).await;
    let scenario_app = app.clone();
    run_scenario("incident", |browser| async move {
        let app = scenario_app;
        sign_in(&browser, &app).await?;
        browser
            .goto(&format!("{}/#/integrations/{}/rotate", app.admin, registered.id))
            .await?;
        browser.click("#mode-incident").await?;
        browser
            .wait_text("#rotate-now", "the incident wording", |t| t.contains("cut off"))
            .await?;
        browser.click("#rotate-now").await?;
        let new_secret = browser.value("#new-secret").await?;
        browser.find("#incident-done").await?;
        let (status, _) = token_status(&app, &registered.client_id, &registered.secret).await;
        ensure!(status == 401, "the old secret is dead at once: {status}");
        let (status, _) = token_status(&app, &registered.client_id, &new_secret).await;
        ensure!(status == 200, "the new secret works: {status}");
        Ok(())
    })
    .await;
}

fn session_cookie(response: &reqwest::Response) -> (String, String) {
    let header = response
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_owned();
    let value = header.split(';').next().unwrap().to_owned();
    (value, header)
}

#[tokio::test]
async fn dashboard_sessions_need_csrf_for_changes_and_end_with_sign_out_or_key_revocation() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();
    let session = |body: Value| http.post(format!("{}/dashboard/session", app.admin)).json(&body).send();

    // The page itself: strict CSP, no caching, and the script is the embedded one.
    let page = http.get(format!("{}/", app.admin)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(page.text().await.unwrap().contains("/assets/app.js"));
    let script = http.get(format!("{}/assets/app.js", app.admin)).send().await.unwrap();
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(
        !script.text().await.unwrap().contains("localStorage"),
        "the key is never kept in local storage"
    );

    // A wrong key: 401, no cookie, audited as a failed sign-in.
    let refused = session(json!({"admin_key": "wrong-key-wrong-key"})).await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("set-cookie").is_none());
    let malformed = http
        .post(format!("{}/dashboard/session", app.admin))
        .header("content-type", "application/json")
        .body("{\"admin_key\":")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);

    // The right key: an HttpOnly, SameSite=Strict cookie and a CSRF token; never the key.
    let signed_in = session(json!({"admin_key": ADMIN_KEY})).await.unwrap();
    assert_eq!(signed_in.status(), 201);
    let (cookie, attributes) = session_cookie(&signed_in);
    assert!(
        attributes.contains("HttpOnly") && attributes.contains("SameSite=Strict"),
        "{attributes}"
    );
    let text = signed_in.text().await.unwrap();
    assert!(!text.contains(ADMIN_KEY));
    let info: Value = serde_json::from_str(&text).unwrap();
    let csrf = info["csrf_token"].as_str().unwrap().to_owned();
    let kinds: Vec<String> = tollgate_tests::audit_of_kind(&app.engine, "dashboard.sign_in")
        .iter()
        .map(|e| e.event.outcome.clone())
        .collect();
    assert_eq!(kinds, ["success", "failure"], "newest first");

    let with_cookie = |method: Method, path: &str| {
        http.request(method, format!("{}{path}", app.admin))
            .header("cookie", &cookie)
    };
    // Reads need only the cookie; the session endpoint gives the CSRF token back.
    let list = with_cookie(Method::GET, "/admin/v1/integrations").send().await.unwrap();
    assert_eq!(list.status(), 200);
    let again: Value = with_cookie(Method::GET, "/dashboard/session")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["csrf_token"], csrf.as_str());

    // Changes need the CSRF token: missing and wrong are refused and change nothing.
    let body = json!({"org_id": "acme", "name": "n", "daily_quota": 10});
    for token in [None, Some("wrong")] {
        let mut request = with_cookie(Method::POST, "/admin/v1/integrations").json(&body);
        if let Some(token) = token {
            request = request.header("x-csrf-token", token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 403, "CSRF token {token:?}");
        let error: Value = response.json().await.unwrap();
        assert!(error["message"].as_str().unwrap().contains("CSRF"), "{error}");
    }
    assert!(tollgate_tests::audit_of_kind(&app.engine, "integration.created").is_empty());
    let created = with_cookie(Method::POST, "/admin/v1/integrations")
        .header("x-csrf-token", &csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created = tollgate_tests::audit_of_kind(&app.engine, "integration.created");
    assert_eq!(
        created[0]
            .event
            .admin_key_id
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some(tollgate_admin::auth::BOOTSTRAP_KEY_ID),
        "changes made in the dashboard are audited with the session's key"
    );

    // Sign out needs the token too, then the cookie is dead.
    let out = with_cookie(Method::DELETE, "/dashboard/session").send().await.unwrap();
    assert_eq!(out.status(), 403);
    let out = with_cookie(Method::DELETE, "/dashboard/session")
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert!(session_cookie(&out).1.contains("Max-Age=0"));
    let after = with_cookie(Method::GET, "/admin/v1/integrations").send().await.unwrap();
    assert_eq!(after.status(), 401);

    // Revoking the session's admin key ends the session at once.
    let key: Value = app
        .admin_request(Method::POST, "/admin/v1/admin-keys", Some(json!({"label": "ops"})))
        .await
        .json()
        .await
        .unwrap();
    let ops_session = session(json!({"admin_key": key["key"]})).await.unwrap();
    assert_eq!(ops_session.status(), 201);
    let (ops_cookie, _) = session_cookie(&ops_session);
    let get = |c: String| {
        http.get(format!("{}/admin/v1/integrations", app.admin))
            .header("cookie", c)
            .send()
    };
    assert_eq!(get(ops_cookie.clone()).await.unwrap().status(), 200);
    let id = key["admin_key"]["id"].as_str().unwrap();
    let revoked = app
        .admin_request(Method::POST, &format!("/admin/v1/admin-keys/{id}/revoke"), None)
        .await;
    assert_eq!(revoked.status(), 200);
    assert_eq!(get(ops_cookie).await.unwrap().status(), 401);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_adds_a_webhook_in_the_browser_and_watches_its_deliveries() {
    let app = Arc::new(TestApp::spawn_with(|c| c.webhooks.poll = std::time::Duration::from_millis(50)).await);
    let registered = app.register("acme", 100).await;
    let receiver = tollgate_tests::receiver::Receiver::start().await;
    let scenario_app = app.clone();
    run_scenario("webhooks", |browser| async move {
        let app = scenario_app;
        sign_in(&browser, &app).await?;
        browser.click("nav a[href='#/webhooks']").await?;
        browser.find("#webhook-form").await?;
        browser.click("#webhook-form button[type=submit]").await?;
        browser
            .wait_text("#hook-url-error", "the URL message", |t| t.contains("http"))
            .await?;
        browser.fill("#hook-org", "acme").await?;
        browser.fill("#hook-url", &receiver.url).await?;
        browser.click("#ev-integration-disabled").await?;
        browser.click("#webhook-form button[type=submit]").await?;
        let secret = browser.value("#new-secret").await?;
        ensure!(
            secret.starts_with("whsec_"),
            "the signing secret is shown once: {secret:?}"
        );
        receiver.set_secret(&secret);
        browser
            .wait_text("#webhooks tbody", "the new endpoint", |t| t.contains(&receiver.url))
            .await?;

        // An event it subscribed to arrives signed; one it did not is not sent.
        let path = format!("/admin/v1/integrations/{}", registered.id);
        app.admin_request(Method::POST, &format!("{path}/disable"), None).await;
        app.admin_request(Method::POST, &format!("{path}/enable"), None).await;
        for _ in 0..100 {
            if !receiver.accepted_ids().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let received = receiver.received();
        ensure!(
            received.len() == 1 && received[0].signature_ok && received[0].event_type == "integration.disabled",
            "one signed integration.disabled delivery: {received:?}"
        );
        browser.click("#webhooks tbody a").await?;
        browser
            .find("#deliveries tr[data-status='delivered'][data-event='integration.disabled']")
            .await?;
        let row = browser.text("#deliveries tbody tr").await?;
        ensure!(row.contains("HTTP 200"), "the attempt's answer is shown: {row}");
        Ok(())
    })
    .await;
}
