//! Stage 5, rewrite (SPEC §2 step 3): the request as the upstream gets it. Hop-by-hop
//! headers go first, so that a client's `Connection: x-keygate-org` cannot remove what
//! keygate adds below; spoofed identity goes on every route, `auth: none` included; the
//! credential goes (every copy, from every source) unless `keys.forward_credential`; then
//! identity, `X-Forwarded-*` and `X-Request-Id` are set. The path is the normalized one.

use super::super::{Gateway, RequestCtx};
use super::route::Routed;
use crate::auth::{bearer, param_name_is, Principal};
use crate::error::GatewayError;
use crate::proxy::{headers, upgrade};
use http::header::AUTHORIZATION;
use http::uri::PathAndQuery;
use http::{Extensions, HeaderMap, Uri};
use std::borrow::Cow;
use std::net::SocketAddr;

/// What the forward stage needs besides the request: its path and query, and the
/// client's side of a WebSocket (or other) upgrade when one was asked for.
pub struct Rewritten {
    pub path_and_query: PathAndQuery,
    pub client_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

#[allow(clippy::too_many_arguments)] // the request's parts, apart: see `route`
pub fn rewrite(
    gw: &Gateway,
    hdrs: &mut HeaderMap,
    extensions: &mut Extensions,
    uri: &Uri,
    routed: Routed<'_, '_>,
    principal: Option<&Principal>,
    ctx: &RequestCtx,
    peer: SocketAddr,
) -> Result<Rewritten, GatewayError> {
    let seen = ctx.seen;
    let upgrade = if seen.connection {
        upgrade::requested(hdrs)
    } else {
        None
    };
    if seen.hop_by_hop {
        headers::remove_hop_by_hop(hdrs);
    }
    let client_upgrade = match &upgrade {
        Some(protocol) => {
            upgrade::restore(hdrs, protocol.clone());
            extensions.remove::<hyper::upgrade::OnUpgrade>()
        }
        None => None,
    };
    if seen.identity {
        headers::strip_identity(hdrs, &gw.identity);
    }
    let mut query: Option<Cow<'_, str>> = uri.query().map(Cow::Borrowed);
    if let Some(principal) = principal {
        if !gw.forward_credential {
            remove_credential(hdrs, &gw.auth.sources, &seen);
            if let (Some(param), Some(q)) = (&gw.auth.sources.query_param, uri.query()) {
                query = strip_query_param(q, param);
            }
        }
        headers::add_identity(hdrs, &gw.identity, principal);
    }
    headers::set_forwarded(hdrs, &seen, peer.ip(), gw.https, routed.host);
    // Always ours: the client's id when it was sane, else the one the client gets back.
    hdrs.insert(headers::X_REQUEST_ID, ctx.request_id.clone());

    // `strip_prefix`, `rewrite` and the upstream's own path, on the normalized path; what
    // they make is normalized by construction (normalized pieces joined at a `/`), and
    // checked again all the same.
    let path = match &routed.route.path_rewrite {
        None => routed.path,
        Some(rule) => {
            let p = rule.apply(&routed.path);
            match crate::path::normalize_path(&p) {
                Ok(n) if n == p.as_str() => Cow::Owned(p),
                _ => return Err(GatewayError::BadPath(crate::path::PathError::BadEncoding)),
            }
        }
    };
    let path_and_query = match (&path, &query) {
        // Unchanged path and query: reuse the original bytes, no allocation.
        (Cow::Borrowed(_), Some(Cow::Borrowed(_)) | None) => uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        _ => {
            let s = match &query {
                Some(q) if !q.is_empty() => format!("{path}?{q}"),
                _ => path.to_string(),
            };
            PathAndQuery::try_from(s)
                .map_err(|_| GatewayError::BadPath(crate::path::PathError::BadEncoding))?
        }
    };
    Ok(Rewritten {
        path_and_query,
        client_upgrade,
    })
}

/// Removes every copy of the credential from headers (Bearer Authorization and the
/// configured key header). Another Authorization scheme is not ours and stays.
fn remove_credential(
    h: &mut http::HeaderMap,
    sources: &crate::auth::CredentialSources,
    seen: &headers::Seen,
) {
    // One lookup for the check and the removal (of every copy).
    if let http::header::Entry::Occupied(e) = h.entry(AUTHORIZATION) {
        if bearer(e.get()).is_some() {
            e.remove_entry_mult();
        }
    }
    if let (Some(name), true) = (&sources.header, seen.key_header) {
        // Under its own name and any `_` spelling of it (`auth::same_header_name`).
        let copies: Vec<http::HeaderName> = h
            .keys()
            .filter(|n| crate::auth::same_header_name(n, name))
            .cloned()
            .collect();
        for n in copies {
            h.remove(n);
        }
    }
}

/// The query without any `param=…` pair.
fn strip_query_param<'a>(q: &'a str, param: &str) -> Option<Cow<'a, str>> {
    let is_param = |p: &&str| param_name_is(p.split_once('=').map_or(p, |(k, _)| k), param);
    let has = q.split('&').any(|p| is_param(&p));
    if !has {
        return Some(Cow::Borrowed(q));
    }
    let kept: Vec<&str> = q.split('&').filter(|p| !is_param(p)).collect();
    Some(Cow::Owned(kept.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_param_removed() {
        assert_eq!(
            strip_query_param("a=1&api_key=x&b=2", "api_key").as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(
            strip_query_param("api_key=x", "api_key").as_deref(),
            Some("")
        );
        assert_eq!(strip_query_param("a=1", "api_key").as_deref(), Some("a=1"));
        assert_eq!(
            strip_query_param("a=1&api%5Fkey=x", "api_key").as_deref(),
            Some("a=1")
        );
    }
}
