//! The one place where a refusal becomes a status, a code and a JSON body (SPEC §2).
//! Every variant is mapped explicitly: a new error must be given its answer on purpose.

use crate::auth::AuthError;
use crate::proxy::ProxyError;
use crate::route::PathError;
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
    #[error(transparent)]
    Proxy(#[from] ProxyError),
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
                AuthError::StoreUnavailable(_) => {
                    answer(S::SERVICE_UNAVAILABLE, "store_unavailable", None)
                }
            },
            GatewayError::BadPath(_) => answer(S::BAD_REQUEST, "bad_path", None),
            GatewayError::NoRoute => answer(S::NOT_FOUND, "no_route", None),
            GatewayError::Proxy(ProxyError::Unavailable { .. }) => {
                answer(S::BAD_GATEWAY, "upstream_unavailable", None)
            }
            GatewayError::Proxy(ProxyError::Timeout { .. }) => {
                answer(S::GATEWAY_TIMEOUT, "upstream_timeout", None)
            }
        }
    }

    /// The message clients see: says what happened, never internals of the store or
    /// upstream (those go to the log), never the key.
    fn public_message(&self) -> String {
        match self {
            GatewayError::Auth(AuthError::StoreUnavailable(_)) => {
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
