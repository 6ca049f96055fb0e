//! Keys: create, list, read, edit, delete; revoke, disable, enable; rotate and reveal
//! (which mint a secret, so a limited token may do them only for keys it could create).

use super::answer::{key_json, ok, with_secret, Answer};
use super::request::{body, query};
use crate::admin::json;
use crate::admin::scope::{self, key_in_scope};
use crate::config::{parse_duration, AdminToken};
use crate::error::AdminError;
use crate::service::limits::LimitChange;
use crate::service::view::parse_rfc3339;
use crate::service::{Expiry, KeyService, NewKey};
use crate::store::{KeyFilter, KeyRecord, KeyType};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    org: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    inherit: bool,
    name: Option<String>,
    #[serde(rename = "type")]
    key_type: Option<String>,
    owner: Option<String>,
    /// Absent: an org key. Present: `["*"]` or the workspaces, at least one.
    workspaces: Option<Vec<String>>,
    expires_at: Option<String>,
    expires_in: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    rate_limit: Option<String>,
    /// `"10000/month"`, `"500/day"`, or a number (for the key's life).
    quota: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    grace: Option<String>,
}

/// A quota as JSON gives it: its text, or a whole number (a quota for the key's life).
fn quota_text(v: &serde_json::Value) -> Result<String, AdminError> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) if n.is_u64() => Ok(n.to_string()),
        _ => Err(AdminError::invalid(
            "quota",
            "must be a string like \"10000/month\" or \"500/day\", a whole number, or null to clear it",
        )),
    }
}

/// The key, if the token may manage it (403 `outside_token_scope` otherwise).
pub(super) async fn scoped_key(
    svc: &KeyService,
    token: &AdminToken,
    id: &str,
) -> Result<KeyRecord, AdminError> {
    let key = svc.show(id).await?;
    scope::check_key(token, &key)?;
    Ok(key)
}

/// `POST /v1/keys`: the body is read and checked whole before the scope, which needs it.
pub(super) async fn create(svc: &KeyService, token: &AdminToken, req: Request<Incoming>) -> Answer {
    let b: CreateBody = body(req).await?;
    let key_type = match b.key_type.as_deref() {
        None => None,
        Some("service") => Some(KeyType::Service),
        Some("personal") => Some(KeyType::Personal),
        Some(other) => {
            return Err(AdminError::invalid(
                "type",
                format!("`{other}` is not `service` or `personal`"),
            ))
        }
    };
    let expires = match (b.expires_at, b.expires_in) {
        (Some(_), Some(_)) => {
            return Err(AdminError::invalid(
                "expires_at",
                "give expires_at or expires_in, not both",
            ))
        }
        (Some(t), None) => Some(Expiry::At(parse_rfc3339(&t).ok_or_else(|| {
            AdminError::invalid("expires_at", format!("`{t}` is not an RFC 3339 time"))
        })?)),
        (None, Some(d)) => {
            Some(Expiry::In(parse_duration(&d).map_err(|e| {
                AdminError::invalid("expires_in", e.to_string())
            })?))
        }
        (None, None) => None,
    };
    let workspaces = match b.workspaces {
        Some(w) if w.is_empty() => {
            return Err(AdminError::invalid(
                "workspaces",
                "give at least one workspace, or omit it for an org key",
            ))
        }
        w => w.unwrap_or_default(),
    };
    let asked = scope::Asked {
        org: &b.org,
        workspaces: &workspaces,
        roles: &b.roles,
        inherit: b.inherit,
        owner: b.owner.as_deref(),
    };
    scope::check_create(svc, token, &asked).await?;
    let req = NewKey {
        org: b.org,
        workspaces,
        name: b.name,
        key_type,
        owner: b.owner,
        roles: b.roles,
        inherit: b.inherit,
        expires,
        metadata: b.metadata,
        rate_limit: b.rate_limit,
        quota: b.quota.as_ref().map(quota_text).transpose()?,
    };
    let (key, secret) = svc.create(req, &token.name).await?;
    Ok(json(StatusCode::CREATED, &with_secret(&key, &secret)))
}

/// Keys per page of `GET /v1/keys` without `limit`, and the most with it.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// `GET /v1/keys`: the keys the token may see, out of those the filter selects, oldest
/// first, a page at a time: `next_cursor` names where the next page starts (`null` on the
/// last). The cursor is the last key's creation time and id, so a key deleted meanwhile
/// does not lose the place.
pub(super) async fn list(svc: &KeyService, token: &AdminToken, req: &Request<Incoming>) -> Answer {
    let q = query(
        req,
        &[
            "org",
            "workspace",
            "unused_for",
            "status",
            "limit",
            "cursor",
        ],
    )?;
    let unused_for = q
        .get("unused_for")
        .map(|d| parse_duration(d).map_err(|e| AdminError::BadQuery(e.to_string())))
        .transpose()?;
    let status = q
        .get("status")
        .map(|s| match s.as_str() {
            "active" | "disabled" | "revoked" | "expired" => Ok(s.as_str()),
            other => Err(AdminError::BadQuery(format!(
                "`status={other}`: active, disabled, revoked or expired"
            ))),
        })
        .transpose()?;
    let limit = match q.get("limit") {
        None => PAGE,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| AdminError::BadQuery(format!("`limit={l}`: 1-{MAX_PAGE}")))?,
    };
    let after = q
        .get("cursor")
        .map(|c| {
            c.split_once('.')
                .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_owned())))
                .ok_or_else(|| {
                    AdminError::BadQuery(format!("`cursor={c}` is not a cursor of this API"))
                })
        })
        .transpose()?;
    let filter = KeyFilter {
        org: q.get("org").cloned(),
        workspace: q.get("workspace").cloned(),
    };
    let now = crate::store::now_ms();
    let keys = svc.list(&filter, unused_for).await?;
    let mut page = keys
        .iter()
        .filter(|k| key_in_scope(token, k))
        .filter(|k| status.is_none_or(|s| crate::service::view::status(k, now) == s))
        .filter(|k| {
            after
                .as_ref()
                .is_none_or(|(t, id)| (k.created_at, k.id.as_str()) > (*t, id.as_str()))
        })
        .take(limit + 1)
        .collect::<Vec<_>>();
    let more = page.len() > limit;
    page.truncate(limit);
    let next_cursor = more
        .then(|| page.last().map(|k| format!("{}.{}", k.created_at, k.id)))
        .flatten();
    let keys: Vec<_> = page.into_iter().map(key_json).collect();
    ok(json!({ "keys": keys, "next_cursor": next_cursor }))
}

