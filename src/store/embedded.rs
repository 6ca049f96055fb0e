//! The embedded key store: one SQLite file, for a single gateway and the CLI beside it.
//!
//! The gateway and the CLI are separate processes on the same file. WAL mode lets the
//! gateway read while the CLI writes, and the `changes` table is how the gateway learns
//! what the CLI changed: every write that can change a verdict appends the affected key
//! hashes in the same transaction, and the gateway polls `changes_since`.
//!
//! SQLite calls block, so every trait method runs its work on tokio's blocking pool. One
//! writer connection serializes this process's writes (SQLite allows one writer anyway);
//! a few read connections serve lookups, so a bulk write never stalls the auth path.

mod codec;
mod feed;
mod schema;
#[cfg(test)]
mod tests;

use crate::key::KeyHash;
use crate::store::{
    now_ms, AuditEvent, AuditQuery, ChangeBatch, KeyFilter, KeyRecord, KeyStore, Lookup, OrgRecord,
    StoreError, UserRecord,
};
use async_trait::async_trait;
use codec::{key_columns, user_columns};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

/// Read connections per store. Lookups are point queries of microseconds; a few
/// connections keep concurrent cache misses from queueing behind each other.
const READERS: usize = 3;

pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// One permit per reader. A read waits here, on the runtime, for a free connection:
    /// without it a burst of cache misses (a flood of unknown keys) starts a blocking
    /// thread per miss, all but `READERS` of them only waiting for a connection.
    free_readers: Arc<tokio::sync::Semaphore>,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store file at `path` and brings its schema up to
    /// date. Blocking: call it from `spawn_blocking`.
    pub fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        }
        let mut writer = Connection::open(path)?;
        schema::configure_writer(&writer)?;
        // Before any reader exists: readers then never see a half-built schema.
        schema::migrate(&mut writer)?;
        let readers = (0..READERS)
            .map(|_| {
                let conn = Connection::open(path)?;
                schema::configure_reader(&conn)?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        tracing::debug!(path = %path.display(), "embedded store opened");
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                free_readers: Arc::new(tokio::sync::Semaphore::new(readers.len())),
                readers,
                next_reader: AtomicUsize::new(0),
            }),
        })
    }

    /// Runs `f` on a read connection, off the async runtime.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        // Owned, and dropped by the blocking task: a caller that gives up (its request
        // was dropped) does not free a reader that is still busy. The semaphore is never
        // closed; if it were, reads would go on unbounded rather than fail.
        let permit = Arc::clone(&inner.free_readers).acquire_owned().await.ok();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&mut inner.reader())
        })
        .await?
    }

    /// Runs `f` in one IMMEDIATE transaction on the writer, off the async runtime; commits
    /// when `f` succeeds. IMMEDIATE takes the write lock up front: a deferred transaction
    /// that upgrades from read to write can fail with SQLITE_BUSY at once (no busy wait)
    /// when the CLI and the gateway write together.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut conn = lock(&inner.writer);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await?
    }
}

impl Inner {
    /// A free read connection if there is one, else waits for one (round robin).
    fn reader(&self) -> MutexGuard<'_, Connection> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            match self.readers[(start + i) % n].try_lock() {
                Ok(conn) => return conn,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        lock(&self.readers[start % n])
    }
}

/// A poisoned lock only means a task panicked while holding the connection; a transaction
/// it left open was rolled back when it dropped, so the connection is still good.
fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Appends `event`; the store assigns its id.
fn append_audit(tx: &Transaction<'_>, event: &AuditEvent) -> Result<(), StoreError> {
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

fn save_keys_tx(
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
        append_audit(tx, event)?;
    }
    feed::prune(tx, now)
}

fn delete_key_tx(tx: &Transaction<'_>, id: &str, event: &AuditEvent) -> Result<bool, StoreError> {
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
    append_audit(tx, event)?;
    feed::prune(tx, now)?;
    Ok(true)
}

fn save_user_tx(
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
    append_audit(tx, event)?;
    feed::prune(tx, now)
}

fn save_org_tx(
    tx: &Transaction<'_>,
    org: &OrgRecord,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    let stored: Option<i64> = tx
        .prepare_cached("SELECT version FROM orgs WHERE org = ?1")?
        .query_row([&org.org], |row| row.get(0))
        .optional()?;
    let stored_version = stored.map_or(0, |v| u64::try_from(v).unwrap_or(0));
    // Strict, 0 included: see `KeyStore::save_org`.
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
    append_audit(tx, event)?;
    feed::prune(tx, now)
}

