//! A key's usage (SPEC §7): read its limits and quota counters, reset its quota.

use super::answer::{key_json, ok, Answer};
use super::keys::scoped_key;
use crate::config::AdminToken;
use crate::service::KeyService;

/// `GET /v1/keys/{id}/usage`.
pub(super) async fn get(svc: &KeyService, token: &AdminToken, id: &str) -> Answer {
    let key = scoped_key(svc, token, id).await?;
    let usage = svc.usage_of(&key, crate::store::now_ms()).await?;
    ok(serde_json::to_value(&usage).unwrap_or_default())
}

/// `POST /v1/keys/{id}/usage/reset`: the quota starts from zero on every gateway.
pub(super) async fn reset(svc: &KeyService, token: &AdminToken, id: &str) -> Answer {
    let key = scoped_key(svc, token, id).await?;
    let key = svc.reset_usage(&key.id, &token.name).await?;
    ok(key_json(&key))
}
