//! `Health`: readiness.

use super::EmbeddedStore;
use crate::store::{Health, StoreError};
use async_trait::async_trait;

#[async_trait]
impl Health for EmbeddedStore {
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
