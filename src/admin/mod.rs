//! The admin API (SPEC §5) on its own listener (127.0.0.1:8081 by default), apart from
//! the proxy: key lifecycle over HTTP with admin tokens, audit, health and metrics.
//!
//! Tokens are configured by sha256 and compared by hash in constant time; an API key
//! presented here is refused outright (a key can never manage keys): see `tokens`.
//! Lifecycle rules are `service`'s, shared with the CLI; this module parses, checks scope
//! and answers.

mod api;
pub mod routes;
pub mod scope;
mod tokens;

use crate::auth::{percent_decode, CredentialSources};
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
            return self.public(op).await;
        }
        let state = self.state.load_full();
        let token = tokens::token(&state, &self.format, &req)?;
        // Segments arrive percent-encoded (`bob%40example.com`, as browsers and most
        // clients encode `@`); the store knows the decoded names.
        let param = |name: &str| -> Result<String, AdminError> {
            let raw = params
                .iter()
                .find(|(n, _)| *n == name)
                .map_or("", |(_, v)| *v);
            decode_path_segment(raw).ok_or_else(|| {
                AdminError::invalid(
                    "path",
                    format!("`{name}` is not valid percent-encoded UTF-8"),
                )
            })
        };
        let params = ParamValues {
            id: param("id")?,
            org: param("org")?,
            user: param("user")?,
        };
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

    async fn public(&self, op: Op) -> Result<Response<Full<Bytes>>, AdminError> {
        match op {
            Op::Healthz => Ok(json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))),
            Op::Readyz => match self.store.ping().await {
                Ok(()) => Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "status": "ready" }),
                )),
                Err(e) => {
                    self.metrics.store_errors.inc();
                    tracing::warn!(error = %e, "store not reachable");
                    Ok(json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &serde_json::json!({ "status": "not ready", "reason": "key store unreachable" }),
                    ))
                }
            },
            _ => {
                if let Some(c) = &self.cache {
                    self.metrics
                        .cache_keys
                        .set(i64::try_from(c.entry_count().await).unwrap_or(i64::MAX));
                }
                let mut resp = Response::new(Full::new(Bytes::from(self.metrics.encode())));
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                Ok(resp)
            }
        }
    }
}

/// Path parameters by name (empty when the route has none).
pub struct ParamValues {
    pub id: String,
    pub org: String,
    pub user: String,
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

/// The request path for a log line, any segment that may hold an API key replaced:
/// someone may paste a secret where a key id goes (`/v1/keys/kg_…`). A key is `<prefix>_`
/// and 38 letters and digits; a segment holds one when, percent-decoded, it has
/// `<prefix>_` (any case) followed by at least 30 of them. Key ids, names and orgs stay
/// readable.
fn loggable_path(prefix: &str, path: &str) -> String {
    let marker = format!("{}_", prefix.to_ascii_lowercase());
    let holds_key = |seg: &str| {
        let seg = decode_path_segment(seg)
            .map_or_else(|| seg.to_ascii_lowercase(), |s| s.to_ascii_lowercase());
        seg.match_indices(&marker).any(|(i, m)| {
            seg.as_bytes()[i + m.len()..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric())
                .count()
                >= 30
        })
    };
    path.split('/')
        .map(|seg| if holds_key(seg) { "<redacted>" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// A path segment percent-decoded, as the admin API reads it: `+` is a literal in a path,
/// not a space as in a query.
fn decode_path_segment(raw: &str) -> Option<String> {
    percent_decode(&raw.replace('+', "%2B")).map(|v| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_in_the_path_is_not_logged() {
        let key = KeyFormat::new("kg").generate();
        let key = key.expose();
        assert_eq!(
            loggable_path("kg", &format!("/v1/keys/{key}/rotate")),
            "/v1/keys/<redacted>/rotate"
        );
        // Inside a segment, with `_` or the whole key percent-encoded, any case.
        let encoded: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
        for seg in [
            format!("x.{key}.json"),
            key.replacen('_', "%5f", 1),
            encoded,
            key.to_ascii_uppercase(),
        ] {
            assert_eq!(
                loggable_path("kg", &format!("/v1/keys/{seg}")),
                "/v1/keys/<redacted>"
            );
        }
        // Ids, names and orgs stay, even with a prefix that is also a word's end.
        assert_eq!(loggable_path("kg", "/v1/keys/key_abc"), "/v1/keys/key_abc");
        assert_eq!(
            loggable_path("kg", "/v1/orgs/pkg_x/keys"),
            "/v1/orgs/pkg_x/keys"
        );
        let id = crate::key::new_key_id();
        assert_eq!(
            loggable_path("y", &format!("/v1/keys/{id}")),
            format!("/v1/keys/{id}")
        );
    }
}
