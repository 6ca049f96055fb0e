//! An org's users: remove, restore, set roles. Each is checked against the token's scope
//! and role ceiling (`scope::check_user_op`) before anything is written.

use super::answer::{ok, Answer};
use super::request::body;
use crate::admin::scope;
use crate::config::AdminToken;
use crate::service::KeyService;
use crate::store::UserRecord;
use http::Request;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesBody {
    roles: Vec<String>,
}

fn user_json(u: &UserRecord) -> serde_json::Value {
    json!({ "org": u.org, "user": u.user, "removed": u.removed, "roles": u.roles, "permissions": u.permissions })
}

/// `POST /v1/orgs/{org}/users/{user}/remove`.
pub(super) async fn remove(svc: &KeyService, token: &AdminToken, org: &str, user: &str) -> Answer {
    scope::check_user_op(svc, token, org, user, None).await?;
    ok(user_json(&svc.remove_user(org, user, &token.name).await?))
}

/// `POST /v1/orgs/{org}/users/{user}/restore`.
pub(super) async fn restore(svc: &KeyService, token: &AdminToken, org: &str, user: &str) -> Answer {
    scope::check_user_op(svc, token, org, user, None).await?;
    ok(user_json(&svc.restore_user(org, user, &token.name).await?))
}

/// `PUT /v1/orgs/{org}/users/{user}/roles`: the body is read first, since the scope check
/// weighs the new roles against the token's ceiling.
pub(super) async fn set_roles(
    svc: &KeyService,
    token: &AdminToken,
    org: &str,
    user: &str,
    req: Request<Incoming>,
) -> Answer {
    let roles = body::<RolesBody>(req).await?.roles;
    scope::check_user_op(svc, token, org, user, Some(roles.as_slice())).await?;
    ok(user_json(
        &svc.set_user_roles(org, user, &roles, &token.name).await?,
    ))
}
