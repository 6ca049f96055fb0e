//! Configuration: YAML (SPEC §3) -> `${VAR}` substitution -> raw serde structs that refuse
//! unknown fields -> one validation pass that gathers every error, each naming its field.

mod duration;
pub mod raw;

pub use duration::{format_duration, parse_duration, DurationError};

use crate::key::{VaultKey, VAULT_KEY_ENV};
use http::header::HeaderName;
use http::Method;
use raw::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::RootCertStore;

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
    pub server: ServerConfig,
    pub log: LogConfig,
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
    /// `scheme://authority`, no path.
    pub targets: Vec<http::Uri>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// Longest wait for the next piece of a response body.
    pub idle_timeout: Duration,
    /// The CA certificates https targets are checked against (read from `ca` when the
    /// config is loaded); `None`: the public webpki roots.
    pub ca: Option<Arc<RootCertStore>>,
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
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    /// Sorted, deduplicated.
    pub permissions: Vec<String>,
    pub workspace: Option<WorkspaceRule>,
    pub auth: bool,
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
        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
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
        validate(raw, env)
    }

    /// The example config the README and `demo` use (embedded store, one upstream).
    pub fn route_upstream(&self, route: &RouteConfig) -> &UpstreamConfig {
        &self.upstreams[route.upstream]
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

/// Collects errors instead of stopping at the first: ops fix a file in one go.
struct Errors(Vec<String>);

impl Errors {
    fn push(&mut self, field: impl AsRef<str>, msg: impl AsRef<str>) {
        self.0.push(format!("{}: {}", field.as_ref(), msg.as_ref()));
    }

    fn duration(&mut self, field: &str, v: Option<&str>, default: &str) -> Duration {
        self.parsed(field, v, default).unwrap_or(Duration::ZERO)
    }

    /// The duration, or `None` with the parse error recorded.
    fn parsed(&mut self, field: &str, v: Option<&str>, default: &str) -> Option<Duration> {
        parse_duration(v.unwrap_or(default))
            .map_err(|e| self.push(field, e.to_string()))
            .ok()
    }

    /// A duration of at most `max` (zero allowed).
    fn at_most(&mut self, field: &str, v: Option<&str>, default: &str, max: Duration) -> Duration {
        let d = self.parsed(field, v, default);
        if d.is_some_and(|d| d > max) {
            self.push(field, format!("must be at most {}", format_duration(max)));
        }
        d.unwrap_or(Duration::ZERO)
    }

    /// A duration that must be above zero and at most `max`: timers and timeouts of zero
    /// would spin or refuse everything.
    fn bounded(&mut self, field: &str, v: Option<&str>, default: &str, max: Duration) -> Duration {
        let d = self.parsed(field, v, default);
        if d.is_some_and(|d| d.is_zero() || d > max) {
            self.push(
                field,
                format!("must be above 0 and at most {}", format_duration(max)),
            );
        }
        d.unwrap_or(Duration::ZERO)
    }

    fn addr(&mut self, field: &str, v: Option<&str>, default: &str) -> SocketAddr {
        let s = v.unwrap_or(default);
        s.parse().unwrap_or_else(|_| {
            self.push(
                field,
                format!("`{s}` is not an address like 127.0.0.1:8080"),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    fn header_name(&mut self, field: &str, s: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(s.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.push(field, format!("`{s}` is not a valid header name"));
                None
            }
        }
    }
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

/// Route and upstream names are label values in `/metrics`, written as they are: no `"`,
/// `\\`, line breaks or other control characters, which would break the exposition.
fn breaks_label(s: &str) -> bool {
    s.chars().any(|c| c.is_control() || c == '"' || c == '\\')
}

fn is_label_value(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && !breaks_label(s)
}

fn validate(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut e = Errors(Vec::new());

    let listen = e.addr("listen", raw.listen.as_deref(), DEFAULT_LISTEN);
    let tls = raw.tls.map(|t| TlsConfig {
        cert: PathBuf::from(t.cert),
        key: PathBuf::from(t.key),
    });

    let admin_listen = e.addr(
        "admin.listen",
        raw.admin.listen.as_deref(),
        DEFAULT_ADMIN_LISTEN,
    );
    let mut tokens = Vec::new();
    for (i, t) in raw.admin.tokens.into_iter().enumerate() {
        let field = format!("admin.tokens[{i}]");
        if t.name.trim().is_empty() {
            e.push(format!("{field}.name"), "must not be empty");
        }
        match crate::key::KeyHash::from_hex(t.sha256.trim()) {
            Some(h) => tokens.push(AdminToken {
                name: t.name,
                sha256: h.0,
                orgs: t.orgs,
                workspaces: t.workspaces,
                roles: t.roles,
            }),
            None => e.push(
                format!("{field}.sha256"),
                "must be 64 hex characters (sha256 of the token)",
            ),
        }
    }

    let poll_interval = e.bounded(
        "store.poll_interval",
        raw.store.poll_interval.as_deref(),
        DEFAULT_CHANGE_POLL,
        Duration::from_secs(60),
    );
    let store = match raw.store.kind.as_deref().unwrap_or("embedded") {
        "embedded" => {
            if raw.store.url.is_some() || raw.store.cluster.is_some() {
                e.push("store.url", "only for `kind: redis`");
            }
            StoreConfig::Embedded {
                path: PathBuf::from(raw.store.path.as_deref().unwrap_or(DEFAULT_STORE_PATH)),
                poll_interval,
            }
        }
        "redis" => {
            let (urls, cluster) = match (raw.store.url, raw.store.cluster) {
                (Some(u), None) => (vec![u], false),
                (None, Some(c)) if !c.is_empty() => (c, true),
                _ => {
                    e.push(
                        "store",
                        "`kind: redis` needs exactly one of `url` or a non-empty `cluster`",
                    );
                    (Vec::new(), false)
                }
            };
            for u in &urls {
                if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                    e.push(
                        "store.url",
                        format!("`{u}` must start with redis:// or rediss://"),
                    );
                }
            }
            StoreConfig::Redis { urls, cluster }
        }
        other => {
            e.push(
                "store.kind",
                format!("`{other}` is not `embedded` or `redis`"),
            );
            StoreConfig::Embedded {
                path: PathBuf::new(),
                poll_interval,
            }
        }
    };

    let cache = CacheConfig {
        max_entries: raw.cache.max_entries.unwrap_or(DEFAULT_CACHE_MAX_ENTRIES),
        // Above zero: a zero TTL would quietly send every request to the store. At most a
        // day: it bounds how long a revoked key can live when change events are lost.
        ttl: e.bounded(
            "cache.ttl",
            raw.cache.ttl.as_deref(),
            DEFAULT_CACHE_TTL,
            Duration::from_secs(24 * 3600),
        ),
        // Zero turns either off. The bounds keep them sane, and within what moka accepts
        // as an entry's lifetime (the longest of the three): beyond it, start-up panicked.
        negative_ttl: e.at_most(
            "cache.negative_ttl",
            raw.cache.negative_ttl.as_deref(),
            DEFAULT_NEGATIVE_TTL,
            Duration::from_secs(24 * 3600),
        ),
        stale_if_error: e.at_most(
            "cache.stale_if_error",
            raw.cache.stale_if_error.as_deref(),
            DEFAULT_STALE_IF_ERROR,
            Duration::from_secs(7 * 24 * 3600),
        ),
    };
    if cache.max_entries == 0 {
        e.push("cache.max_entries", "must be at least 1");
    }

    let prefix = raw
        .keys
        .prefix
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
    if prefix.is_empty() || prefix.len() > 16 || !prefix.bytes().all(|c| c.is_ascii_alphanumeric())
    {
        e.push(
            "keys.prefix",
            format!("`{prefix}` must be 1-16 characters of [A-Za-z0-9]"),
        );
    }
    let key_header = raw
        .keys
        .header
        .as_deref()
        .and_then(|h| e.header_name("keys.header", h));
    if key_header.as_ref() == Some(&http::header::AUTHORIZATION) {
        e.push(
            "keys.header",
            "Authorization is always read; name another header",
        );
    }
    if let Some(q) = &raw.keys.query_param {
        if q.is_empty()
            || !q
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        {
            e.push("keys.query_param", format!("`{q}` must be [A-Za-z0-9-_.]+"));
        }
    }
    // The vault key is read only when recoverable keys are on, and never repeated in an
    // error: it is the one secret that opens every stored secret.
    let vault = if raw.keys.recoverable == Some(true) {
        match env(VAULT_KEY_ENV) {
            None => {
                e.push(
                    "keys.recoverable",
                    format!("needs the vault key in the environment: {VAULT_KEY_ENV} is not set (32 bytes as 64 hex characters; make one with `openssl rand -hex 32`)"),
                );
                None
            }
            Some(v) => VaultKey::from_hex(v.trim())
                .map_err(|_| {
                    e.push(
                        "keys.recoverable",
                        format!("{VAULT_KEY_ENV} must be 64 hex characters (32 bytes); the value in the environment is not (it is not shown)"),
                    )
                })
                .ok(),
        }
    } else {
        None
    };
    let keys = KeysConfig {
        prefix,
        header: key_header,
        query_param: raw.keys.query_param,
        forward_credential: raw.keys.forward_credential.unwrap_or(false),
        vault,
        last_used_flush: e.bounded(
            "keys.last_used_flush",
            raw.keys.last_used_flush.as_deref(),
            DEFAULT_LAST_USED_FLUSH,
            Duration::from_secs(60),
        ),
    };

    let id_prefix = raw
        .identity_headers
        .prefix
        .unwrap_or_else(|| DEFAULT_IDENTITY_PREFIX.to_owned())
        .to_ascii_lowercase()
        .replace('_', "-");
    if id_prefix.len() < 2
        || HeaderName::from_bytes(format!("{id_prefix}key-id").as_bytes()).is_err()
    {
        e.push(
            "identity_headers.prefix",
            format!("`{id_prefix}` is not a usable header-name prefix"),
        );
    }
    if raw.identity_headers.sign_secret.is_some() {
        e.push(
            "identity_headers.sign_secret",
            "signed identity headers are not supported by this version",
        );
    }

    let mut roles = BTreeMap::new();
    for (name, perms) in raw.roles {
        if !is_name(&name) {
            e.push(format!("roles.{name}"), "role names are [A-Za-z0-9-_.:]+");
        }
        if perms.is_empty() {
            e.push(
                format!("roles.{name}"),
                "a role grants at least one permission",
            );
        }
        for p in &perms {
            if !is_name(p) {
                e.push(
                    format!("roles.{name}"),
                    format!("`{p}` is not a permission name ([A-Za-z0-9-_.:]+; permissions match exactly, no wildcards)"),
                );
            }
        }
        roles.insert(name, perms.into_iter().collect());
    }

    check_token_limits(&mut e, &tokens, &roles);

    let mut upstreams = Vec::new();
    let mut upstream_index = BTreeMap::new();
    for (name, u) in raw.upstreams {
        let field = format!("upstreams.{name}");
        if !is_label_value(&name) {
            e.push(
                &field,
                "an upstream name is 1-256 characters without `\"`, `\\` or control characters",
            );
        }
        if u.targets.is_empty() {
            e.push(format!("{field}.targets"), "needs at least one target");
        }
        let mut targets = Vec::new();
        for (i, t) in u.targets.iter().enumerate() {
            match t.parse::<http::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.authority().is_some_and(|a| !a.as_str().contains('@'))
                        && matches!(uri.path(), "" | "/")
                        && uri.query().is_none()
                        && (uri.scheme_str() != Some("https") || tls_name_ok(&uri)) =>
                {
                    targets.push(uri)
                }
                _ => e.push(
                    format!("{field}.targets[{i}]"),
                    format!(
                        "`{t}` must be http://host:port or https://host:port, with no path \
                         and no user:password@ (an https host must be a DNS name or an IP)"
                    ),
                ),
            }
        }
        let up = UpstreamConfig {
            name: name.clone(),
            connect_timeout: e.bounded(
                &format!("{field}.connect_timeout"),
                u.connect_timeout.as_deref(),
                DEFAULT_CONNECT_TIMEOUT,
                Duration::from_secs(3600),
            ),
            timeout: e.bounded(
                &format!("{field}.timeout"),
                u.timeout.as_deref(),
                DEFAULT_UPSTREAM_TIMEOUT,
                Duration::from_secs(86_400),
            ),
            idle_timeout: e.bounded(
                &format!("{field}.idle_timeout"),
                u.idle_timeout.as_deref(),
                DEFAULT_IDLE_TIMEOUT,
                Duration::from_secs(86_400),
            ),
            ca: u.ca.as_deref().and_then(|path| {
                let field = format!("{field}.ca");
                if !targets.iter().any(|t| t.scheme_str() == Some("https")) {
                    e.push(&field, "is only used by https targets, and there is none");
                }
                read_ca(path).map_err(|why| e.push(&field, why)).ok()
            }),
            targets,
        };
        upstream_index.insert(name, upstreams.len());
        upstreams.push(up);
    }

    let mut routes = Vec::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        let field = format!("routes[{i}]");
        let path = match crate::path::normalize_path(&r.path) {
            Ok(p) if r.path.starts_with('/') => {
                let p = if p.len() > 1 {
                    p.trim_end_matches('/').to_owned()
                } else {
                    p.into_owned()
                };
                if p != r.path.trim_end_matches('/') && !(p == "/" && r.path == "/") {
                    e.push(
                        format!("{field}.path"),
                        format!("`{}` is not normalized; write `{p}`", r.path),
                    );
                }
                p
            }
            _ => {
                e.push(
                    format!("{field}.path"),
                    format!("`{}` must be an absolute, normalized path", r.path),
                );
                String::new()
            }
        };
        let upstream = match upstream_index.get(&r.upstream) {
            Some(&ix) => ix,
            None => {
                e.push(
                    format!("{field}.upstream"),
                    format!("no upstream named `{}`", r.upstream),
                );
                0
            }
        };
        let no_methods = r.methods.as_ref().is_some_and(Vec::is_empty);
        let methods = r.methods.map(|ms| {
            ms.iter()
                .filter_map(
                    |m| match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                        Ok(m) => Some(m),
                        Err(_) => {
                            e.push(
                                format!("{field}.methods"),
                                format!("`{m}` is not an HTTP method"),
                            );
                            None
                        }
                    },
                )
                .collect::<Vec<_>>()
        });
        let auth = match r.auth.as_deref().unwrap_or("key") {
            "key" => true,
            "none" => false,
            other => {
                e.push(
                    format!("{field}.auth"),
                    format!("`{other}` is not `key` or `none`"),
                );
                true
            }
        };
        let workspace = match r.workspace {
            None => None,
            Some(RawWorkspace {
                header: Some(h),
                path_segment: None,
            }) => e
                .header_name(&format!("{field}.workspace.header"), &h)
                .map(WorkspaceRule::Header),
            Some(RawWorkspace {
                header: None,
                path_segment: Some(n),
            }) if n >= 1 => Some(WorkspaceRule::PathSegment(n as usize)),
            Some(_) => {
                e.push(
                    format!("{field}.workspace"),
                    "needs exactly one of `header` or `path_segment` (1-based)",
                );
                None
            }
        };
        if !auth && (!r.permissions.is_empty() || workspace.is_some()) {
            e.push(
                field.clone(),
                "an `auth: none` route cannot require permissions or a workspace",
            );
        }
        // A route whose permission no key can hold, whose host can never equal a request's
        // (the request's port is not compared), or that allows no method would refuse or
        // miss every request: refused here instead.
        if let Some(p) = r.permissions.iter().find(|p| !is_name(p)) {
            e.push(
                format!("{field}.permissions"),
                format!("`{p}` is not a permission name ([A-Za-z0-9-_.:]+)"),
            );
        }
        if let Some(h) = &r.host {
            if h.contains(':') && h.parse::<std::net::Ipv6Addr>().is_err() {
                e.push(
                    format!("{field}.host"),
                    format!("`{h}`: a route's host is a name or an IP, without port or brackets (the request's port is not compared)"),
                );
            }
        }
        if no_methods {
            e.push(
                format!("{field}.methods"),
                "lists no method; omit `methods` to allow every method",
            );
        }
        let mut permissions = r.permissions;
        permissions.sort();
        permissions.dedup();
        // A name given is checked; without one the path names the route (a normalized
        // path has no backslash or control character, but may hold a `"`).
        match r.name.as_deref() {
            Some(n) if !is_label_value(n) => e.push(
                format!("{field}.name"),
                "a route name is 1-256 characters without `\"`, `\\` or control characters",
            ),
            None if breaks_label(&path) => e.push(
                format!("{field}.name"),
                "the path names the route in metrics and holds a `\"`: give the route a name",
            ),
            _ => {}
        }
        let name = r.name.unwrap_or_else(|| path.clone());
        routes.push(RouteConfig {
            name,
            path,
            host: r.host.map(|h| h.to_ascii_lowercase()),
            methods,
            upstream,
            permissions,
            workspace,
            auth,
        });
    }

    let server = ServerConfig {
        workers: raw.server.workers,
        header_read_timeout: e.bounded(
            "server.header_read_timeout",
            raw.server.header_read_timeout.as_deref(),
            DEFAULT_HEADER_READ_TIMEOUT,
            Duration::from_secs(3600),
        ),
        max_header_bytes: raw
            .server
            .max_header_bytes
            .unwrap_or(DEFAULT_MAX_HEADER_BYTES),
        drain_timeout: e.duration(
            "server.drain_timeout",
            raw.server.drain_timeout.as_deref(),
            DEFAULT_DRAIN_TIMEOUT,
        ),
    };
    if server.workers == Some(0) {
        e.push("server.workers", "must be at least 1");
    }
    if server.max_header_bytes < 8192 {
        e.push("server.max_header_bytes", "must be at least 8192");
    }

    let log = LogConfig {
        format: match raw.log.format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                e.push("log.format", format!("`{other}` is not `text` or `json`"));
                LogFormat::Text
            }
        },
        level: raw.log.level.unwrap_or_else(|| "info".into()),
    };

    if !e.0.is_empty() {
        return Err(ConfigError::Invalid(e.0));
    }
    Ok(Config {
        listen,
        tls,
        admin: AdminConfig {
            listen: admin_listen,
            tokens,
        },
        store,
        cache,
        keys,
        identity: IdentityConfig { prefix: id_prefix },
        roles,
        upstreams,
        routes,
        server,
        log,
    })
}

