//! The request handler: the stages of SPEC §2 in order (`stages/`, one file each).
//!
//! `handle` owns logging, metrics and turns every error into its answer (the one rescue
//! point); `handle_inner` runs route -> authenticate -> authorize -> limit -> rewrite ->
//! forward with `?` (on a verify route, `stages::verify` instead: forward-auth, SPEC §8).
//! Authentication reads the request as the client sent it; the rewrite then removes
//! hop-by-hop headers, spoofed identity and the credential before adding ours.

mod stages;

use crate::auth::{AuthError, Authenticator};
use crate::cache::{CacheSettings, KeyCache};
use crate::config::Config;
use crate::error::GatewayError;
use crate::identity::IdentityNames;
use crate::limiter::{LimitError, LimitHeaders, Limiter};
use crate::limits::RateLimit;
use crate::metrics::{Metrics, RouteCounters};
use crate::proxy::headers;
use crate::proxy::pool::PooledBody;
use crate::proxy::Upstream;
use crate::route::Router;
use crate::store::{coarse_now_ms, KeyStore};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often spent quota is reported to the store.
const QUOTA_FLUSH: Duration = Duration::from_secs(1);

/// `RateLimit-*` and `X-Quota-Remaining` on an answer that a limit applied to (SPEC §7).
fn limit_headers(h: &mut http::HeaderMap, limits: &LimitHeaders) {
    if limits.rate.is_none() && limits.quota_remaining.is_none() {
        return;
    }
    // One growth of the map for all four, not one per insert.
    h.reserve(4);
    if let Some(r) = limits.rate {
        h.insert(RATELIMIT_LIMIT, headers::number(r.limit));
        h.insert(RATELIMIT_REMAINING, headers::number(r.remaining));
        h.insert(RATELIMIT_RESET, headers::number(r.reset_s));
    }
    if let Some(q) = limits.quota_remaining {
        h.insert(X_QUOTA_REMAINING, headers::number(q));
    }
}

const RATELIMIT_LIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: http::HeaderName = http::HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: http::HeaderName = http::HeaderName::from_static("ratelimit-reset");
const X_QUOTA_REMAINING: http::HeaderName = http::HeaderName::from_static("x-quota-remaining");

/// What the gateway answers with: the upstream's body streamed, or a small JSON refusal.
pub type Body = Either<PooledBody, Full<Bytes>>;

/// Per-request state, carried through the stages and into the log line.
struct RequestCtx {
    request_id: HeaderValue,
    /// Which headers of interest the client sent (read once, before any rewrite).
    seen: headers::Seen,
    route: Option<usize>,
    key_id: Option<HeaderValue>,
    /// What the limits that applied say, for the answer's headers (SPEC §7).
    limits: LimitHeaders,
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
    /// `limits.default_rate_limit`: reloads with the routes.
    default_rate_limit: Option<RateLimit>,
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
            default_rate_limit: config.limits.default_rate_limit,
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
    limiter: Arc<Limiter>,
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
        // A meter outlives its key's cache entry by an hour: a window or a quota period
        // idle that long holds nothing worth keeping.
        let idle = config.cache.ttl.max(config.cache.stale_if_error) + Duration::from_secs(3600);
        let limiter = Arc::new(Limiter::new(
            store.clone(),
            config.limits.quota_batch,
            idle,
            metrics.clone(),
        ));
        let cache = Arc::new(KeyCache::new(store, settings, metrics.clone()));
        Gateway {
            routing: ArcSwap::from_pointee(Routing::new(config)),
            auth: Authenticator::new(config, cache),
            limiter,
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

    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
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
            (
                "limits.quota_batch",
                old.limits.quota_batch == new.limits.quota_batch,
            ),
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
        tokio::spawn(self.limiter.clone().run_flusher(QUOTA_FLUSH));
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
            limits: LimitHeaders::default(),
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
                    limit_headers(resp.headers_mut(), &ctx.limits);
                    resp
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
                        GatewayError::Limit(LimitError::StoreUnavailable(s)) => {
                            self.metrics.limited(answer.code);
                            tracing::warn!(request_id = ?ctx.request_id, error = %s, "key store unavailable for quota")
                        }
                        GatewayError::Limit(_) => self.metrics.limited(answer.code),
                        _ => {}
                    }
                    tracing::debug!(request_id = ?ctx.request_id, code = answer.code, "refused");
                    let mut resp = e.into_response(&ctx.request_id);
                    limit_headers(resp.headers_mut(), &ctx.limits);
                    resp.map(Either::Right)
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
    ) -> impl Future<Output = Result<Response<Body>, GatewayError>> + Send + 'a {
        // Parts, so the path can be borrowed from the URI while headers are rewritten.
        let (mut parts, body) = req.into_parts();
        async move {
            // Route first, on the normalized path: 400 `bad_path` and 404 `no_route` never
            // depend on the credential, and every rule sees what the upstream will act on.
            let routed = stages::route(routing, &parts.uri, &parts.headers, &parts.method)?;
            ctx.route = Some(routed.index);
            // A verify route (the only kind without an upstream) forwards nothing: it runs
            // the stages below for the request the check names, and answers the verdict.
            // Boxed (one allocation per check): inline, it made every request's future 264
            // bytes larger, forwarded ones too (`-Zprint-type-sizes`, dev profile).
            let Some(upstream) = routed.route.upstream else {
                return Box::pin(stages::verify(self, routing, &parts, &routed, ctx)).await;
            };
            let upstream = &routing.upstreams[upstream];

            // Authenticate, then authorize (auth routes only), on the request as the client
            // sent it, timed as one step.
            let principal = if routed.route.auth {
                let auth_start = Instant::now();
                let key = match stages::credential(&self.auth, &parts.headers, parts.uri.query()) {
                    Ok(credential) => self.auth.authenticate(&credential, coarse_now_ms()).await,
                    Err(e) => Err(e),
                };
                let verdict = key.and_then(|key| {
                    ctx.key_id = Some(key.identity.key_id.clone());
                    stages::authorize(&self.auth, key, routed.route, &parts.headers, &routed.path)
                });
                self.metrics.auth_duration.observe(auth_start.elapsed());
                Some(verdict?)
            } else {
                None
            };

            // Limits count admitted requests only, before any upstream work; the store is
            // awaited only when this gateway's leased allowance ran out.
            if let Some(p) = &principal {
                let now = coarse_now_ms();
                let limits = &mut ctx.limits;
                let default = routing.default_rate_limit;
                if let Some(pending) =
                    stages::limit::check(&self.limiter, p, routed.route, default, now, limits)?
                {
                    stages::limit::finish(&self.limiter, p, pending, now, limits).await?;
                }
            }

            let rewritten = stages::rewrite(
                self,
                &mut parts.headers,
                &mut parts.extensions,
                &parts.uri,
                routed,
                principal.as_ref(),
                ctx,
                peer,
            )?;
            // Forward: the body as it goes up, and when it last moved (src/proxy/upload.rs).
            // One select over the send and its deadline: the send's future is then stored
            // once in the request's, as its only await.
            let (body, upload) = crate::proxy::upload::Upload::new(body);
            let (target, req) =
                upstream.prepare(Request::from_parts(parts, body), rewritten.path_and_query)?;
            let send = target.send(req);
            let deadline = stages::forward::deadline(upstream, upload);
            let sent = tokio::select! {
                biased;
                sent = send => Some(sent),
                () = deadline => None,
            };
            stages::forward::answer(sent, upstream, rewritten.client_upgrade)
                .map(|resp| resp.map(Either::Left))
        }
    }
}
