//! The change feed: how a gateway learns what another process (the CLI) changed.
//!
//! Every write that can change a verdict appends the affected key hashes to `changes` in
//! its own transaction; the gateway polls `changes_since` with the last seq it saw. Old
//! rows are pruned, and a reader that finds a hole where pruned rows were drops its whole
//! cache: it cannot know which keys it missed.

use super::{codec, EmbeddedStore};
use crate::key::KeyHash;
use crate::store::{ChangeBatch, ChangeFeed, StoreError};
use async_trait::async_trait;
use rusqlite::{params, Connection, Transaction};

/// Change rows older than this are pruned. The gateway polls every ~250 ms, so only a
/// gateway stopped for longer than this misses rows, and then it sees the gap.
const CHANGE_RETENTION_MS: i64 = 60 * 60 * 1000;

/// At most this many change rows per `changes_since`. Past it (a bulk import), dropping
/// the whole cache is cheaper than evicting key by key, and keeps every poll bounded.
pub(super) const MAX_CHANGE_BATCH: usize = 4096;

/// Appends one change row; `None` tells every gateway to drop its whole cache.
pub(super) fn publish(
    tx: &Transaction<'_>,
    at: i64,
    hash: Option<&KeyHash>,
) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO changes (at, hash) VALUES (?1, ?2)")?
        .execute(params![at, hash.map(|h| &h.0[..])])?;
    Ok(())
}

/// Drops change rows past retention, in the write that just appended newer ones. The
/// newest row always stays: it carries the cursor, so `max(seq)` never goes back.
pub(super) fn prune(tx: &Transaction<'_>, now: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "DELETE FROM changes WHERE at < ?1 AND seq < (SELECT max(seq) FROM changes)",
    )?
    .execute([now - CHANGE_RETENTION_MS])?;
    Ok(())
}

pub(super) fn changes_since(conn: &mut Connection, cursor: u64) -> Result<ChangeBatch, StoreError> {
    // One snapshot for both queries, so the max below matches the rows above.
    let tx = conn.transaction()?;
    let after = i64::try_from(cursor).unwrap_or(i64::MAX);
    let mut rows: Vec<(i64, Option<Vec<u8>>)> = Vec::new();
    let mut written_at_ms = None;
    {
        let mut stmt = tx.prepare_cached(
            "SELECT seq, hash, at FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let limit = i64::try_from(MAX_CHANGE_BATCH + 1).expect("a small constant fits i64");
        let mut it = stmt.query(params![after, limit])?;
        while let Some(row) = it.next()? {
            rows.push((row.get(0)?, row.get(1)?));
            // Rows come in seq order: the first is the oldest.
            written_at_ms = written_at_ms.or(Some(row.get(2)?));
        }
    }
    let max_seq = || -> Result<u64, StoreError> {
        let max: i64 = tx.query_row("SELECT coalesce(max(seq), 0) FROM changes", [], |row| {
            row.get(0)
        })?;
        Ok(u64::try_from(max).unwrap_or(0))
    };
    let Some(&(first, _)) = rows.first() else {
        // Nothing new, the common case. A cursor past the end means the file was replaced
        // (restored from a backup, recreated): whatever the caller cached came from another
        // file, so it must all go.
        let max = max_seq()?;
        if max < cursor {
            tracing::warn!(
                cursor,
                max,
                "change feed is behind the caller's cursor; evicting all"
            );
            return Ok(ChangeBatch {
                cursor: max,
                evict: Vec::new(),
                evict_all: true,
                written_at_ms: None,
            });
        }
        return Ok(ChangeBatch {
            cursor,
            evict: Vec::new(),
            evict_all: false,
            written_at_ms: None,
        });
    };
    if rows.len() > MAX_CHANGE_BATCH {
        return Ok(ChangeBatch {
            cursor: max_seq()?,
            evict: Vec::new(),
            evict_all: true,
            written_at_ms,
        });
    }
    // seq has no holes except pruned rows (see the schema), so a first row past
    // cursor + 1 means the caller missed changes it can no longer learn.
    let mut evict_all = u64::try_from(first).map_or(true, |first| first > cursor.saturating_add(1));
    let mut evict = Vec::with_capacity(rows.len());
    let mut last = cursor;
    for (seq, hash) in rows {
        last = u64::try_from(seq).unwrap_or(last);
        match hash.as_deref().map(codec::hash_from_bytes) {
            Some(Some(hash)) => evict.push(hash),
            // NULL (evict everything), or a hash that does not decode.
            _ => evict_all = true,
        }
    }
    evict.sort_unstable();
    evict.dedup();
    Ok(ChangeBatch {
        cursor: last,
        evict,
        evict_all,
        written_at_ms,
    })
}

#[async_trait]
impl ChangeFeed for EmbeddedStore {
    async fn change_cursor(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            let max: i64 = conn
                .prepare_cached("SELECT coalesce(max(seq), 0) FROM changes")?
                .query_row([], |row| row.get(0))?;
            Ok(u64::try_from(max).unwrap_or(0))
        })
        .await
    }

    async fn changes_since(&self, cursor: u64) -> Result<ChangeBatch, StoreError> {
        self.read(move |conn| changes_since(conn, cursor)).await
    }
}
