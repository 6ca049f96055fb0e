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
//!
//! `EmbeddedStore` (here) owns the connections; each store trait is implemented in a file
//! of its own: `lookup.rs`, `repo.rs` (with its transactions in `writes.rs`), `audit.rs`,
//! `usage.rs`, `feed.rs`, `meters.rs`, `health.rs`.

mod audit;
mod codec;
mod feed;
mod health;
mod lookup;
mod meters;
mod repo;
mod schema;
#[cfg(test)]
mod tests;
mod usage;
mod writes;

use crate::store::StoreError;
use rusqlite::{Connection, Transaction, TransactionBehavior};
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
