//! Records for the stores' unit tests (shared by the embedded and the Redis store tests).

use crate::key::KeyHash;
use crate::store::{AuditEvent, AuditQuery, KeyRecord, KeyState, KeyStore, KeyType, UserRecord};
use std::collections::BTreeMap;

/// `k` as read back after its first save: the store's first revision.
pub(crate) fn stored(k: &KeyRecord) -> KeyRecord {
    KeyRecord {
        version: 1,
        ..k.clone()
    }
}

pub(crate) fn key(id: &str, org: &str, workspaces: &[&str], created_at: i64) -> KeyRecord {
    KeyRecord {
        id: id.to_owned(),
        hash: KeyHash::of(id.as_bytes()),
        name: id.to_owned(),
        org: org.to_owned(),
        workspaces: workspaces.iter().map(|w| (*w).to_owned()).collect(),
        key_type: KeyType::Service,
        owner: None,
        roles: vec!["viewer".to_owned()],
        inherit: false,
        permissions: vec!["models:read".to_owned()],
        expires_at: None,
        metadata: BTreeMap::new(),
        rate_limit: None,
        quota: None,
        usage_epoch: 0,
        state: KeyState::Active,
        created_at,
        created_by: "cli".to_owned(),
        last_used_at: None,
        revoked_at: None,
        rotated_to: None,
        hint: None,
        sealed_secret: None,
        version: 0,
    }
}

pub(crate) fn personal(id: &str, org: &str, owner: &str, created_at: i64) -> KeyRecord {
    KeyRecord {
        key_type: KeyType::Personal,
        owner: Some(owner.to_owned()),
        ..key(id, org, &["*"], created_at)
    }
}

pub(crate) fn event(action: &str, key_id: Option<&str>) -> AuditEvent {
    AuditEvent {
        id: 0,
        at: 1_700_000_000_000,
        action: action.to_owned(),
        key_id: key_id.map(str::to_owned),
        actor: "cli".to_owned(),
        details: serde_json::json!({ "note": action }),
    }
}

pub(crate) fn user(org: &str, name: &str, removed: bool) -> UserRecord {
    UserRecord {
        org: org.to_owned(),
        user: name.to_owned(),
        removed,
        roles: vec!["editor".to_owned()],
        permissions: vec!["models:read".to_owned(), "models:write".to_owned()],
        version: 0,
    }
}

pub(crate) async fn save(store: &impl KeyStore, keys: &[KeyRecord]) {
    store
        .save_keys(
            keys,
            &[event("create", keys.first().map(|k| k.id.as_str()))],
        )
        .await
        .expect("save keys");
}

/// The ids of `keys`, in order.
pub(crate) fn ids(keys: &[KeyRecord]) -> Vec<&str> {
    keys.iter().map(|k| k.id.as_str()).collect()
}

/// Every audit event, newest first (up to 100).
pub(crate) fn all_events() -> AuditQuery {
    AuditQuery {
        key_id: None,
        before: None,
        limit: 100,
    }
}
