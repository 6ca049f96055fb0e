//! `Meters`: quota counters and the fleet's shared rate windows, one script call each.

use super::{keys, reply_error, scripts, RedisStore, CHUNK};
use crate::store::{
    Meters, QuotaAsk, QuotaCounters, QuotaGrant, QuotaSettle, QuotaTag, RateGrant, StoreError,
};
use async_trait::async_trait;

#[async_trait]
impl Meters for RedisStore {
    async fn lease_quota(&self, key_id: &str, ask: QuotaAsk) -> Result<QuotaGrant, StoreError> {
        let QuotaAsk {
            tag, want, limit, ..
        } = ask;
        let expire_at = ask.keep_until_ms.unwrap_or(0);
        let reply: (u64, u64, u64, i64) = self
            .run(|mut c| async move {
                let mut call = scripts::LEASE_QUOTA_SCRIPT.key(keys::quota(key_id));
                call.arg(keys::PREFIX)
                    .arg(tag.epoch)
                    .arg(tag.period)
                    .arg(want)
                    .arg(limit)
                    .arg(expire_at);
                call.invoke_async(&mut c).await
            })
            .await?;
        let (granted, leased, epoch, period) = reply;
        Ok(QuotaGrant {
            granted,
            leased,
            tag: QuotaTag { epoch, period },
        })
    }

    async fn settle_quota(&self, batch: &[QuotaSettle]) -> Result<(), StoreError> {
        for chunk in batch.chunks(CHUNK) {
            let mut args = vec![keys::PREFIX.to_owned(), chunk.len().to_string()];
            for s in chunk {
                args.extend([
                    s.key_id.clone(),
                    s.tag.epoch.to_string(),
                    s.tag.period.to_string(),
                    s.used.to_string(),
                    s.release.to_string(),
                ]);
            }
            let routing = keys::quota(&chunk[0].key_id);
            let _: i64 = self
                .run(|mut c| async move {
                    let mut call = scripts::SETTLE_QUOTA_SCRIPT.key(routing);
                    call.arg(args);
                    call.invoke_async(&mut c).await
                })
                .await?;
        }
        Ok(())
    }

    async fn quota_counters(&self, key_id: &str) -> Result<Option<QuotaCounters>, StoreError> {
        let mut cmd = ::redis::cmd("HMGET");
        cmd.arg(keys::quota(key_id))
            .arg(&["epoch", "period", "leased", "used"][..]);
        let fields: Vec<Option<String>> = self.query(cmd).await?;
        let [Some(epoch), Some(period), leased, used] = &fields[..] else {
            return Ok(None);
        };
        let num = |s: Option<&String>| s.map_or(Ok(0), |s| s.parse::<i64>());
        let parsed = (|| {
            Ok::<_, std::num::ParseIntError>(QuotaCounters {
                tag: QuotaTag {
                    epoch: epoch.parse()?,
                    period: period.parse()?,
                },
                leased: u64::try_from(num(leased.as_ref())?).unwrap_or(0),
                used: u64::try_from(num(used.as_ref())?).unwrap_or(0),
            })
        })();
        parsed
            .map(Some)
            .map_err(|e| reply_error("quota counters")(e.to_string()))
    }

    async fn lease_rate(
        &self,
        key_id: &str,
        limit: u64,
        window_ms: i64,
        want: u64,
    ) -> Result<Option<RateGrant>, StoreError> {
        let reply: (u64, u64, i64, i64) = self
            .run(|mut c| async move {
                let mut call = scripts::LEASE_RATE_SCRIPT.key(keys::rate(key_id, window_ms));
                call.arg(keys::PREFIX).arg(limit).arg(window_ms).arg(want);
                call.invoke_async(&mut c).await
            })
            .await?;
        let (granted, remaining, window_left_ms, retry_ms) = reply;
        Ok(Some(RateGrant {
            granted,
            remaining,
            window_left_ms,
            retry_ms,
        }))
    }

    fn shares_rate_windows(&self) -> bool {
        true
    }
}
