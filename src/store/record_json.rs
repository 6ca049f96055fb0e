//! The JSON both stores keep a key's remaining attributes in (the embedded store's
//! `record` column, the Redis store's `record` hash field): one shape, defined once, so a
//! record reads the same whichever store wrote it. `KeyRecord` is not serde itself (its
//! hash is bytes, and some fields are stored beside the JSON), hence this private shape.

use crate::key::{KeyHash, SealedSecret};
use crate::store::{KeyRecord, KeyState, KeyType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Serialize, Deserialize)]
struct StoredKey {
    name: String,
    workspaces: Vec<String>,
    key_type: KeyType,
    roles: Vec<String>,
    inherit: bool,
    permissions: Vec<String>,
    expires_at: Option<i64>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    rate_limit: Option<String>,
    /// Absent in records written before quotas existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quota: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    usage_epoch: u64,
    state: KeyState,
    created_by: String,
    revoked_at: Option<i64>,
    rotated_to: Option<String>,
    /// Absent in records written before hints existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
    /// Recoverable keys only (`v1:<hex>`); absent in records written without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed_secret: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The attributes a store keeps beside the JSON (columns, hash fields).
pub(crate) struct KeyFields {
    pub id: String,
    pub hash: KeyHash,
    pub org: String,
    pub owner: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub version: u64,
}

/// The JSON of `key`'s attributes that are not fields of their own.
pub(crate) fn key_json(key: &KeyRecord) -> String {
    let stored = StoredKey {
        name: key.name.clone(),
        workspaces: key.workspaces.clone(),
        key_type: key.key_type,
        roles: key.roles.clone(),
        inherit: key.inherit,
        permissions: key.permissions.clone(),
        expires_at: key.expires_at,
        metadata: key.metadata.clone(),
        rate_limit: key.rate_limit.clone(),
        quota: key.quota.clone(),
        usage_epoch: key.usage_epoch,
        state: key.state,
        created_by: key.created_by.clone(),
        revoked_at: key.revoked_at,
        rotated_to: key.rotated_to.clone(),
        hint: key.hint.clone(),
        sealed_secret: key.sealed_secret.as_ref().map(|s| s.as_str().to_owned()),
    };
    serde_json::to_string(&stored).expect("strings, lists, string maps and enums always serialize")
}

/// The key from its JSON and its other fields; the error names what does not parse.
pub(crate) fn key_from_json(record: &str, f: KeyFields) -> Result<KeyRecord, String> {
    let s: StoredKey = serde_json::from_str(record).map_err(|e| format!("record: {e}"))?;
    Ok(KeyRecord {
        id: f.id,
        hash: f.hash,
        name: s.name,
        org: f.org,
        workspaces: s.workspaces,
        key_type: s.key_type,
        owner: f.owner,
        roles: s.roles,
        inherit: s.inherit,
        permissions: s.permissions,
        expires_at: s.expires_at,
        metadata: s.metadata,
        rate_limit: s.rate_limit,
        quota: s.quota,
        usage_epoch: s.usage_epoch,
        state: s.state,
        created_at: f.created_at,
        created_by: s.created_by,
        last_used_at: f.last_used_at,
        revoked_at: s.revoked_at,
        rotated_to: s.rotated_to,
        hint: s.hint,
        // As stored: a damaged one fails when revealed, and keeps the key usable.
        sealed_secret: s.sealed_secret.map(SealedSecret::from_stored),
        version: f.version,
    })
}

/// A list of names as JSON (user roles and permissions).
pub(crate) fn names_json(names: &[String]) -> String {
    serde_json::to_string(names).expect("a list of strings always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::key;

    fn fields(k: &KeyRecord) -> KeyFields {
        KeyFields {
            id: k.id.clone(),
            hash: k.hash,
            org: k.org.clone(),
            owner: k.owner.clone(),
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            version: k.version,
        }
    }

    #[test]
    fn the_sealed_secret_is_optional_so_older_records_read_as_before() {
        let plain = key("key_a", "acme", &["*"], 1);
        let json = key_json(&plain);
        assert!(!json.contains("sealed_secret"), "{json}");
        assert_eq!(key_from_json(&json, fields(&plain)), Ok(plain.clone()));

        let sealed = KeyRecord {
            sealed_secret: Some(SealedSecret::from_stored("v1:00ff".to_owned())),
            ..plain
        };
        let json = key_json(&sealed);
        assert!(json.contains(r#""sealed_secret":"v1:00ff""#), "{json}");
        assert_eq!(key_from_json(&json, fields(&sealed)), Ok(sealed));
    }
}
