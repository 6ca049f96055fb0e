//! Redis hashes to records and back.
//!
//! A key's `record` field holds the JSON of `record_json`, the embedded store's `record`
//! column shape, so records read the same in both stores. Anything read back that does not decode becomes `StoreError::Corrupt`
//! naming the record, logged here: a hand-edited key must fail its own requests, never
//! crash the gateway or poison other keys.

use crate::key::KeyHash;
use crate::store::record_json::{key_from_json, KeyFields};
use crate::store::{AuditEvent, KeyRecord, OrgRecord, StoreError, UserRecord};
use ::redis::Value;
use serde::{Deserialize, Serialize};

/// An audit event as stored: its id is the field it is stored under, not part of the JSON.
#[derive(Serialize, Deserialize)]
struct StoredEvent {
    at: i64,
    action: String,
    key_id: Option<String>,
    actor: String,
    details: serde_json::Value,
}

pub(super) use crate::store::record_json::{key_json, names_json};

pub(super) fn event_json(event: &AuditEvent) -> String {
    let stored = StoredEvent {
        at: event.at,
        action: event.action.clone(),
        key_id: event.key_id.clone(),
        actor: event.actor.clone(),
        details: event.details.clone(),
    };
    serde_json::to_string(&stored).expect("a JSON value with string keys always serializes")
}

pub(super) fn event_from_json(id: i64, json: &[u8]) -> Result<AuditEvent, StoreError> {
    let stored: StoredEvent = serde_json::from_slice(json)
        .map_err(|e| corrupt(format!("audit event {id}"), format!("event: {e}")))?;
    Ok(AuditEvent {
        id,
        at: stored.at,
        action: stored.action,
        key_id: stored.key_id,
        actor: stored.actor,
        details: stored.details,
    })
}

/// The field/value pairs of a hash as HGETALL returns them (a flat array in RESP2, a map
/// in RESP3). Empty: no such hash.
pub(super) struct Fields(Vec<(Vec<u8>, Vec<u8>)>);

impl Fields {
    pub(super) fn from_value(value: Value) -> Result<Fields, String> {
        let pairs = match value {
            Value::Nil => Vec::new(),
            Value::Array(items) => {
                if items.len() % 2 != 0 {
                    return Err(format!("a hash reply of {} items", items.len()));
                }
                let mut it = items.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((bytes(k)?, bytes(v)?));
                }
                pairs
            }
            Value::Map(items) => items
                .into_iter()
                .map(|(k, v)| Ok((bytes(k)?, bytes(v)?)))
                .collect::<Result<_, String>>()?,
            other => return Err(format!("a hash reply of {}", kind(&other))),
        };
        Ok(Fields(pairs))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    fn text(&self, name: &str) -> Result<Option<&str>, String> {
        self.get(name)
            .map(|v| std::str::from_utf8(v).map_err(|_| format!("{name}: not UTF-8")))
            .transpose()
    }

    fn required(&self, name: &str) -> Result<&str, String> {
        self.text(name)?.ok_or_else(|| format!("{name}: missing"))
    }

    fn int<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        self.text(name)?
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("{name}: `{s}` is no integer"))
            })
            .transpose()
    }
}

/// The bytes of a string reply.
pub(super) fn bytes(value: Value) -> Result<Vec<u8>, String> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        Value::Okay => Ok(b"OK".to_vec()),
        other => Err(format!("{} where a string was expected", kind(&other))),
    }
}

/// The items of an array reply (nil: none).
pub(super) fn items(value: Value) -> Result<Vec<Value>, String> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(format!("{} where an array was expected", kind(&other))),
    }
}

/// A reply's kind, for error messages (never its content: it may be a record).
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::BulkString(_) | Value::SimpleString(_) | Value::VerbatimString { .. } => "a string",
        Value::Okay => "OK",
        Value::Array(_) | Value::Set(_) => "an array",
        Value::Map(_) => "a map",
        Value::ServerError(_) => "an error",
        _ => "an unexpected reply",
    }
}

/// The key `id` from its hash fields.
pub(super) fn key_from_fields(id: &str, fields: &Fields) -> Result<KeyRecord, StoreError> {
    decode_key(id, fields).map_err(|reason| corrupt(id.to_owned(), reason))
}

fn decode_key(id: &str, f: &Fields) -> Result<KeyRecord, String> {
    let hash = f.required("hash")?;
    let hash = KeyHash::from_hex(hash).ok_or_else(|| "hash: not 64 hex digits".to_owned())?;
    let org = f.required("org")?.to_owned();
    let owner = f.text("owner")?.map(str::to_owned);
    let record = f.required("record")?;
    let created_at = f
        .int::<i64>("created_at")?
        .ok_or_else(|| "created_at: missing".to_owned())?;
    let last_used_at = f.int::<i64>("last_used_at")?;
    let version = f
        .int::<u64>("version")?
        .ok_or_else(|| "version: missing".to_owned())?;
    let fields = KeyFields {
        id: id.to_owned(),
        hash,
        org,
        owner,
        created_at,
        last_used_at,
        version,
    };
    key_from_json(record, fields)
}

/// The user `org`/`user` from its hash fields.
pub(super) fn user_from_fields(
    org: &str,
    user: &str,
    f: &Fields,
) -> Result<UserRecord, StoreError> {
    let decode = || -> Result<UserRecord, String> {
        let removed = match f.required("removed")? {
            "0" => false,
            "1" => true,
            other => return Err(format!("removed: `{other}` is not 0 or 1")),
        };
        let roles = f.required("roles")?;
        let permissions = f.required("permissions")?;
        Ok(UserRecord {
            org: org.to_owned(),
            user: user.to_owned(),
            removed,
            roles: serde_json::from_str(roles).map_err(|e| format!("roles: {e}"))?,
            permissions: serde_json::from_str(permissions)
                .map_err(|e| format!("permissions: {e}"))?,
            version: f
                .int::<u64>("version")?
                .ok_or_else(|| "version: missing".to_owned())?,
        })
    };
    decode().map_err(|reason| corrupt(format!("user {org}/{user}"), reason))
}

/// The state of `org` from its hash fields.
pub(super) fn org_from_fields(org: &str, f: &Fields) -> Result<OrgRecord, StoreError> {
    let decode = || -> Result<OrgRecord, String> {
        Ok(OrgRecord {
            org: org.to_owned(),
            suspended: flag(f.required("suspended")?, "suspended")?,
            version: f
                .int::<u64>("version")?
                .ok_or_else(|| "version: missing".to_owned())?,
        })
    };
    decode().map_err(|reason| corrupt(format!("org {org}"), reason))
}

/// A `0`/`1` field.
pub(super) fn flag(value: &str, name: &str) -> Result<bool, String> {
    match value {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(format!("{name}: `{other}` is not 0 or 1")),
    }
}

pub(super) fn corrupt(key_id: String, reason: String) -> StoreError {
    // The reason names a field and a parse error. Nothing secret is ever stored (keys are
    // hashes), so it may be logged as it comes.
    tracing::error!(key_id = %key_id, %reason, "redis store: stored record cannot be read");
    StoreError::Corrupt { key_id, reason }
}
