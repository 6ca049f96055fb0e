//! `UsageSink`: the cache's `last_used_at` batches, in chunks of `CHUNK` per script.

use super::{keys, scripts, writer_args, RedisStore, CHUNK};
use crate::store::{StoreError, UsageSink};
use async_trait::async_trait;

#[async_trait]
impl UsageSink for RedisStore {
    async fn record_last_used(&self, batch: &[(String, i64)]) -> Result<(), StoreError> {
        // Chunks are separate scripts: each use is written on its own anyway (max()), and a
        // huge batch must not keep Redis busy in one piece.
        for chunk in batch.chunks(CHUNK) {
            let mut args = writer_args();
            for (id, at) in chunk {
                args.extend([id.clone(), at.to_string()]);
            }
            let _: i64 = self
                .run(|mut c| async move {
                    let mut call = scripts::RECORD_LAST_USED_SCRIPT.key(keys::events());
                    call.arg(args);
                    call.invoke_async(&mut c).await
                })
                .await?;
        }
        Ok(())
    }
}
