//! The audit log, newest first, a page at a time.

use super::answer::{ok, Answer};
use super::keys::scoped_key;
use super::request::query;
use crate::config::AdminToken;
use crate::error::AdminError;
use crate::service::view::AuditView;
use crate::service::KeyService;
use crate::store::AuditQuery;
use http::Request;
use hyper::body::Incoming;
use serde_json::json;

/// `GET /v1/audit?key=&limit=&before=`.
pub(super) async fn read(svc: &KeyService, token: &AdminToken, req: &Request<Incoming>) -> Answer {
    let q = query(req, &["key", "limit", "before"])?;
    let num = |name: &str| -> Result<Option<i64>, AdminError> {
        q.get(name)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| AdminError::BadQuery(format!("`{name}` must be a whole number")))
            })
            .transpose()
    };
    let limit = num("limit")?.unwrap_or(50).clamp(1, 1000) as usize;
    let key_id = q.get("key").cloned();
    let limited = token.orgs.is_some() || token.workspaces.is_some();
    // A limited token reads the audit of keys it may manage (that exist), only.
    match &key_id {
        Some(id) if limited => {
            scoped_key(svc, token, id).await?;
        }
        None if limited => {
            return Err(AdminError::outside_scope(
                "a limited token reads the audit of one key at a time (`?key=`)",
            ))
        }
        _ => {}
    }
    let events = svc
        .audit(&AuditQuery {
            key_id,
            before: num("before")?,
            limit,
        })
        .await?;
    // A short page is the last one: no cursor, so a client stops without asking
    // for an empty page.
    let next_before = (events.len() == limit)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    let views: Vec<AuditView> = events.iter().map(AuditView::new).collect();
    ok(json!({ "events": views, "next_before": next_before }))
}
