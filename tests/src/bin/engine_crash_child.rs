//! A child process for the crash tests: opens the engine on a data dir and runs real
//! work until it is killed with SIGKILL.
//!
//! Usage: `engine-crash-child DATA_DIR`. It registers a new integration every few
//! hundred checks and prints `CREATED <client_id> <secret>` once the creation is
//! acknowledged (durable), and prints `ADMITTED <client_id> <used>` after every
//! admitted check, flushing each line, so the parent knows exactly what was
//! acknowledged before the kill. It also checks every integration already stored, so
//! counts carry over across kill cycles. It never exits by itself before 60 s.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tollgate_engine::clock::SystemClock;
use tollgate_engine::model::{DailyQuota, OrgId};
use tollgate_engine::storage::Storage;
use tollgate_engine::{AdminContext, CheckOutcome, Engine, EngineConfig, NewIntegration, TokenContext};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).context("usage: engine-crash-child DATA_DIR")?;
    let storage = Storage::open(&dir).context("failed to open the data dir")?;
    let engine = Engine::start(storage, Arc::new(SystemClock), EngineConfig::default()).await?;
    let mut clients: Vec<_> = engine
        .list_integrations(None, None, 1_000)
        .await?
        .into_iter()
        .map(|v| v.client_id)
        .collect();
    let stdout = std::io::stdout();
    let started = Instant::now();
    let mut round = 0u64;
    while started.elapsed() < Duration::from_secs(60) {
        if round.is_multiple_of(300) {
            let created = engine
                .create_integration(
                    NewIntegration {
                        org_id: OrgId::parse("crash")?,
                        name: format!("crash {round}"),
                        scopes: vec![],
                        daily_quota: DailyQuota::new(100_000)?,
                        token_ttl_seconds: None,
                        token_requests_per_minute: None,
                        secret_max_age_days: None,
                    },
                    &AdminContext::default(),
                )
                .await?;
            let mut out = stdout.lock();
            writeln!(
                out,
                "CREATED {} {}",
                created.integration.client_id,
                created.client_secret.expose()
            )?;
            out.flush()?;
            clients.push(created.integration.client_id);
        }
        let client = &clients[(round as usize) % clients.len()];
        let token = TokenContext {
            issued_at_ms: engine.now_ms(),
            jti: None,
        };
        if let CheckOutcome::Admitted(status) = engine.check(client, token).await? {
            let mut out = stdout.lock();
            writeln!(out, "ADMITTED {client} {}", status.used)?;
            out.flush()?;
        }
        round += 1;
    }
    Ok(())
}
