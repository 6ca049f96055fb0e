//! The YAML as written: a serde mirror of SPEC §3 that refuses unknown fields, so a
//! mistyped auth rule stops start-up instead of silently opening a route. Values stay
//! loosely typed here (durations and addresses are strings); `validate` turns them into
//! typed values and names the field of every error.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
pub const DEFAULT_STORE_PATH: &str = "data/keygate.db";
pub const DEFAULT_CACHE_MAX_ENTRIES: u64 = 100_000;
pub const DEFAULT_CACHE_TTL: &str = "30s";
pub const DEFAULT_NEGATIVE_TTL: &str = "5s";
pub const DEFAULT_STALE_IF_ERROR: &str = "5m";
pub const DEFAULT_KEY_PREFIX: &str = "kg";
pub const DEFAULT_IDENTITY_PREFIX: &str = "x-keygate-";
pub const DEFAULT_CONNECT_TIMEOUT: &str = "2s";
pub const DEFAULT_UPSTREAM_TIMEOUT: &str = "30s";
/// Between two pieces of a response body: long enough for streams that send a keep-alive
/// every 15-30 s (SSE), as Kong's `read_timeout` (60 s).
pub const DEFAULT_IDLE_TIMEOUT: &str = "60s";
pub const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
pub const DEFAULT_DRAIN_TIMEOUT: &str = "30s";
pub const DEFAULT_LAST_USED_FLUSH: &str = "30s";
pub const DEFAULT_CHANGE_POLL: &str = "250ms";
pub const DEFAULT_QUOTA_BATCH: u64 = 100;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    /// Proxy listener, `host:port`.
    pub listen: Option<String>,
    /// Serve the proxy over TLS (rustls) with this PEM certificate chain and key.
    pub tls: Option<RawTls>,
    /// Admin listener and tokens (admin API, health, metrics).
    #[serde(default)]
    pub admin: RawAdmin,
    /// Where keys live.
    #[serde(default)]
    pub store: RawStore,
    /// The in-process key cache.
    #[serde(default)]
    pub cache: RawCache,
    /// Key format and where credentials are read from.
    #[serde(default)]
    pub keys: RawKeys,
    /// Identity headers sent to upstreams.
    #[serde(default)]
    pub identity_headers: RawIdentity,
    /// Role name -> permissions it grants.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
    /// Upstream name -> targets.
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// Routes, matched by host, method and longest path prefix.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Rate limits and quotas: the default limit and the quota lease size.
    #[serde(default)]
    pub limits: RawLimits,
    /// Listener tuning: workers, timeouts, limits.
    #[serde(default)]
    pub server: RawServer,
    /// Logging.
    #[serde(default)]
    pub log: RawLog,
}

#[derive(Debug, Deserialize)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    pub listen: Option<String>,
    #[serde(default)]
    pub tokens: Vec<RawAdminToken>,
}

