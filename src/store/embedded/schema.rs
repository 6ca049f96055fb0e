//! Connection settings and schema migrations of the embedded store.
//!
//! The schema version lives in `PRAGMA user_version`: version N means the first N steps of
//! `MIGRATIONS` have run. A new version is one more function at the end of the list; the
//! steps already shipped are never edited, because files in the field were built by them.

use crate::store::StoreError;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::time::Duration;

/// How long a statement waits for another connection's (or process's) lock before it fails
/// with `SQLITE_BUSY`. Writes are short, so only a stuck process makes a caller wait this long.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

type Migration = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// Step `i` takes a file from version `i` to version `i + 1`.
const MIGRATIONS: &[Migration] = &[v1_initial, v2_versions, v3_orgs, v4_quotas];

/// The newest schema this build reads and writes.
pub(super) const SUPPORTED_VERSION: i64 = MIGRATIONS.len() as i64;

/// Settings of the connection that writes. `journal_mode` is a property of the file, so it
/// is set here once; the others are per connection.
pub(super) fn configure_writer(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets the gateway's readers run while the CLI writes, and makes a commit one
    // append instead of a rewrite of the journal.
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Some file systems (network mounts) cannot hold a WAL. The store still works,
        // readers just wait for writers.
        tracing::warn!(journal_mode = %mode, "the embedded store could not switch to WAL");
    }
    // NORMAL in WAL mode: a power cut may lose the last commits, never corrupt the file.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

/// Settings of a read connection: it must never write, even through a bug.
pub(super) fn configure_reader(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(())
}

/// Brings the file to `SUPPORTED_VERSION`, or refuses a file written by a newer keygate.
///
/// One IMMEDIATE transaction: two processes opening a new file at once (the gateway and the
/// CLI) serialize here, and the second one finds the schema already built.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if found > SUPPORTED_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SUPPORTED_VERSION,
        });
    }
    // `user_version` is a signed field of the file header; below zero is no keygate file.
    let done = usize::try_from(found).map_err(|_| StoreError::Corrupt {
        key_id: "(schema)".to_owned(),
        reason: format!("negative schema version {found}"),
    })?;
    for (step, migration) in MIGRATIONS.iter().enumerate().skip(done) {
        migration(&tx)?;
        // Inside the transaction: a failed step leaves the old version and no half schema.
        tx.pragma_update(None, "user_version", step + 1)?;
        tracing::info!(version = step + 1, "embedded store schema migrated");
    }
    tx.commit()?;
    Ok(())
}

/// Version 4: quota counters (SPEC §7), one row per key that ever leased, holding the
/// current tag only (a newer epoch or period replaces the row's counts).
fn v4_quotas(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE quota_usage (
             key_id TEXT PRIMARY KEY NOT NULL,
             epoch  INTEGER NOT NULL,
             period INTEGER NOT NULL,
             leased INTEGER NOT NULL,
             used   INTEGER NOT NULL
         ) WITHOUT ROWID;",
    )
}

/// Version 3: org suspension (SPEC §8). A row only for orgs someone suspended or
/// restored; the lookup joins it by the key's org, so no key row changes.
fn v3_orgs(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE orgs (
             org       TEXT PRIMARY KEY NOT NULL,
             suspended INTEGER NOT NULL,
             version   INTEGER NOT NULL
         ) WITHOUT ROWID;",
    )
}

/// Version 2: a revision per key and user row, for compare-and-set saves.
fn v2_versions(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE keys ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
         ALTER TABLE users ADD COLUMN version INTEGER NOT NULL DEFAULT 1;",
    )
}

/// Version 1: keys, users, the audit log and the change feed.
fn v1_initial(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "
        -- Columns for what queries filter or sort on; `record` holds the rest as JSON.
        -- `last_used_at` is a column because record_last_used updates it in bulk.
        CREATE TABLE keys (
            id           TEXT PRIMARY KEY NOT NULL,
            hash         BLOB NOT NULL UNIQUE,
            org          TEXT NOT NULL,
            owner        TEXT,
            record       TEXT NOT NULL,
            created_at   INTEGER NOT NULL,
            last_used_at INTEGER
        );
        -- Serves list_keys by org already in (created_at, id) order.
        CREATE INDEX keys_org_created ON keys (org, created_at, id);
        CREATE INDEX keys_org_owner ON keys (org, owner);

        CREATE TABLE users (
            org         TEXT NOT NULL,
            user        TEXT NOT NULL,
            removed     INTEGER NOT NULL,
            roles       TEXT NOT NULL,
            permissions TEXT NOT NULL,
            PRIMARY KEY (org, user)
        );

        -- AUTOINCREMENT: an id is never handed out twice, so audit paging by id is stable.
        CREATE TABLE audit (
            id      INTEGER PRIMARY KEY AUTOINCREMENT,
            at      INTEGER NOT NULL,
            action  TEXT NOT NULL,
            key_id  TEXT,
            actor   TEXT NOT NULL,
            details TEXT NOT NULL
        );
        CREATE INDEX audit_key ON audit (key_id, id);

        -- The change feed the gateway polls. AUTOINCREMENT keeps seq growing even after
        -- pruning, and a rolled-back write takes its seq back with it, so a hole in seq
        -- can only mean pruned rows. A NULL hash means: evict everything.
        CREATE TABLE changes (
            seq  INTEGER PRIMARY KEY AUTOINCREMENT,
            at   INTEGER NOT NULL,
            hash BLOB
        );
        CREATE INDEX changes_at ON changes (at);
        ",
    )
}
