//! A broken data dir stops the real binary at start with a clear error — never a
//! panic, never a silent fresh start over somebody's data.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `serve` over `dir` and expects it to exit by itself; returns (success, stderr).
fn serve_expecting_exit(dir: &std::path::Path) -> (bool, String) {
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
