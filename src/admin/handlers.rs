//! One function per admin operation: parse, check the token's scope, call the service,
//! answer with the same JSON the CLI prints.

use super::routes::Op;
use super::scope::{self, key_in_scope};
use super::{json, ParamValues, MAX_BODY};
use crate::auth::percent_decode;
use crate::config::parse_duration;
use crate::config::AdminToken;
use crate::error::AdminError;
use crate::service::orgs::org_json;
use crate::service::view::{parse_rfc3339, AuditView, KeyView};
use crate::service::{Expiry, KeyService, NewKey};
use crate::store::{now_ms, AuditQuery, KeyFilter, KeyRecord, KeyType};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
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
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    grace: Option<String>,
}

/// A leak report: the secret found in the wild.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeakBody {
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesBody {
    roles: Vec<String>,
}

/// The body, read up to `MAX_BODY` (413 beyond), as JSON of `T` (400 otherwise). An
/// empty body reads as `{}` where `T` allows it.
async fn body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, AdminError> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(AdminError::BodyTooLarge);
    }
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                AdminError::BodyTooLarge
            } else {
                AdminError::BodyRead
            }
        })?
        .to_bytes();
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes).map_err(AdminError::BadJson)
}

/// Query parameters, percent-decoded; only `allowed` names (400 for others).
fn query(
    req: &Request<Incoming>,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, AdminError> {
    let mut out = BTreeMap::new();
    for pair in req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k)
            .ok_or_else(|| AdminError::BadQuery(format!("cannot decode `{k}`")))?;
        let v = percent_decode(v)
            .ok_or_else(|| AdminError::BadQuery(format!("cannot decode the value of `{k}`")))?;
        if !allowed.contains(&k.as_ref()) {
            return Err(AdminError::BadQuery(format!(
                "unknown parameter `{k}` (known: {})",
                allowed.join(", ")
            )));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(AdminError::BadQuery(format!("`{k}` given twice")));
        }
    }
    Ok(out)
}

fn key_json(k: &KeyRecord) -> serde_json::Value {
    serde_json::to_value(KeyView::new(k, now_ms())).unwrap_or_default()
}

fn with_secret(k: &KeyRecord, secret: &crate::key::ApiKey) -> serde_json::Value {
    let mut j = key_json(k);
    j["key"] = json!(secret.expose());
    j["notice"] = json!("This secret is shown once and cannot be shown again. Store it now.");
    j
}

/// The key, if the token may manage it (403 `outside_token_scope` otherwise).
async fn scoped_key(
    svc: &KeyService,
    token: &AdminToken,
    id: &str,
) -> Result<KeyRecord, AdminError> {
    let key = svc.show(id).await?;
    scope::check_key(token, &key)?;
    Ok(key)
}

fn user_json(u: &crate::store::UserRecord) -> serde_json::Value {
    json!({ "org": u.org, "user": u.user, "removed": u.removed, "roles": u.roles, "permissions": u.permissions })
}

