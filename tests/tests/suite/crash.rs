//! kill -9 in the middle of real work: nothing acknowledged is lost, counts never
//! go below what was admitted, and over-count stays within one reservation block.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use tollgate_engine::clock::{SystemClock, day_of};
use tollgate_engine::model::ClientId;
use tollgate_engine::storage::Storage;
use tollgate_engine::{AuthOutcome, Engine, EngineConfig};
use tollgate_tests::auth_request;

/// The reservation block for the child's quota of 100,000: min(4096, quota / 100).
const BLOCK: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_checks_never_under_counts_and_keeps_every_acknowledged_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut secrets: HashMap<String, String> = HashMap::new();
    let mut admitted: HashMap<String, u64> = HashMap::new();

    for cycle in 0..3 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_engine-crash-child"))
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the child");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen_this_cycle = 0u64;
        let target = 1_500 + 700 * cycle;
        let mut record = |line: &str| {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["CREATED", client, secret] => {
                    secrets.insert(client.to_string(), secret.to_string());
                }
                ["ADMITTED", client, used] => {
                    let used: u64 = used.parse().unwrap();
                    let entry = admitted.entry(client.to_string()).or_default();
                    *entry = (*entry).max(used);
                }
                _ => panic!("unexpected line from the child: {line}"),
            }
        };
        for line in lines.by_ref() {
            record(&line.unwrap());
            seen_this_cycle += 1;
            if seen_this_cycle >= target {
                break;
            }
        }
        child.kill().expect("SIGKILL the child");
        child.wait().unwrap();
        // Whatever the child printed before it died is still in the pipe.
        for line in lines {
            match line {
                Ok(line) if !line.is_empty() => record(&line),
                _ => break,
            }
        }
        assert!(seen_this_cycle >= target, "cycle {cycle}: the child stopped early");

        let storage = Storage::open(dir.path()).expect("the data dir reopens after kill -9");
        let today = day_of(tollgate_engine::clock::Clock::now_ms(&SystemClock));
        for (client, &acknowledged) in &admitted {
            let id = storage
                .integration_id_by_client(&ClientId::parse(client).unwrap())
                .unwrap()
                .expect("an acknowledged integration survives");
            let persisted = storage.day_usage(&id, today).unwrap().map_or(0, |u| u.reserved);
            assert!(
                persisted >= acknowledged,
                "cycle {cycle}: {client} persisted {persisted} < admitted {acknowledged}: under-count"
            );
            // At most one block ahead, plus the one admission the child may have made
            // without printing it before it died.
            assert!(
                persisted <= acknowledged + BLOCK + 1,
                "cycle {cycle}: {client} persisted {persisted}, admitted {acknowledged}: over-count beyond one block"
            );
        }
        assert_eq!(
            storage.audit_verify().unwrap().first_broken,
            None,
            "the audit chain survives kill -9"
        );

        let engine = Engine::start(storage, Arc::new(SystemClock), EngineConfig::default())
            .await
            .unwrap();
        for (client, secret) in &secrets {
            let outcome = engine.authenticate(auth_request(client, secret)).await.unwrap();
            assert!(
                matches!(outcome, AuthOutcome::Granted(_)),
                "cycle {cycle}: {client}'s acknowledged secret must still verify, got {outcome:?}"
            );
        }
        engine.shutdown().await.unwrap();
        drop(engine);
        // The graceful shutdown persisted exact counts; the next child resumes there,
        // so the admitted numbers it prints continue from the persisted value.
        let storage = Storage::open(dir.path()).unwrap();
        for (client, count) in admitted.iter_mut() {
            let id = storage
                .integration_id_by_client(&ClientId::parse(client).unwrap())
                .unwrap()
                .unwrap();
            *count = storage.day_usage(&id, today).unwrap().map_or(0, |u| u.reserved);
        }
    }
    assert!(secrets.len() >= 3, "integrations were created across the cycles");
}
