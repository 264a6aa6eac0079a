//! The admin API's own OpenAPI description, exercised by schemathesis (PyPI) against
//! the real binary: no server errors, every status, content type, header and body
//! as documented, authentication never ignored, stateful sequences included.
//! `.ci/run` installs schemathesis; without it the test says so loudly and passes,
//! except under CI, where it fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use tollgate_tests::{ADMIN_KEY, ServedBinary};

fn find_schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TOLLGATE_SCHEMATHESIS") {
        return Some(PathBuf::from(path)).filter(|p| p.exists());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("schemathesis"))
        .find(|candidate| candidate.exists())
}

#[test]
fn schemathesis_finds_no_server_error_and_no_response_off_the_schema() {
    let Some(schemathesis) = find_schemathesis() else {
        let message = "SCHEMATHESIS NOT RUN: `schemathesis` is not installed (pip install schemathesis)";
        if std::env::var_os("CI").is_some() {
            panic!("{message}; CI must run it");
        }
        eprintln!("\n**************** {message} ****************\n");
        return;
    };
    let (dir, scratch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut server = ServedBinary::start(env!("CARGO_BIN_EXE_tollgate-under-test"), dir.path(), |c| {
        c.env("TOLLGATE_ADMIN_KEY", ADMIN_KEY);
    });
    // Every check but the two that judge how strict validation is (the server refuses
    // some values the schema cannot express, such as a scope listed twice).
    let output = Command::new(schemathesis)
        .arg("run")
        .arg(format!("{}/admin/v1/openapi.json", server.admin))
        .args(["--header", &format!("Authorization: Bearer {ADMIN_KEY}")])
        .args(["--checks", "all"])
        .args(["--exclude-checks", "positive_data_acceptance,negative_data_rejection"])
        .args(["--max-examples", "50", "--seed", "1", "--workers", "1"])
        .args(["--request-timeout", "30"])
        // No example database: every run starts from the seed alone and writes nothing.
        .args(["--generation-database", "none"])
        .env("SCHEMATHESIS_HOOKS", "")
        // Its caches go to a scratch dir, not into the checkout.
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .output()
        .expect("run schemathesis");
    let _ = server.child.kill();
    let _ = server.child.wait();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let count = |label: &str| {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|rest| rest.rsplit('/').next().unwrap_or(rest).trim().to_owned())
    };
    let (selected, tested) = (count("Selected:"), count("Tested:"));
    assert!(
        selected.is_some() && selected == tested,
        "every operation was exercised (selected {selected:?}, tested {tested:?}):\n{report}"
    );
}
