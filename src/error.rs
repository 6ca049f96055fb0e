//! The one place where a refusal becomes a status, a code and a JSON body (SPEC §2).
//! Every variant is mapped explicitly: a new error must be given its answer on purpose.

use crate::auth::AuthError;
use crate::limiter::LimitError;
use crate::path::PathError;
use crate::proxy::ProxyError;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::Full;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("the path cannot be normalized safely: {0}")]
    BadPath(#[from] PathError),
    #[error("no route matches this request")]
    NoRoute,
    /// More than one `Host` header (RFC 9112 §3.2: a server must answer 400): which one a
    /// route saw and which one an upstream would read could differ.
    #[error("more than one Host header")]
    BadHost,
    /// The client's request body broke off or was malformed (a bad chunk, a connection
    /// closed mid-upload) while it was being sent on: the client's fault, not the
    /// upstream's.
    #[error("the request body could not be read")]
    BadBody(#[source] crate::proxy::pool::PoolError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    BadVerifyRequest(#[from] VerifyRequestError),
}

/// A forward-auth check (a `verify: true` route, SPEC §8) that does not say which request
/// it asks about, or says it in two ways that differ. Raised by
/// `gateway/stages/verify.rs`; here, below the gateway, as `BadHost` is.
#[derive(Debug, thiserror::Error)]
pub enum VerifyRequestError {
    #[error("name the request to check: X-Forwarded-Method and X-Forwarded-Uri (Traefik), X-Original-Method and X-Original-URI (nginx), or a path below the verify route's (Envoy ext_authz path_prefix)")]
    Missing,
    #[error("{present} without {missing}: the original method and URI come together")]
    Incomplete {
        present: &'static str,
        missing: &'static str,
    },
    #[error("more than one {0} header")]
    Repeated(&'static str),
    #[error("{0} and {1} name different requests")]
    Conflicting(&'static str, &'static str),
    #[error("{0} is not an HTTP method")]
    BadMethod(&'static str),
    #[error("{0} is not a request target (a path, with its query)")]
    BadUri(&'static str),
}

const BEARER: &str = "Bearer realm=\"keygate\"";
const INVALID_TOKEN: &str = "Bearer realm=\"keygate\", error=\"invalid_token\"";
const INSUFFICIENT_SCOPE: &str = "Bearer realm=\"keygate\", error=\"insufficient_scope\"";

/// Status, code and `WWW-Authenticate` of a refusal.
pub struct Answer {
    pub status: StatusCode,
    pub code: &'static str,
    pub www_authenticate: Option<&'static str>,
}

fn answer(
    status: StatusCode,
    code: &'static str,
    www_authenticate: Option<&'static str>,
) -> Answer {
    Answer {
        status,
        code,
        www_authenticate,
    }
}

impl GatewayError {
    pub fn answer(&self) -> Answer {
        use StatusCode as S;
        match self {
            GatewayError::Auth(e) => match e {
                AuthError::MissingKey => answer(S::UNAUTHORIZED, "missing_key", Some(BEARER)),
                AuthError::MultipleKeys => {
                    answer(S::UNAUTHORIZED, "multiple_keys", Some(INVALID_TOKEN))
                }
                AuthError::MalformedKey(_) => {
                    answer(S::UNAUTHORIZED, "malformed_key", Some(INVALID_TOKEN))
                }
                AuthError::UnknownKey => {
                    answer(S::UNAUTHORIZED, "unknown_key", Some(INVALID_TOKEN))
                }
                AuthError::RevokedKey => {
                    answer(S::UNAUTHORIZED, "revoked_key", Some(INVALID_TOKEN))
                }
                AuthError::DisabledKey => {
                    answer(S::UNAUTHORIZED, "disabled_key", Some(INVALID_TOKEN))
                }
                AuthError::ExpiredKey => {
                    answer(S::UNAUTHORIZED, "expired_key", Some(INVALID_TOKEN))
                }
                AuthError::OwnerRemoved => {
                    answer(S::UNAUTHORIZED, "owner_removed", Some(INVALID_TOKEN))
                }
                AuthError::InsufficientPermissions => answer(
                    S::FORBIDDEN,
                    "insufficient_permissions",
                    Some(INSUFFICIENT_SCOPE),
                ),
                AuthError::WorkspaceRequired => answer(S::BAD_REQUEST, "workspace_required", None),
                AuthError::WorkspaceNotAllowed => answer(
                    S::FORBIDDEN,
                    "workspace_not_allowed",
                    Some(INSUFFICIENT_SCOPE),
                ),
                AuthError::OrgSuspended => {
                    answer(S::UNAUTHORIZED, "org_suspended", Some(INVALID_TOKEN))
                }
                AuthError::StoreUnavailable(_) => {
                    answer(S::SERVICE_UNAVAILABLE, "store_unavailable", None)
                }
            },
            GatewayError::Limit(LimitError::RateLimited { .. }) => {
                answer(S::TOO_MANY_REQUESTS, "rate_limited", None)
            }
            GatewayError::Limit(LimitError::QuotaExhausted { .. }) => {
                answer(S::TOO_MANY_REQUESTS, "quota_exhausted", None)
            }
            GatewayError::Limit(LimitError::StoreUnavailable(_)) => {
                answer(S::SERVICE_UNAVAILABLE, "store_unavailable", None)
            }
            GatewayError::BadPath(_) => answer(S::BAD_REQUEST, "bad_path", None),
            GatewayError::NoRoute => answer(S::NOT_FOUND, "no_route", None),
            GatewayError::BadHost => answer(S::BAD_REQUEST, "bad_host", None),
            GatewayError::BadBody(_) => answer(S::BAD_REQUEST, "bad_body", None),
            GatewayError::Proxy(ProxyError::Unavailable { .. }) => {
                answer(S::BAD_GATEWAY, "upstream_unavailable", None)
            }
            GatewayError::Proxy(ProxyError::Timeout { .. }) => {
                answer(S::GATEWAY_TIMEOUT, "upstream_timeout", None)
            }
            GatewayError::BadVerifyRequest(_) => answer(S::BAD_REQUEST, "bad_verify_request", None),
        }
    }

    /// The message clients see: says what happened, never internals of the store or
    /// upstream (those go to the log), never the key.
    fn public_message(&self) -> String {
        match self {
            GatewayError::Auth(AuthError::StoreUnavailable(_))
            | GatewayError::Limit(LimitError::StoreUnavailable(_)) => {
                "the key store is unavailable; try again".into()
            }
            GatewayError::Proxy(ProxyError::Unavailable { .. }) => {
                "the upstream is unavailable".into()
            }
            GatewayError::Proxy(ProxyError::Timeout { .. }) => {
                "the upstream did not answer in time".into()
            }
            other => other.to_string(),
        }
    }

    pub fn into_response(self, request_id: &HeaderValue) -> Response<Full<Bytes>> {
        let a = self.answer();
        let mut resp = error_response(a.status, a.code, &self.public_message());
        let h = resp.headers_mut();
        if let Some(w) = a.www_authenticate {
            h.insert(WWW_AUTHENTICATE, HeaderValue::from_static(w));
        }
        if a.status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // Whole seconds, at least 1 (SPEC §7); a quota that never refills by itself says
        // none.
        match &self {
            GatewayError::Limit(LimitError::RateLimited { retry_after_s })
            | GatewayError::Limit(LimitError::QuotaExhausted {
                retry_after_s: Some(retry_after_s),
            }) => {
                h.insert(RETRY_AFTER, HeaderValue::from((*retry_after_s).max(1)));
            }
            _ => {}
        }
        h.insert(crate::proxy::headers::X_REQUEST_ID, request_id.clone());
        resp
    }
}

/// `{"error":{"code":…,"message":…}}` with the given status.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Refusals of the admin API. Lifecycle errors come from `service` and keep their cause.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("an admin token is required: Authorization: Bearer <admin token>")]
    Unauthorized,
    #[error("an API key cannot manage keys; use an admin token")]
    ApiKeyNotAllowed,
    /// `reason` says which limit of the token the request crosses.
    #[error("outside this admin token's scope: {reason}")]
    OutsideTokenScope { reason: String },
    #[error("no such endpoint")]
    NoSuchEndpoint,
    /// `allow`: the methods the path takes, as the `Allow` header lists them.
    #[error("this endpoint does not take that method; it takes {allow}")]
    MethodNotAllowed { allow: String },
    #[error("the request body is over 64 KB")]
    BodyTooLarge,
    #[error("the request body could not be read")]
    BodyRead,
    #[error("the request body is not valid: {0}")]
    BadJson(#[source] serde_json::Error),
    #[error("{0}")]
    BadQuery(String),
    #[error("`{0}` cannot be changed after creation; only `name`, `metadata`, `rate_limit` and `quota` can")]
    ImmutableField(String),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Service(#[from] crate::service::ServiceError),
}

impl AdminError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        AdminError::Invalid {
            field,
            message: message.into(),
        }
    }

    pub fn outside_scope(reason: impl Into<String>) -> Self {
        AdminError::OutsideTokenScope {
            reason: reason.into(),
        }
    }

    pub fn answer(&self) -> Answer {
        use crate::service::ServiceError as E;
        use StatusCode as S;
        match self {
            AdminError::Unauthorized => answer(S::UNAUTHORIZED, "unauthorized", Some(BEARER)),
            AdminError::ApiKeyNotAllowed => answer(S::FORBIDDEN, "api_key_not_allowed", None),
            AdminError::OutsideTokenScope { .. } => {
                answer(S::FORBIDDEN, "outside_token_scope", None)
            }
            AdminError::NoSuchEndpoint => answer(S::NOT_FOUND, "not_found", None),
            AdminError::MethodNotAllowed { .. } => {
                answer(S::METHOD_NOT_ALLOWED, "method_not_allowed", None)
            }
            AdminError::BodyTooLarge => answer(S::PAYLOAD_TOO_LARGE, "body_too_large", None),
            AdminError::BadJson(_) => answer(S::BAD_REQUEST, "invalid_json", None),
            AdminError::BodyRead | AdminError::BadQuery(_) | AdminError::Invalid { .. } => {
                answer(S::BAD_REQUEST, "invalid_request", None)
            }
            AdminError::ImmutableField(_) => answer(S::BAD_REQUEST, "immutable_field", None),
            AdminError::Service(e) => match e {
                E::Invalid { .. } => answer(S::BAD_REQUEST, "invalid_request", None),
                E::UnknownRole(_) => answer(S::BAD_REQUEST, "unknown_role", None),
                E::NotFound(_) => answer(S::NOT_FOUND, "not_found", None),
                E::KeyNotActive { .. } => answer(S::CONFLICT, "key_not_active", None),
                E::UnknownUser { .. } => answer(S::NOT_FOUND, "unknown_user", None),
                E::MalformedKey => answer(S::BAD_REQUEST, "malformed_key", None),
                // No secret kept for this key (or recoverable keys off): as for an unknown
                // secret, 404, the message saying which.
                E::NotRecoverable { .. } => answer(S::NOT_FOUND, "not_found", None),
                // The deployment's vault key does not open what the store holds (or could
                // not seal): the server's configuration, not the request, is at fault.
                E::Vault { .. } => answer(S::INTERNAL_SERVER_ERROR, "vault_error", None),
                // Another writer kept changing the same key: the change was not made.
                E::Store(crate::store::StoreError::Conflict { .. }) => {
                    answer(S::CONFLICT, "conflict", None)
                }
                E::Store(_) => answer(S::SERVICE_UNAVAILABLE, "store_unavailable", None),
            },
        }
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let a = self.answer();
        let message = match &self {
            // The store's own words stay in the log.
            AdminError::Service(crate::service::ServiceError::Store(_)) => {
                "the key store is unavailable; try again".to_owned()
            }
            other => other.to_string(),
        };
        let mut resp = error_response(a.status, a.code, &message);
        if let Some(w) = a.www_authenticate {
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(w));
        }
        // A 405 must say which methods the path takes (RFC 9110 §15.5.6).
        if let AdminError::MethodNotAllowed { allow } = &self {
            if let Ok(v) = HeaderValue::from_str(allow) {
                resp.headers_mut().insert(http::header::ALLOW, v);
            }
        }
        resp
    }
}
