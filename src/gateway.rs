//! The request handler: the stages of SPEC §2 in order.
//!
//! `handle` owns logging, metrics and turns every error into its answer; `handle_inner`
//! runs normalize -> route -> authenticate -> authorize -> rewrite headers -> forward
//! with `?`. Authentication reads the request as the client sent it; the rewrite then
//! removes hop-by-hop headers, spoofed identity and the credential before adding ours.

use crate::auth::{bearer, extract_credential, param_name_is, AuthError, Authenticator};
use crate::cache::{CacheSettings, KeyCache};
use crate::config::Config;
use crate::error::GatewayError;
use crate::identity::IdentityNames;
use crate::metrics::{Metrics, RouteCounters};
use crate::path::normalize_path;
use crate::proxy::pool::PooledBody;
use crate::proxy::Upstream;
use crate::proxy::{headers, upgrade};
use crate::route::Router;
use crate::store::{coarse_now_ms, KeyStore};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, HOST};
use http::uri::PathAndQuery;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// What the gateway answers with: the upstream's body streamed, or a small JSON refusal.
pub type Body = Either<PooledBody, Full<Bytes>>;

/// Per-request state, carried through the stages and into the log line.
struct RequestCtx {
    request_id: HeaderValue,
    /// Which headers of interest the client sent (read once, before any rewrite).
    seen: headers::Seen,
    route: Option<usize>,
    key_id: Option<HeaderValue>,
}

