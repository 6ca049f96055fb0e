//! `UsageSink`: the cache's `last_used_at` batches.

use super::EmbeddedStore;
use crate::store::{StoreError, UsageSink};
use async_trait::async_trait;
use rusqlite::params;

#[async_trait]
impl UsageSink for EmbeddedStore {
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
}
