//! `Health`: readiness.

use super::{keys, RedisStore};
use crate::store::{Health, StoreError};
use async_trait::async_trait;

#[async_trait]
impl Health for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        // A keyed read rather than PING: in a cluster it reaches the node that serves the
        // `{kg}` slot, which is the one readiness depends on.
        let mut cmd = ::redis::cmd("EXISTS");
        cmd.arg(keys::events_seq());
        let _: i64 = self.query(cmd).await?;
        Ok(())
    }
}
