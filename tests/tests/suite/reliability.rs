//! The real server under faults: SIGTERM in the middle of load, overload, crashes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_tests::{ADMIN_KEY, ServedBinary, TestApp, register_over_http, token_over_http};

/// The binary over `dir`, with a fixed issuer (the port changes on every restart, and
/// tokens must outlive it as they would behind a fixed address).
fn serve(dir: &std::path::Path) -> ServedBinary {
    ServedBinary::start(env!("CARGO_BIN_EXE_tollgate-under-test"), dir, |c| {
        c.env("TOLLGATE_ADMIN_KEY", ADMIN_KEY)
            .args(["--issuer", "http://tollgate.test"]);
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_in_flight_requests_and_persists_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let gateway = server.gateway.clone();
    let http = reqwest::Client::new();
    let quota = json!({"org_id": "acme", "name": "load", "daily_quota": 1_000_000});
    let (id, client_id, secret) = register_over_http(&http, &server.admin, ADMIN_KEY, quota).await;
    let token = token_over_http(&http, &gateway, &client_id, &secret).await;

    let admitted = Arc::new(AtomicU64::new(0));
    let cut_off = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..16 {
        let (http, url, token) = (http.clone(), format!("{gateway}/v1/check/x"), token.clone());
        let (admitted, cut_off, stop) = (admitted.clone(), cut_off.clone(), stop.clone());
        loops.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match http.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status() == 200 => {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => panic!("unexpected {}", r.status()),
                    // Sent but no answer: the server stopped. At most one per loop.
                    Err(_) => {
                        cut_off.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    // Let load build up, then SIGTERM in the middle of it.
    let load_deadline = Instant::now() + Duration::from_secs(15);
    while admitted.load(Ordering::Relaxed) < 500 {
        assert!(
            Instant::now() < load_deadline,
            "the server never reached 500 admitted checks"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let exit = tokio::task::spawn_blocking(move || server.terminate()).await.unwrap();
    assert!(exit.success(), "a clean exit under load: {exit:?}");
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let seen = admitted.load(Ordering::Relaxed);
    let lost_answers = cut_off.load(Ordering::Relaxed);

    let mut again = serve(dir.path());
    let view: Value = http
        .get(format!("{}/admin/v1/integrations/{id}", again.admin))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let persisted = view["usage_today"]["used"].as_u64().unwrap();
    assert!(
        persisted >= seen && persisted <= seen + lost_answers,
        "persisted {persisted}, clients saw {seen} admitted and {lost_answers} requests without an answer"
    );
    again.child.kill().unwrap();
    let _ = again.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_capacity_the_gateway_sheds_load_fast_and_recovers() {
    // A slow upstream holds every admitted request for 400 ms.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let slow = axum::Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        "slow"
    });
    tokio::spawn(async move { axum::serve(upstream, slow).await });
    let app = TestApp::spawn_with(|c| {
        c.max_in_flight = 4;
        c.upstream = Some(format!("http://{upstream_addr}").parse().unwrap());
    })
    .await;
    let reg = app.register("acme", 1000).await;
    let token = app.token(&reg.client_id, &reg.secret).await;

    let started = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let (http, url, token) = (app.http.clone(), format!("{}/v1/things", app.gateway), token.clone());
        requests.spawn(async move {
            let sent = Instant::now();
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            let retry_after = response.headers().get("retry-after").cloned();
            (response.status().as_u16(), retry_after, sent.elapsed())
        });
    }
    let (mut served, mut shed) = (0, 0);
    while let Some(done) = requests.join_next().await {
        let (status, retry_after, took) = done.unwrap();
        match status {
            200 => served += 1,
            503 => {
                shed += 1;
                assert_eq!(retry_after.unwrap(), "1", "shed requests say when to retry");
                assert!(
                    took < Duration::from_millis(300),
                    "shedding is immediate, not queued: {took:?}"
                );
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(served >= 4 && shed > 0, "served {served}, shed {shed}");
    assert_eq!(served + shed, 40);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "nothing waits in an unbounded queue"
    );
    // Shed requests were not charged; capacity comes back once the burst is over.
    let after = app.get("/v1/things", &token).await;
    assert_eq!(after.status(), 200);
    let used: u64 = after.headers()["x-ratelimit-used"].to_str().unwrap().parse().unwrap();
    assert_eq!(used, served + 1, "only served requests count");
    app.shutdown().await;
}

/// What the clients of one cycle saw acknowledged.
#[derive(Default)]
struct Seen {
    /// Integrations whose creation was acknowledged: (id, client id, secret).
    created: Vec<(String, String, String)>,
    /// The rotating integration's secrets, oldest first; the last one was acknowledged.
    rotor_secrets: Vec<String>,
    /// A rotation was sent but not answered (its outcome is unknown).
    rotation_in_flight: bool,
    /// The toggled integration's acknowledged state, and whether a toggle was in flight.
    toggled_disabled: Option<bool>,
    toggle_in_flight: bool,
    /// Token ids handed to a client.
    jtis: Vec<String>,
}

fn jti_of(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

async fn admin_json(http: &reqwest::Client, method: reqwest::Method, url: String, body: Value) -> Option<Value> {
    let response = http
        .request(method, url)
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .ok()?;
    assert!(
        response.status().is_success(),
        "admin call refused: {}",
        response.status()
    );
    response.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_cycles_under_mixed_load_lose_nothing_that_was_acknowledged() {
    const CYCLES: usize = 3;
    // The checked integration's reservation block: min(4096, quota / 100). Small, so
    // that every cycle crosses many block boundaries.
    const BLOCK: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = serve(dir.path());
    let quota = |name: &str| json!({"org_id": "acme", "name": name, "daily_quota": 10_000_000});
    let checked = json!({"org_id": "acme", "name": "checked", "daily_quota": 20_000});
    let (checked_id, checked_client, checked_secret) =
        register_over_http(&http, &server.admin, ADMIN_KEY, checked).await;
    let (_, tokened_client, tokened_secret) =
        register_over_http(&http, &server.admin, ADMIN_KEY, quota("tokens")).await;
    let (rotor_id, rotor_client, rotor_secret) =
        register_over_http(&http, &server.admin, ADMIN_KEY, quota("rotor")).await;
    let (toggled_id, _, _) = register_over_http(&http, &server.admin, ADMIN_KEY, quota("toggled")).await;
    let check_token = token_over_http(&http, &server.gateway, &checked_client, &checked_secret).await;

    let mut all_created: Vec<(String, String, String)> = Vec::new();
    let mut all_jtis: Vec<String> = Vec::new();
    let mut rotor_secrets = vec![rotor_secret];
    let mut admitted_total = 0u64;
    let mut lost_total = 0u64;
    for cycle in 0..CYCLES {
        let seen = Arc::new(std::sync::Mutex::new(Seen {
            rotor_secrets: rotor_secrets.clone(),
            ..Seen::default()
        }));
        let admitted = Arc::new(AtomicU64::new(0));
        let lost = Arc::new(AtomicU64::new(0));
        let mut loops = Vec::new();
        // Checks.
        for _ in 0..4 {
            let (http, url, token) = (
                http.clone(),
                format!("{}/v1/check/x", server.gateway),
                check_token.clone(),
            );
            let (admitted, lost) = (admitted.clone(), lost.clone());
            loops.push(tokio::spawn(async move {
                loop {
                    match http.get(&url).bearer_auth(&token).send().await {
                        Ok(r) if r.status() == 200 => admitted.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => panic!("unexpected check status {}", r.status()),
                        Err(_) => return lost.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        // Token requests.
        {
            let (http, gateway, seen) = (http.clone(), server.gateway.clone(), seen.clone());
            let (client, secret) = (tokened_client.clone(), tokened_secret.clone());
            loops.push(tokio::spawn(async move {
                loop {
                    let Ok(r) = http
                        .post(format!("{gateway}/oauth/token"))
                        .basic_auth(&client, Some(&secret))
                        .form(&[("grant_type", "client_credentials")])
                        .send()
                        .await
                    else {
                        return 0;
                    };
                    let Ok(body) = r.json::<Value>().await else { return 0 };
                    let token = body["access_token"].as_str().expect("a token");
                    seen.lock().unwrap().jtis.push(jti_of(token));
                }
            }));
        }
        // Admin changes: creates, incident rotations, disable/enable.
        {
            let (http, admin, seen) = (http.clone(), server.admin.clone(), seen.clone());
            let (rotor_id, toggled_id) = (rotor_id.clone(), toggled_id.clone());
            loops.push(tokio::spawn(async move {
                // Start from the state the last cycle left (its last toggle may have
                // landed without an answer).
                let url = format!("{admin}/admin/v1/integrations/{toggled_id}");
                let view = admin_json(&http, reqwest::Method::GET, url, json!({})).await.unwrap();
                let offset = usize::from(view["status"] == "disabled");
                for n in 0.. {
                    let url = format!("{admin}/admin/v1/integrations");
                    let body = json!({"org_id": "acme", "name": format!("c{cycle}-{n}"), "daily_quota": 10});
                    let Some(created) = admin_json(&http, reqwest::Method::POST, url, body).await else {
                        return 0;
                    };
                    let it = &created["integration"];
                    seen.lock().unwrap().created.push((
                        it["id"].as_str().unwrap().to_owned(),
                        it["client_id"].as_str().unwrap().to_owned(),
                        created["client_secret"].as_str().unwrap().to_owned(),
                    ));
                    seen.lock().unwrap().rotation_in_flight = true;
                    let url = format!("{admin}/admin/v1/integrations/{rotor_id}/rotate");
                    let Some(rotated) =
                        admin_json(&http, reqwest::Method::POST, url, json!({"mode": "incident"})).await
                    else {
                        return 0;
                    };
                    {
                        let mut seen = seen.lock().unwrap();
                        seen.rotor_secrets
                            .push(rotated["client_secret"].as_str().unwrap().to_owned());
                        seen.rotation_in_flight = false;
                        seen.toggle_in_flight = true;
                    }
                    let action = if (n + offset) % 2 == 0 { "disable" } else { "enable" };
                    let url = format!("{admin}/admin/v1/integrations/{toggled_id}/{action}");
                    if admin_json(&http, reqwest::Method::POST, url, json!({})).await.is_none() {
                        return 0;
                    }
                    let mut seen = seen.lock().unwrap();
                    seen.toggled_disabled = Some(action == "disable");
                    seen.toggle_in_flight = false;
                }
                0
            }));
        }
        // Kill at a moment that differs per cycle and per run.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        tokio::time::sleep(Duration::from_millis(700 + u64::from(nanos % 900))).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        for l in loops {
            l.await.unwrap();
        }
        admitted_total += admitted.load(Ordering::Relaxed);
        lost_total += lost.load(Ordering::Relaxed);
        let restart = Instant::now();
        server = serve(dir.path());
        let ready = loop {
            let r = http.get(format!("{}/readyz", server.admin)).send().await;
            if r.is_ok_and(|r| r.status() == 200) {
                break restart.elapsed();
            }
            assert!(restart.elapsed() < Duration::from_secs(10), "not ready within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        eprintln!(
            "cycle {cycle}: ready again in {ready:?}; {} checks admitted, {} creates, {} rotations, {} tokens acknowledged",
            admitted.load(Ordering::Relaxed),
            seen.created.len(),
            seen.rotor_secrets.len() - rotor_secrets.len(),
            seen.jtis.len()
        );
        assert!(
            admitted_total > 0 && !seen.created.is_empty(),
            "the load ran in cycle {cycle}"
        );
        // Every acknowledged admin change is there, and every acknowledged secret verifies.
        all_created.extend(seen.created);
        tollgate_tests::assert_integrations_work(&http, &server, &all_created).await;
        if let Some(disabled) = seen.toggled_disabled.filter(|_| !seen.toggle_in_flight) {
            let view = admin_json(
                &http,
                reqwest::Method::GET,
                format!("{}/admin/v1/integrations/{toggled_id}", server.admin),
                json!({}),
            )
            .await
            .unwrap();
            let expected = if disabled { "disabled" } else { "active" };
            assert_eq!(view["status"], expected, "acknowledged toggle survived");
        }
        // Rotations: the acknowledged newest secret works (unless a later one was in
        // flight), and older ones are dead. Only the two before it are tried: every
        // dead secret is a failed attempt, and ten from one address lock it out.
        rotor_secrets = seen.rotor_secrets;
        let newest = rotor_secrets.len() - 1;
        for (i, secret) in rotor_secrets.iter().enumerate().rev().take(3) {
            let status = http
                .post(format!("{}/oauth/token", server.gateway))
                .basic_auth(&rotor_client, Some(secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap()
                .status();
            if i < newest {
                assert_eq!(status, 401, "rotated-away secret {i} of {newest} is dead");
            } else if !seen.rotation_in_flight {
                assert_eq!(status, 200, "the newest acknowledged secret works");
            }
        }
        if seen.rotation_in_flight {
            let rotated = admin_json(
                &http,
                reqwest::Method::POST,
                format!("{}/admin/v1/integrations/{rotor_id}/rotate", server.admin),
                json!({"mode": "incident"}),
            )
            .await
            .unwrap();
            rotor_secrets.push(rotated["client_secret"].as_str().unwrap().to_owned());
        }
        // Counts never under, over by at most one block per crash (+ unanswered requests).
        let view = admin_json(
            &http,
            reqwest::Method::GET,
            format!("{}/admin/v1/integrations/{checked_id}", server.admin),
            json!({}),
        )
        .await
        .unwrap();
        let persisted = view["usage_today"]["used"].as_u64().unwrap();
        let cycles = cycle as u64 + 1;
        assert!(
            persisted >= admitted_total && persisted <= admitted_total + lost_total + cycles * BLOCK,
            "persisted {persisted}, admitted {admitted_total}, unanswered {lost_total}, after {cycles} crashes"
        );
        // Every token a client received has its audit entry; the chain verifies.
        all_jtis.extend(seen.jtis);
        let mut audited = std::collections::HashSet::new();
        let mut cursor: Option<u64> = None;
        loop {
            let mut url = format!("{}/admin/v1/audit?type=token.issued&limit=200", server.admin);
            if let Some(c) = cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page = admin_json(&http, reqwest::Method::GET, url, json!({})).await.unwrap();
            for e in page["entries"].as_array().unwrap() {
                audited.insert(e["jti"].as_str().unwrap_or_default().to_owned());
            }
            match page["next_cursor"].as_u64() {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let missing: Vec<&String> = all_jtis.iter().filter(|j| !audited.contains(*j)).collect();
        assert!(missing.is_empty(), "tokens without an audit entry: {missing:?}");
        tollgate_tests::assert_audit_chain_verifies(&http, &server).await;
    }
    assert!(!all_jtis.is_empty());
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brute_force_flood_is_throttled_and_summarised_while_the_legitimate_client_is_served() {
    const ATTEMPTS: usize = 2000;
    const LATENCY_BOUND: Duration = Duration::from_secs(1);
    let app = Arc::new(TestApp::spawn_with(|c| c.throttle_summary_every = Duration::from_millis(200)).await);
    let victim = app.register("acme", 1_000_000).await;
    let legit = app.register("acme", 1_000_000).await;
    let legit_token = app.token(&legit.client_id, &legit.secret).await;
    // Well-formed guesses for the victim's slot: each would cost an Argon2 verification.
    let slot = tollgate_engine::model::SlotId::parse(&victim.secret[4..14]).unwrap();
    let guess = tollgate_engine::secret::ClientSecret::generate(&slot)
        .expose()
        .to_owned();

    let flooding = Arc::new(AtomicBool::new(true));
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (app, client, guess) = (app.clone(), victim.client_id.clone(), guess.clone());
        flood.spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..ATTEMPTS / 8 {
                statuses.push(app.token_response(&client, &guess, None).await.status().as_u16());
            }
            statuses
        });
    }
    let legit_loop = {
        let (app, flooding, legit) = (app.clone(), flooding.clone(), legit.clone());
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut served = 0;
            while flooding.load(Ordering::Relaxed) {
                let started = Instant::now();
                let token = app.token_response(&legit.client_id, &legit.secret, None).await;
                assert_eq!(token.status(), 200, "the legitimate client is never refused");
                let check = app.get("/v1/things", &legit_token).await;
                assert_eq!(check.status(), 200, "its requests are never refused");
                slowest = slowest.max(started.elapsed());
                served += 1;
            }
            (served, slowest)
        })
    };
    let mut statuses = Vec::new();
    while let Some(done) = flood.join_next().await {
        statuses.extend(done.unwrap());
    }
    flooding.store(false, Ordering::Relaxed);
    let (served, slowest) = legit_loop.await.unwrap();
    eprintln!("legitimate client: {served} token + check rounds during the flood, slowest {slowest:?}");
    assert!(served > 10, "the legitimate client kept going ({served} rounds)");
    assert!(
        slowest < LATENCY_BOUND,
        "legitimate latency stays under {LATENCY_BOUND:?}: {slowest:?}"
    );

    let refused = statuses.iter().filter(|&&s| s == 401).count();
    let throttled = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(refused + throttled, ATTEMPTS, "only 401 and 429: {statuses:?}");
    assert!(refused <= 20, "at most the free failures reach Argon2: {refused}");
    // Audited without filling the disk: a few refusals, then summaries.
    let per_attempt = tollgate_tests::audit_of_kind(&app.engine, "token.refused").len();
    assert!(per_attempt <= 20, "{per_attempt} refusals audited one by one");
    assert!(!tollgate_tests::audit_of_kind(&app.engine, "auth.lockout").is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    let summarised = loop {
        let total: u64 = tollgate_tests::audit_of_kind(&app.engine, "auth.throttled")
            .iter()
            .filter(|e| e.event.client_id.as_ref().map(ToString::to_string) == Some(victim.client_id.clone()))
            .map(|e| e.event.details["refused"].as_u64().unwrap_or(0))
            .sum();
        if total as usize >= throttled || Instant::now() > deadline {
            break total;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        summarised as usize, throttled,
        "every throttled attempt is counted in a summary"
    );
}
