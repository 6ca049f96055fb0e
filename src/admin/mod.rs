//! The admin API (SPEC §5) on its own listener (127.0.0.1:8081 by default), apart from
//! the proxy: key lifecycle over HTTP with admin tokens, audit, health and metrics.
//!
//! A request is routed (`routes`) and, if public, answered without a token (`public`);
//! otherwise its token is found (`tokens`: an API key is refused outright, a key can never
//! manage keys), its path parameters decoded (`paths`) and its operation run (`api`, one
//! file per resource, scope rules in `scope`). Lifecycle rules are `service`'s, shared
//! with the CLI. This file holds the order of those steps and the one place where an
//! error becomes the answer and a log line, and where a refusal by scope is audited.

mod api;
mod paths;
mod public;
pub mod routes;
pub mod scope;
mod tokens;

pub use paths::ParamValues;

use crate::auth::CredentialSources;
use crate::cache::KeyCache;
use crate::config::{AdminToken, Config};
use crate::error::AdminError;
use crate::key::KeyFormat;
use crate::metrics::Metrics;
use crate::server::{Running, ServeError};
use crate::service::KeyService;
use crate::store::KeyStore;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use paths::loggable_path;
use routes::{Found, Op};
use std::net::SocketAddr;
use std::sync::Arc;

/// Largest request body the admin API reads.
pub const MAX_BODY: usize = 64 * 1024;

/// What a reload (SIGHUP) swaps: roles (inside the service) and tokens.
pub struct AdminState {
    pub service: KeyService,
    pub tokens: Vec<AdminToken>,
    /// Where the proxy reads keys besides `Authorization`: a key presented there is
    /// refused here too.
    pub key_sources: CredentialSources,
}

pub struct Admin {
    state: ArcSwap<AdminState>,
    store: Arc<dyn KeyStore>,
    format: KeyFormat,
    metrics: Arc<Metrics>,
    cache: Option<Arc<KeyCache>>,
}

impl Admin {
    /// `cache` is the serving gateway's, for the `keygate_cache_keys` gauge.
    pub fn new(
        config: &Config,
        store: Arc<dyn KeyStore>,
        metrics: Arc<Metrics>,
        cache: Option<Arc<KeyCache>>,
    ) -> Self {
        let format = KeyFormat::new(&config.keys.prefix);
        Admin {
            state: ArcSwap::from_pointee(Self::state(config, &store, &format)),
            store,
            format,
            metrics,
            cache,
        }
    }

    fn state(config: &Config, store: &Arc<dyn KeyStore>, format: &KeyFormat) -> AdminState {
        AdminState {
            service: KeyService::new(
                store.clone(),
                config.roles.clone(),
                format.clone(),
                config.keys.vault.clone(),
            ),
            tokens: config.admin.tokens.clone(),
            key_sources: CredentialSources {
                header: config.keys.header.clone(),
                query_param: config.keys.query_param.clone(),
            },
        }
    }

    /// Takes the roles and tokens of a reloaded config.
    pub fn reload(&self, config: &Config) {
        self.state
            .store(Arc::new(Self::state(config, &self.store, &self.format)));
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        match self.handle_inner(req).await {
            Ok(resp) => resp,
            Err(e) => {
                let a = e.answer();
                if matches!(
                    e,
                    AdminError::Service(crate::service::ServiceError::Store(_))
                ) {
                    self.metrics.store_errors.inc();
                }
                let path = loggable_path(self.format.prefix(), &path);
                if a.status.is_server_error() {
                    tracing::warn!(%method, %path, error = %e, "admin request failed");
                } else {
                    tracing::debug!(%method, %path, code = a.code, "admin request refused");
                }
                e.into_response()
            }
        }
    }

    async fn handle_inner(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, AdminError> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let (op, params) = match routes::find(&method, &path) {
            Found::Op(op, params) => (op, params),
            Found::WrongMethod(allowed) => {
                return Err(AdminError::MethodNotAllowed {
                    allow: allowed.join(", "),
                })
            }
            Found::NotFound => return Err(AdminError::NoSuchEndpoint),
        };
        if op.is_public() {
            return Ok(self.public(op).await);
        }
        let state = self.state.load_full();
        let token = tokens::token(&state, &self.format, &req)?;
        let params = ParamValues::decode(&params)?;
        let key_id = crate::key::is_key_id(&params.id).then(|| params.id.clone());
        let result = api::run(&state.service, op, token, params, req).await;
        if let Err(AdminError::OutsideTokenScope { reason }) = &result {
            // A limited token reaching beyond its scope is worth knowing about: who, what,
            // why not. The refusal stands whether or not the event could be written.
            let details = serde_json::json!({
                "method": method.as_str(),
                "path": loggable_path(self.format.prefix(), &path),
                "reason": reason,
            });
            if let Err(e) = state
                .service
                .record_refusal(&token.name, key_id.as_deref(), details)
                .await
            {
                tracing::warn!(error = %e, "could not audit a refused admin request");
            }
        }
        result
    }

    /// Health, readiness and metrics: no token, no state.
    async fn public(&self, op: Op) -> Response<Full<Bytes>> {
        match op {
            Op::Healthz => public::healthz(),
            Op::OpenApi => public::openapi(),
            Op::Readyz => public::readyz(self.store.as_ref(), &self.metrics).await,
            // Only public operations reach here (`Op::is_public`): the rest is `/metrics`.
            _ => public::metrics(&self.metrics, self.cache.as_deref()).await,
        }
    }
}

pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Binds `config.admin.listen` and serves the admin API.
pub async fn start(config: &Config, admin: Arc<Admin>) -> Result<Running, ServeError> {
    let handler = move |req, _peer: SocketAddr| {
        let admin = admin.clone();
        async move { Ok::<_, std::convert::Infallible>(admin.handle(req).await) }
    };
    crate::server::serve(config.admin.listen, None, &config.server, handler).await
}
