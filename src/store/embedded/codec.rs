//! Rows to records and back. The `record` column holds the JSON of `record_json`, the
//! shape the Redis store keeps too.
//!
//! Anything read back that does not decode becomes `StoreError::Corrupt` naming the record,
//! logged once here: a hand-edited or half-restored file must fail one request, not panic.

use crate::key::KeyHash;
use crate::store::record_json::{key_from_json, KeyFields};
use crate::store::{AuditEvent, KeyRecord, StoreError, UserRecord};
use rusqlite::Row;

/// The columns a key query selects (table alias `k`), in the order `key_from_row` reads
/// them. A macro, not a const, so queries can be built with `concat!` at compile time.
macro_rules! key_columns {
    () => {
        "k.id, k.hash, k.org, k.owner, k.record, k.created_at, k.last_used_at, k.version"
    };
}

/// The columns a user query selects (table alias `u`), in the order `user_from_row` reads them.
macro_rules! user_columns {
    () => {
        "u.org, u.user, u.removed, u.roles, u.permissions, u.version"
    };
}

pub(super) use {key_columns, user_columns};

pub(super) use crate::store::record_json::{key_json, names_json};

pub(super) fn value_json(value: &serde_json::Value) -> String {
    serde_json::to_string(value).expect("a JSON value with string keys always serializes")
}

/// Columns of `key_columns!`.
pub(super) const KEY_COLUMNS: usize = 8;

/// Columns of `user_columns!`.
pub(super) const USER_COLUMNS: usize = 6;

/// The key in columns `at..at + KEY_COLUMNS` (see `key_columns!`).
pub(super) fn key_from_row(row: &Row<'_>, at: usize) -> Result<KeyRecord, StoreError> {
    // The id is the primary key; if even it cannot be read the row has no name to give.
    let id: String = row.get(at)?;
    decode_key(row, at, &id).map_err(|reason| corrupt(id, reason))
}

fn decode_key(row: &Row<'_>, at: usize, id: &str) -> Result<KeyRecord, String> {
    let hash: Vec<u8> = row.get(at + 1).map_err(|e| format!("hash: {e}"))?;
    let hash = hash_from_bytes(&hash).ok_or_else(|| format!("hash has {} bytes", hash.len()))?;
    let org: String = row.get(at + 2).map_err(|e| format!("org: {e}"))?;
    let owner: Option<String> = row.get(at + 3).map_err(|e| format!("owner: {e}"))?;
    let record: String = row.get(at + 4).map_err(|e| format!("record: {e}"))?;
    let created_at: i64 = row.get(at + 5).map_err(|e| format!("created_at: {e}"))?;
    let last_used_at: Option<i64> = row.get(at + 6).map_err(|e| format!("last_used_at: {e}"))?;
    let version: i64 = row.get(at + 7).map_err(|e| format!("version: {e}"))?;
    let version = u64::try_from(version).map_err(|_| format!("version {version}"))?;
    let fields = KeyFields {
        id: id.to_owned(),
        hash,
        org,
        owner,
        created_at,
        last_used_at,
        version,
    };
    key_from_json(&record, fields)
}

/// The user in columns `at..at + 6` (see `user_columns!`).
pub(super) fn user_from_row(row: &Row<'_>, at: usize) -> Result<UserRecord, StoreError> {
    let org: String = row.get(at)?;
    let user: String = row.get(at + 1)?;
    let decode = || -> Result<UserRecord, String> {
        let removed: bool = row.get(at + 2).map_err(|e| format!("removed: {e}"))?;
        let roles: String = row.get(at + 3).map_err(|e| format!("roles: {e}"))?;
        let permissions: String = row.get(at + 4).map_err(|e| format!("permissions: {e}"))?;
        let version: i64 = row.get(at + 5).map_err(|e| format!("version: {e}"))?;
        Ok(UserRecord {
            org: org.clone(),
            user: user.clone(),
            removed,
            roles: serde_json::from_str(&roles).map_err(|e| format!("roles: {e}"))?,
            permissions: serde_json::from_str(&permissions)
                .map_err(|e| format!("permissions: {e}"))?,
            version: u64::try_from(version).map_err(|_| format!("version {version}"))?,
        })
    };
    decode().map_err(|reason| corrupt(format!("user {org}/{user}"), reason))
}

/// Columns `id, at, action, key_id, actor, details` of `audit`.
pub(super) fn event_from_row(row: &Row<'_>) -> Result<AuditEvent, StoreError> {
    let id: i64 = row.get(0)?;
    let details: String = row.get(5)?;
    let details = serde_json::from_str(&details)
        .map_err(|e| corrupt(format!("audit event {id}"), format!("details: {e}")))?;
    Ok(AuditEvent {
        id,
        at: row.get(1)?,
        action: row.get(2)?,
        key_id: row.get(3)?,
        actor: row.get(4)?,
        details,
    })
}

pub(super) fn hash_from_bytes(bytes: &[u8]) -> Option<KeyHash> {
    <[u8; 32]>::try_from(bytes).ok().map(KeyHash)
}

fn corrupt(key_id: String, reason: String) -> StoreError {
    // The reason is a column name and a parse error. Nothing secret is ever stored here
    // (keys are hashes), so the parse error may be logged as it comes.
    tracing::error!(key_id = %key_id, %reason, "embedded store: stored record cannot be read");
    StoreError::Corrupt { key_id, reason }
}
