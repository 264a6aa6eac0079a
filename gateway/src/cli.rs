//! The `tollgate` command line: parses configuration and wires the libraries.
//!
//! `tollgate serve` runs the server; configuration comes from flags, then
//! `TOLLGATE_*` environment variables, then an optional TOML file (`--config`),
//! then the defaults. Kept in the library so that the binary stays one line and the
//! end-to-end tests can run exactly the same entry point as a child process.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::admin_cli::{AdminKeysCmd, ApiArgs, AuditCmd, IntegrationsCmd};
use crate::policy::RoutePolicy;
use crate::serve::{ServeConfig, start};
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Secure machine-to-machine integrations: OAuth client credentials, quotas, audit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway and the admin API.
    Serve(Box<ServeArgs>),
    /// Manage integrations through a running server's admin API.
    Integrations {
        #[command(subcommand)]
        command: IntegrationsCmd,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Read and verify the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Manage admin keys.
    AdminKeys {
        #[command(subcommand)]
        command: AdminKeysCmd,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ServeArgs {
    /// A TOML file with any of these settings (kebab-case keys); flags and env win.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Gateway listener [default: 127.0.0.1:8080].
    #[arg(long, env = "TOLLGATE_GATEWAY_ADDR")]
    gateway_addr: Option<SocketAddr>,
    /// Admin listener (admin API, dashboard, /metrics) [default: 127.0.0.1:8081].
    #[arg(long, env = "TOLLGATE_ADMIN_ADDR")]
    admin_addr: Option<SocketAddr>,
    /// Data directory [default: ./tollgate-data].
    #[arg(long, env = "TOLLGATE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Proxy target (http://host:port[/prefix]); unset: the built-in demo upstream.
    #[arg(long, env = "TOLLGATE_UPSTREAM")]
    upstream: Option<String>,
    /// Route policy file (TOML: method + path → scopes).
    #[arg(long, env = "TOLLGATE_POLICY_FILE")]
    policy_file: Option<PathBuf>,
    /// Token issuer [default: http://<gateway address>].
    #[arg(long, env = "TOLLGATE_ISSUER")]
    issuer: Option<String>,
    /// Token audience [default: tollgate-api].
    #[arg(long, env = "TOLLGATE_AUDIENCE")]
    audience: Option<String>,
    /// Quota warning thresholds in percent, comma-separated [default: 80,95].
    #[arg(long, env = "TOLLGATE_WARNING_THRESHOLDS", value_delimiter = ',')]
    warning_thresholds: Option<Vec<u8>>,
    /// Proxies whose X-Forwarded-For is believed (repeat or comma-separate).
    #[arg(long, env = "TOLLGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Option<Vec<IpAddr>>,
    /// Requests in flight before the gateway sheds load with 503 [default: 4096].
    #[arg(long, env = "TOLLGATE_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// Engine shards [default: 8].
    #[arg(long, env = "TOLLGATE_SHARDS")]
    shards: Option<u32>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "TOLLGATE_LOG_FORMAT")]
    log_format: Option<String>,
    /// What a genuine leaked-secret report does: kill_slot or disable [default: kill_slot].
    #[arg(long, env = "TOLLGATE_LEAK_POLICY")]
    leak_policy: Option<String>,
    /// Webhook retry delay after the first failure, doubling up to 1 h [default: 5000].
    #[arg(long, env = "TOLLGATE_WEBHOOK_BACKOFF_MS")]
    webhook_backoff_ms: Option<u64>,
    /// Hours after which a failing webhook delivery is given up [default: 24].
    #[arg(long, env = "TOLLGATE_WEBHOOK_GIVE_UP_HOURS")]
    webhook_give_up_hours: Option<u64>,
}

impl ServeArgs {
    /// Fills what flags and env left unset from the config file.
    fn merge(mut self) -> anyhow::Result<Self> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path).with_context(|| format!("failed to read {}", path.display()))?;
        let file: ServeArgs =
            toml::from_str(&text).with_context(|| format!("{} is not a valid config file", path.display()))?;
        macro_rules! fill {
            ($($field:ident),*) => { $( if self.$field.is_none() { self.$field = file.$field; } )* };
        }
        fill!(
            gateway_addr,
            admin_addr,
            data_dir,
            upstream,
            policy_file,
            issuer,
            audience,
            warning_thresholds,
            trusted_proxies,
            max_in_flight,
            shards,
            log_format,
            leak_policy,
            webhook_backoff_ms,
            webhook_give_up_hours
        );
        Ok(self)
    }
}

