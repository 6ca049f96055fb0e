//! Forward-auth (SPEC §8): a `verify: true` route forwards nothing. It judges the request
//! that a proxy in front (nginx `auth_request`, Traefik ForwardAuth, Envoy's HTTP
//! ext_authz) is about to send on, through the stages a request to keygate goes through:
//! the original request routed (never to a verify route), then authenticate, authorize and
//! limit as for the route it matched. The answer is the verdict: 200 with an empty body
//! and the identity headers on the answer itself, or the refusal a request to that route
//! would get (status, JSON body, `WWW-Authenticate`).
//!
//! The check names the original request in one of three ways: `X-Forwarded-Method` and
//! `X-Forwarded-Uri` (Traefik), `X-Original-Method` and `X-Original-URI` (nginx), or,
//! for Envoy, the check itself: its own method, and its path below the verify route's
//! (Envoy's `path_prefix`). Proxies pass the client's headers on with the check, so a
//! client can add a way the proxy does not use: every way present must name the same
//! request, or the check is refused (400 `bad_verify_request`) rather than read the
//! client's way. The host to route by is `X-Forwarded-Host`, else the check's own.
//!
//! The credential, a workspace header and every other header are read from the check,
//! which carries the original request's headers; a workspace path segment and a query
//! parameter key from the original URI.

use super::super::{Body, Gateway, RequestCtx, Routing};
use super::route::{route_original, Routed};
use super::{authorize, credential, limit};
use crate::config::RouteConfig;
use crate::error::{GatewayError, VerifyRequestError};
use crate::proxy::headers::{
    self, X_FORWARDED_HOST, X_FORWARDED_METHOD, X_FORWARDED_URI, X_ORIGINAL_METHOD, X_ORIGINAL_URI,
};
use crate::store::coarse_now_ms;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, Response, Uri};
use http_body_util::{Either, Full};
use std::time::Instant;

/// Judges the request that `parts` (a request routed to the verify route `check`) names.
pub async fn verify(
    gw: &Gateway,
    routing: &Routing,
    parts: &Parts,
    check: &Routed<'_, '_>,
    ctx: &mut RequestCtx,
) -> Result<Response<Body>, GatewayError> {
    let Original { method, uri, host } = original(parts, check)?;
    let host = host.or_else(|| check.host.clone());
    let routed = route_original(routing, &uri, host, &method)?;

    // As `handle_inner` runs them for a request to the route, timed as one step.
    let principal = if routed.route.auth {
        let auth_start = Instant::now();
        let key = match credential(&gw.auth, &parts.headers, uri.query()) {
            Ok(credential) => gw.auth.authenticate(&credential, coarse_now_ms()).await,
            Err(e) => Err(e),
        };
        let verdict = key.and_then(|key| {
            ctx.key_id = Some(key.identity.key_id.clone());
            authorize(&gw.auth, key, routed.route, &parts.headers, &routed.path)
        });
        gw.metrics.auth_duration.observe(auth_start.elapsed());
        Some(verdict?)
    } else {
        None
    };

    // Where the forward path limits: a check that passes is a request the proxy sends on,
    // so it counts against the key's limits and quotas as one (and its answer carries the
    // same `RateLimit-*` and `X-Quota-Remaining` headers).
    if let Some(p) = &principal {
        let now = coarse_now_ms();
        let default = routing.default_rate_limit;
        if let Some(pending) =
            limit::check(&gw.limiter, p, routed.route, default, now, &mut ctx.limits)?
        {
            limit::finish(&gw.limiter, p, pending, now, &mut ctx.limits).await?;
        }
    }

    let mut answer = Response::new(Either::Right(Full::new(Bytes::new())));
    if let Some(principal) = &principal {
        headers::add_identity(answer.headers_mut(), &gw.identity, principal);
    }
    Ok(answer)
}

/// The request a check names.
struct Original {
    method: Method,
    uri: Uri,
    /// `X-Forwarded-Host`, when sent.
    host: Option<HeaderValue>,
}

/// One way of naming the original request: its method and request target as sent, and
/// where each came from (for the error).
struct Named<'a> {
    method: &'a [u8],
    uri: &'a [u8],
    from: (&'static str, &'static str),
}

fn original(parts: &Parts, check: &Routed<'_, '_>) -> Result<Original, VerifyRequestError> {
    let h = &parts.headers;
    let traefik = pair(
        h,
        (&X_FORWARDED_METHOD, "X-Forwarded-Method"),
        (&X_FORWARDED_URI, "X-Forwarded-Uri"),
    )?;
    let nginx = pair(
        h,
        (&X_ORIGINAL_METHOD, "X-Original-Method"),
        (&X_ORIGINAL_URI, "X-Original-URI"),
    )?;
    let envoy = below(parts, check.route).map(|target| Named {
        method: parts.method.as_str().as_bytes(),
        uri: target.as_bytes(),
        from: (
            "the check's own method",
            "the check's path below the verify route",
        ),
    });
    let mut named = [traefik, nginx, envoy].into_iter().flatten();
    let first = named.next().ok_or(VerifyRequestError::Missing)?;
    for other in named {
        if other.method != first.method {
            return Err(VerifyRequestError::Conflicting(first.from.0, other.from.0));
        }
        if other.uri != first.uri {
            return Err(VerifyRequestError::Conflicting(first.from.1, other.from.1));
        }
    }
    let method = Method::from_bytes(first.method)
        .map_err(|_| VerifyRequestError::BadMethod(first.from.0))?;
    let uri = Uri::try_from(first.uri).map_err(|_| VerifyRequestError::BadUri(first.from.1))?;
    let host = one(h, &X_FORWARDED_HOST, "X-Forwarded-Host")?.cloned();
    Ok(Original { method, uri, host })
}

/// A method header and a URI header that name the request together: both or neither.
fn pair<'h>(
    h: &'h HeaderMap,
    method: (&HeaderName, &'static str),
    uri: (&HeaderName, &'static str),
) -> Result<Option<Named<'h>>, VerifyRequestError> {
    match (one(h, method.0, method.1)?, one(h, uri.0, uri.1)?) {
        (Some(m), Some(u)) => Ok(Some(Named {
            method: m.as_bytes(),
            uri: u.as_bytes(),
            from: (method.1, uri.1),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(VerifyRequestError::Incomplete {
            present: method.1,
            missing: uri.1,
        }),
        (None, Some(_)) => Err(VerifyRequestError::Incomplete {
            present: uri.1,
            missing: method.1,
        }),
    }
}

/// The value of header `name`; sent twice, it is refused (never guess which counts).
fn one<'h>(
    h: &'h HeaderMap,
    name: &HeaderName,
    shown: &'static str,
) -> Result<Option<&'h HeaderValue>, VerifyRequestError> {
    let mut all = h.get_all(name).iter();
    match (all.next(), all.next()) {
        (_, Some(_)) => Err(VerifyRequestError::Repeated(shown)),
        (v, None) => Ok(v),
    }
}

/// Envoy's HTTP ext_authz sends the check with the request's own method, to `path_prefix`
/// followed by the request's path and query: below a verify route at `/_verify`, a check
/// of `/_verify/v1/x?a=1` names `/v1/x?a=1`. A verify route at `/` has nothing below it
/// that could be told apart from the check itself.
fn below<'p>(parts: &'p Parts, route: &RouteConfig) -> Option<&'p str> {
    if route.path == "/" {
        return None;
    }
    let target = parts.uri.path_and_query()?.as_str();
    let rest = target.strip_prefix(route.path.as_str())?;
    rest.starts_with('/').then_some(rest)
}
