//! A broken data dir stops the real binary at start with a clear error — never a
//! panic, never a silent fresh start over somebody's data.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `serve` over `dir` and expects it to exit by itself; returns (success, stderr).
fn serve_expecting_exit(dir: &std::path::Path) -> (bool, String) {
    let mut child = tollgate_tests::ServedBinary::command(env!("CARGO_BIN_EXE_tollgate-under-test"), dir)
        .env("TOLLGATE_ADMIN_KEY", tollgate_tests::ADMIN_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tollgate");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tollgate kept running on a broken data dir");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!stderr.contains("panicked"), "a clear error, not a panic:\n{stderr}");
    (status.success(), stderr)
}

/// A data dir written by this build's binary, with one integration in it.
async fn written_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let server = tollgate_tests::ServedBinary::start(env!("CARGO_BIN_EXE_tollgate-under-test"), dir.path(), |c| {
        c.env("TOLLGATE_ADMIN_KEY", tollgate_tests::ADMIN_KEY);
    });
    let body = serde_json::json!({"org_id": "acme", "name": "kept", "daily_quota": 10});
    tollgate_tests::register_over_http(&reqwest::Client::new(), &server.admin, tollgate_tests::ADMIN_KEY, body).await;
    assert!(server.terminate().success());
    dir
}

#[tokio::test]
async fn a_data_dir_of_another_version_is_refused_and_left_alone() {
    let dir = written_data_dir().await;
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", &2u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let (ok, stderr) = serve_expecting_exit(dir.path());
    assert!(!ok);
    assert!(
        stderr.contains("schema version 2") && stderr.contains("reads only version 1"),
        "{stderr}"
    );
    // Untouched: still version 2 with its integration.
    let db = sled::open(dir.path()).unwrap();
    let version = db.open_tree("meta").unwrap().get("schema_version").unwrap().unwrap();
    assert_eq!(version.as_ref(), 2u32.to_be_bytes());
    assert_eq!(db.open_tree("integrations").unwrap().len(), 1);
}

#[tokio::test]
async fn a_corrupted_data_dir_is_refused_with_a_clear_error() {
    let dir = written_data_dir().await;
    let mut overwritten = 0;
    for entry in walk(dir.path()) {
        let len = std::fs::metadata(&entry).unwrap().len() as usize;
        let garbage: Vec<u8> = (0..len.max(64)).map(|i| (i * 7 + 13) as u8).collect();
        std::fs::write(&entry, garbage).unwrap();
        overwritten += 1;
    }
    assert!(overwritten > 0);
    let (ok, stderr) = serve_expecting_exit(dir.path());
    assert!(!ok);
    assert!(stderr.contains("storage") || stderr.contains("data"), "{stderr}");
}

#[tokio::test]
async fn a_data_dir_that_is_not_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"hello").unwrap();
    let (ok, stderr) = serve_expecting_exit(&file);
    assert!(!ok);
    assert!(stderr.contains("not-a-dir"), "the error names the path: {stderr}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A small tmpfs mounted for one test; unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// `None` (after saying so) where this machine does not let the test mount.
    fn mount(megabytes: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("\n**** FULL-DISK TEST NOT RUN: cannot mount a tmpfs here (needs root and mount rights) ****\n");
            return None;
        }
        Some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_and_loses_nothing_acknowledged() {
    use tollgate_tests::{ADMIN_KEY, ServedBinary, register_over_http};
    let Some(disk) = Tmpfs::mount(24) else { return };
    let data = disk.0.path().join("data");
    let serve = || {
        ServedBinary::start(env!("CARGO_BIN_EXE_tollgate-under-test"), &data, |c| {
            c.env("TOLLGATE_ADMIN_KEY", ADMIN_KEY);
        })
    };
    let http = reqwest::Client::new();
    let mut server = serve();
    let body = |n: usize| serde_json::json!({"org_id": "acme", "name": format!("n{n}"), "daily_quota": 10});
    let mut acknowledged = vec![register_over_http(&http, &server.admin, ADMIN_KEY, body(0)).await];

    // Fill the disk.
    let filler = disk.0.path().join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 256 * 1024];
        while file.write_all(&chunk).and_then(|()| file.sync_all()).is_ok() {}
    }
    let mut refusal = None;
    for n in 1..50 {
        let response = http
            .post(format!("{}/admin/v1/integrations", server.admin))
            .bearer_auth(ADMIN_KEY)
            .json(&body(n))
            .send()
            .await
            .unwrap();
        if response.status() == 201 {
            let created: serde_json::Value = response.json().await.unwrap();
            let field = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
            acknowledged.push((
                field(&created["integration"]["id"]),
                field(&created["integration"]["client_id"]),
                field(&created["client_secret"]),
            ));
            continue;
        }
        refusal = Some((
            response.status(),
            response.headers().get("retry-after").cloned(),
            response.text().await.unwrap(),
        ));
        break;
    }
    let (status, retry_after, text) = refusal.expect("a full disk refuses writes");
    assert_eq!(status, 503, "{text}");
    assert!(retry_after.is_some());
    let error: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"], "storage_unavailable");
    assert!(error["message"].as_str().unwrap().contains("disk is full"), "{error}");
    // No token without its audit record: refused, clearly.
    let (_, client, secret) = &acknowledged[0];
    let token = http
        .post(format!("{}/oauth/token", server.gateway))
        .basic_auth(client, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 503);
    let token: serde_json::Value = token.json().await.unwrap();
    assert_eq!(token["error"], "temporarily_unavailable", "{token}");
    let ready = http.get(format!("{}/readyz", server.admin)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("restart"));

    // Space back, restart: everything acknowledged is there and works.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    std::fs::remove_file(&filler).unwrap();
    let server = serve();
    tollgate_tests::assert_integrations_work(&http, &server, &acknowledged).await;
    tollgate_tests::assert_audit_chain_verifies(&http, &server).await;
    assert!(server.terminate().success());
}
