//! The transactions of `KeyRepo`'s writes: each writes its records, appends its audit
//! events and publishes the changed hashes on the change feed, or does none of it.

use super::{audit, codec, feed};
use crate::store::{now_ms, AuditEvent, KeyRecord, OrgRecord, StoreError, UserRecord};
use rusqlite::{params, OptionalExtension, Transaction};

/// A record read at `read` (above 0) may only replace the revision it was read at; one
/// not read from the store (0) is written as is (new keys, imports).
fn check_version(
    read: u64,
    stored: u64,
    record: impl FnOnce() -> String,
) -> Result<(), StoreError> {
    if read != 0 && read != stored {
        return Err(StoreError::Conflict { record: record() });
    }
    Ok(())
}

pub(super) fn save_keys_tx(
    tx: &Transaction<'_>,
    keys: &[KeyRecord],
    events: &[AuditEvent],
) -> Result<(), StoreError> {
    let now = now_ms();
    for key in keys {
        // Hashes never change in practice, but if a caller did change one, the old hash's
        // cached answer must go too.
        let old: Option<(Vec<u8>, i64)> = tx
            .prepare_cached("SELECT hash, version FROM keys WHERE id = ?1")?
            .query_row([&key.id], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        let stored_version = old
            .as_ref()
            .map_or(0, |(_, v)| u64::try_from(*v).unwrap_or(0));
        check_version(key.version, stored_version, || key.id.clone())?;
        if let Some((old, _)) = old.filter(|(old, _)| old[..] != key.hash.0[..]) {
            feed::publish(tx, now, codec::hash_from_bytes(&old).as_ref())?;
        }
        // last_used_at belongs to record_last_used, which may have written a newer time
        // since the caller read this record: keep the later of the two.
        tx.prepare_cached(
            "INSERT INTO keys (id, hash, org, owner, record, created_at, last_used_at, version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (id) DO UPDATE SET
                 version = excluded.version,
                 hash = excluded.hash,
                 org = excluded.org,
                 owner = excluded.owner,
                 record = excluded.record,
                 created_at = excluded.created_at,
                 last_used_at = CASE
                     WHEN keys.last_used_at IS NULL THEN excluded.last_used_at
                     WHEN excluded.last_used_at IS NULL THEN keys.last_used_at
                     ELSE max(keys.last_used_at, excluded.last_used_at)
                 END",
        )?
        .execute(params![
            key.id,
            &key.hash.0[..],
            key.org,
            key.owner,
            codec::key_json(key),
            key.created_at,
            key.last_used_at,
            i64::try_from(stored_version + 1).unwrap_or(i64::MAX),
        ])?;
        feed::publish(tx, now, Some(&key.hash))?;
    }
    for event in events {
        audit::append(tx, event)?;
    }
    feed::prune(tx, now)
}

pub(super) fn delete_key_tx(
    tx: &Transaction<'_>,
    id: &str,
    event: &AuditEvent,
) -> Result<bool, StoreError> {
    let hash: Option<Vec<u8>> = tx
        .prepare_cached("DELETE FROM keys WHERE id = ?1 RETURNING hash")?
        .query_row([id], |row| row.get(0))
        .optional()?;
    let Some(hash) = hash else {
        return Ok(false);
    };
    let now = now_ms();
    // A hash that does not decode cannot be evicted alone: evict everything instead.
    feed::publish(tx, now, codec::hash_from_bytes(&hash).as_ref())?;
    audit::append(tx, event)?;
    feed::prune(tx, now)?;
    Ok(true)
}

pub(super) fn save_user_tx(
    tx: &Transaction<'_>,
    user: &UserRecord,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    let stored: Option<i64> = tx
        .prepare_cached("SELECT version FROM users WHERE org = ?1 AND user = ?2")?
        .query_row(params![user.org, user.user], |row| row.get(0))
        .optional()?;
    let stored_version = stored.map_or(0, |v| u64::try_from(v).unwrap_or(0));
    check_version(user.version, stored_version, || {
        format!("user {}/{}", user.org, user.user)
    })?;
    tx.prepare_cached(
        "INSERT INTO users (org, user, removed, roles, permissions, version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (org, user) DO UPDATE SET
             version = excluded.version,
             removed = excluded.removed,
             roles = excluded.roles,
             permissions = excluded.permissions",
    )?
    .execute(params![
        user.org,
        user.user,
        user.removed,
        codec::names_json(&user.roles),
        codec::names_json(&user.permissions),
        i64::try_from(stored_version + 1).unwrap_or(i64::MAX),
    ])?;
    let now = now_ms();
    // Every answer for a key the user owns embeds the user's state.
    tx.prepare_cached(
        "INSERT INTO changes (at, hash) SELECT ?1, hash FROM keys WHERE org = ?2 AND owner = ?3",
    )?
    .execute(params![now, user.org, user.user])?;
    audit::append(tx, event)?;
    feed::prune(tx, now)
}

pub(super) fn save_org_tx(
    tx: &Transaction<'_>,
    org: &OrgRecord,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    let stored: Option<i64> = tx
        .prepare_cached("SELECT version FROM orgs WHERE org = ?1")?
        .query_row([&org.org], |row| row.get(0))
        .optional()?;
    let stored_version = stored.map_or(0, |v| u64::try_from(v).unwrap_or(0));
    // Strict, 0 included: see `KeyRepo::save_org`.
    if org.version != stored_version {
        return Err(StoreError::Conflict {
            record: format!("org {}", org.org),
        });
    }
    tx.prepare_cached(
        "INSERT INTO orgs (org, suspended, version) VALUES (?1, ?2, ?3)
         ON CONFLICT (org) DO UPDATE SET
             suspended = excluded.suspended,
             version = excluded.version",
    )?
    .execute(params![
        org.org,
        org.suspended,
        i64::try_from(stored_version + 1).unwrap_or(i64::MAX),
    ])?;
    let now = now_ms();
    // Every answer for a key of the org embeds the org's state (keys_org_created serves
    // the scan). An org with more keys than a poll reads gets one "drop everything" row
    // instead: readers would drop their whole cache anyway, and the feed stays small (the
    // Redis store does the same).
    let keys: i64 = tx
        .prepare_cached("SELECT count(*) FROM keys WHERE org = ?1")?
        .query_row([&org.org], |row| row.get(0))?;
    if usize::try_from(keys).map_or(true, |n| n > feed::MAX_CHANGE_BATCH) {
        feed::publish(tx, now, None)?;
    } else {
        tx.prepare_cached(
            "INSERT INTO changes (at, hash) SELECT ?1, hash FROM keys WHERE org = ?2",
        )?
        .execute(params![now, org.org])?;
    }
    audit::append(tx, event)?;
    feed::prune(tx, now)
}
