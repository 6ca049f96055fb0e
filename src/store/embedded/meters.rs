//! `Meters`: quota counters in the `quota_usage` table. Rate windows are not shared: the
//! embedded store serves one gateway, which counts them in memory (`Meters`' default).

use super::EmbeddedStore;
use crate::store::{
    Meters, QuotaAsk, QuotaCounters, QuotaGrant, QuotaSettle, QuotaTag, StoreError,
};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

/// Counts are at most 2^53 (`limits::MAX_COUNT`) plus one batch per gateway, far inside i64.
fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn read(conn: &Connection, key_id: &str) -> Result<Option<QuotaCounters>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT epoch, period, leased, used FROM quota_usage WHERE key_id = ?1")?
        .query_row([key_id], |row| {
            Ok(QuotaCounters {
                tag: QuotaTag {
                    epoch: to_u64(row.get(0)?),
                    period: row.get(1)?,
                },
                leased: to_u64(row.get(2)?),
                used: to_u64(row.get(3)?),
            })
        })
        .optional()?)
}

#[async_trait]
impl Meters for EmbeddedStore {
    async fn lease_quota(&self, key_id: &str, ask: QuotaAsk) -> Result<QuotaGrant, StoreError> {
        let key_id = key_id.to_owned();
        let QuotaAsk {
            tag, want, limit, ..
        } = ask;
        self.write(move |tx| {
            let stored = read(tx, &key_id)?.filter(|c| c.tag >= tag);
            let now = stored.unwrap_or(QuotaCounters {
                tag,
                ..QuotaCounters::default()
            });
            let granted = want.min(limit.saturating_sub(now.leased));
            let leased = now.leased + granted;
            tx.prepare_cached(
                "INSERT INTO quota_usage (key_id, epoch, period, leased, used)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (key_id) DO UPDATE SET
                     epoch = excluded.epoch, period = excluded.period,
                     leased = excluded.leased, used = excluded.used",
            )?
            .execute(params![
                key_id,
                to_i64(now.tag.epoch),
                now.tag.period,
                to_i64(leased),
                to_i64(now.used)
            ])?;
            Ok(QuotaGrant {
                granted,
                leased,
                tag: now.tag,
            })
        })
        .await
    }

    async fn settle_quota(&self, batch: &[QuotaSettle]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = batch.to_vec();
        self.write(move |tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE quota_usage SET used = used + ?4, leased = max(0, leased - ?5)
                 WHERE key_id = ?1 AND epoch = ?2 AND period = ?3",
            )?;
            for s in &batch {
                stmt.execute(params![
                    s.key_id,
                    to_i64(s.tag.epoch),
                    s.tag.period,
                    to_i64(s.used),
                    to_i64(s.release)
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn quota_counters(&self, key_id: &str) -> Result<Option<QuotaCounters>, StoreError> {
        let key_id = key_id.to_owned();
        self.read(move |conn| read(conn, &key_id)).await
    }
}
