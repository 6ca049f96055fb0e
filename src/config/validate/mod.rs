//! The validation pass: raw sections in, typed values out, one file per section. Every
//! error is gathered (none returns early) and names its field, so ops fix a file in one go.
//!
//! The sections run in the order `RawConfig` declares them, which is the order errors are
//! reported in. Two checks need another section: the admin tokens' role ceilings are
//! checked once the roles are known, and routes look their upstream up by name.

mod admin;
mod cache;
mod identity;
mod keys;
mod limits;
mod roles;
mod routes;
mod server;
mod store;
mod upstreams;

use super::raw::RawConfig;
use super::{format_duration, parse_duration, Config, ConfigError};
use http::header::HeaderName;
use std::net::SocketAddr;
use std::time::Duration;

pub(super) fn validate(
    raw: RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
    unknown: &[String],
) -> Result<Config, ConfigError> {
    let mut e = Errors(Vec::new());
    for path in unknown {
        let name = path.rsplit('.').next().unwrap_or(path);
        e.push(path, format!("unknown field `{name}`"));
    }
    let listen = server::listen(raw.listen.as_deref(), &mut e);
    let tls = server::tls(raw.tls);
    let admin = admin::admin(raw.admin, &mut e);
    let store = store::store(raw.store, &mut e);
    let cache = cache::cache(raw.cache, &mut e);
    let keys = keys::keys(raw.keys, env, &mut e);
    let identity = identity::identity(raw.identity_headers, &mut e);
    let roles = roles::roles(raw.roles, &mut e);
    admin::check_token_limits(&mut e, &admin.tokens, &roles);
    let (upstreams, upstream_index) = upstreams::upstreams(raw.upstreams, &mut e);
    let routes = routes::routes(raw.routes, &upstream_index, &upstreams, &mut e);
    let limits = limits::limits(raw.limits, &mut e);
    routes::check_grantable(&routes, &roles, &mut e);
    let server = server::server(raw.server, &mut e);
    let log = server::log(raw.log, &mut e);

    if !e.0.is_empty() {
        return Err(ConfigError::Invalid(e.0));
    }
    Ok(Config {
        listen,
        tls,
        admin,
        store,
        cache,
        keys,
        identity,
        roles,
        upstreams,
        routes,
        limits,
        server,
        log,
    })
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

/// Route and upstream names are label values in `/metrics`, written as they are: no `"`,
/// `\\`, line breaks or other control characters, which would break the exposition.
fn breaks_label(s: &str) -> bool {
    s.chars().any(|c| c.is_control() || c == '"' || c == '\\')
}

fn is_label_value(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && !breaks_label(s)
}