fn init_logs(format: Option<&str>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: stdout carries the listener lines and the bootstrap banner.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.unwrap_or("text") {
        "text" => builder.init(),
        "json" => builder.json().init(),
        other => bail!("--log-format must be text or json, not `{other}`"),
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let args = args.merge()?;
    init_logs(args.log_format.as_deref())?;
    let mut config = ServeConfig::new(args.data_dir.unwrap_or_else(|| PathBuf::from("./tollgate-data")));
    if let Some(addr) = args.gateway_addr {
        config.gateway_addr = addr;
    }
    if let Some(addr) = args.admin_addr {
        config.admin_addr = addr;
    }
    if let Some(upstream) = args.upstream {
        let uri: axum::http::Uri = upstream
            .parse()
            .with_context(|| format!("--upstream `{upstream}` is not a URL"))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            bail!("--upstream must be an http:// URL with a host, e.g. http://127.0.0.1:9000");
        }
        config.upstream = Some(uri);
    }
    if let Some(path) = args.policy_file {
        let text = std::fs::read_to_string(&path).with_context(|| format!("failed to read {}", path.display()))?;
        config.policy = RoutePolicy::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    config.issuer = args.issuer;
    if let Some(audience) = args.audience {
        config.audience = audience;
    }
    if let Some(thresholds) = args.warning_thresholds {
        config.engine.warning_thresholds = thresholds.into();
    }
    if let Some(proxies) = args.trusted_proxies {
        config.trusted_proxies = proxies;
    }
    if let Some(n) = args.max_in_flight {
        config.max_in_flight = n;
    }
    if let Some(n) = args.shards {
        config.engine.shard_count = n;
    }
    config.bootstrap_admin_key = std::env::var("TOLLGATE_ADMIN_KEY").ok().filter(|k| !k.is_empty());
    if let Some(policy) = args.leak_policy.as_deref() {
        config.leak_policy = tollgate_engine::LeakPolicy::parse(policy)
            .ok_or_else(|| anyhow::anyhow!("--leak-policy must be kill_slot or disable, not `{policy}`"))?;
    }
    if let Some(ms) = args.webhook_backoff_ms {
        if ms == 0 {
            bail!("--webhook-backoff-ms must be at least 1");
        }
        config.webhooks.retry.backoff_base = std::time::Duration::from_millis(ms);
    }
    if let Some(hours) = args.webhook_give_up_hours {
        if !(1..=24 * 30).contains(&hours) {
            bail!("--webhook-give-up-hours must be 1 to 720");
        }
        config.webhooks.retry.give_up_after = std::time::Duration::from_secs(hours * 3600);
    }
    // A secret, so only from the environment (never a flag, which `ps` shows).
    config.leak_report_key = std::env::var("TOLLGATE_LEAK_REPORT_KEY").ok().filter(|k| !k.is_empty());

    let running = start(config).await?;
    println!("gateway listening on http://{}", running.gateway_addr);
    println!("admin listening on http://{}", running.admin_addr);
    if let Some(key) = &running.generated_admin_key {
        println!("==================================================================");
        println!(" Bootstrap admin key (shown once, stored only as a hash):");
        println!("   {key}");
        println!(" Use it as: Authorization: Bearer <key>. Set TOLLGATE_ADMIN_KEY on");
        println!(" first start to choose your own instead.");
        println!("==================================================================");
    }
    shutdown_signal().await;
    tracing::info!("shutting down: draining requests, persisting exact counters");
    running.shutdown().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// Parses the command line and runs the chosen command.
pub async fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(*args).await,
        Command::Integrations { command, api } => crate::admin_cli::integrations(api, command).await,
        Command::Audit { command, api } => crate::admin_cli::audit(api, command).await,
        Command::AdminKeys { command, api } => crate::admin_cli::admin_keys(api, command).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_fills_what_flags_and_env_left_unset() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tollgate.toml");
        std::fs::write(
            &file,
            "gateway-addr = \"127.0.0.1:9000\"\ndata-dir = \"/var/lib/tollgate\"\nwarning-thresholds = [50, 90]\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "tollgate",
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--gateway-addr",
            "127.0.0.1:7000",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let args = args.merge().unwrap();
        assert_eq!(
            args.gateway_addr,
            Some("127.0.0.1:7000".parse().unwrap()),
            "the flag wins"
        );
        assert_eq!(
            args.data_dir,
            Some(PathBuf::from("/var/lib/tollgate")),
            "the file fills the rest"
        );
        assert_eq!(args.warning_thresholds, Some(vec![50, 90]));
    }

    #[test]
    fn an_unknown_key_in_the_config_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tollgate.toml");
        std::fs::write(&file, "gateway_adr = \"127.0.0.1:9000\"\n").unwrap();
        let args = ServeArgs {
            config: Some(file),
            ..ServeArgs::default()
        };
        let err = args.merge().unwrap_err();
        assert!(format!("{err:#}").contains("gateway_adr"), "{err:#}");
    }
}
