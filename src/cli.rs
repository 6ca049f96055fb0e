//! The command line of SPEC §5: clap definitions and what each command does. Lifecycle
//! rules live in `service`; this file parses, calls and prints.

use crate::config::{parse_duration, Config};
use crate::service::limits::{LimitChange, Usage};
use crate::service::transfer::TransferError;
use crate::service::view::{parse_rfc3339, rfc3339, AuditView, KeyView};
use crate::service::{Expiry, KeyService, NewKey, ServiceError};
use crate::store::{now_ms, AuditQuery, KeyFilter, KeyRecord, KeyType};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

/// Why a management command failed (printed on stderr, exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error("cannot read standard input: {0}")]
    Stdin(#[source] std::io::Error),
}

impl From<crate::store::StoreError> for CliError {
    fn from(e: crate::store::StoreError) -> Self {
        CliError::Service(e.into())
    }
}

/// Actor name of changes made from the command line (audit log).
pub const CLI_ACTOR: &str = "cli";

#[derive(Debug, Parser)]
#[command(
    name = "keygate",
    version,
    about = "An API gateway that enforces API keys"
)]
pub struct Cli {
    /// Config file.
    #[arg(
        long,
        global = true,
        env = "KEYGATE_CONFIG",
        default_value = "config/keygate.yaml"
    )]
    pub config: PathBuf,
    /// Print one JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve,
    /// Validate the config and exit (0: valid, 1: not, with every error named).
    CheckConfig,
    /// Try keygate in one command: a built-in echo upstream, a demo key, curl lines.
    Demo(DemoArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Remove, restore and give roles to the users that own personal keys.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Show the audit log, newest first.
    Audit(AuditArgs),
    /// Suspend and restore orgs: every key of a suspended org answers 401 org_suspended.
    #[command(subcommand)]
    Orgs(OrgsCommand),
}

