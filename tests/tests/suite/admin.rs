//! The admin REST API over real HTTP.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_tests::{ADMIN_KEY, TestApp};

async fn body(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

#[tokio::test]
async fn every_admin_route_refuses_a_missing_or_wrong_key() {
    let app = TestApp::spawn().await;
    let reg = app.register("acme", 10).await;
    let id = &reg.id;
    let routes = [
        (Method::POST, "/admin/v1/integrations".to_string()),
        (Method::GET, "/admin/v1/integrations".to_string()),
        (Method::GET, format!("/admin/v1/integrations/{id}")),
        (Method::PATCH, format!("/admin/v1/integrations/{id}")),
        (Method::POST, format!("/admin/v1/integrations/{id}/disable")),
        (Method::POST, format!("/admin/v1/integrations/{id}/enable")),
        (Method::POST, format!("/admin/v1/integrations/{id}/revoke")),
        (Method::POST, format!("/admin/v1/integrations/{id}/rotate")),
        (Method::POST, format!("/admin/v1/integrations/{id}/rotation/finish")),
        (Method::GET, format!("/admin/v1/integrations/{id}/usage")),
        (Method::GET, format!("/admin/v1/integrations/{id}/activity")),
        (Method::GET, "/admin/v1/audit".to_string()),
        (Method::GET, "/admin/v1/audit/verify".to_string()),
        (Method::POST, "/admin/v1/admin-keys".to_string()),
        (Method::GET, "/admin/v1/admin-keys".to_string()),
        (Method::GET, "/admin/v1/signing-keys".to_string()),
        (Method::POST, "/admin/v1/signing-keys/rotate".to_string()),
        (Method::GET, "/admin/v1/openapi.json".to_string()),
    ];
    for (method, path) in routes {
        let none = app
            .http
            .request(method.clone(), format!("{}{path}", app.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(none.status(), 401, "{method} {path} without a key");
        assert!(none.headers().contains_key("www-authenticate"));
        assert_eq!(body(none).await["error"], "unauthorized");
        let wrong = app
            .admin_request_as("not-the-admin-key-at-all", method.clone(), &path, None)
            .await;
        assert_eq!(wrong.status(), 401, "{method} {path} with a wrong key");
    }
    // Nothing changed.
    let view = body(
        app.admin_request(Method::GET, &format!("/admin/v1/integrations/{id}"), None)
            .await,
    )
    .await;
    assert_eq!(view["status"], "active");
    app.shutdown().await;
}

#[tokio::test]
async fn invalid_create_requests_get_specific_errors_and_create_nothing() {
    let app = TestApp::spawn().await;
    let url = format!("{}/admin/v1/integrations", app.admin);
    let valid = json!({"org_id": "acme", "name": "CRM", "scopes": ["a:read"], "daily_quota": 10});
    let with = |field: &str, value: Value| {
        let mut v = valid.clone();
        v[field] = value;
        v
    };
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (with("scopes", json!(["Bad Scope"])), 422, "invalid_value", "scope"),
        (
            with("scopes", json!(["a:read", "a:read"])),
            422,
            "invalid_value",
            "twice",
        ),
        (with("daily_quota", json!(0)), 422, "invalid_value", "1 to 1000000000"),
        (with("daily_quota", json!(-5)), 422, "invalid_value", "shape"),
        (with("org_id", json!("Acme Corp")), 422, "invalid_value", "organisation"),
        (with("name", json!("x".repeat(201))), 422, "invalid_value", "name"),
        (
            with("token_ttl_seconds", json!(5)),
            422,
            "invalid_value",
            "token lifetime",
        ),
        (with("surprise", json!(true)), 422, "invalid_value", "unknown field"),
        (json!({"org_id": "acme"}), 422, "invalid_value", "missing field"),
    ];
    for (i, (request, status, code, hint)) in cases.into_iter().enumerate() {
        let response = app
            .http
            .post(&url)
            .bearer_auth(ADMIN_KEY)
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "case {i}");
        let b = body(response).await;
        assert_eq!(b["error"], code, "case {i}: {b}");
        assert!(b["message"].as_str().unwrap().contains(hint), "case {i}: {b}");
    }
    let raw = |content_type: &'static str, text: String| {
        app.http
            .post(&url)
            .bearer_auth(ADMIN_KEY)
            .header("content-type", content_type)
            .body(text)
            .send()
    };
    assert_eq!(raw("text/plain", valid.to_string()).await.unwrap().status(), 415);
    let malformed = raw("application/json", "{\"org_id\": ".into()).await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(body(malformed).await["error"], "bad_request");
    let huge = raw("application/json", format!("{{\"name\": \"{}\"}}", "x".repeat(70_000)))
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let list = body(app.admin_request(Method::GET, "/admin/v1/integrations", None).await).await;
    assert_eq!(list["integrations"], json!([]), "nothing was created");

    let missing = app
        .admin_request(Method::GET, "/admin/v1/integrations/int_0000000000000000", None)
        .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(body(missing).await["error"], "not_found");
    let garbage = app
        .admin_request(Method::GET, "/admin/v1/integrations/..%2F..", None)
        .await;
    assert_eq!(garbage.status(), 404);
    app.shutdown().await;
}

