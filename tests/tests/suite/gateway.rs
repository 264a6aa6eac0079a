//! The gateway over real HTTP: OAuth endpoints, checks, proxy, quota headers, JWT
//! attacks, brute force.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};
use reqwest::Method;
use serde_json::{Value, json};
use tollgate_tests::{START_MS, ServedBinary, TestApp, audit_of_kind, register_over_http, token_over_http};

async fn json(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// What an integration's code does: the oauth2 crate's client-credentials flow.
async fn oauth2_token(app: &TestApp, client_id: &str, secret: &str, auth: AuthType, scopes: &[&str]) -> String {
    let client = BasicClient::new(ClientId::new(client_id.into()))
        .set_client_secret(ClientSecret::new(secret.into()))
        .set_auth_type(auth)
        .set_token_uri(TokenUrl::new(format!("{}/oauth/token", app.gateway)).unwrap());
    let http = oauth2::reqwest::Client::builder()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = client.exchange_client_credentials();
    for s in scopes {
        request = request.add_scope(Scope::new((*s).into()));
    }
    let token = request
        .request_async(&http)
        .await
        .expect("the oauth2 crate obtains a token");
    assert_eq!(token.expires_in(), Some(Duration::from_secs(3600)));
    token.access_token().secret().clone()
}

#[tokio::test]
async fn an_integration_gets_tokens_with_the_oauth2_crate_and_calls_through_the_proxy() {
    let app = TestApp::spawn().await;
    let reg = app.register("acme", 1000).await;

    let basic = oauth2_token(&app, &reg.client_id, &reg.secret, AuthType::BasicAuth, &[]).await;
    let post = oauth2_token(
        &app,
        &reg.client_id,
        &reg.secret,
        AuthType::RequestBody,
        &["conversations:read"],
    )
    .await;

    let response = app.get("/v1/conversations?page=2", &basic).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-ratelimit-limit"), "1000");
    assert_eq!(header(&response, "x-ratelimit-used"), "1");
    assert_eq!(header(&response, "ratelimit-policy"), "\"daily\";q=1000;w=86400");
    let body = json(response).await;
    assert_eq!(body["path"], "/v1/conversations");
    assert_eq!(body["client_id"], reg.client_id.as_str());
    assert_eq!(body["org"], "acme");

    let response = app.get("/v1/conversations", &post).await;
    assert_eq!(header(&response, "x-ratelimit-remaining"), "998");
    assert_eq!(
        json(response).await["scopes"],
        json!(["conversations:read"]),
        "the narrowed scope"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn issued_tokens_are_rfc9068_jwts_with_the_documented_claims() {
    let app = TestApp::spawn().await;
    let reg = app.register("acme", 10).await;
    let response = app
        .token_response(&reg.client_id, &reg.secret, Some("messages:write"))
        .await;
    assert_eq!(header(&response, "cache-control"), "no-store");
    let body = json(response).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "messages:write");
    let token = body["access_token"].as_str().unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let head: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(head["typ"], "at+jwt");
    assert_eq!(head["alg"], "EdDSA");
    let jwks = json(
        app.http
            .get(format!("{}/.well-known/jwks.json", app.gateway))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(jwks["keys"][0]["kid"], head["kid"], "the kid is published");
    assert_eq!(claims["iss"], app.gateway.as_str());
    assert_eq!(claims["sub"], reg.client_id.as_str());
    assert_eq!(claims["client_id"], reg.client_id.as_str());
    assert_eq!(claims["aud"], "tollgate-api");
    assert_eq!(claims["org"], "acme");
    assert_eq!(claims["iat"], START_MS / 1000);
    assert_eq!(claims["exp"], START_MS / 1000 + 3600);
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));

    // Its audit entry is there, with the token id, the slot and the source.
    let issued = audit_of_kind(&app.engine, "token.issued");
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].event.jti.as_deref(), claims["jti"].as_str());
    assert_eq!(issued[0].event.source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(issued[0].event.slot_id.as_ref().unwrap().as_str(), &reg.secret[4..14]);

    let meta = json(
        app.http
            .get(format!("{}/.well-known/oauth-authorization-server", app.gateway))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(meta["token_endpoint"], format!("{}/oauth/token", app.gateway));
    assert_eq!(meta["grant_types_supported"], json!(["client_credentials"]));
    app.shutdown().await;
}

#[tokio::test]
async fn the_token_endpoint_refuses_bad_requests_with_rfc6749_errors() {
    let app = TestApp::spawn().await;
    let reg = app.register("acme", 10).await;
    let url = format!("{}/oauth/token", app.gateway);
    let form = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(':', "%3A")))
            .collect::<Vec<_>>()
            .join("&")
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            app.http
                .post(&url)
                .basic_auth(&reg.client_id, Some("tgs_wrong"))
                .form(&[("grant_type", "client_credentials")]),
            401,
            "invalid_client",
        ),
        (
            app.http
                .post(&url)
                .basic_auth(&reg.client_id, Some(&reg.secret))
                .form(&[("grant_type", "password")]),
            400,
            "unsupported_grant_type",
        ),
        (
            app.http
                .post(&url)
                .basic_auth(&reg.client_id, Some(&reg.secret))
                .form(&[("scope", "x")]),
            400,
            "invalid_request",
        ),
        (
            app.http
                .post(&url)
                .basic_auth(&reg.client_id, Some(&reg.secret))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", &reg.client_id),
                    ("client_secret", &reg.secret),
                ]),
            400,
            "invalid_request",
        ),
        (
            app.http
                .post(&url)
                .basic_auth(&reg.client_id, Some(&reg.secret))
                .form(&[("grant_type", "client_credentials"), ("scope", "admin:all")]),
            400,
            "invalid_scope",
        ),
        (
            app.http
                .post(&url)
                .basic_auth(&reg.client_id, Some(&reg.secret))
                .form(&[("grant_type", "client_credentials"), ("scope", "Not A Scope!")]),
            400,
            "invalid_scope",
        ),
        (
            app.http
                .post(&url)
                .basic_auth(&reg.client_id, Some(&reg.secret))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form(&[
                    ("grant_type", "client_credentials"),
                    ("grant_type", "client_credentials"),
                ])),
            400,
            "invalid_request",
        ),
        (
            app.http
                .post(&url)
                .basic_auth(&reg.client_id, Some(&reg.secret))
                .json(&json!({ "grant_type": "client_credentials" })),
            415,
            "invalid_request",
        ),
        (
            app.http
                .post(&url)
                .basic_auth(&reg.client_id, Some(&reg.secret))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("grant_type=client_credentials&pad={}", "x".repeat(20_000))),
            413,
            "invalid_request",
        ),
        (
            app.http.post(&url).form(&[("grant_type", "client_credentials")]),
            401,
            "invalid_client",
        ),
    ];
    for (i, (request, status, code)) in cases.into_iter().enumerate() {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "case {i}");
        assert_eq!(header(&response, "cache-control"), "no-store", "case {i}");
        if status == 401 {
            assert!(header(&response, "www-authenticate").starts_with("Basic"), "case {i}");
        }
        let body = json(response).await;
        assert_eq!(body["error"], code, "case {i}: {body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(
            !description.is_empty() && !description.contains(&reg.secret),
            "case {i}"
        );
    }
    // None of these issued anything.
    let issued = audit_of_kind(&app.engine, "token.issued");
    assert!(issued.is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn checks_answer_with_quota_headers_warnings_and_a_problem_at_the_limit() {
    let app = TestApp::spawn().await;
    let reg = app.register("acme", 10).await;
    let token = app.token(&reg.client_id, &reg.secret).await;
    let check = |path: &str| {
        app.http
            .post(format!("{}/v1/check{path}", app.gateway))
            .bearer_auth(&token)
            .header("x-forwarded-method", "GET")
    };
    for used in 1..=10u64 {
        let response = check("/v1/things").send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-used"), used.to_string());
        assert_eq!(header(&response, "x-tollgate-client-id"), reg.client_id);
        assert_eq!(header(&response, "x-tollgate-org"), "acme");
        let near = header(&response, "x-ratelimit-nearlimit") == "true";
        assert_eq!(near, used >= 8, "near-limit from 80 % on (used {used})");
        if used >= 8 {
            assert!(header(&response, "tollgate-quota-warning").contains("of the daily quota used"));
        }
        let reset_in = 14 * 3600;
        assert_eq!(
            header(&response, "ratelimit"),
            format!("\"daily\";r={};t={reset_in}", 10 - used)
        );
    }
    let response = check("/v1/things").send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(header(&response, "content-type"), "application/problem+json");
    assert_eq!(header(&response, "retry-after"), (14 * 3600).to_string());
    let problem = json(response).await;
    assert!(problem["type"].as_str().unwrap().ends_with("quota-exceeded"));
    assert_eq!(problem["violated-policies"], json!(["daily"]));
    assert_eq!(problem["limit"], 10);
    assert_eq!(problem["reset"], "2026-11-29T00:00:00Z");

    // Refused requests are not charged; a new UTC day starts afresh.
    let view = app
        .admin_request(Method::GET, &format!("/admin/v1/integrations/{}", reg.id), None)
        .await;
    assert_eq!(json(view).await["usage_today"]["used"], 10);
    app.clock.advance(Duration::from_secs(14 * 3600));
    let token = app.token(&reg.client_id, &reg.secret).await;
    let response = app
        .http
        .post(format!("{}/v1/check/v1/things", app.gateway))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-ratelimit-used"), "1");
    app.shutdown().await;
}

#[tokio::test]
async fn bearer_problems_get_rfc6750_challenges() {
    let app = TestApp::spawn().await;
    let no_token = app.http.get(format!("{}/v1/x", app.gateway)).send().await.unwrap();
    assert_eq!(no_token.status(), 401);
    assert_eq!(header(&no_token, "www-authenticate"), r#"Bearer realm="tollgate""#);
    let basic = app
        .http
        .get(format!("{}/v1/x", app.gateway))
        .basic_auth("a", Some("b"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 400);
    assert!(header(&basic, "www-authenticate").contains(r#"error="invalid_request""#));
    let garbage = app.get("/v1/x", "not.a.jwt").await;
    assert_eq!(garbage.status(), 401);
    assert!(header(&garbage, "www-authenticate").contains(r#"error="invalid_token""#));
    app.shutdown().await;
}

/// Signs arbitrary claims/header with the server's real key (read from storage), to
/// forge tokens that differ from genuine ones in one respect only.
fn sign_with_server_key(app: &TestApp, header: jsonwebtoken::Header, claims: &Value) -> String {
    let record = app.engine.storage().signing_keys().unwrap().pop().unwrap();
    let key = jsonwebtoken::EncodingKey::from_ed_pem(record.private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn genuine_parts(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    (
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap(),
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap(),
    )
}

#[tokio::test]
async fn forged_and_stale_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let reg = app.register("acme", 100).await;
    let genuine = app.token(&reg.client_id, &reg.secret).await;
    assert_eq!(app.get("/v1/x", &genuine).await.status(), 200);
    let (head, claims) = genuine_parts(&genuine);
    let kid = head["kid"].as_str().unwrap().to_owned();
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());

    let mut forged: Vec<(&str, String)> = Vec::new();
    // alg: none
    forged.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg":"none","typ":"at+jwt","kid":kid})),
            b64(&claims)
        ),
    ));
    // HS256 keyed with the public key (algorithm confusion)
    let jwks = json(
        app.http
            .get(format!("{}/.well-known/jwks.json", app.gateway))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let public = URL_SAFE_NO_PAD.decode(jwks["keys"][0]["x"].as_str().unwrap()).unwrap();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.typ = Some("at+jwt".into());
    hs.kid = Some(kid.clone());
    forged.push((
        "HS256 with the public key",
        jsonwebtoken::encode(&hs, &claims, &jsonwebtoken::EncodingKey::from_secret(&public)).unwrap(),
    ));
    // A foreign Ed25519 key claiming the server's kid
    let foreign = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let pem = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_pem(&foreign, Default::default()).unwrap();
    let mut ed = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    ed.typ = Some("at+jwt".into());
    ed.kid = Some(kid.clone());
    forged.push((
        "foreign key",
        jsonwebtoken::encode(
            &ed,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap(),
    ));
    // Right key, but one claim or header field wrong
    let with = |field: &str, value: Value| {
        let mut c = claims.clone();
        c[field] = value;
        c
    };
    forged.push((
        "wrong issuer",
        sign_with_server_key(&app, ed.clone(), &with("iss", json!("https://evil.example"))),
    ));
    forged.push((
        "wrong audience",
        sign_with_server_key(&app, ed.clone(), &with("aud", json!("other-api"))),
    ));
    let mut unknown_kid = ed.clone();
    unknown_kid.kid = Some("elsewhere".into());
    forged.push((
        "kid pointing elsewhere",
        sign_with_server_key(&app, unknown_kid, &claims),
    ));
    let mut wrong_typ = ed.clone();
    wrong_typ.typ = Some("JWT".into());
    forged.push(("typ not at+jwt", sign_with_server_key(&app, wrong_typ, &claims)));
    forged.push((
        "not yet valid",
        sign_with_server_key(&app, ed.clone(), &with("nbf", json!(START_MS / 1000 + 600))),
    ));
    let mut tampered: Vec<String> = genuine.split('.').map(str::to_owned).collect();
    tampered[1] = b64(&with("org", json!("globex")));
    forged.push(("payload swapped", tampered.join(".")));

    for (what, token) in &forged {
        let response = app.get("/v1/x", token).await;
        assert_eq!(response.status(), 401, "{what}");
        assert!(
            header(&response, "www-authenticate").contains("invalid_token"),
            "{what}"
        );
    }
    // None of those counted against the quota.
    let response = app.get("/v1/x", &genuine).await;
    assert_eq!(header(&response, "x-ratelimit-used"), "2");

    app.clock.advance(Duration::from_secs(3600));
    let expired = app.get("/v1/x", &genuine).await;
    assert_eq!(expired.status(), 401);
    assert!(header(&expired, "www-authenticate").contains("expired"));
    app.shutdown().await;
}

#[tokio::test]
async fn disable_incident_rotation_and_revocation_stop_existing_tokens_at_once() {
    let app = TestApp::spawn().await;
    let reg = app.register("acme", 100).await;
    let token = app.token(&reg.client_id, &reg.secret).await;
    assert_eq!(app.get("/v1/x", &token).await.status(), 200);

    let path = format!("/admin/v1/integrations/{}", reg.id);
    app.admin_request(
        Method::POST,
        &format!("{path}/disable"),
        Some(json!({"reason": "odd traffic"})),
    )
    .await;
    let refused = app.get("/v1/x", &token).await;
    assert_eq!(refused.status(), 401, "the very next request after disable");
    assert!(header(&refused, "www-authenticate").contains("disabled"));
    app.admin_request(Method::POST, &format!("{path}/enable"), None).await;
    assert_eq!(app.get("/v1/x", &token).await.status(), 200);

    app.clock.advance(Duration::from_secs(1));
    let rotated = app
        .admin_request(
            Method::POST,
            &format!("{path}/rotate"),
            Some(json!({"mode": "incident"})),
        )
        .await;
    assert_eq!(rotated.status(), 200);
    let new_secret = json(rotated).await["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get("/v1/x", &token).await.status(),
        401,
        "tokens from before the incident die"
    );
    assert_eq!(
        app.token_response(&reg.client_id, &reg.secret, None).await.status(),
        401
    );
    let fresh = app.token(&reg.client_id, &new_secret).await;
    assert_eq!(app.get("/v1/x", &fresh).await.status(), 200);

    // RFC 7009 revocation by the integration itself.
    let revoke = app
        .http
        .post(format!("{}/oauth/revoke", app.gateway))
        .basic_auth(&reg.client_id, Some(&new_secret))
        .form(&[("token", fresh.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    let after = app.get("/v1/x", &fresh).await;
    assert_eq!(after.status(), 401);
    assert!(header(&after, "www-authenticate").contains("revoked"));
    app.shutdown().await;
}

#[tokio::test]
async fn introspection_reports_only_currently_valid_own_tokens() {
    let app = TestApp::spawn().await;
    let reg = app.register("acme", 100).await;
    let other = app.register("globex", 100).await;
    let token = app.token(&reg.client_id, &reg.secret).await;
    let introspect = |client: &str, secret: &str, token: &str| {
        app.http
            .post(format!("{}/oauth/introspect", app.gateway))
            .basic_auth(client, Some(secret))
            .form(&[("token", token)])
            .send()
    };
    let active = json(introspect(&reg.client_id, &reg.secret, &token).await.unwrap()).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["client_id"], reg.client_id.as_str());
    assert_eq!(active["scope"], "conversations:read messages:write");
    let foreign = json(introspect(&other.client_id, &other.secret, &token).await.unwrap()).await;
    assert_eq!(
        foreign,
        json!({"active": false}),
        "another integration's token is not disclosed"
    );
    let junk = json(introspect(&reg.client_id, &reg.secret, "junk").await.unwrap()).await;
    assert_eq!(junk, json!({"active": false}));
    let unauthenticated = introspect(&reg.client_id, "tgs_wrong", &token).await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    app.admin_request(
        Method::POST,
        &format!("/admin/v1/integrations/{}/disable", reg.id),
        None,
    )
    .await;
    let other_view = json(introspect(&other.client_id, &other.secret, "x").await.unwrap()).await;
    assert_eq!(other_view["active"], false);
    // Introspection never counts against the quota.
    let usage = json(
        app.admin_request(Method::GET, &format!("/admin/v1/integrations/{}", reg.id), None)
            .await,
    )
    .await;
    assert_eq!(usage["usage_today"]["used"], 0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_route_policy_demands_scopes() {
    let policy = r#"
        [[route]]
        method = "POST"
        path = "/v1/messages/**"
        scopes = ["messages:write"]
    "#;
    let app = TestApp::spawn_with(|c| c.policy = tollgate_gateway::policy::RoutePolicy::parse(policy).unwrap()).await;
    let reg = app.register("acme", 100).await;
    let read_only = json(
        app.token_response(&reg.client_id, &reg.secret, Some("conversations:read"))
            .await,
    )
    .await;
    let read_only = read_only["access_token"].as_str().unwrap().to_owned();
    let denied = app
        .http
        .post(format!("{}/v1/messages/send", app.gateway))
        .bearer_auth(&read_only)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    assert!(header(&denied, "www-authenticate").contains(r#"error="insufficient_scope""#));
    assert!(header(&denied, "www-authenticate").contains(r#"scope="messages:write""#));
    assert_eq!(
        app.get("/v1/messages/send", &read_only).await.status(),
        200,
        "GET is not covered by the rule"
    );
    let full = app.token(&reg.client_id, &reg.secret).await;
    let allowed = app
        .http
        .post(format!("{}/v1/messages/send", app.gateway))
        .bearer_auth(&full)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn the_proxy_forwards_identity_and_strips_credentials_and_spoofed_headers() {
    use axum::routing::any;
    // A real upstream on loopback that echoes what it received.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let echo = axum::Router::new().fallback(any(|request: axum::extract::Request| async move {
        let headers: serde_json::Map<String, Value> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
            .collect();
        (
            // Hop-by-hop: meant for the gateway, not for the caller.
            [("proxy-authenticate", "Basic realm=\"upstream\"")],
            axum::Json(json!({ "uri": request.uri().to_string(), "headers": headers })),
        )
    }));
    tokio::spawn(async move { axum::serve(upstream, echo).await });

    let app = TestApp::spawn_with(|c| c.upstream = Some(format!("http://{upstream_addr}/api").parse().unwrap())).await;
    let reg = app.register("acme", 100).await;
    let token = app.token(&reg.client_id, &reg.secret).await;
    let response = app
        .http
        .get(format!("{}/v1/items?limit=5", app.gateway))
        .bearer_auth(&token)
        .header("x-tollgate-org", "spoofed-org")
        .header("x-forwarded-for", "203.0.113.7")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-ratelimit-used"), "1");
    assert!(
        response.headers().get("proxy-authenticate").is_none(),
        "the upstream's hop-by-hop headers are not passed back"
    );
    let echoed = json(response).await;
    assert_eq!(echoed["uri"], "/api/v1/items?limit=5");
    let h = &echoed["headers"];
    assert_eq!(h["x-tollgate-client-id"], reg.client_id.as_str());
    assert_eq!(h["x-tollgate-org"], "acme", "a caller cannot spoof identity headers");
    assert_eq!(h["x-tollgate-scopes"], "conversations:read messages:write");
    assert!(h.get("authorization").is_none(), "the token is not passed upstream");
    assert!(
        h.get("proxy-authorization").is_none(),
        "hop-by-hop headers are not passed upstream"
    );
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "the upstream is told the caller's address, not what an untrusted caller claims"
    );

    // HTTP clients normalise `..` away, so send the raw request line.
    let status_line = raw_get(&app.gateway, "/v1/%2e%2e/admin", &token).await;
    assert!(status_line.starts_with("HTTP/1.1 400"), "{status_line}");
    app.shutdown().await;
}

/// Sends `GET path` exactly as written and returns the status line.
async fn raw_get(base: &str, path: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn failed_authentication_is_throttled_but_a_known_secret_still_works() {
    let app = TestApp::spawn().await;
    let reg = app.register("acme", 100).await;
    // The legitimate integration has authenticated before (its secret is verified).
    app.token(&reg.client_id, &reg.secret).await;
    // Well-formed guesses (right slot, valid checksum): each would need Argon2.
    let slot = tollgate_engine::model::SlotId::parse(&reg.secret[4..14]).unwrap();
    let wrong = tollgate_engine::secret::ClientSecret::generate(&slot)
        .expose()
        .to_owned();
    let mut statuses = Vec::new();
    for _ in 0..15 {
        statuses.push(app.token_response(&reg.client_id, &wrong, None).await.status().as_u16());
    }
    assert!(statuses[..10].iter().all(|&s| s == 401), "{statuses:?}");
    let locked = app.token_response(&reg.client_id, &wrong, None).await;
    assert_eq!(locked.status(), 429, "a guesser is locked out");
    assert!(header(&locked, "retry-after").parse::<u64>().unwrap() >= 1);
    assert_eq!(
        app.token_response(&reg.client_id, &reg.secret, None).await.status(),
        200,
        "the legitimate client is never refused"
    );
    let lockouts = audit_of_kind(&app.engine, "auth.lockout");
    assert!(!lockouts.is_empty(), "lockouts are audited");
    app.shutdown().await;
}

#[tokio::test]
async fn the_binary_prints_its_listeners_logs_no_secrets_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServedBinary::start(env!("CARGO_BIN_EXE_tollgate-under-test"), dir.path(), |c| {
        c.env_remove("TOLLGATE_ADMIN_KEY")
            .env("RUST_LOG", "debug")
            .stderr(std::process::Stdio::piped());
    });
    let mut stderr = server.child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        text
    });
    assert!(server.gateway.starts_with("http://127.0.0.1:"), "{}", server.gateway);
    assert!(server.admin.starts_with("http://127.0.0.1:"), "{}", server.admin);
    let banner: Vec<String> = server.stdout.by_ref().take(3).map(Result::unwrap).collect();
    let key = banner[2].trim().to_owned();
    assert!(
        key.starts_with("tga_"),
        "a bootstrap admin key is generated and printed once: {banner:?}"
    );
    let http = reqwest::Client::new();
    let body = json!({"org_id": "acme", "name": "logs", "daily_quota": 10});
    let (_, client_id, secret) = register_over_http(&http, &server.admin, &key, body).await;
    let token = token_over_http(&http, &server.gateway, &client_id, &secret).await;
    let called = http
        .get(format!("{}/v1/x", server.gateway))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(called.status(), 200);
    let wrong = http
        .post(format!("{}/oauth/token", server.gateway))
        .basic_auth(&client_id, Some("tgs_guess"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let exit = server.terminate();
    assert!(exit.success(), "SIGTERM is a clean stop: {exit:?}");
    let logs = logs.join().unwrap();
    assert!(logs.contains("stopped cleanly"), "{logs}");
    for (what, value) in [("secret", &secret), ("token", &token), ("admin key", &key)] {
        assert!(!logs.contains(value.as_str()), "the {what} appears in the debug log");
    }
    // Nor does the data dir hold them in clear.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            for value in [&secret, &token, &key] {
                assert!(
                    !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                    "{} holds a credential in clear",
                    path.display()
                );
            }
        }
    }
}

#[tokio::test]
async fn the_admin_listener_serves_metrics_health_and_readiness() {
    let app = TestApp::spawn().await;
    let reg = app.register("acme", 10).await;
    let token = app.token(&reg.client_id, &reg.secret).await;
    app.get("/v1/x", &token).await;
    let health = app.http.get(format!("{}/healthz", app.admin)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.http.get(format!("{}/readyz", app.admin)).send().await.unwrap();
    assert_eq!(ready.text().await.unwrap(), "ready");
    let metrics = app
        .http
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("tollgate_tokens_issued_total"), "{metrics}");
    assert!(metrics.contains("tollgate_checks_total"));
    assert!(
        !metrics.contains(&reg.secret) && !metrics.contains(&token),
        "no secret or token in metrics"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_token_rate_limit_answers_429_with_retry_after() {
    let app = TestApp::spawn().await;
    let response = app
        .admin_request(
            Method::POST,
            "/admin/v1/integrations",
            Some(json!({"org_id": "acme", "name": "slow", "daily_quota": 10, "token_requests_per_minute": 2})),
        )
        .await;
    let created = json(response).await;
    let client = created["integration"]["client_id"].as_str().unwrap();
    let secret = created["client_secret"].as_str().unwrap();
    assert_eq!(app.token_response(client, secret, None).await.status(), 200);
    assert_eq!(app.token_response(client, secret, None).await.status(), 200);
    let limited = app.token_response(client, secret, None).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "retry-after"), "30");
    assert!(
        json(limited).await["error_description"]
            .as_str()
            .unwrap()
            .contains("too many token requests")
    );
    app.clock.advance(Duration::from_secs(30));
    assert_eq!(app.token_response(client, secret, None).await.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
    let forwarded_ip = |app: &TestApp| {
        let entries = audit_of_kind(&app.engine, "token.issued");
        entries[0].event.source_ip.clone().unwrap()
    };
    for trusted in [false, true] {
        let app = TestApp::spawn_with(|c| {
            if trusted {
                c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
            }
        })
        .await;
        let reg = app.register("acme", 10).await;
        let response = app
            .http
            .post(format!("{}/oauth/token", app.gateway))
            .basic_auth(&reg.client_id, Some(&reg.secret))
            .header("x-forwarded-for", "203.0.113.9, 127.0.0.1")
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let expected = if trusted { "203.0.113.9" } else { "127.0.0.1" };
        assert_eq!(forwarded_ip(&app), expected, "trusted proxy: {trusted}");
        app.shutdown().await;
    }
}