#[derive(Debug, Deserialize)]
pub struct RawAdminToken {
    /// Shown as the actor in audit events.
    pub name: String,
    /// Hex sha256 of the token; the token itself is never in config.
    pub sha256: String,
    /// Limits the token to keys of these orgs.
    pub orgs: Option<Vec<String>>,
    /// Limits the token to workspace keys of these workspaces (of its `orgs`, which must
    /// be given: a workspace name alone would match that workspace in every org).
    pub workspaces: Option<Vec<String>>,
    /// The roles the token may grant (its ceiling). A token with `workspaces` grants only
    /// the roles named here (none when absent).
    pub roles: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawStore {
    /// `embedded` (default) or `redis`.
    pub kind: Option<String>,
    /// SQLite file of the embedded store.
    pub path: Option<String>,
    /// Redis URL (`kind: redis`).
    pub url: Option<String>,
    /// Redis Cluster seed URLs (`kind: redis`).
    pub cluster: Option<Vec<String>>,
    /// How often the gateway looks for changes written by other processes.
    pub poll_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCache {
    #[serde(default, deserialize_with = "scalar_or_text")]
    pub max_entries: Option<u64>,
    pub ttl: Option<String>,
    pub negative_ttl: Option<String>,
    pub stale_if_error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawKeys {
    /// Key prefix, `[A-Za-z0-9]+`.
    pub prefix: Option<String>,
    /// A header that carries the bare key, besides `Authorization: Bearer`.
    pub header: Option<String>,
    /// A query parameter that carries the key.
    pub query_param: Option<String>,
    /// Pass the credential on to upstreams (default: removed).
    #[serde(default, deserialize_with = "scalar_or_text")]
    pub forward_credential: Option<bool>,
    /// Also keep each new key's secret, sealed (AES-256-GCM) under the vault key from
    /// `KEYGATE_VAULT_KEY`, so admins can be shown it again (`keys reveal`).
    #[serde(default, deserialize_with = "scalar_or_text")]
    pub recoverable: Option<bool>,
    /// How often `last_used_at` is written, in one batch.
    pub last_used_flush: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawIdentity {
    pub prefix: Option<String>,
    pub sign_secret: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawUpstream {
    /// `http://host:port` or `https://host:port`, balanced round-robin.
    pub targets: Vec<String>,
    pub connect_timeout: Option<String>,
    /// Time allowed for the upstream's response headers.
    pub timeout: Option<String>,
    /// Longest wait for the next piece of a response body, once it has started.
    pub idle_timeout: Option<String>,
    /// PEM file of the CA certificate(s) that https targets are checked against, instead
    /// of the public (webpki) roots: for upstreams with certificates from a private CA.
    pub ca: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawRoute {
    /// Label of the route in metrics and logs (default: its path).
    pub name: Option<String>,
    /// Path prefix, matched on whole segments of the normalized path.
    pub path: String,
    /// Exact host (without port), any letter case.
    pub host: Option<String>,
    pub methods: Option<Vec<String>>,
    /// An `upstreams` name; required, except on a verify route, which takes none.
    pub upstream: Option<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    pub workspace: Option<RawWorkspace>,
    /// `key` (default) or `none`.
    pub auth: Option<String>,
    /// The rate limit of keys on this route that have none of their own (`100/s`).
    pub rate_limit: Option<String>,
    /// Remove the matched `path` prefix before forwarding (Kong's `strip_path`,
    /// Traefik's StripPrefix).
    #[serde(default, deserialize_with = "scalar_or_text")]
    pub strip_prefix: Option<bool>,
    /// Replace the matched `path` prefix with this one before forwarding.
    pub rewrite: Option<String>,
    /// A forward-auth endpoint (SPEC §8): forwards nothing, but judges the request named
    /// by `X-Forwarded-Method`/`-Uri` or `X-Original-Method`/`-URI` as the route it matches
    /// would, and answers 200 with the identity headers or the refusal. It takes no
    /// `upstream`, `permissions`, `workspace` or `auth`: the matched route's rules apply.
    #[serde(default, deserialize_with = "scalar_or_text")]
    pub verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct RawWorkspace {
    pub header: Option<String>,
    /// 1-based segment of the normalized path.
    pub path_segment: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLimits {
    /// The rate limit of keys with none of their own on routes with none (`100/s`).
    pub default_rate_limit: Option<String>,
    /// Quota units a gateway leases from the store at a time (default 100): on Redis the
    /// fleet may admit at most this many per gateway past a quota.
    #[serde(default, deserialize_with = "scalar_or_text")]
    pub quota_batch: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    /// Runtime worker threads (default: all cores).
    #[serde(default, deserialize_with = "scalar_or_text")]
    pub workers: Option<usize>,
    /// A client must send its whole request head within this time.
    pub header_read_timeout: Option<String>,
    /// Largest request head accepted; larger gets 431.
    #[serde(default, deserialize_with = "scalar_or_text")]
    pub max_header_bytes: Option<usize>,
    /// How long SIGTERM waits for in-flight requests.
    pub drain_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLog {
    /// `text` (default) or `json`.
    pub format: Option<String>,
    /// A tracing filter, e.g. `info` or `keygate=debug` (RUST_LOG wins).
    pub level: Option<String>,
}

/// A number or a boolean, written as one or as text: `${VAR}` substitution leaves what it
/// substitutes as a string (data, never YAML), so `workers: ${WORKERS}` arrives as `"4"`.
fn scalar_or_text<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned + std::str::FromStr,
    T::Err: std::fmt::Display,
{
    use serde::de::Error;
    match Option::<serde_yaml::Value>::deserialize(d)? {
        None => Ok(None),
        Some(serde_yaml::Value::String(text)) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| D::Error::custom(format!("`{text}`: {e}"))),
        Some(v) => T::deserialize(v).map(Some).map_err(D::Error::custom),
    }
}
