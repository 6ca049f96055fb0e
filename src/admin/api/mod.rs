//! The admin operations, one file per resource: each parses its request, checks the
//! token's scope, calls the service and answers with the same JSON the CLI prints.
//! `request` reads bodies and queries, `answer` shapes the JSON.
//!
//! A new operation gets a route in `routes::ROUTES`, a function in its resource's file and
//! an arm here: the match has no catch-all, so an operation without a handler does not
//! compile.

mod answer;
mod audit;
mod keys;
mod leaks;
mod orgs;
mod request;
mod usage;
mod users;

use super::routes::Op;
use super::ParamValues;
use crate::config::AdminToken;
use crate::error::AdminError;
use crate::service::KeyService;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

/// Runs `op` for `token`, who has been authenticated but not yet scoped.
pub(super) async fn run(
    svc: &KeyService,
    op: Op,
    token: &AdminToken,
    p: ParamValues,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, AdminError> {
    match op {
        Op::CreateKey => keys::create(svc, token, req).await,
        Op::ListKeys => keys::list(svc, token, &req).await,
        Op::GetKey => keys::get(svc, token, &p.id).await,
        Op::PatchKey => keys::patch(svc, token, &p.id, req).await,
        Op::DeleteKey => keys::delete(svc, token, &p.id).await,
        Op::RevokeKey => keys::revoke(svc, token, &p.id).await,
        Op::DisableKey => keys::disable(svc, token, &p.id).await,
        Op::EnableKey => keys::enable(svc, token, &p.id).await,
        Op::RotateKey => keys::rotate(svc, token, &p.id, req).await,
        Op::RevealSecret => keys::reveal(svc, token, &p.id).await,
        Op::KeyUsage => usage::get(svc, token, &p.id).await,
        Op::ResetUsage => usage::reset(svc, token, &p.id).await,
        Op::ReportLeak => leaks::report(svc, token, req).await,
        Op::RemoveUser => users::remove(svc, token, &p.org, &p.user).await,
        Op::RestoreUser => users::restore(svc, token, &p.org, &p.user).await,
        Op::SetUserRoles => users::set_roles(svc, token, &p.org, &p.user, req).await,
        Op::Audit => audit::read(svc, token, &req).await,
        Op::GetOrg => orgs::get(svc, token, &p.org).await,
        Op::SuspendOrg => orgs::suspend(svc, token, &p.org).await,
        Op::RestoreOrg => orgs::restore(svc, token, &p.org).await,
        // Answered before any token is asked for (`Admin::public`).
        Op::Healthz | Op::Readyz | Op::Metrics | Op::OpenApi => Err(AdminError::NoSuchEndpoint),
    }
}