#[async_trait]
impl KeyStore for EmbeddedStore {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<Lookup>, StoreError> {
        let hash = *hash;
        self.read(move |conn| {
            // One query: the owner's row and the org's state come with the key, so a
            // verdict never mixes two snapshots.
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                key_columns!(),
                ", ",
                user_columns!(),
                ", coalesce(o.suspended, 0)
                 FROM keys k LEFT JOIN users u ON u.org = k.org AND u.user = k.owner
                 LEFT JOIN orgs o ON o.org = k.org
                 WHERE k.hash = ?1"
            ))?;
            let mut rows = stmt.query([&hash.0[..]])?;
            let Some(row) = rows.next()? else {
                return Ok(None);
            };
            let key = codec::key_from_row(row, 0)?;
            let owner = match row.get::<_, Option<String>>(codec::KEY_COLUMNS)? {
                Some(_) => Some(codec::user_from_row(row, codec::KEY_COLUMNS)?),
                None => None,
            };
            let org_suspended = row.get(codec::KEY_COLUMNS + codec::USER_COLUMNS)?;
            Ok(Some(Lookup {
                key,
                owner,
                org_suspended,
            }))
        })
        .await
    }

    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                key_columns!(),
                " FROM keys k WHERE k.id = ?1"
            ))?;
            let mut rows = stmt.query([&id])?;
            rows.next()?
                .map(|row| codec::key_from_row(row, 0))
                .transpose()
        })
        .await
    }

    async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyRecord>, StoreError> {
        let filter = filter.clone();
        self.read(move |conn| {
            let mut stmt;
            let mut rows = match &filter.org {
                Some(org) => {
                    stmt = conn.prepare_cached(concat!(
                        "SELECT ",
                        key_columns!(),
                        " FROM keys k WHERE k.org = ?1 ORDER BY k.created_at, k.id"
                    ))?;
                    stmt.query([org])?
                }
                None => {
                    stmt = conn.prepare_cached(concat!(
                        "SELECT ",
                        key_columns!(),
                        " FROM keys k ORDER BY k.created_at, k.id"
                    ))?;
                    stmt.query([])?
                }
            };
            let mut keys = Vec::new();
            while let Some(row) = rows.next()? {
                let key = codec::key_from_row(row, 0)?;
                // Workspaces live in the JSON record; filtering here keeps a corrupt record
                // an error naming the key rather than a failed SQL function.
                let fits = filter
                    .workspace
                    .as_deref()
                    .is_none_or(|w| key.is_org_key() || key.workspaces.iter().any(|k| k == w));
                if fits {
                    keys.push(key);
                }
            }
            Ok(keys)
        })
        .await
    }

    async fn save_keys(&self, keys: &[KeyRecord], events: &[AuditEvent]) -> Result<(), StoreError> {
        let (keys, events) = (keys.to_vec(), events.to_vec());
        self.write(move |tx| save_keys_tx(tx, &keys, &events)).await
    }

    async fn delete_key(&self, id: &str, event: &AuditEvent) -> Result<bool, StoreError> {
        let (id, event) = (id.to_owned(), event.clone());
        // A missing key returns false before any statement wrote: the commit is empty.
        self.write(move |tx| delete_key_tx(tx, &id, &event)).await
    }

    async fn get_user(&self, org: &str, user: &str) -> Result<Option<UserRecord>, StoreError> {
        let (org, user) = (org.to_owned(), user.to_owned());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users u WHERE u.org = ?1 AND u.user = ?2"
            ))?;
            let mut rows = stmt.query([&org, &user])?;
            rows.next()?
                .map(|row| codec::user_from_row(row, 0))
                .transpose()
        })
        .await
    }

    async fn user_owns_keys(&self, org: &str, user: &str) -> Result<bool, StoreError> {
        let (org, user) = (org.to_owned(), user.to_owned());
        self.read(move |conn| {
            let owns = conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM keys WHERE org = ?1 AND owner = ?2)")?
                .query_row([&org, &user], |row| row.get(0))?;
            Ok(owns)
        })
        .await
    }

    async fn save_user(&self, user: &UserRecord, event: &AuditEvent) -> Result<(), StoreError> {
        let (user, event) = (user.clone(), event.clone());
        self.write(move |tx| save_user_tx(tx, &user, &event)).await
    }

    async fn get_org(&self, org: &str) -> Result<Option<OrgRecord>, StoreError> {
        let org = org.to_owned();
        self.read(move |conn| {
            let row: Option<(bool, i64)> = conn
                .prepare_cached("SELECT suspended, version FROM orgs WHERE org = ?1")?
                .query_row([&org], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            Ok(row.map(|(suspended, version)| OrgRecord {
                org,
                suspended,
                version: u64::try_from(version).unwrap_or(0),
            }))
        })
        .await
    }

    async fn save_org(&self, org: &OrgRecord, event: &AuditEvent) -> Result<(), StoreError> {
        let (org, event) = (org.clone(), event.clone());
        self.write(move |tx| save_org_tx(tx, &org, &event)).await
    }

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

    async fn record_last_used(&self, batch: &[(String, i64)]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = batch.to_vec();
        // No change row and no audit: when a key was last used changes no verdict.
        self.write(move |tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE keys SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE id = ?1",
            )?;
            for (id, at) in &batch {
                stmt.execute(params![id, at])?;
            }
            Ok(())
        })
        .await
    }

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
        self.read(move |conn| feed::changes_since(conn, cursor))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Reads a table rather than `SELECT 1`, which a connection answers without ever
        // touching the file: readiness should notice a file that became unreadable.
        self.read(|conn| {
            conn.prepare_cached("SELECT max(seq) FROM changes")?
                .query_row([], |row| row.get::<_, Option<i64>>(0))?;
            Ok(())
        })
        .await
    }
}
