//! The audit log: appended by the writes (`writes.rs`) in their transaction, read by
//! `AuditLog`.

use super::{codec, EmbeddedStore};
use crate::store::{AuditEvent, AuditLog, AuditQuery, StoreError};
use async_trait::async_trait;
use rusqlite::{params, Transaction};

/// Appends `event`; the store assigns its id.
pub(super) fn append(tx: &Transaction<'_>, event: &AuditEvent) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO audit (at, action, key_id, actor, details) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        event.at,
        event.action,
        event.key_id,
        event.actor,
        codec::value_json(&event.details),
    ])?;
    Ok(())
}

#[async_trait]
impl AuditLog for EmbeddedStore {
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let query = query.clone();
        self.read(move |conn| {
            let before = query.before.unwrap_or(i64::MAX);
            let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
            let mut stmt;
            let mut rows = match &query.key_id {
                Some(key_id) => {
                    stmt = conn.prepare_cached(
                        "SELECT id, at, action, key_id, actor, details FROM audit
                         WHERE key_id = ?3 AND id < ?1 ORDER BY id DESC LIMIT ?2",
                    )?;
                    stmt.query(params![before, limit, key_id])?
                }
                None => {
                    stmt = conn.prepare_cached(
                        "SELECT id, at, action, key_id, actor, details FROM audit
                         WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
                    )?;
                    stmt.query(params![before, limit])?
                }
            };
            let mut events = Vec::new();
            while let Some(row) = rows.next()? {
                events.push(codec::event_from_row(row)?);
            }
            Ok(events)
        })
        .await
    }
}
