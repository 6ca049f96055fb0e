//! Configuration: YAML (SPEC §3) -> `${VAR}` substitution -> raw serde structs that refuse
//! unknown fields -> one validation pass that gathers every error, each naming its field.

mod duration;
pub mod raw;
mod validate;

pub use duration::{format_duration, parse_duration, DurationError};

use crate::key::VaultKey;
use http::header::HeaderName;
use http::Method;
use raw::RawConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::RootCertStore;
use validate::validate;

/// Everything wrong with a config file, each line naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config is not valid YAML: {0}")]
    Yaml(#[source] serde_yaml::Error),
    #[error("config field `{path}`: {message}")]
    Field { path: String, message: String },
    #[error("invalid config:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub tls: Option<TlsConfig>,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub cache: CacheConfig,
    pub keys: KeysConfig,
    pub identity: IdentityConfig,
    /// Role -> permissions, sorted.
    pub roles: BTreeMap<String, BTreeSet<String>>,
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub limits: LimitsConfig,
    pub server: ServerConfig,
    pub log: LogConfig,
}

/// Rate limits and quotas (SPEC §7).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    pub default_rate_limit: Option<crate::limits::RateLimit>,
    pub quota_batch: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub tokens: Vec<AdminToken>,
}

#[derive(Debug, Clone)]
pub struct AdminToken {
    pub name: String,
    pub sha256: [u8; 32],
    pub orgs: Option<Vec<String>>,
    pub workspaces: Option<Vec<String>>,
    /// The roles this token may grant; `None`: any (see `grantable_roles`).
    pub roles: Option<Vec<String>>,
}

impl AdminToken {
    /// Whether the token is the operator's: no org, workspace or role limit.
    pub fn is_unlimited(&self) -> bool {
        self.orgs.is_none() && self.workspaces.is_none() && self.roles.is_none()
    }

