//! Stage 1, route (SPEC §3): the path normalized, then the route matched by host, method
//! and longest prefix. First, whatever the credential: a 400 `bad_path` or a 404 `no_route`
//! never depends on a key, and every later rule sees the path the upstream will act on.

use super::super::Routing;
use crate::config::RouteConfig;
use crate::error::GatewayError;
use crate::path::normalize_path;
use http::header::{HeaderValue, HOST};
use http::{HeaderMap, Method, Uri};
use std::borrow::Cow;

/// What routing found: the normalized path, the request's host as sent (for
/// X-Forwarded-Host), and the route with its index (for metrics).
pub struct Routed<'r, 'u> {
    pub path: Cow<'u, str>,
    pub host: Option<HeaderValue>,
    pub index: usize,
    pub route: &'r RouteConfig,
}

/// The request's parts come apart (not `&Parts`): the path borrows the URI while the
/// later stages rewrite the headers.
pub fn route<'r, 'u>(
    routing: &'r Routing,
    uri: &'u Uri,
    headers: &HeaderMap,
    method: &Method,
) -> Result<Routed<'r, 'u>, GatewayError> {
    let path = normalize_path(uri.path())?;
    let host = request_host(headers, uri)?;
    matched(routing, path, host, method, false)
}

/// As `route`, for the request a forward-auth check names (`verify.rs`): its URI, method
/// and host as the proxy in front reported them. Never matches a verify route.
pub fn route_original<'r, 'u>(
    routing: &'r Routing,
    uri: &'u Uri,
    host: Option<HeaderValue>,
    method: &Method,
) -> Result<Routed<'r, 'u>, GatewayError> {
    let path = normalize_path(uri.path())?;
    matched(routing, path, host, method, true)
}

/// The route for a normalized path (`targets_only`: never a verify route).
fn matched<'r, 'u>(
    routing: &'r Routing,
    path: Cow<'u, str>,
    host: Option<HeaderValue>,
    method: &Method,
    targets_only: bool,
) -> Result<Routed<'r, 'u>, GatewayError> {
    let name = host.as_ref().and_then(host_name);
    let found = if targets_only {
        routing.router.find_target(name, method, &path)
    } else {
        routing.router.find(name, method, &path)
    };
    let (index, route) = found.ok_or(GatewayError::NoRoute)?;
    Ok(Routed {
        path,
        host,
        index,
        route,
    })
}

/// The request's host as sent (for routing and X-Forwarded-Host). HTTP/2 carries it in
/// the URI, HTTP/1.1 in `Host`; two `Host` headers are refused.
fn request_host(
    headers: &http::HeaderMap,
    uri: &http::Uri,
) -> Result<Option<HeaderValue>, GatewayError> {
    let mut hosts = headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Err(GatewayError::BadHost),
        (Some(h), None) => Ok(Some(h.clone())),
        (None, _) => Ok(uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())),
    }
}

/// The host name of a Host value, without port (`[::1]:80` -> `::1`).
fn host_name(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    Some(match s.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => s.rsplit_once(':').map_or(s, |(h, _)| h),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            host_name(&h("api.example.com:8080")),
            Some("api.example.com")
        );
        assert_eq!(host_name(&h("api.example.com")), Some("api.example.com"));
        assert_eq!(host_name(&h("[::1]:8080")), Some("::1"));
    }
}
