//! A leak report: someone found a secret in the wild; its key is revoked at once.

use super::answer::{key_json, ok, Answer};
use super::request::body;
use crate::admin::scope::key_in_scope;
use crate::config::AdminToken;
use crate::error::AdminError;
use crate::service::KeyService;
use http::Request;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

/// A leak report: the secret found in the wild.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeakBody {
    key: String,
}

/// `POST /v1/keys/leaked`.
pub(super) async fn report(svc: &KeyService, token: &AdminToken, req: Request<Incoming>) -> Answer {
    let b: LeakBody = body(req).await?;
    let Some(key) = svc.find_by_secret(&b.key).await? else {
        return ok(json!({ "found": false }));
    };
    // A limited token reports leaks of its own keys; beyond them it revokes
    // nothing and is not told whose key it holds.
    if !key_in_scope(token, &key) {
        return Err(AdminError::outside_scope(
            "the key of that secret is outside this token's orgs or workspaces",
        ));
    }
    let key = svc.revoke_leaked(&key.id, &token.name).await?;
    ok(json!({ "found": true, "id": key.id, "key": key_json(&key) }))
}