    /// The roles the token may put on a key, `None` for any. A workspace token grants
    /// only the roles named for it, none when it names none: a workspace editor must not
    /// mint keys stronger than the operator meant to hand it.
    pub fn grantable_roles(&self) -> Option<&[String]> {
        match (&self.roles, &self.workspaces) {
            (Some(r), _) => Some(r),
            (None, Some(_)) => Some(&[]),
            (None, None) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    Embedded {
        path: PathBuf,
        poll_interval: Duration,
    },
    Redis {
        urls: Vec<String>,
        cluster: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub max_entries: u64,
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub stale_if_error: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeysConfig {
    pub prefix: String,
    pub header: Option<HeaderName>,
    pub query_param: Option<String>,
    pub forward_credential: bool,
    /// The vault key (`KEYGATE_VAULT_KEY`): set exactly when `keys.recoverable` is on.
    pub vault: Option<VaultKey>,
    pub last_used_flush: Duration,
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Lower-case, e.g. `x-keygate-`.
    pub prefix: String,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    /// `scheme://authority[/path]`.
    pub targets: Vec<http::Uri>,
    /// The targets' own path (`http://h:9000/api` -> `/api`), put in front of every
    /// forwarded path; `None` for targets without one. The same for every target.
    pub path: Option<String>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// Longest wait for the next piece of a response body.
    pub idle_timeout: Duration,
    /// The CA certificates https targets are checked against (read from `ca` when the
    /// config is loaded); `None`: the public webpki roots.
    pub ca: Option<Arc<RootCertStore>>,
}

/// The upstream's path: the normalized request path less its first `drop` bytes (the
/// route's prefix, when stripped or rewritten), after `prefix` (the upstream target's path
/// and the route's `rewrite`, joined; normalized, no trailing slash, maybe empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRewrite {
    pub drop: usize,
    pub prefix: String,
}

impl PathRewrite {
    /// The path the upstream gets for the normalized request `path` (which the route
    /// matched, so it starts with the route's prefix on a segment boundary).
    pub fn apply(&self, path: &str) -> String {
        let rest = path.get(self.drop..).unwrap_or("");
        match (self.prefix.is_empty(), rest.is_empty()) {
            (true, true) => "/".to_owned(),
            (true, false) => rest.to_owned(),
            (false, _) => format!("{}{rest}", self.prefix),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceRule {
    Header(HeaderName),
    /// 1-based segment of the normalized path.
    PathSegment(usize),
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Label in metrics and logs.
    pub name: String,
    /// Normalized prefix without trailing slash (`/` for the root).
    pub path: String,
    /// Lower-case host without port.
    pub host: Option<String>,
    pub methods: Option<Vec<Method>>,
    /// Index into `Config::upstreams`; `None` only on a verify route.
    pub upstream: Option<usize>,
    /// Sorted, deduplicated.
    pub permissions: Vec<String>,
    pub workspace: Option<WorkspaceRule>,
    pub auth: bool,
    /// For keys without a rate limit of their own.
    pub rate_limit: Option<crate::limits::RateLimit>,
    /// How the upstream's path is made from the request's (`strip_prefix`, `rewrite`, the
    /// upstream target's own path); `None`: the normalized request path as it is.
    pub path_rewrite: Option<PathRewrite>,
    /// A forward-auth endpoint (SPEC §8): it judges the request it names against the
    /// other routes and forwards nothing. Never the route a judged request matches.
    pub verify: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub workers: Option<usize>,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Config {
    /// Reads, substitutes, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, &|name| std::env::var(name).ok())
    }

    /// `load` with `env` in place of the process environment, for `${VAR}` and
    /// `KEYGATE_VAULT_KEY` alike (tests give each gateway its own, without touching the
    /// environment of a process whose threads run other tests).
    pub fn load_with_env(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, env)
    }

    /// Parses YAML text; `env` resolves `${VAR}` and `KEYGATE_VAULT_KEY` (a function so
    /// tests need no process env).
    pub fn from_yaml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(ConfigError::Yaml)?;
        if value.is_null() {
            value = serde_yaml::Value::Mapping(Default::default());
        }
        substitute_env(&mut value, "", env)?;
        // Unknown fields are gathered (the path of each) and reported with every error of
        // the validation pass, so one typo does not hide the rest; a value of the wrong type
        // still stops here, naming its field.
        let mut unknown = Vec::new();
        let mut note = |path: serde_ignored::Path<'_>| unknown.push(field_path(&path));
        let de = serde_ignored::Deserializer::new(value, &mut note);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Field {
                path: if path == "." {
                    "(top level)".into()
                } else {
                    path
                },
                message: e.into_inner().to_string(),
            }
        })?;
        validate(raw, env, &unknown)
    }

    /// The upstream a route forwards to (`None` for a verify route, which forwards nothing).
    pub fn route_upstream(&self, route: &RouteConfig) -> Option<&UpstreamConfig> {
        route.upstream.map(|i| &self.upstreams[i])
    }
}

/// A field's path as every config error names it: `routes[1].auth`, `cache.ttl`.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// Replaces `${VAR}` in every string of the document. Done on the parsed tree, not the
/// text, so a `${VAR}` in a comment is never required and a value cannot inject YAML.
fn substitute_env(
    v: &mut serde_yaml::Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    use serde_yaml::Value;
    match v {
        Value::String(s) if s.contains("${") => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let end = after.find('}').ok_or_else(|| ConfigError::Field {
                    path: path.to_owned(),
                    message: "unterminated `${`".into(),
                })?;
                let name = &after[..end];
                let val = env(name).ok_or_else(|| ConfigError::Field {
                    path: path.to_owned(),
                    message: format!("environment variable `{name}` is not set"),
                })?;
                out.push_str(&val);
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_env(item, &format!("{path}[{i}]"), env)?;
            }
        }
        Value::Mapping(map) => {
            for (k, item) in map.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                let p = if path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{path}.{key}")
                };
                substitute_env(item, &p, env)?;
            }
        }
        Value::Tagged(t) => substitute_env(&mut t.value, path, env)?,
        _ => {}
    }
    Ok(())
}

/// The shape of orgs, workspaces, users and metadata keys: 1-128 characters of
/// `[A-Za-z0-9-_.:@]`. Never `*`, never a list, never a path.
pub fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:@".contains(&c))
}

/// Role and permission names. No `*`: permissions match exactly, and a wildcard that
/// silently granted nothing would be worse than none. No `,` either: a key's permissions
/// travel joined by commas in one identity header.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(&c))
}

#[cfg(test)]
mod tests;

/// The TLS server name of a URI host (a DNS name, or an IP, bracketed for IPv6): what
/// validation checks and what the pool connects with.
pub fn tls_server_name(host: &str) -> Option<ServerName<'static>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned()).ok()
}
