//! The real binary under faults: SIGTERM in the middle of load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_tests::{ADMIN_KEY, ServedBinary, register_over_http, token_over_http};

fn serve(dir: &std::path::Path) -> ServedBinary {
    ServedBinary::start(env!("CARGO_BIN_EXE_tollgate-under-test"), dir, |c| {
        c.env("TOLLGATE_ADMIN_KEY", ADMIN_KEY);
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