#[tokio::test]
async fn a_routine_rotation_through_the_api_honours_the_grace_window() {
    let app = TestApp::spawn().await;
    let reg = app.register("acme", 100).await;
    let path = format!("/admin/v1/integrations/{}", reg.id);
    let rotated = app
        .admin_request(
            Method::POST,
            &format!("{path}/rotate"),
            Some(json!({"grace_seconds": 600})),
        )
        .await;
    assert_eq!(rotated.status(), 200);
    assert_eq!(rotated.headers()["cache-control"], "no-store");
    let rotated = body(rotated).await;
    let new = rotated["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(rotated["previous_secret_expires_at"], "2026-11-28T10:10:00Z");
    assert_eq!(rotated["integration"]["rotation_in_progress"], true);

    assert_eq!(
        app.token_response(&reg.client_id, &reg.secret, None).await.status(),
        200,
        "old during grace"
    );
    assert_eq!(
        app.token_response(&reg.client_id, &new, None).await.status(),
        200,
        "new at once"
    );
    let view = body(app.admin_request(Method::GET, &path, None).await).await;
    let previous = view["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == "previous")
        .unwrap();
    assert_eq!(
        previous["last_used_ip"], "127.0.0.1",
        "admins see the old secret's last use"
    );

    app.clock.advance(Duration::from_secs(600));
    assert_eq!(
        app.token_response(&reg.client_id, &reg.secret, None).await.status(),
        401,
        "old after grace"
    );
    assert_eq!(app.token_response(&reg.client_id, &new, None).await.status(), 200);
    let finish = app
        .admin_request(Method::POST, &format!("{path}/rotation/finish"), None)
        .await;
    assert_eq!(finish.status(), 409, "nothing left to finish");

    let too_long = app
        .admin_request(
            Method::POST,
            &format!("{path}/rotate"),
            Some(json!({"grace_seconds": 700000})),
        )
        .await;
    assert_eq!(too_long.status(), 422);
    let bad_mode = app
        .admin_request(Method::POST, &format!("{path}/rotate"), Some(json!({"mode": "yolo"})))
        .await;
    assert_eq!(bad_mode.status(), 422);
    app.shutdown().await;
}

#[tokio::test]
async fn lifecycle_conflicts_are_409_and_revocation_is_permanent() {
    let app = TestApp::spawn().await;
    let reg = app.register("acme", 100).await;
    let path = format!("/admin/v1/integrations/{}", reg.id);
    assert_eq!(
        app.admin_request(Method::POST, &format!("{path}/enable"), None)
            .await
            .status(),
        409
    );
    let revoked = app.admin_request(Method::POST, &format!("{path}/revoke"), None).await;
    assert_eq!(revoked.status(), 200);
    let revoked = body(revoked).await;
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["secrets"], json!([]));
    for (method, action) in [
        (Method::POST, "revoke"),
        (Method::POST, "rotate"),
        (Method::POST, "enable"),
        (Method::POST, "disable"),
    ] {
        let response = app.admin_request(method, &format!("{path}/{action}"), None).await;
        assert_eq!(response.status(), 409, "{action} after revoke");
        assert!(body(response).await["message"].as_str().unwrap().contains("revoked"));
    }
    let patch = app
        .admin_request(Method::PATCH, &path, Some(json!({"name": "still here"})))
        .await;
    assert_eq!(patch.status(), 409);
    assert_eq!(
        app.token_response(&reg.client_id, &reg.secret, None).await.status(),
        401
    );
    // The record is kept for audit.
    assert_eq!(
        body(app.admin_request(Method::GET, &path, None).await).await["status"],
        "revoked"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn updating_the_quota_keeps_todays_count_and_usage_is_live() {
    let app = TestApp::spawn().await;
    let reg = app.register("acme", 3).await;
    let token = app.token(&reg.client_id, &reg.secret).await;
    for _ in 0..4 {
        app.get("/v1/x", &token).await;
    }
    let path = format!("/admin/v1/integrations/{}", reg.id);
    let empty = app.admin_request(Method::PATCH, &path, Some(json!({}))).await;
    assert_eq!(empty.status(), 422);
    let updated = body(
        app.admin_request(
            Method::PATCH,
            &path,
            Some(json!({"daily_quota": 5, "scopes": ["conversations:read"], "name": "Renamed"})),
        )
        .await,
    )
    .await;
    assert_eq!(updated["usage_today"], json!({"used": 3, "limit": 5, "remaining": 2}));
    assert_eq!(updated["name"], "Renamed");
    assert_eq!(app.get("/v1/x", &token).await.status(), 200);

    let usage = body(
        app.admin_request(Method::GET, &format!("{path}/usage?days=3"), None)
            .await,
    )
    .await;
    let days = usage["days"].as_array().unwrap();
    assert_eq!(days.len(), 3);
    assert_eq!(days[2], json!({"date": "2026-11-28", "count": 4}));
    assert_eq!(usage["hourly_today"][10], 4);
    assert_eq!(usage["daily_quota"], 5);
    assert_eq!(
        app.admin_request(Method::GET, &format!("{path}/usage?days=91"), None)
            .await
            .status(),
        422
    );
    app.shutdown().await;
}

#[tokio::test]
async fn activity_and_the_audit_log_filter_page_export_and_verify() {
    let app = TestApp::spawn().await;
    let reg = app.register("acme", 100).await;
    let other = app.register("globex", 100).await;
    for _ in 0..3 {
        app.token(&reg.client_id, &reg.secret).await;
    }
    app.token_response(&reg.client_id, "tgs_wrong", None).await;
    let path = format!("/admin/v1/integrations/{}", reg.id);
    app.admin_request(
        Method::POST,
        &format!("{path}/disable"),
        Some(json!({"reason": "check"})),
    )
    .await;

    let page = body(
        app.admin_request(Method::GET, &format!("{path}/activity?limit=2"), None)
            .await,
    )
    .await;
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries[0]["type"], "integration.disabled");
    assert_eq!(entries[0]["admin_key_id"], "tgk_bootstrap000");
    assert_eq!(entries[0]["reason"], "check");
    let cursor = page["next_cursor"].as_u64().unwrap();
    let rest = body(
        app.admin_request(Method::GET, &format!("{path}/activity?cursor={cursor}&limit=50"), None)
            .await,
    )
    .await;
    let kinds: Vec<&str> = rest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(entries[1]["type"], "token.refused");
    assert_eq!(entries[1]["reason"], "malformed_secret");
    assert_eq!(
        kinds,
        ["token.issued", "token.issued", "token.issued", "integration.created"],
        "newest first, continuing after the cursor"
    );

    let tokens = body(
        app.admin_request(Method::GET, "/admin/v1/audit?type=token.&org_id=acme", None)
            .await,
    )
    .await;
    assert_eq!(tokens["entries"].as_array().unwrap().len(), 4, "3 issued and 1 refused");
    let globex = body(
        app.admin_request(Method::GET, "/admin/v1/audit?org_id=globex", None)
            .await,
    )
    .await;
    assert_eq!(globex["entries"].as_array().unwrap().len(), 1);
    assert_eq!(globex["entries"][0]["integration_id"], other.id.as_str());
    let window = body(
        app.admin_request(Method::GET, "/admin/v1/audit?from=2026-11-28T11:00:00Z", None)
            .await,
    )
    .await;
    assert_eq!(window["entries"], json!([]));
    assert_eq!(
        app.admin_request(Method::GET, "/admin/v1/audit?from=yesterday", None)
            .await
            .status(),
        400
    );

    let export = app
        .admin_request(Method::GET, "/admin/v1/audit?format=jsonl", None)
        .await;
    assert_eq!(export.headers()["content-type"], "application/jsonl");
    let text = export.text().await.unwrap();
    let seqs: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first");
    assert!(
        !text.contains(&reg.secret) && !text.contains(ADMIN_KEY),
        "no secret in the audit log"
    );

    let verify = body(app.admin_request(Method::GET, "/admin/v1/audit/verify", None).await).await;
    assert_eq!(verify["ok"], true);
    assert_eq!(verify["entries_checked"].as_u64().unwrap(), seqs.len() as u64);
    app.shutdown().await;
}

#[tokio::test]
async fn limited_keys_see_only_their_organisation_and_read_only_keys_cannot_write() {
    let app = TestApp::spawn().await;
    let acme = app.register("acme", 100).await;
    let globex = app.register("globex", 100).await;
    let create_key = |payload: Value| app.admin_request(Method::POST, "/admin/v1/admin-keys", Some(payload));
    let acme_key = body(create_key(json!({"label": "acme ops", "org_id": "acme"})).await).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let reader = body(create_key(json!({"label": "auditor", "read_only": true})).await).await["key"]
        .as_str()
        .unwrap()
        .to_owned();

    let as_acme = |method: Method, path: String, payload: Option<Value>| {
        let key = acme_key.clone();
        let app = &app;
        async move { app.admin_request_as(&key, method, &path, payload).await }
    };
    let list = body(as_acme(Method::GET, "/admin/v1/integrations".into(), None).await).await;
    let ids: Vec<&str> = list["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [acme.id.as_str()]);
    let foreign = format!("/admin/v1/integrations/{}", globex.id);
    assert_eq!(as_acme(Method::GET, foreign.clone(), None).await.status(), 404);
    assert_eq!(
        as_acme(Method::POST, format!("{foreign}/disable"), None).await.status(),
        404
    );
    assert_eq!(
        as_acme(Method::GET, format!("{foreign}/activity"), None).await.status(),
        404
    );
    let cross_create = as_acme(
        Method::POST,
        "/admin/v1/integrations".into(),
        Some(json!({"org_id": "globex", "name": "x", "daily_quota": 1})),
    )
    .await;
    assert_eq!(cross_create.status(), 403);
    let audit = body(as_acme(Method::GET, "/admin/v1/audit?org_id=globex".into(), None).await).await;
    assert_eq!(audit["entries"], json!([]));
    let own_audit = body(as_acme(Method::GET, "/admin/v1/audit".into(), None).await).await;
    let own_entries = own_audit["entries"].as_array().unwrap();
    assert!(!own_entries.is_empty() && own_entries.iter().all(|e| e["org_id"] == "acme"));
    assert_eq!(
        as_acme(Method::GET, "/admin/v1/admin-keys".into(), None).await.status(),
        403
    );
    assert_eq!(
        as_acme(
            Method::POST,
            format!("/admin/v1/integrations/{}/disable", acme.id),
            None
        )
        .await
        .status(),
        200,
        "its own organisation is writable"
    );

    let read = app
        .admin_request_as(
            &reader,
            Method::GET,
            &format!("/admin/v1/integrations/{}", globex.id),
            None,
        )
        .await;
    assert_eq!(read.status(), 200);
    let write = app
        .admin_request_as(
            &reader,
            Method::POST,
            &format!("/admin/v1/integrations/{}/revoke", globex.id),
            None,
        )
        .await;
    assert_eq!(write.status(), 403);
    let still = body(app.admin_request(Method::GET, &foreign, None).await).await;
    assert_eq!(still["status"], "active", "the refused write changed nothing");
    app.shutdown().await;
}

#[tokio::test]
async fn admin_keys_are_shown_once_and_revocation_locks_them_out() {
    let app = TestApp::spawn().await;
    let created = app
        .admin_request(Method::POST, "/admin/v1/admin-keys", Some(json!({"label": "ci"})))
        .await;
    assert_eq!(created.status(), 201);
    let created = body(created).await;
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("tga_") && key.len() == 66);
    let id = created["admin_key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.admin_request_as(&key, Method::GET, "/admin/v1/integrations", None)
            .await
            .status(),
        200
    );
    let listed = body(app.admin_request(Method::GET, "/admin/v1/admin-keys", None).await).await;
    assert!(!listed.to_string().contains(&key), "keys are never listed");
    assert_eq!(listed["admin_keys"].as_array().unwrap().len(), 2);
    let revoke = app
        .admin_request(Method::POST, &format!("/admin/v1/admin-keys/{id}/revoke"), None)
        .await;
    assert_eq!(revoke.status(), 200);
    assert_eq!(
        app.admin_request_as(&key, Method::GET, "/admin/v1/integrations", None)
            .await
            .status(),
        401,
        "a revoked key is refused at once"
    );
    assert_eq!(
        app.admin_request(Method::POST, &format!("/admin/v1/admin-keys/{id}/revoke"), None)
            .await
            .status(),
        409
    );
    let own = app
        .admin_request(Method::POST, "/admin/v1/admin-keys/tgk_bootstrap000/revoke", None)
        .await;
    assert_eq!(own.status(), 409, "a key cannot revoke itself");
    app.shutdown().await;
}

#[tokio::test]
async fn rotating_the_signing_key_keeps_earlier_tokens_valid() {
    let app = TestApp::spawn().await;
    let reg = app.register("acme", 100).await;
    let before = app.token(&reg.client_id, &reg.secret).await;
    let rotated = body(
        app.admin_request(Method::POST, "/admin/v1/signing-keys/rotate", None)
            .await,
    )
    .await;
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    let jwks = body(
        app.http
            .get(format!("{}/.well-known/jwks.json", app.gateway))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "the old key stays published");
    let after = app.token(&reg.client_id, &reg.secret).await;
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            after.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], new_kid.as_str(), "new tokens use the new key");
    assert_eq!(
        app.get("/v1/x", &before).await.status(),
        200,
        "earlier tokens still verify"
    );
    assert_eq!(app.get("/v1/x", &after).await.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_mounted_routes() {
    let app = TestApp::spawn().await;
    let doc = body(app.admin_request(Method::GET, "/admin/v1/openapi.json", None).await).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "OpenAPI 3.1");
    assert_eq!(doc["components"]["securitySchemes"]["admin_key"]["scheme"], "bearer");
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            documented.push((method.to_uppercase(), path.clone()));
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.contains_key("401"), "{method} {path} documents 401");
            for (status, response) in responses {
                let schema = &response["content"]["application/json"]["schema"];
                assert!(!schema.is_null(), "{method} {path} {status} has a JSON body schema");
            }
        }
    }
    documented.sort();
    // Every documented operation is mounted (and guarded): without a key it is 401,
    // never 404 or 405.
    for (method, path) in &documented {
        let concrete = path.replace("{id}", "int_0000000000000000");
        let response = app
            .http
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{concrete}", app.admin),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path} is mounted");
    }
    // And every mounted route is documented.
    let mounted = [
        ("GET", "/admin/v1/admin-keys"),
        ("POST", "/admin/v1/admin-keys"),
        ("POST", "/admin/v1/admin-keys/{id}/revoke"),
        ("GET", "/admin/v1/audit"),
        ("GET", "/admin/v1/audit/verify"),
        ("GET", "/admin/v1/integrations"),
        ("POST", "/admin/v1/integrations"),
        ("GET", "/admin/v1/integrations/{id}"),
        ("PATCH", "/admin/v1/integrations/{id}"),
        ("GET", "/admin/v1/integrations/{id}/activity"),
        ("POST", "/admin/v1/integrations/{id}/disable"),
        ("POST", "/admin/v1/integrations/{id}/enable"),
        ("POST", "/admin/v1/integrations/{id}/revoke"),
        ("POST", "/admin/v1/integrations/{id}/rotate"),
        ("POST", "/admin/v1/integrations/{id}/rotation/finish"),
        ("GET", "/admin/v1/integrations/{id}/usage"),
        ("GET", "/admin/v1/signing-keys"),
        ("POST", "/admin/v1/signing-keys/rotate"),
        ("POST", "/admin/v1/secret-leaks"),
        ("GET", "/admin/v1/webhooks"),
        ("POST", "/admin/v1/webhooks"),
        ("DELETE", "/admin/v1/webhooks/{id}"),
        ("GET", "/admin/v1/webhooks/{id}/deliveries"),
        ("GET", "/admin/v1/orgs/{org_id}/settings"),
        ("PUT", "/admin/v1/orgs/{org_id}/settings"),
    ];
    let mut expected: Vec<(String, String)> = mounted.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    expected.sort();
    assert_eq!(documented, expected);
    // Schemas are complete: the integration shape names every field the API returns.
    let integration = &doc["components"]["schemas"]["IntegrationDto"]["properties"];
    let created = app.register("acme", 10).await;
    for field in created.integration.as_object().unwrap().keys() {
        assert!(integration.get(field).is_some(), "IntegrationDto documents `{field}`");
    }
    app.shutdown().await;
}