/// One request in the `requests_in_flight` gauge, from the first poll of its future until
/// the future ends or is dropped.
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a Metrics) -> Self {
        metrics.in_flight.inc();
        InFlight(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// What a reload (SIGHUP) swaps: routes and upstreams. Requests in flight keep the
/// table they started with; new ones see the new table.
struct Routing {
    router: Router,
    upstreams: Vec<Upstream>,
    /// Request counters, one set per route (same index), resolved once.
    counters: Vec<RouteCounters>,
    /// Requests that matched no route (404, 400 `bad_path`).
    unrouted: RouteCounters,
}

impl Routing {
    fn new(config: &Config) -> Self {
        Routing {
            router: Router::new(config),
            upstreams: config.upstreams.iter().map(Upstream::new).collect(),
            counters: config
                .routes
                .iter()
                .map(|r| RouteCounters::new(&r.name))
                .collect(),
            unrouted: RouteCounters::new(""),
        }
    }
}

/// Why a reload was refused (the running config stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("`{0}` cannot change on reload; restart keygate to change it")]
    NeedsRestart(&'static str),
}

pub struct Gateway {
    routing: ArcSwap<Routing>,
    auth: Authenticator,
    identity: IdentityNames,
    forward_credential: bool,
    https: bool,
    metrics: Arc<Metrics>,
}

impl Gateway {
    /// Builds the handler and its cache over `store`. Background tasks (change feed,
    /// `last_used_at` flush) are started by `start_background`.
    pub fn new(config: &Config, store: Arc<dyn KeyStore>, metrics: Arc<Metrics>) -> Self {
        let settings = CacheSettings {
            max_entries: config.cache.max_entries,
            ttl: config.cache.ttl,
            negative_ttl: config.cache.negative_ttl,
            stale_if_error: config.cache.stale_if_error,
        };
        let cache = Arc::new(KeyCache::new(store, settings, metrics.clone()));
        Gateway {
            routing: ArcSwap::from_pointee(Routing::new(config)),
            auth: Authenticator::new(config, cache),
            identity: IdentityNames::new(&config.identity.prefix),
            forward_credential: config.keys.forward_credential,
            https: config.tls.is_some(),
            metrics,
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn cache(&self) -> &Arc<KeyCache> {
        self.auth.cache()
    }

    /// Swaps routes and upstreams for those of `new` (roles are read by the CLI and the
    /// admin API from the config they load). What the running listener, store, cache or
    /// credential rules depend on cannot change without a restart: such a file is refused
    /// whole, so a reload never half-applies.
    pub fn reload(&self, old: &Config, new: &Config) -> Result<(), ReloadError> {
        let same = [
            ("listen", old.listen == new.listen),
            ("admin.listen", old.admin.listen == new.admin.listen),
            ("tls", old.tls == new.tls),
            ("store", old.store == new.store),
            ("cache", old.cache == new.cache),
            ("keys", old.keys == new.keys),
            (
                "identity_headers",
                old.identity.prefix == new.identity.prefix,
            ),
            ("server", old.server == new.server),
            ("log", old.log == new.log),
        ];
        if let Some((field, _)) = same.iter().find(|(_, same)| !same) {
            return Err(ReloadError::NeedsRestart(field));
        }
        self.routing.store(Arc::new(Routing::new(new)));
        Ok(())
    }

    /// Starts the change-feed follower and the batched `last_used_at` writer. Call
    /// before serving: the feed position is taken first.
    pub async fn start_background(&self, config: &Config) {
        let poll = match &config.store {
            crate::config::StoreConfig::Embedded { poll_interval, .. } => *poll_interval,
            crate::config::StoreConfig::Redis { .. } => std::time::Duration::from_millis(250),
        };
        let cursor = self.cache().change_cursor().await;
        tokio::spawn(self.cache().clone().follow_changes(cursor, poll));
        tokio::spawn(
            self.cache()
                .clone()
                .flush_last_used(config.keys.last_used_flush),
        );
    }

    /// Answers one request. It never fails (every failure is an answer): the `Result` is
    /// the shape hyper's service wants, so that this future is the service's own, with no
    /// async block around it. Not an async fn: the request would be stored in the future
    /// twice (argument and local), and the future is moved several times per request.
    pub fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static {
        let start = Instant::now();
        let seen = headers::Seen::of(
            req.headers(),
            &self.identity,
            self.auth.sources.header.as_ref(),
        );
        let mut ctx = RequestCtx {
            request_id: headers::request_id(req.headers(), &seen),
            seen,
            route: None,
            key_id: None,
        };
        let method = req.method().clone();
        let routing = self.routing.load_full();
        async move {
            // Counted out on drop too: hyper drops the future of a client that hangs up.
            let _in_flight = InFlight::enter(&self.metrics);
            let resp = match self.handle_inner(req, peer, &routing, &mut ctx).await {
                Ok(mut resp) => {
                    // A 101's Connection/Upgrade are the handshake itself: keep them.
                    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                        headers::remove_hop_by_hop(resp.headers_mut());
                    }
                    resp.headers_mut()
                        .insert(headers::X_REQUEST_ID, ctx.request_id.clone());
                    self.count(&routing, ctx.route, "ok");
                    resp.map(Either::Left)
                }
                Err(e) => {
                    let answer = e.answer();
                    self.count(&routing, ctx.route, answer.code);
                    match &e {
                        GatewayError::Proxy(p) => {
                            self.metrics.upstream_error(p.upstream());
                            tracing::warn!(request_id = ?ctx.request_id, error = %p, source = ?std::error::Error::source(p), "upstream failed")
                        }
                        GatewayError::BadBody(cause) => {
                            tracing::debug!(request_id = ?ctx.request_id, error = ?std::error::Error::source(cause), "request body failed")
                        }
                        GatewayError::Auth(AuthError::StoreUnavailable(s)) => {
                            tracing::warn!(request_id = ?ctx.request_id, error = %s, "key store unavailable")
                        }
                        _ => {}
                    }
                    tracing::debug!(request_id = ?ctx.request_id, code = answer.code, "refused");
                    e.into_response(&ctx.request_id).map(Either::Right)
                }
            };
            tracing::debug!(
                request_id = ?ctx.request_id,
                %method,
                route = ?ctx.route,
                key_id = ?ctx.key_id,
                status = resp.status().as_u16(),
                micros = start.elapsed().as_micros() as u64,
                "request"
            );
            self.metrics.request_duration.observe(start.elapsed());
            Ok(resp)
        }
    }

    fn count(&self, routing: &Routing, route: Option<usize>, code: &str) {
        let counters = route
            .and_then(|i| routing.counters.get(i))
            .unwrap_or(&routing.unrouted);
        counters.inc(&self.metrics, code);
    }

    /// Not an async fn, for the same reason as `handle`.
    fn handle_inner<'a>(
        &'a self,
        req: Request<Incoming>,
        peer: SocketAddr,
        routing: &'a Routing,
        ctx: &'a mut RequestCtx,
    ) -> impl Future<Output = Result<Response<PooledBody>, GatewayError>> + Send + 'a {
        // Parts, so the path can be borrowed from the URI while headers are rewritten.
        let (mut parts, body) = req.into_parts();
        async move {
            let uri = &parts.uri;

            // 1. Normalize before routing: rules must see the path the upstream will act on.
            let path = normalize_path(uri.path())?;
            let host_header = request_host(&parts.headers, uri)?;
            let (route_ix, route) = routing
                .router
                .find(
                    host_header.as_ref().and_then(host_name),
                    &parts.method,
                    &path,
                )
                .ok_or(GatewayError::NoRoute)?;
            ctx.route = Some(route_ix);

            // 2. Authenticate, then authorize (auth routes only), on the request as the
            //    client sent it. After routing, so that 404/400 never depend on the credential.
            let hdrs = &mut parts.headers;
            //    Credential -> key -> permissions and workspace, timed as one step. Written
            //    out here, not as an async fn of its own: each nesting level adds its
            //    arguments to the request's future, which is moved several times per request.
            let principal = if route.auth {
                let auth_start = Instant::now();
                let key = match extract_credential(hdrs, uri.query(), &self.auth.sources) {
                    Ok(credential) => self.auth.authenticate(&credential, coarse_now_ms()).await,
                    Err(e) => Err(e),
                };
                let verdict = key.and_then(|key| {
                    ctx.key_id = Some(key.identity.key_id.clone());
                    self.auth.authorize(key, route, hdrs, &path)
                });
                self.metrics.auth_duration.observe(auth_start.elapsed());
                Some(verdict?)
            } else {
                None
            };

            // 3. Rewrite for the upstream. Hop-by-hop headers go first, so that a client's
            //    `Connection: x-keygate-org` cannot remove what keygate adds below.
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
                    parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
                }
                None => None,
            };
            let hdrs = &mut parts.headers;
            // Spoofed identity goes on every route, `auth: none` included.
            if seen.identity {
                headers::strip_identity(hdrs, &self.identity);
            }
            let mut query: Option<Cow<'_, str>> = uri.query().map(Cow::Borrowed);
            if let Some(principal) = &principal {
                if !self.forward_credential {
                    remove_credential(hdrs, &self.auth.sources, &seen);
                    if let (Some(param), Some(q)) = (&self.auth.sources.query_param, uri.query()) {
                        query = strip_query_param(q, param);
                    }
                }
                headers::add_identity(hdrs, &self.identity, principal);
            }
            headers::set_forwarded(hdrs, &seen, peer.ip(), self.https, host_header);
            // Always ours: the client's id when it was sane, else the one the client gets back.
            hdrs.insert(headers::X_REQUEST_ID, ctx.request_id.clone());

            // 4. Forward.
            let pq = match (&path, &query) {
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
            let upstream = &routing.upstreams[route.upstream];
            // The body as it goes up, and when it last moved (src/proxy/upload.rs).
            let (body, upload) = crate::proxy::upload::Upload::new(body);
            let (target, req) = upstream.prepare(Request::from_parts(parts, body), pq)?;
            let send = target.send(req);
            // On an HTTP/1 connection, the limit shares the connection's timer; elsewhere it
            // is a timer of its own (src/server/timer.rs). With a body, it runs from the
            // body's last move: a long upload is not cut off (src/proxy/upload.rs). One
            // select over the send and the limit: the send's future is then stored once in
            // the request's, as its only await.
            let limit = async {
                let mut wait = upstream.timeout();
                loop {
                    match crate::server::request_deadline(wait) {
                        Some(limit) => limit.await,
                        None => tokio::time::sleep(wait).await,
                    }
                    match upload
                        .as_ref()
                        .and_then(|p| p.more_time(upstream.timeout()))
                    {
                        Some(more) => wait = more,
                        None => break,
                    }
                }
            };
            let sent = tokio::select! {
                biased;
                sent = send => Some(sent),
                () = limit => None,
            };
            let mut resp = sent.ok_or_else(|| upstream.timed_out())?.map_err(|e| {
                if e.is_request_body_error() {
                    GatewayError::BadBody(e)
                } else {
                    upstream.unavailable(e).into()
                }
            })?;
            if let (Some(client), http::StatusCode::SWITCHING_PROTOCOLS) =
                (client_upgrade, resp.status())
            {
                upgrade::splice(client, hyper::upgrade::on(&mut resp));
            }
            Ok(resp)
        }
    }
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
    fn host_names() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            host_name(&h("api.example.com:8080")),
            Some("api.example.com")
        );
        assert_eq!(host_name(&h("api.example.com")), Some("api.example.com"));
        assert_eq!(host_name(&h("[::1]:8080")), Some("::1"));
    }

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
