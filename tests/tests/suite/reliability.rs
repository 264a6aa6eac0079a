//! The real binary under faults: SIGTERM in the middle of load.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_tests::ADMIN_KEY;

/// Starts `tollgate serve` on port 0 over `dir`; returns the child and its URLs.
fn serve(dir: &std::path::Path) -> (Child, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-under-test"))
        .args([
            "serve",
            "--gateway-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .env("TOLLGATE_ADMIN_KEY", ADMIN_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tollgate");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let gateway = lines
        .next()
        .unwrap()
        .unwrap()
        .trim_start_matches("gateway listening on ")
        .to_owned();
    let admin = lines
        .next()
        .unwrap()
        .unwrap()
        .trim_start_matches("admin listening on ")
        .to_owned();
    (child, gateway, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_in_flight_requests_and_persists_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, gateway, admin) = serve(dir.path());
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{admin}/admin/v1/integrations"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"org_id": "acme", "name": "load", "daily_quota": 1_000_000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["integration"]["id"].as_str().unwrap().to_owned();
    let client_id = created["integration"]["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    let token: Value = http
        .post(format!("{gateway}/oauth/token"))
        .basic_auth(&client_id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();

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
    while admitted.load(Ordering::Relaxed) < 500 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = Command::new("kill").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "a clean exit under load: {exit:?}");
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let seen = admitted.load(Ordering::Relaxed);
    let lost_answers = cut_off.load(Ordering::Relaxed);

    let (mut again, _, admin) = serve(dir.path());
    let view: Value = http
        .get(format!("{admin}/admin/v1/integrations/{id}"))
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
    again.kill().unwrap();
    let _ = again.wait();
}