#[derive(Debug, Subcommand)]
pub enum OrgsCommand {
    /// Every key of the org answers 401 org_suspended, on every gateway, until restored.
    Suspend { org: String },
    /// The org's keys answer by their own states again.
    Restore { org: String },
    /// Whether the org is suspended.
    Show { org: String },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo gateway listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Where the demo's admin API listens.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub admin_listen: String,
    /// Where the demo keeps its config and key store.
    #[arg(long, default_value = "data/demo")]
    pub dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once and never again.
    Create(CreateArgs),
    /// List keys (never secrets).
    List(ListArgs),
    /// Show one key.
    Show { id: String },
    /// Rename a key.
    Rename { id: String, name: String },
    /// Revoke a key for good.
    Revoke { id: String },
    /// Disable a key (reversible with `enable`).
    Disable { id: String },
    /// Enable a disabled key.
    Enable { id: String },
    /// Replace a key by a new one with the same attributes; the old one ends after the grace.
    Rotate {
        id: String,
        /// How long the old key keeps working (`0s`: not at all).
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        grace: Duration,
    },
    /// Delete a key; it is gone for good.
    Delete { id: String },
    /// Report a leaked secret, read from standard input (never an argument, which would
    /// land in shell history and `ps`): the key it belongs to is revoked (audit `leaked`).
    Leaked {
        /// Read the secret from standard input (one key).
        #[arg(long, required = true)]
        stdin: bool,
    },
    /// Set or clear a key's rate limit and quota (audited).
    Limit {
        id: String,
        /// `100/s`, `6000/m`, `100000/h`, or `none` to clear it.
        #[arg(long, allow_hyphen_values = true)]
        rate_limit: Option<String>,
        /// `10000/month`, `500/day`, `1000` (for the key's life), or `none` to clear it.
        #[arg(long, allow_hyphen_values = true)]
        quota: Option<String>,
    },
    /// Show a key's limits and quota usage; `--reset` starts its quota from zero.
    Usage {
        id: String,
        /// Start the quota from zero on every gateway (audited).
        #[arg(long)]
        reset: bool,
    },
    /// Show a recoverable key's secret again (needs `keys.recoverable`); audited.
    Reveal { id: String },
    /// Write every key (hashes, never secrets), its owner's user record and its org's
    /// suspension as JSON lines.
    Export {
        /// File to write, `-` for standard output.
        #[arg(long, default_value = "-")]
        out: PathBuf,
    },
    /// Read an export into this config's store; keys already there are left alone.
    Import {
        /// File to read, `-` for standard input.
        #[arg(long = "in", default_value = "-")]
        input: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub org: String,
    /// A workspace the key may use, repeatable (omit for an org key that may use every
    /// workspace of its org).
    #[arg(long = "workspace")]
    pub workspaces: Vec<String>,
    #[arg(long)]
    pub name: Option<String>,
    /// `service` (default) or `personal`.
    #[arg(long = "type", value_parser = parse_key_type)]
    pub key_type: Option<KeyType>,
    /// The user a personal key acts for.
    #[arg(long)]
    pub owner: Option<String>,
    /// Roles from the config; their permissions are fixed now.
    #[arg(long = "role", required_unless_present = "inherit")]
    pub roles: Vec<String>,
    /// Follow the owner's roles (personal keys).
    #[arg(long, conflicts_with = "roles")]
    pub inherit: bool,
    #[arg(long, value_parser = parse_duration, conflicts_with = "expires_at")]
    pub expires_in: Option<Duration>,
    /// RFC 3339 time, e.g. 2027-01-01T00:00:00Z.
    #[arg(long)]
    pub expires_at: Option<String>,
    /// Metadata, `K=V`, repeatable.
    #[arg(long = "meta", value_parser = parse_meta)]
    pub meta: Vec<(String, String)>,
    /// The key's rate limit: `100/s`, `6000/m` or `100000/h`.
    #[arg(long, allow_hyphen_values = true)]
    pub rate_limit: Option<String>,
    /// The key's usage quota: `10000/month`, `500/day`, or `1000` for its life.
    #[arg(long, allow_hyphen_values = true)]
    pub quota: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    pub org: Option<String>,
    #[arg(long)]
    pub workspace: Option<String>,
    /// Only keys not used for this long (never-used keys count from creation).
    #[arg(long, value_parser = parse_duration)]
    pub unused_for: Option<Duration>,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// The user's personal keys stop working (401 owner_removed).
    Remove {
        #[arg(long)]
        org: String,
        user: String,
    },
    /// The user's personal keys work again.
    Restore {
        #[arg(long)]
        org: String,
        user: String,
    },
    /// Record the user's roles (followed by their `--inherit` keys).
    SetRoles {
        #[arg(long)]
        org: String,
        user: String,
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[arg(long)]
    pub key: Option<String>,
    /// Events per page.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Next page: events older than this event id.
    #[arg(long)]
    pub before: Option<i64>,
}

fn parse_key_type(s: &str) -> Result<KeyType, String> {
    match s {
        "service" => Ok(KeyType::Service),
        "personal" => Ok(KeyType::Personal),
        _ => Err(format!("`{s}` is not `service` or `personal`")),
    }
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not K=V"))
}

/// What a command printed: a JSON document and its human rendering.
pub struct Output {
    pub json: serde_json::Value,
    pub text: String,
}

fn key_json(k: &KeyRecord) -> serde_json::Value {
    serde_json::to_value(KeyView::new(k, now_ms())).unwrap_or_default()
}

fn key_text(k: &KeyRecord) -> String {
    let now = now_ms();
    let v = KeyView::new(k, now);
    let mut s = format!(
        "{}  {}  {}\n  org: {}  workspaces: {}  type: {}{}\n  roles: {}{}  permissions: {}\n  status: {}  created: {} by {}  last used: {}  expires: {}",
        v.id,
        v.hint.unwrap_or("(no hint)"),
        v.name,
        v.org,
        v.workspaces.join(","),
        v.key_type,
        v.owner.map(|o| format!("  owner: {o}")).unwrap_or_default(),
        v.roles.join(","),
        if v.inherit { "(inherits owner's)" } else { "" },
        v.permissions.join(","),
        v.status,
        v.created_at,
        v.created_by,
        v.last_used_at.as_deref().unwrap_or("never"),
        v.expires_at.as_deref().unwrap_or("never"),
    );
    if !v.metadata.is_empty() {
        let m: Vec<String> = v.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
        s.push_str(&format!("\n  metadata: {}", m.join(" ")));
    }
    if v.rate_limit.is_some() || v.quota.is_some() {
        s.push_str(&format!(
            "\n  rate limit: {}  quota: {}",
            v.rate_limit.unwrap_or("none"),
            v.quota.unwrap_or("none")
        ));
    }
    if let Some(r) = v.rotated_to {
        s.push_str(&format!("\n  rotated to: {r}"));
    }
    if let Some(t) = v.revoked_at {
        s.push_str(&format!("\n  revoked: {t}"));
    }
    s
}

fn usage_text(u: &Usage) -> String {
    let mut s = format!(
        "{}\n  rate limit: {}",
        u.key_id,
        u.rate_limit.as_deref().unwrap_or("none of its own")
    );
    match &u.quota {
        None => s.push_str("\n  quota: none"),
        Some(q) => s.push_str(&format!(
            "\n  quota: {} per {}  used: {}  remaining: {}  leased: {}  resets: {}",
            q.limit,
            q.period,
            q.used,
            q.remaining,
            q.leased,
            q.resets_at
                .as_deref()
                .unwrap_or("never (reset with --reset)"),
        )),
    }
    s
}

/// The most of standard input a leak report reads: a key is under 100 bytes.
const MAX_LEAK_REPORT: u64 = 4096;

const SHOWN_ONCE: &str = "This secret is shown once and cannot be shown again. Store it now.";

/// Runs a key, user or audit command against the configured store.
pub async fn run_management(cmd: Command, config: &Config) -> Result<Output, CliError> {
    let store = crate::store::open(&config.store).await?;
    let svc = KeyService::new(
        store,
        config.roles.clone(),
        crate::key::KeyFormat::new(&config.keys.prefix),
        config.keys.vault.clone(),
    );
    run_with(&svc, cmd).await
}

pub async fn run_with(svc: &KeyService, cmd: Command) -> Result<Output, CliError> {
    let a = CLI_ACTOR;
    match cmd {
        Command::Keys(k) => match k {
            KeysCommand::Create(c) => {
                let expires = match (c.expires_in, c.expires_at) {
                    (Some(d), _) => Some(Expiry::In(d)),
                    (None, Some(t)) => Some(Expiry::At(parse_rfc3339(&t).ok_or_else(|| {
                        ServiceError::Invalid {
                            field: "expires_at",
                            message: format!(
                                "`{t}` is not an RFC 3339 time like 2027-01-01T00:00:00Z"
                            ),
                        }
                    })?)),
                    (None, None) => None,
                };
                let req = NewKey {
                    org: c.org,
                    workspaces: c.workspaces,
                    name: c.name,
                    key_type: c.key_type,
                    owner: c.owner,
                    roles: c.roles,
                    inherit: c.inherit,
                    expires,
                    metadata: c.meta.into_iter().collect::<BTreeMap<_, _>>(),
                    rate_limit: c.rate_limit,
                    quota: c.quota,
                };
                let (rec, secret) = svc.create(req, a).await?;
                let mut j = key_json(&rec);
                j["key"] = json!(secret.expose());
                j["notice"] = json!(SHOWN_ONCE);
                let text = format!(
                    "{}\n\n  key: {}\n\n{SHOWN_ONCE}",
                    key_text(&rec),
                    secret.expose()
                );
                Ok(Output { json: j, text })
            }
            KeysCommand::List(l) => {
                let filter = KeyFilter {
                    org: l.org,
                    workspace: l.workspace,
                };
                let keys = svc.list(&filter, l.unused_for).await?;
                let text = if keys.is_empty() {
                    "no keys".to_owned()
                } else {
                    keys.iter().map(key_text).collect::<Vec<_>>().join("\n")
                };
                Ok(Output {
                    json: json!({ "keys": keys.iter().map(key_json).collect::<Vec<_>>() }),
                    text,
                })
            }
            KeysCommand::Show { id } => one(svc.show_now(&id).await?),
            KeysCommand::Limit {
                id,
                rate_limit,
                quota,
            } => {
                let none_clears = |v: Option<String>| v.map(|v| (v != "none").then_some(v));
                let change = LimitChange {
                    rate_limit: none_clears(rate_limit),
                    quota: none_clears(quota),
                };
                one(svc.set_limits(&id, &change, a).await?)
            }
            KeysCommand::Usage { id, reset } => {
                if reset {
                    svc.reset_usage(&id, a).await?;
                }
                let usage = svc.usage(&id).await?;
                Ok(Output {
                    text: usage_text(&usage),
                    json: serde_json::to_value(&usage).unwrap_or_default(),
                })
            }
            KeysCommand::Rename { id, name } => one(svc.rename(&id, &name, a).await?),
            KeysCommand::Revoke { id } => one(svc.revoke(&id, a).await?),
            KeysCommand::Disable { id } => one(svc.disable(&id, a).await?),
            KeysCommand::Enable { id } => one(svc.enable(&id, a).await?),
            KeysCommand::Rotate { id, grace } => {
                let (old, new, secret) = svc.rotate(&id, grace, a).await?;
                let mut j = key_json(&new);
                j["key"] = json!(secret.expose());
                j["notice"] = json!(SHOWN_ONCE);
                j["rotated_from"] = key_json(&old);
                let text = format!(
                    "{}\n\n  key: {}\n\n{SHOWN_ONCE}\nThe old key {} ends at {}.",
                    key_text(&new),
                    secret.expose(),
                    old.id,
                    old.expires_at.map(rfc3339).unwrap_or_default()
                );
                Ok(Output { json: j, text })
            }
            KeysCommand::Delete { id } => {
                svc.delete(&id, a).await?;
                Ok(Output {
                    json: json!({ "deleted": id }),
                    text: format!("deleted {id}"),
                })
            }
            KeysCommand::Leaked { stdin: _ } => {
                let mut secret = String::new();
                std::io::stdin()
                    .lock()
                    .take(MAX_LEAK_REPORT)
                    .read_to_string(&mut secret)
                    .map_err(CliError::Stdin)?;
                match svc.find_by_secret(&secret).await? {
                    None => Ok(Output {
                        json: json!({ "found": false }),
                        text: "no key matches that secret; nothing revoked".to_owned(),
                    }),
                    Some(k) => {
                        let k = svc.revoke_leaked(&k.id, a).await?;
                        Ok(Output {
                            json: json!({ "found": true, "id": k.id, "key": key_json(&k) }),
                            text: format!(
                                "{}\n\nrevoked: its secret was reported leaked",
                                key_text(&k)
                            ),
                        })
                    }
                }
            }
            KeysCommand::Reveal { id } => {
                let secret = svc.reveal(&id, a).await?;
                Ok(Output {
                    json: json!({ "id": id, "key": secret.expose() }),
                    text: format!(
                        "{id}\n\n  key: {}\n\nThis reveal is recorded in the audit log.",
                        secret.expose()
                    ),
                })
            }
            KeysCommand::Export { out } => {
                let report = if out.as_os_str() == "-" {
                    svc.export(&mut std::io::stdout().lock()).await?
                } else {
                    let mut f = std::io::BufWriter::new(
                        std::fs::File::create(&out).map_err(TransferError::from)?,
                    );
                    svc.export(&mut f).await?
                };
                let mut j = serde_json::to_value(&report).unwrap_or_default();
                j["file"] = json!(out.display().to_string());
                Ok(Output {
                    json: j,
                    text: format!(
                        "exported {} keys, {} users and {} suspended orgs to {}",
                        report.exported_keys,
                        report.exported_users,
                        report.exported_orgs,
                        out.display()
                    ),
                })
            }
            KeysCommand::Import { input } => {
                let report = if input.as_os_str() == "-" {
                    svc.import(&mut std::io::stdin().lock(), a).await?
                } else {
                    let f = std::fs::File::open(&input).map_err(TransferError::from)?;
                    svc.import(&mut std::io::BufReader::new(f), a).await?
                };
                Ok(Output {
                    text: format!(
                        "imported {} keys ({} already present), {} users ({} already present) and {} org states ({} already present)",
                        report.keys_imported,
                        report.keys_present,
                        report.users_imported,
                        report.users_present,
                        report.orgs_imported,
                        report.orgs_present
                    ),
                    json: serde_json::to_value(&report).unwrap_or_default(),
                })
            }
        },
        Command::Users(u) => {
            let user = match u {
                UsersCommand::Remove { org, user } => svc.remove_user(&org, &user, a).await?,
                UsersCommand::Restore { org, user } => svc.restore_user(&org, &user, a).await?,
                UsersCommand::SetRoles { org, user, roles } => {
                    svc.set_user_roles(&org, &user, &roles, a).await?
                }
            };
            Ok(Output {
                json: json!({ "org": user.org, "user": user.user, "removed": user.removed, "roles": user.roles, "permissions": user.permissions }),
                text: format!(
                    "user {} of org {}: {}; roles: {}",
                    user.user,
                    user.org,
                    if user.removed { "removed" } else { "active" },
                    if user.roles.is_empty() {
                        "(none recorded)".to_owned()
                    } else {
                        user.roles.join(",")
                    }
                ),
            })
        }
        Command::Audit(q) => {
            let events = svc
                .audit(&AuditQuery {
                    key_id: q.key,
                    before: q.before,
                    limit: q.limit.clamp(1, 1000),
                })
                .await?;
            let views: Vec<AuditView> = events.iter().map(AuditView::new).collect();
            let text = if views.is_empty() {
                "no events".to_owned()
            } else {
                views
                    .iter()
                    .map(|e| {
                        format!(
                            "{:>6}  {}  {:<14} {:<24} by {}  {}",
                            e.id,
                            e.at,
                            e.action,
                            e.key_id.unwrap_or("-"),
                            e.actor,
                            e.details
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            let next = events.last().map(|e| e.id);
            Ok(Output {
                json: json!({ "events": views, "next_before": next }),
                text,
            })
        }
        Command::Orgs(o) => {
            let org = match o {
                OrgsCommand::Suspend { org } => svc.suspend_org(&org, a).await?,
                OrgsCommand::Restore { org } => svc.restore_org(&org, a).await?,
                OrgsCommand::Show { org } => svc.org_state(&org).await?,
            };
            Ok(Output {
                json: crate::service::orgs::org_json(&org),
                text: format!(
                    "org {}: {}",
                    org.org,
                    if org.suspended {
                        "suspended (every key answers 401 org_suspended)"
                    } else {
                        "active"
                    }
                ),
            })
        }
        Command::Serve | Command::CheckConfig | Command::Demo(_) => Err(ServiceError::Invalid {
            field: "command",
            message: "not a management command".into(),
        }
        .into()),
    }
}

fn one(k: KeyRecord) -> Result<Output, CliError> {
    Ok(Output {
        json: key_json(&k),
        text: key_text(&k),
    })
}
