//! The JSON an operation answers with: the same shapes the CLI prints.

use super::super::json;
use crate::error::AdminError;
use crate::key::ApiKey;
use crate::service::view::KeyView;
use crate::store::{now_ms, KeyRecord};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

pub(super) type Answer = Result<Response<Full<Bytes>>, AdminError>;

/// 200 with `v`.
pub(super) fn ok(v: serde_json::Value) -> Answer {
    Ok(json(StatusCode::OK, &v))
}

pub(super) fn key_json(k: &KeyRecord) -> serde_json::Value {
    serde_json::to_value(KeyView::new(k, now_ms())).unwrap_or_default()
}

/// A key with its new secret, which is shown this once.
pub(super) fn with_secret(k: &KeyRecord, secret: &ApiKey) -> serde_json::Value {
    let mut j = key_json(k);
    j["key"] = json!(secret.expose());
    j["notice"] = json!("This secret is shown once and cannot be shown again. Store it now.");
    j
}
