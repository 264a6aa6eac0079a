//! Hostile and broken input over the public routes: each case gets a specific 4xx
//! with a readable message, never a 5xx, and changes nothing (checked through the
//! admin API and the audit log). Raw bytes go over TCP where HTTP clients would
//! refuse or repair the request.

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_engine::storage::audit::AuditFilter;
use tollgate_tests::{ADMIN_KEY, TestApp};

/// Sends raw bytes and returns (status, body).
async fn raw(base: &str, request: Vec<u8>) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// What a user could see change: integrations, and the audit log's length.
async fn observable_state(app: &TestApp) -> (Value, usize) {
    let list = app
        .admin_request(Method::GET, "/admin/v1/integrations?limit=200", None)
        .await;
    let list: Value = list.json().await.unwrap();
    let audit = app.engine.audit_query(&AuditFilter::default(), None, 10_000).unwrap();
    let mut integrations = list["integrations"].clone();
    // Usage may move with legitimate traffic; nothing here sends any.
    for i in integrations.as_array_mut().unwrap() {
        i.as_object_mut().unwrap().remove("secrets");
    }
    (integrations, audit.len())
}

#[tokio::test]
async fn broken_and_hostile_requests_get_specific_4xx_and_change_nothing() {
    let app = TestApp::spawn().await;
    let reg = app.register("acme", 100).await;
    let token = app.token(&reg.client_id, &reg.secret).await;
    let before = observable_state(&app).await;
    let bearer = format!("Bearer {token}");
    let admin = format!("Bearer {ADMIN_KEY}");
    let form = "application/x-www-form-urlencoded";
    let id_path = format!("/admin/v1/integrations/{}", reg.id);
    let long_header = "x".repeat(20_000);
    let many_scopes = (0..500).map(|i| format!("s{i}")).collect::<Vec<_>>().join(" ");
    let unicode_name = json!({"org_id": "acme", "name": "名前\u{202e}\u{0000}", "daily_quota": 5}).to_string();
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        // token endpoint
        (
            "gateway",
            "token: invalid UTF-8 in the form",
            request(
                "POST",
                "/oauth/token",
                &[("Content-Type", form)],
                b"grant_type=\xff\xfe",
            ),
        ),
        (
            "gateway",
            "token: truncated percent escape",
            request(
                "POST",
                "/oauth/token",
                &[("Content-Type", form)],
                b"grant_type=client_credentials&scope=%E",
            ),
        ),
        (
            "gateway",
            "token: JSON body",
            request(
                "POST",
                "/oauth/token",
                &[("Content-Type", "application/json")],
                br#"{"grant_type":"client_credentials"}"#,
            ),
        ),
        (
            "gateway",
            "token: no content type",
            request("POST", "/oauth/token", &[], b"grant_type=client_credentials"),
        ),
        ("gateway", "token: GET", request("GET", "/oauth/token", &[], b"")),
        (
            "gateway",
            "token: 500 scopes",
            request(
                "POST",
                "/oauth/token",
                &[("Content-Type", form)],
                format!("grant_type=client_credentials&scope={}", many_scopes.replace(' ', "+")).as_bytes(),
            ),
        ),
        (
            "gateway",
            "token: Basic not base64",
            request(
                "POST",
                "/oauth/token",
                &[("Content-Type", form), ("Authorization", "Basic %%%")],
                b"grant_type=client_credentials",
            ),
        ),
        (
            "gateway",
            "token: Basic without colon",
            request(
                "POST",
                "/oauth/token",
                &[("Content-Type", form), ("Authorization", "Basic dGdjX25vY29sb24=")],
                b"grant_type=client_credentials",
            ),
        ),
        (
            "gateway",
            "introspect: no token",
            request("POST", "/oauth/introspect", &[("Content-Type", form)], b"client_id=x"),
        ),
        (
            "gateway",
            "revoke: wrong content type",
            request("POST", "/oauth/revoke", &[("Content-Type", "text/plain")], b"token=x"),
        ),
        // check and proxy
        (
            "gateway",
            "check: Bearer without token",
            request("GET", "/v1/check/x", &[("Authorization", "Bearer ")], b""),
        ),
        (
            "gateway",
            "check: token of random bytes",
            request(
                "GET",
                "/v1/check/x",
                &[("Authorization", "Bearer \u{7f}abc.def.ghi")],
                b"",
            ),
        ),
        (
            "gateway",
            "check: header too long for a token",
            request(
                "GET",
                "/v1/check/x",
                &[("Authorization", &format!("Bearer {long_header}"))],
                b"",
            ),
        ),
        (
            "gateway",
            "proxy: traversal",
            request("GET", "/v1/../admin", &[("Authorization", &bearer)], b""),
        ),
        (
            "gateway",
            "proxy: encoded traversal",
            request(
                "GET",
                "/v1/%2e%2e/%2e%2e/etc/passwd",
                &[("Authorization", &bearer)],
                b"",
            ),
        ),
        (
            "gateway",
            "proxy: backslash traversal",
            request("GET", "/v1/..%5c..%5cwin.ini", &[("Authorization", &bearer)], b""),
        ),
        // admin API
        (
            "admin",
            "admin: truncated JSON",
            request(
                "POST",
                "/admin/v1/integrations",
                &[("Content-Type", "application/json"), ("Authorization", &admin)],
                br#"{"org_id": "acme", "name": "#,
            ),
        ),
        (
            "admin",
            "admin: invalid UTF-8 JSON",
            request(
                "POST",
                "/admin/v1/integrations",
                &[("Content-Type", "application/json"), ("Authorization", &admin)],
                b"{\"org_id\": \"\xff\"}",
            ),
        ),
        (
            "admin",
            "admin: control characters in a name",
            request(
                "POST",
                "/admin/v1/integrations",
                &[("Content-Type", "application/json"), ("Authorization", &admin)],
                unicode_name.as_bytes(),
            ),
        ),
        (
            "admin",
            "admin: array instead of object",
            request(
                "POST",
                "/admin/v1/integrations",
                &[("Content-Type", "application/json"), ("Authorization", &admin)],
                b"[1,2,3]",
            ),
        ),
        (
            "admin",
            "admin: duplicate scopes",
            request(
                "POST",
                "/admin/v1/integrations",
                &[("Content-Type", "application/json"), ("Authorization", &admin)],
                br#"{"org_id":"acme","name":"x","daily_quota":5,"scopes":["a:b","a:b"]}"#,
            ),
        ),
        (
            "admin",
            "admin: quota as string",
            request(
                "PATCH",
                &id_path,
                &[("Content-Type", "application/json"), ("Authorization", &admin)],
                br#"{"daily_quota":"lots"}"#,
            ),
        ),
        (
            "admin",
            "admin: huge number",
            request(
                "PATCH",
                &id_path,
                &[("Content-Type", "application/json"), ("Authorization", &admin)],
                br#"{"daily_quota":1e999}"#,
            ),
        ),
        (
            "admin",
            "admin: header injection in a reason",
            request(
                "POST",
                &format!("{id_path}/rotate"),
                &[("Content-Type", "application/json"), ("Authorization", &admin)],
                br#"{"mode":"incident\r\nX-Evil: 1"}"#,
            ),
        ),
        (
            "admin",
            "admin: unknown query parameter",
            request(
                "GET",
                "/admin/v1/integrations?sort=evil",
                &[("Authorization", &admin)],
                b"",
            ),
        ),
        (
            "admin",
            "admin: limit out of range",
            request(
                "GET",
                "/admin/v1/integrations?limit=100000",
                &[("Authorization", &admin)],
                b"",
            ),
        ),
        (
            "admin",
            "admin: traversal in an id",
            request(
                "GET",
                "/admin/v1/integrations/..%2f..%2fadmin-keys",
                &[("Authorization", &admin)],
                b"",
            ),
        ),
        (
            "admin",
            "admin: Basic instead of Bearer",
            request("GET", "/admin/v1/integrations", &[("Authorization", "Basic YTpi")], b""),
        ),
    ];
    for (side, what, bytes) in cases {
        let base = if side == "gateway" { &app.gateway } else { &app.admin };
        let (status, body) = raw(base, bytes).await;
        assert!(
            (400..500).contains(&status),
            "{what}: expected a 4xx, got {status}: {body}"
        );
        if !body.is_empty() {
            let parsed: Value =
                serde_json::from_str(&body).unwrap_or_else(|_| panic!("{what}: body is not JSON: {body}"));
            let message = parsed["message"]
                .as_str()
                .or(parsed["error_description"].as_str())
                .unwrap_or_default();
            assert!(
                !message.is_empty() || status == 405,
                "{what}: no readable message: {body}"
            );
            assert!(
                !body.contains(&reg.secret) && !body.contains(&token) && !body.contains(ADMIN_KEY),
                "{what}: echoes a credential"
            );
        }
    }
    let after = observable_state(&app).await;
    assert_eq!(before.0, after.0, "no integration changed");
    assert_eq!(before.1, after.1, "nothing was audited as done");
    app.shutdown().await;
}