/// A token's limits name real things: a workspace limit says whose workspaces (an org),
/// a role ceiling names configured roles, and every name has the shape of one.
fn check_token_limits(
    e: &mut Errors,
    tokens: &[AdminToken],
    roles: &BTreeMap<String, BTreeSet<String>>,
) {
    for (i, t) in tokens.iter().enumerate() {
        let field = format!("admin.tokens[{i}]");
        if t.workspaces.is_some() && t.orgs.is_none() {
            e.push(
                format!("{field}.workspaces"),
                "a workspace limit needs `orgs: [..]` naming the org the workspaces belong to; alone it would match that workspace name in every org",
            );
        }
        for (list, what) in [(&t.orgs, "orgs"), (&t.workspaces, "workspaces")] {
            for name in list.iter().flatten() {
                if !is_ident(name) {
                    e.push(
                        format!("{field}.{what}"),
                        format!("`{name}` must be 1-128 characters of [A-Za-z0-9-_.:@]"),
                    );
                }
            }
        }
        for r in t.roles.iter().flatten() {
            if !roles.contains_key(r) {
                e.push(
                    format!("{field}.roles"),
                    format!("`{r}` is not a role of `roles:`"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// The CA certificates of an upstream's `ca` file: PEM, at least one certificate, each
/// one rustls accepts as a root.
fn read_ca(path: &str) -> Result<Arc<RootCertStore>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{path}` is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("`{path}` holds no certificate"));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("`{path}`: a certificate is not usable as a CA: {e}"))?;
    }
    Ok(Arc::new(roots))
}

/// Whether an https target's host can name the server for TLS (a DNS name or an IP).
fn tls_name_ok(uri: &http::Uri) -> bool {
    tls_server_name(uri.host().unwrap_or("")).is_some()
}

/// The TLS server name of a URI host (a DNS name, or an IP, bracketed for IPv6): what
/// validation checks and what the pool connects with.
pub fn tls_server_name(host: &str) -> Option<ServerName<'static>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned()).ok()
}
