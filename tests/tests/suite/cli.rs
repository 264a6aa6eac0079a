//! The `tollgate` admin sub-commands against a running server.

use serde_json::Value;
use tollgate_tests::{ADMIN_KEY, TestApp};

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn tollgate(app: &TestApp, key: &str, args: &[&str]) -> Output {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate-under-test"))
        .args(args)
        .env("TOLLGATE_ADMIN_URL", &app.admin)
        .env("TOLLGATE_ADMIN_KEY", key)
        .output()
        .await
        .expect("run tollgate");
    Output {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn admins_manage_integrations_audit_and_keys_from_the_command_line() {
    let app = TestApp::spawn().await;
    let created = tollgate(
        &app,
        ADMIN_KEY,
        &[
            "integrations",
            "create",
            "--org",
            "acme",
            "--name",
            "CRM sync",
            "--scope",
            "conversations:read",
            "--quota",
            "100",
            "--json",
        ],
    )
    .await;
    assert!(created.ok, "{}", created.stderr);
    let created: Value = serde_json::from_str(&created.stdout).unwrap();
    let id = created["integration"]["id"].as_str().unwrap().to_owned();
    let client_id = created["integration"]["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(
        app.token_response(&client_id, &secret, None).await.status(),
        200,
        "the printed secret works"
    );

    let human = tollgate(
        &app,
        ADMIN_KEY,
        &[
            "integrations",
            "create",
            "--org",
            "acme",
            "--name",
            "Second",
            "--quota",
            "5",
        ],
    )
    .await;
    assert!(human.ok);
    assert!(human.stdout.contains("client secret: tgs_") && human.stdout.contains("shown this once"));

    let list = tollgate(&app, ADMIN_KEY, &["integrations", "list", "--org", "acme"]).await;
    assert!(list.ok);
    let header = list.stdout.lines().next().unwrap();
    assert!(header.starts_with("ID") && header.contains("USED TODAY"), "{header}");
    assert!(list.stdout.contains(&id) && list.stdout.contains("CRM sync"));

    let show = tollgate(&app, ADMIN_KEY, &["integrations", "show", &id]).await;
    assert!(
        show.stdout.contains("usage today") && show.stdout.contains("0 of 100"),
        "{}",
        show.stdout
    );

    let rotated = tollgate(&app, ADMIN_KEY, &["integrations", "rotate", &id, "--grace", "60"]).await;
    assert!(rotated.ok);
    assert!(
        rotated.stdout.contains("keeps working until 2026-11-28T10:01:00Z"),
        "{}",
        rotated.stdout
    );

    let disabled = tollgate(
        &app,
        ADMIN_KEY,
        &["integrations", "disable", &id, "--reason", "odd traffic"],
    )
    .await;
    assert!(disabled.ok && disabled.stdout.contains("next request is refused"));
    assert_eq!(app.token_response(&client_id, &secret, None).await.status(), 401);

    let refused = tollgate(&app, ADMIN_KEY, &["integrations", "revoke", &id]).await;
    assert!(
        !refused.ok && refused.stderr.contains("--yes"),
        "revocation needs confirmation"
    );

    let tail = tollgate(&app, ADMIN_KEY, &["audit", "tail", "-n", "3"]).await;
    assert!(tail.ok);
    let rows: Vec<&str> = tail.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 3);
    assert!(
        rows[1].contains("integration.disabled") && rows[1].contains("odd traffic"),
        "{}",
        tail.stdout
    );
    assert!(
        rows[2].contains("token.refused") && rows[2].contains("integration_disabled"),
        "newest last"
    );
    let export = tollgate(&app, ADMIN_KEY, &["audit", "export", "--integration", &id]).await;
    assert!(export.ok);
    assert!(export.stdout.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()));
    assert!(export.stderr.contains("exported"));
    let verify = tollgate(&app, ADMIN_KEY, &["audit", "verify"]).await;
    assert!(verify.stdout.contains("verifies"), "{}", verify.stdout);

    let key = tollgate(
        &app,
        ADMIN_KEY,
        &["admin-keys", "create", "--label", "auditor", "--read-only", "--json"],
    )
    .await;
    let key: Value = serde_json::from_str(&key.stdout).unwrap();
    let reader = key["key"].as_str().unwrap();
    let write = tollgate(&app, reader, &["integrations", "enable", &id]).await;
    assert!(!write.ok);
    assert!(
        write.stderr.contains("read-only") && write.stderr.contains("HTTP 403"),
        "{}",
        write.stderr
    );

    let wrong = tollgate(&app, "definitely-not-a-key", &["integrations", "list"]).await;
    assert!(!wrong.ok && wrong.stderr.contains("not valid"), "{}", wrong.stderr);
    app.shutdown().await;
}
