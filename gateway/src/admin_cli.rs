//! The admin sub-commands of `tollgate`: a thin client of the admin REST API of a
//! running server (`--admin-url`, key from `TOLLGATE_ADMIN_KEY`), printing readable
//! tables by default and the API's JSON with `--json`.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the admin API is and how to print.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// The admin API of a running server.
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    pub admin_url: String,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `tollgate integrations …`
#[derive(Subcommand, Debug)]
pub enum IntegrationsCmd {
    /// Register an integration; prints its secret once.
    Create {
        /// Organisation id.
        #[arg(long)]
        org: String,
        /// Name.
        #[arg(long)]
        name: String,
        /// A scope (repeat for several).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Requests per UTC day.
        #[arg(long)]
        quota: u64,
        /// Token lifetime in seconds (default 3600).
        #[arg(long)]
        token_ttl: Option<u32>,
        /// Token requests per minute (default 600).
        #[arg(long)]
        token_rpm: Option<u32>,
    },
    /// List integrations.
    List {
        /// Only this organisation.
        #[arg(long)]
        org: Option<String>,
        /// Only this status (active, disabled, revoked).
        #[arg(long)]
        status: Option<String>,
        /// Page size (1–200).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue after this id (the previous page's next cursor).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one integration: config, secrets, today's usage.
    Show {
        /// Integration id (int_…).
        id: String,
    },
    /// Issue a new secret (routine with a grace window, or incident).
    Rotate {
        /// Integration id.
        id: String,
        /// Grace window of the old secret, seconds (default 86400).
        #[arg(long, conflicts_with = "incident")]
        grace: Option<u64>,
        /// Kill the old secret and every token issued before now.
        #[arg(long)]
        incident: bool,
    },
    /// Refuse everything from the integration from the next request on.
    Disable {
        /// Integration id.
        id: String,
        /// Why (audited).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Undo a disable.
    Enable {
        /// Integration id.
        id: String,
    },
    /// Permanent off-boarding: secrets erased, tokens dead.
    Revoke {
        /// Integration id.
        id: String,
        /// Confirm: revocation cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// `tollgate audit …`
#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// The newest entries.
    Tail {
        /// Only this organisation.
        #[arg(long)]
        org: Option<String>,
        /// Only this integration.
        #[arg(long)]
        integration: Option<String>,
        /// Only this event type or prefix (`token.`).
        #[arg(long = "type")]
        kind: Option<String>,
        /// How many (1–200).
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: usize,
    },
    /// A range as JSON Lines, oldest first.
    Export {
        /// At or after (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Before (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// Only this organisation.
        #[arg(long)]
        org: Option<String>,
        /// Only this integration.
        #[arg(long)]
        integration: Option<String>,
        /// Only this event type or prefix.
        #[arg(long = "type")]
        kind: Option<String>,
    },
    /// Verify the hash chain.
    Verify,
}

/// `tollgate admin-keys …`
#[derive(Subcommand, Debug)]
pub enum AdminKeysCmd {
    /// Create an admin key; prints it once.
    Create {
        /// What it is for.
        #[arg(long)]
        label: String,
        /// Limit it to one organisation.
        #[arg(long)]
        org: Option<String>,
        /// Limit it to reading.
        #[arg(long)]
        read_only: bool,
    },
    /// List admin keys (never the keys themselves).
    List,
    /// Revoke an admin key.
    Revoke {
        /// Key id (tgk_…).
        id: String,
    },
}

struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Client {
    fn new(api: &ApiArgs) -> anyhow::Result<Self> {
        let key = std::env::var("TOLLGATE_ADMIN_KEY")
            .ok()
            .filter(|k| !k.is_empty())
            .context("set TOLLGATE_ADMIN_KEY to an admin key (it is read from the environment, never a flag)")?;
        Ok(Self {
            base: api.admin_url.trim_end_matches('/').to_owned(),
            key,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.key).query(query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "could not reach the admin API at {} (is the server running?)",
                self.base
            )
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match serde_json::from_str::<Value>(&text) {
            Ok(error) => bail!(
                "{} ({}, HTTP {})",
                error["message"].as_str().unwrap_or("request failed"),
                error["error"].as_str().unwrap_or("error"),
                status.as_u16()
            ),
            Err(_) => bail!("the admin API answered HTTP {}", status.as_u16()),
        }
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        Ok(self.call(method, path, query, body).await?.json().await?)
    }
}

fn push(query: &mut Vec<(&'static str, String)>, name: &'static str, value: Option<String>) {
    if let Some(v) = value {
        query.push((name, v));
    }
}

/// Prints rows as aligned columns.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(headers.iter().map(|h| h.to_uppercase()).collect()));
    for row in rows {
        println!("{}", line(row));
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_integration(v: &Value) {
    let usage = &v["usage_today"];
    let rows = [
        ("id", text(&v["id"])),
        ("client id", text(&v["client_id"])),
        ("organisation", text(&v["org_id"])),
        ("name", text(&v["name"])),
        ("status", text(&v["status"])),
        (
            "scopes",
            v["scopes"]
                .as_array()
                .map_or(String::new(), |s| s.iter().map(text).collect::<Vec<_>>().join(" ")),
        ),
        (
            "usage today",
            format!(
                "{} of {} ({} left)",
                text(&usage["used"]),
                text(&usage["limit"]),
                text(&usage["remaining"])
            ),
        ),
        ("token lifetime", format!("{} s", text(&v["token_ttl_seconds"]))),
        ("token rate", format!("{} / min", text(&v["token_requests_per_minute"]))),
        ("created", text(&v["created_at"])),
    ];
    for (k, val) in rows {
        println!("{k:<15} {val}");
    }
    if let Some(reason) = v["disabled_reason"].as_str() {
        println!("{:<15} {reason}", "disabled for");
    }
    if let Some(secrets) = v["secrets"].as_array() {
        for s in secrets {
            println!(
                "{:<15} {} ({}), issued {}, {}; last used {} from {}",
                "secret",
                text(&s["slot_id"]),
                text(&s["role"]),
                text(&s["created_at"]),
                match (&s["expires_at"], s["expired"].as_bool()) {
                    (Value::Null, _) => "no expiry".to_string(),
                    (at, Some(true)) => format!("expired {}", text(at)),
                    (at, _) => format!("expires {}", text(at)),
                },
                text(&s["last_used_at"]),
                text(&s["last_used_ip"]),
            );
        }
    }
}

fn print_secret_once(secret: &str) {
    println!();
    println!("client secret: {secret}");
    println!("Store it now: it is shown this once and kept only as a hash.");
}

fn print_entries(entries: &[Value]) {
    table(
        &["seq", "at", "type", "outcome", "integration", "source", "reason"],
        entries
            .iter()
            .map(|e| {
                vec![
                    text(&e["seq"]),
                    text(&e["at"]),
                    text(&e["type"]),
                    text(&e["outcome"]),
                    text(&e["integration_id"]),
                    e["source_ip"]
                        .as_str()
                        .or(e["admin_key_id"].as_str())
                        .unwrap_or("-")
                        .to_owned(),
                    text(&e["reason"]),
                ]
            })
            .collect(),
    );
}

/// Runs `tollgate integrations …`.
pub async fn integrations(api: ApiArgs, cmd: IntegrationsCmd) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = Client::new(&api)?;
    let path = |id: &str, action: &str| format!("/admin/v1/integrations/{id}{action}");
    let result = match cmd {
        IntegrationsCmd::Create {
            org,
            name,
            scopes,
            quota,
            token_ttl,
            token_rpm,
        } => {
            let mut body = json!({ "org_id": org, "name": name, "scopes": scopes, "daily_quota": quota });
            if let Some(ttl) = token_ttl {
                body["token_ttl_seconds"] = json!(ttl);
            }
            if let Some(rpm) = token_rpm {
                body["token_requests_per_minute"] = json!(rpm);
            }
            let created = client
                .json(Method::POST, "/admin/v1/integrations", &[], Some(body))
                .await?;
            if !api.json {
                print_integration(&created["integration"]);
                print_secret_once(created["client_secret"].as_str().unwrap_or_default());
            }
            created
        }
        IntegrationsCmd::List {
            org,
            status,
            limit,
            cursor,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            push(&mut query, "org_id", org);
            push(&mut query, "status", status);
            push(&mut query, "cursor", cursor);
            let page = client.json(Method::GET, "/admin/v1/integrations", &query, None).await?;
            if !api.json {
                let rows = page["integrations"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .map(|i| {
                                vec![
                                    text(&i["id"]),
                                    text(&i["org_id"]),
                                    text(&i["name"]),
                                    text(&i["status"]),
                                    format!("{}/{}", text(&i["usage_today"]["used"]), text(&i["daily_quota"])),
                                    text(&i["client_id"]),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                table(&["id", "org", "name", "status", "used today", "client id"], rows);
                if let Some(next) = page["next_cursor"].as_str() {
                    println!("\nmore: --cursor {next}");
                }
            }
            page
        }
        IntegrationsCmd::Show { id } => {
            let v = client.json(Method::GET, &path(&id, ""), &[], None).await?;
            if !api.json {
                print_integration(&v);
            }
            v
        }
        IntegrationsCmd::Rotate { id, grace, incident } => {
            let body = if incident {
                json!({ "mode": "incident" })
            } else {
                json!({ "mode": "routine", "grace_seconds": grace.unwrap_or(86_400) })
            };
            let rotated = client
                .json(Method::POST, &path(&id, "/rotate"), &[], Some(body))
                .await?;
            if !api.json {
                match rotated["previous_secret_expires_at"].as_str() {
                    Some(at) => println!("Rotated. The old secret keeps working until {at}."),
                    None => println!("Rotated (incident): the old secret and every earlier token are dead now."),
                }
                print_secret_once(rotated["client_secret"].as_str().unwrap_or_default());
            }
            rotated
        }
        IntegrationsCmd::Disable { id, reason } => {
            let v = client
                .json(
                    Method::POST,
                    &path(&id, "/disable"),
                    &[],
                    Some(json!({ "reason": reason })),
                )
                .await?;
            if !api.json {
                println!("Disabled {id}: its next request is refused.");
            }
            v
        }
        IntegrationsCmd::Enable { id } => {
            let v = client.json(Method::POST, &path(&id, "/enable"), &[], None).await?;
            if !api.json {
                println!("Enabled {id}.");
            }
            v
        }
        IntegrationsCmd::Revoke { id, yes } => {
            if !yes {
                bail!("revoking {id} is permanent (secrets erased, tokens dead); add --yes to confirm");
            }
            let v = client.json(Method::POST, &path(&id, "/revoke"), &[], None).await?;
            if !api.json {
                println!("Revoked {id} for good.");
            }
            v
        }
    };
    if api.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(())
}

/// Runs `tollgate audit …`.
pub async fn audit(api: ApiArgs, cmd: AuditCmd) -> anyhow::Result<()> {
    let client = Client::new(&api)?;
    match cmd {
        AuditCmd::Tail {
            org,
            integration,
            kind,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            push(&mut query, "org_id", org);
            push(&mut query, "integration_id", integration);
            push(&mut query, "type", kind);
            let page = client
                .json(reqwest::Method::GET, "/admin/v1/audit", &query, None)
                .await?;
            if api.json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                let mut entries = page["entries"].as_array().cloned().unwrap_or_default();
                entries.reverse();
                print_entries(&entries);
            }
        }
        AuditCmd::Export {
            from,
            to,
            org,
            integration,
            kind,
        } => {
            let mut query = vec![("format", "jsonl".to_string())];
            push(&mut query, "from", from);
            push(&mut query, "to", to);
            push(&mut query, "org_id", org);
            push(&mut query, "integration_id", integration);
            push(&mut query, "type", kind);
            let text = client
                .call(reqwest::Method::GET, "/admin/v1/audit", &query, None)
                .await?
                .text()
                .await?;
            print!("{text}");
            eprintln!("exported {} entries", text.lines().count());
        }
        AuditCmd::Verify => {
            let report = client
                .json(reqwest::Method::GET, "/admin/v1/audit/verify", &[], None)
                .await?;
            if api.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if report["ok"].as_bool() == Some(true) {
                println!(
                    "The audit chain verifies: {} entries checked.",
                    text(&report["entries_checked"])
                );
            } else {
                println!(
                    "The audit chain is BROKEN at entry {}: {}",
                    text(&report["first_broken"]["seq"]),
                    text(&report["first_broken"]["problem"])
                );
                std::process::exit(2);
            }
        }
    }
    Ok(())
}

/// Runs `tollgate admin-keys …`.
pub async fn admin_keys(api: ApiArgs, cmd: AdminKeysCmd) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = Client::new(&api)?;
    let result = match cmd {
        AdminKeysCmd::Create { label, org, read_only } => {
            let created = client
                .json(
                    Method::POST,
                    "/admin/v1/admin-keys",
                    &[],
                    Some(json!({ "label": label, "org_id": org, "read_only": read_only })),
                )
                .await?;
            if !api.json {
                println!("Created admin key {}.", text(&created["admin_key"]["id"]));
                println!("\nadmin key: {}", text(&created["key"]));
                println!("Store it now: it is shown this once and kept only as a hash.");
            }
            created
        }
        AdminKeysCmd::List => {
            let list = client.json(Method::GET, "/admin/v1/admin-keys", &[], None).await?;
            if !api.json {
                let rows = list["admin_keys"]
                    .as_array()
                    .map(|keys| {
                        keys.iter()
                            .map(|k| {
                                vec![
                                    text(&k["id"]),
                                    text(&k["label"]),
                                    text(&k["org_id"]),
                                    if k["read_only"].as_bool() == Some(true) {
                                        "read-only"
                                    } else {
                                        "read-write"
                                    }
                                    .into(),
                                    text(&k["created_at"]),
                                    text(&k["revoked_at"]),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                table(&["id", "label", "org", "access", "created", "revoked"], rows);
            }
            list
        }
        AdminKeysCmd::Revoke { id } => {
            let v = client
                .json(Method::POST, &format!("/admin/v1/admin-keys/{id}/revoke"), &[], None)
                .await?;
            if !api.json {
                println!("Revoked admin key {id}.");
            }
            v
        }
    };
    if api.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(())
}
