//! `ChangeFeed`: the change stream, read on a connection of its own (see the module docs
//! of `redis.rs`, "The change feed").

use super::codec::{bytes, items};
use super::{
    keys, reply_error, RedisStore, RedisStoreError, FEED_BLOCK, MAX_CHANGE_BATCH, STORE_TIMEOUT,
    TIMEOUT_SLACK,
};
use crate::key::KeyHash;
use crate::store::{ChangeBatch, ChangeFeed, StoreError};
use ::redis::Value;
use async_trait::async_trait;

#[async_trait]
impl ChangeFeed for RedisStore {
    async fn change_cursor(&self) -> Result<u64, StoreError> {
        let (end, epoch) = self.feed_position().await?;
        // Where a follower starts: the epoch it starts in. Later calls (from anyone) must
        // not hide a change of epoch from the follower's next read.
        self.note_epoch(&epoch, true);
        Ok(end)
    }

    async fn changes_since(&self, cursor: u64) -> Result<ChangeBatch, StoreError> {
        let (end, epoch) = self.feed_position().await?;
        let replaced = self.note_epoch(&epoch, false);
        if end < cursor || replaced {
            // Redis was flushed, or restored from an older state, or lost its data and
            // counted up again: whatever the caller cached may come from data that is gone,
            // and the seqs since the cursor are not the events it missed.
            tracing::warn!(
                cursor,
                end,
                replaced,
                "change feed is not the one the cursor came from; evicting all"
            );
            return Ok(ChangeBatch {
                cursor: end,
                evict: Vec::new(),
                evict_all: true,
                written_at_ms: None,
            });
        }
        // Wait for news only when there is none yet: a reader behind the end gets its
        // backlog at once.
        let reply = self.read_feed(cursor, end == cursor).await?;
        let entries = feed_entries(reply).map_err(reply_error("XREAD"))?;
        Ok(batch_from(cursor, end, entries))
    }

    fn feed_blocks(&self) -> bool {
        true
    }
}

impl RedisStore {
    /// The feed's end (last seq) and epoch, read together.
    async fn feed_position(&self) -> Result<(u64, String), StoreError> {
        let mut cmd = ::redis::cmd("MGET");
        cmd.arg(keys::events_seq()).arg(keys::events_epoch());
        let (seq, epoch): (Option<u64>, Option<String>) = self.query(cmd).await?;
        Ok((seq.unwrap_or(0), epoch.unwrap_or_default()))
    }

    /// Records the epoch a read saw; whether it replaces one seen before (a Redis that
    /// lost its data since). `only_first`: just remember it if nothing was seen yet.
    fn note_epoch(&self, epoch: &str, only_first: bool) -> bool {
        let mut seen = self
            .epoch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.as_deref() {
            Some(_) if only_first => false,
            Some(prev) => {
                let replaced = !prev.is_empty() && prev != epoch;
                *seen = Some(epoch.to_owned());
                replaced
            }
            None => {
                *seen = Some(epoch.to_owned());
                false
            }
        }
    }

    /// Reads the stream after `cursor` on the feed's connection, waiting up to
    /// `FEED_BLOCK` for entries when `block`.
    async fn read_feed(&self, cursor: u64, block: bool) -> Result<Value, StoreError> {
        if !self.breaker.admit() {
            return Err(RedisStoreError::CircuitOpen.into());
        }
        let limit = if block {
            FEED_BLOCK + STORE_TIMEOUT + TIMEOUT_SLACK
        } else {
            STORE_TIMEOUT + TIMEOUT_SLACK
        };
        let mut cmd = ::redis::cmd("XREAD");
        if block {
            cmd.arg("BLOCK").arg(FEED_BLOCK.as_millis() as u64);
        }
        cmd.arg("COUNT")
            .arg(MAX_CHANGE_BATCH + 1)
            .arg("STREAMS")
            .arg(keys::events())
            // Stream ids are `<seq>-1`: this reads every seq above `cursor`.
            .arg(format!("{cursor}-1"));
        let mut slot = self.feed.lock().await;
        let result = tokio::time::timeout(limit, async {
            let mut conn = match slot.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let c = self.connect_feed().await?;
                    *slot = Some(c.clone());
                    c
                }
            };
            cmd.query_async::<Value>(&mut conn).await
        })
        .await;
        if !matches!(result, Ok(Ok(_))) {
            *slot = None;
        }
        drop(slot);
        self.settle(result, limit)
    }
}

