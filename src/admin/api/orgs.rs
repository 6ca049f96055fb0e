//! Orgs: read one's state, suspend it (every key of it refused) and restore it.

use super::answer::{ok, Answer};
use crate::admin::scope;
use crate::config::AdminToken;
use crate::service::orgs::org_json;
use crate::service::KeyService;

/// `GET /v1/orgs/{org}`.
pub(super) async fn get(svc: &KeyService, token: &AdminToken, org: &str) -> Answer {
    scope::check_org_read(token, org)?;
    ok(org_json(&svc.org_state(org).await?))
}

/// `POST /v1/orgs/{org}/suspend`.
pub(super) async fn suspend(svc: &KeyService, token: &AdminToken, org: &str) -> Answer {
    scope::check_org_switch(token)?;
    ok(org_json(&svc.suspend_org(org, &token.name).await?))
}

/// `POST /v1/orgs/{org}/restore`.
pub(super) async fn restore(svc: &KeyService, token: &AdminToken, org: &str) -> Answer {
    scope::check_org_switch(token)?;
    ok(org_json(&svc.restore_org(org, &token.name).await?))
}
