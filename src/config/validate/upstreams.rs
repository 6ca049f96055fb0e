//! `upstreams`: name -> targets, timeouts and the CA https targets are checked against.

use super::{is_label_value, Errors};
use crate::config::raw::*;
use crate::config::{tls_server_name, UpstreamConfig};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls::RootCertStore;

/// The upstreams, and the index of each by name (what routes refer to).
pub(super) fn upstreams(
    raw: BTreeMap<String, RawUpstream>,
    e: &mut Errors,
) -> (Vec<UpstreamConfig>, BTreeMap<String, usize>) {
    let mut upstreams = Vec::new();
    let mut upstream_index = BTreeMap::new();
    for (name, u) in raw {
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
                        && target_path(&uri).is_some()
                        && uri.query().is_none()
                        && (uri.scheme_str() != Some("https") || tls_name_ok(&uri)) =>
                {
                    targets.push(uri)
                }
                _ => e.push(
                    format!("{field}.targets[{i}]"),
                    format!(
                        "`{t}` must be http://host:port or https://host:port, optionally with a \
                         normalized path (`/api`), no query and no user:password@ (an https \
                         host must be a DNS name or an IP)"
                    ),
                ),
            }
        }
        // One path for every target: the path a route forwards to cannot depend on which
        // target round-robin picks.
        let paths: Vec<Option<String>> = targets.iter().map(|t| target_path(t).flatten()).collect();
        if paths.windows(2).any(|w| w[0] != w[1]) {
            e.push(
                format!("{field}.targets"),
                "every target of an upstream must have the same path (or none)",
            );
        }
        let path = paths.into_iter().next().flatten();
        let up = UpstreamConfig {
            name: name.clone(),
            path,
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
    (upstreams, upstream_index)
}

/// A target's path: `Some(None)` for none (or `/`), `Some(Some("/api"))` for a normalized
/// one (its trailing slash dropped), `None` for one that is not normalized.
fn target_path(uri: &http::Uri) -> Option<Option<String>> {
    let p = uri.path();
    if matches!(p, "" | "/") {
        return Some(None);
    }
    let normalized = crate::path::normalize_path(p).ok()?;
    let trimmed = p.trim_end_matches('/');
    (normalized.trim_end_matches('/') == trimmed).then(|| Some(trimmed.to_owned()))
}

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