/// One entry of the change stream: its seq and the hash it names (`None`: unreadable, or
/// `*`; either way everything must go).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FeedEntry {
    pub(super) seq: Option<u64>,
    pub(super) hash: Option<KeyHash>,
    /// When the change was written (unix ms, Redis's clock); `None` for events written
    /// before keygate recorded it.
    pub(super) at: Option<i64>,
}

/// The entries of an XREAD reply (nil when the block timed out).
fn feed_entries(reply: Value) -> Result<Vec<FeedEntry>, String> {
    let streams: Vec<Value> = match reply {
        // RESP3: stream name -> entries.
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        // RESP2: [[stream name, entries]].
        other => items(other)?
            .into_iter()
            .map(|s| {
                items(s)?
                    .into_iter()
                    .nth(1)
                    .ok_or_else(|| "a stream without entries".to_owned())
            })
            .collect::<Result<_, String>>()?,
    };
    let mut out = Vec::new();
    for entries in streams {
        for entry in items(entries)? {
            let mut parts = items(entry)?.into_iter();
            let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
                return Err("a stream entry without id or fields".to_owned());
            };
            let id = bytes(id)?;
            let seq = std::str::from_utf8(&id)
                .ok()
                .and_then(|id| id.split_once('-'))
                .and_then(|(seq, _)| seq.parse::<u64>().ok());
            let (mut hash, mut at) = (None, None);
            let mut fields = items(fields)?.into_iter();
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                let (name, value) = (bytes(name)?, bytes(value)?);
                let value = std::str::from_utf8(&value).ok();
                match &name[..] {
                    b"hash" => hash = value.and_then(KeyHash::from_hex),
                    b"at" => at = value.and_then(|v| v.parse::<i64>().ok()),
                    _ => {}
                }
            }
            out.push(FeedEntry { seq, hash, at });
        }
    }
    Ok(out)
}

/// The batch for a reader at `cursor`, given the feed's end (`end`, read before the
/// entries) and the entries after `cursor`.
pub(super) fn batch_from(cursor: u64, end: u64, entries: Vec<FeedEntry>) -> ChangeBatch {
    let Some(first) = entries.first() else {
        if end > cursor {
            // Events after the cursor exist but the stream no longer holds them.
            tracing::warn!(
                cursor,
                end,
                "change feed trimmed past the cursor; evicting all"
            );
            return ChangeBatch {
                cursor: end,
                evict: Vec::new(),
                evict_all: true,
                written_at_ms: None,
            };
        }
        return ChangeBatch {
            cursor,
            evict: Vec::new(),
            evict_all: false,
            written_at_ms: None,
        };
    };
    let last = entries
        .iter()
        .filter_map(|e| e.seq)
        .max()
        .unwrap_or(end)
        .max(cursor);
    if entries.len() > MAX_CHANGE_BATCH {
        return ChangeBatch {
            cursor: last.max(end),
            evict: Vec::new(),
            evict_all: true,
            written_at_ms: first.at,
        };
    }
    // Seqs have no holes except trimmed entries, so a first entry past cursor + 1 means
    // the reader missed events it can no longer learn.
    let mut evict_all = first
        .seq
        .is_none_or(|first| first > cursor.saturating_add(1));
    if evict_all {
        tracing::warn!(
            cursor,
            "change feed has a gap after the cursor; evicting all"
        );
    }
    let written_at_ms = first.at;
    let mut evict = Vec::with_capacity(entries.len());
    for entry in entries {
        match entry.hash {
            Some(hash) => evict.push(hash),
            None => evict_all = true,
        }
    }
    evict.sort_unstable();
    evict.dedup();
    ChangeBatch {
        cursor: last,
        evict,
        evict_all,
        written_at_ms,
    }
}