pub(super) async fn get(svc: &KeyService, token: &AdminToken, id: &str) -> Answer {
    let key = scoped_key(svc, token, id).await?;
    ok(key_json(&svc.with_permissions_now(key).await?))
}

/// `PATCH /v1/keys/{id}`: the body's shape is checked before the key is looked up and
/// scoped, the metadata's limits after.
pub(super) async fn patch(
    svc: &KeyService,
    token: &AdminToken,
    id: &str,
    req: Request<Incoming>,
) -> Answer {
    let actor = token.name.as_str();
    let patch: serde_json::Map<String, serde_json::Value> = body(req).await?;
    // Only name, metadata and limits change after creation; anything else is refused
    // whole, before anything is written.
    if let Some(field) = patch
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "metadata" | "rate_limit" | "quota"))
    {
        return Err(AdminError::ImmutableField(field.clone()));
    }
    let limits = LimitChange {
        rate_limit: match patch.get("rate_limit") {
            None => None,
            Some(serde_json::Value::Null) => Some(None),
            Some(serde_json::Value::String(s)) => Some(Some(s.clone())),
            Some(_) => {
                return Err(AdminError::invalid(
                    "rate_limit",
                    "must be a string like \"100/s\", or null to clear it",
                ))
            }
        },
        quota: match patch.get("quota") {
            None => None,
            Some(serde_json::Value::Null) => Some(None),
            Some(v) => Some(Some(quota_text(v)?)),
        },
    };
    let name = match patch.get("name") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(AdminError::invalid("name", "must be a string")),
    };
    let metadata: Option<BTreeMap<String, String>> = match patch.get("metadata") {
        None => None,
        Some(v) => Some(
            serde_json::from_value(v.clone())
                .map_err(|_| AdminError::invalid("metadata", "must be an object of strings"))?,
        ),
    };
    if let Some(Some(r)) = &limits.rate_limit {
        crate::service::check_rate_limit(r)?;
    }
    if let Some(Some(q)) = &limits.quota {
        crate::service::check_quota(q)?;
    }
    let mut key = scoped_key(svc, token, id).await?;
    if let Some(m) = &metadata {
        crate::service::check_metadata(m)?;
    }
    if let Some(n) = name {
        key = svc.rename(&key.id, &n, actor).await?;
    }
    if let Some(m) = metadata {
        key = svc.set_metadata(&key.id, m, actor).await?;
    }
    if !limits.is_empty() {
        key = svc.set_limits(&key.id, &limits, actor).await?;
    }
    ok(key_json(&key))
}

pub(super) async fn delete(svc: &KeyService, token: &AdminToken, id: &str) -> Answer {
    let key = scoped_key(svc, token, id).await?;
    svc.delete(&key.id, &token.name).await?;
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

pub(super) async fn revoke(svc: &KeyService, token: &AdminToken, id: &str) -> Answer {
    let key = scoped_key(svc, token, id).await?;
    ok(key_json(&svc.revoke(&key.id, &token.name).await?))
}

pub(super) async fn disable(svc: &KeyService, token: &AdminToken, id: &str) -> Answer {
    let key = scoped_key(svc, token, id).await?;
    ok(key_json(&svc.disable(&key.id, &token.name).await?))
}

pub(super) async fn enable(svc: &KeyService, token: &AdminToken, id: &str) -> Answer {
    let key = scoped_key(svc, token, id).await?;
    ok(key_json(&svc.enable(&key.id, &token.name).await?))
}

/// `POST /v1/keys/{id}/rotate`: the body (the grace period) is read before the key is
/// looked up and the mint scope checked.
pub(super) async fn rotate(
    svc: &KeyService,
    token: &AdminToken,
    id: &str,
    req: Request<Incoming>,
) -> Answer {
    let b: RotateBody = body(req).await?;
    let grace = match b.grace {
        Some(g) => parse_duration(&g).map_err(|e| AdminError::invalid("grace", e.to_string()))?,
        None => std::time::Duration::from_secs(3600),
    };
    let key = svc.show(id).await?;
    scope::check_mint(svc, token, &key).await?;
    let (old, new, secret) = svc.rotate(&key.id, grace, &token.name).await?;
    let mut j = with_secret(&new, &secret);
    j["rotated_from"] = key_json(&old);
    Ok(json(StatusCode::CREATED, &j))
}

/// `GET /v1/keys/{id}/secret`.
pub(super) async fn reveal(svc: &KeyService, token: &AdminToken, id: &str) -> Answer {
    let key = svc.show(id).await?;
    scope::check_mint(svc, token, &key).await?;
    let secret = svc.reveal(&key.id, &token.name).await?;
    let mut resp = json(
        StatusCode::OK,
        &json!({ "id": key.id, "key": secret.expose() }),
    );
    // A secret must not linger in a browser's or a proxy's cache.
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}