pub async fn run(
    svc: &KeyService,
    op: Op,
    token: &AdminToken,
    p: ParamValues,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, AdminError> {
    let actor = token.name.as_str();
    let ok = |v: serde_json::Value| Ok(json(StatusCode::OK, &v));
    match op {
        Op::CreateKey => {
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
            };
            let (key, secret) = svc.create(req, actor).await?;
            Ok(json(StatusCode::CREATED, &with_secret(&key, &secret)))
        }
        Op::ListKeys => {
            let q = query(&req, &["org", "workspace", "unused_for"])?;
            let unused_for = q
                .get("unused_for")
                .map(|d| parse_duration(d).map_err(|e| AdminError::BadQuery(e.to_string())))
                .transpose()?;
            let filter = KeyFilter {
                org: q.get("org").cloned(),
                workspace: q.get("workspace").cloned(),
            };
            let keys = svc.list(&filter, unused_for).await?;
            let keys: Vec<_> = keys
                .iter()
                .filter(|k| key_in_scope(token, k))
                .map(key_json)
                .collect();
            ok(json!({ "keys": keys }))
        }
        Op::GetKey => ok(key_json(&scoped_key(svc, token, &p.id).await?)),
        Op::PatchKey => {
            let patch: serde_json::Map<String, serde_json::Value> = body(req).await?;
            // Only name and metadata change after creation; anything else is refused
            // whole, before anything is written.
            if let Some(field) = patch
                .keys()
                .find(|k| !matches!(k.as_str(), "name" | "metadata"))
            {
                return Err(AdminError::ImmutableField(field.clone()));
            }
            let name = match patch.get("name") {
                None => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(AdminError::invalid("name", "must be a string")),
            };
            let metadata: Option<BTreeMap<String, String>> = match patch.get("metadata") {
                None => None,
                Some(v) => Some(serde_json::from_value(v.clone()).map_err(|_| {
                    AdminError::invalid("metadata", "must be an object of strings")
                })?),
            };
            let mut key = scoped_key(svc, token, &p.id).await?;
            if let Some(m) = &metadata {
                crate::service::check_metadata(m)?;
            }
            if let Some(n) = name {
                key = svc.rename(&key.id, &n, actor).await?;
            }
            if let Some(m) = metadata {
                key = svc.set_metadata(&key.id, m, actor).await?;
            }
            ok(key_json(&key))
        }
        Op::DeleteKey => {
            let key = scoped_key(svc, token, &p.id).await?;
            svc.delete(&key.id, actor).await?;
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NO_CONTENT;
            Ok(resp)
        }
        Op::RevokeKey => {
            let key = scoped_key(svc, token, &p.id).await?;
            ok(key_json(&svc.revoke(&key.id, actor).await?))
        }
        Op::DisableKey => {
            let key = scoped_key(svc, token, &p.id).await?;
            ok(key_json(&svc.disable(&key.id, actor).await?))
        }
        Op::EnableKey => {
            let key = scoped_key(svc, token, &p.id).await?;
            ok(key_json(&svc.enable(&key.id, actor).await?))
        }
        Op::RotateKey => {
            let b: RotateBody = body(req).await?;
            let grace = match b.grace {
                Some(g) => {
                    parse_duration(&g).map_err(|e| AdminError::invalid("grace", e.to_string()))?
                }
                None => std::time::Duration::from_secs(3600),
            };
            let key = svc.show(&p.id).await?;
            scope::check_mint(svc, token, &key).await?;
            let (old, new, secret) = svc.rotate(&key.id, grace, actor).await?;
            let mut j = with_secret(&new, &secret);
            j["rotated_from"] = key_json(&old);
            Ok(json(StatusCode::CREATED, &j))
        }
        Op::RevealSecret => {
            let key = svc.show(&p.id).await?;
            scope::check_mint(svc, token, &key).await?;
            let secret = svc.reveal(&key.id, actor).await?;
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
        Op::ReportLeak => {
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
            let key = svc.revoke_leaked(&key.id, actor).await?;
            ok(json!({ "found": true, "id": key.id, "key": key_json(&key) }))
        }
        Op::RemoveUser | Op::RestoreUser | Op::SetUserRoles => {
            let new_roles = match op {
                Op::SetUserRoles => Some(body::<RolesBody>(req).await?.roles),
                _ => None,
            };
            scope::check_user_op(svc, token, &p.org, &p.user, new_roles.as_deref()).await?;
            let u = match (op, new_roles) {
                (Op::RemoveUser, _) => svc.remove_user(&p.org, &p.user, actor).await?,
                (Op::RestoreUser, _) => svc.restore_user(&p.org, &p.user, actor).await?,
                (_, roles) => {
                    svc.set_user_roles(&p.org, &p.user, &roles.unwrap_or_default(), actor)
                        .await?
                }
            };
            ok(user_json(&u))
        }
        Op::Audit => {
            let q = query(&req, &["key", "limit", "before"])?;
            let num = |name: &str| -> Result<Option<i64>, AdminError> {
                q.get(name)
                    .map(|v| {
                        v.parse::<i64>().map_err(|_| {
                            AdminError::BadQuery(format!("`{name}` must be a whole number"))
                        })
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
        Op::GetOrg => {
            scope::check_org_read(token, &p.org)?;
            ok(org_json(&svc.org_state(&p.org).await?))
        }
        Op::SuspendOrg => {
            scope::check_org_switch(token)?;
            ok(org_json(&svc.suspend_org(&p.org, actor).await?))
        }
        Op::RestoreOrg => {
            scope::check_org_switch(token)?;
            ok(org_json(&svc.restore_org(&p.org, actor).await?))
        }
        Op::Healthz | Op::Readyz | Op::Metrics => Err(AdminError::NoSuchEndpoint),
    }
}
