//! The Redis key store: one Redis (or Redis Cluster) shared by a fleet of gateways and the
//! CLI, with a change feed every gateway follows.
//!
//! # Data layout
//!
//! Every key carries the hash tag `{kg}`, so in a cluster all of them live in one slot and
//! every Lua script may touch any of them. The price is that one slot's node serves the
//! whole store; that is fine here, because gateways answer almost every request from their
//! caches and come to Redis only on misses, changes and the once-a-minute `last_used_at`
//! batch. A cluster still buys failover and room for the rest of what it holds.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{kg}:key:<id>` | hash | `record` (JSON of the other attributes, the embedded store's shape), `hash` (hex), `org`, `owner`, `created_at`, `last_used_at`, `version` |
//! | `{kg}:hash:<sha256 hex>` | string | the key id: the auth lookup |
//! | `{kg}:org:<org>` | sorted set | key ids of the org, scored by `created_at` (ties by id) |
//! | `{kg}:all` | sorted set | every key id, scored by `created_at` |
//! | `{kg}:owner:<len(org)>:<org>:<user>` | set | ids of the keys the user owns in the org |
//! | `{kg}:user:<len(org)>:<org>:<user>` | hash | `removed` (0/1), `roles`, `permissions` (JSON lists), `version` |
//! | `{kg}:org-state:<org>` | hash | `suspended` (0/1), `version`: only for orgs ever suspended |
//! | `{kg}:audit:events` | hash | event id → event JSON (`at`, `action`, `key_id`, `actor`, `details`) |
//! | `{kg}:audit` | sorted set | every event id, scored by itself (paging newest first) |
//! | `{kg}:audit:key:<id>` | sorted set | event ids that name the key (kept after a delete) |
//! | `{kg}:audit:seq` | string | the last event id |
//! | `{kg}:events` | stream | change events, id `<seq>-1`, fields `hash` (hex, or `*`: drop everything) and `at` (unix ms, Redis TIME); trimmed to about `STREAM_MAXLEN` entries |
//! | `{kg}:events:seq` | string | the last change seq: where a new gateway starts |
//! | `{kg}:events:epoch` | string | set by the first write to an empty Redis (its `TIME`) |
//!
//! Orgs and users may contain `:`, hence the length prefix in the user keys. Listing by
//! workspace loads the org's (or every) key and filters, as the embedded store does.
//!
//! # Writes
//!
//! Each write (`save_keys` with its compare-and-set versions, `delete_key`, `save_user`,
//! `save_org`, `record_last_used`) is one Lua script (`scripts.rs`): the records, the indexes, the audit
//! events and the change events land together or not at all. No command scans the key
//! space (`KEYS`, `SCAN`): every read goes through an index.
//!
//! # The change feed
//!
//! `changes_since` reads the stream with a blocking `XREAD` (about a second) on a
//! connection of its own, so a waiting read never stalls the lookups multiplexed on the
//! main connection. The caller keeps the cursor, so after a lost connection the next read
//! replays from where it left off. Where the stream cannot say what was missed (entries
//! trimmed past the cursor, a cursor beyond the end because Redis was flushed or restored,
//! or another epoch: a Redis that lost its data and has counted past the cursor again),
//! the batch says `evict_all`.
//!
//! # Failures
//!
//! Every command is bounded by `STORE_TIMEOUT`, and a circuit breaker (`breaker.rs`) makes
//! calls fail at once while Redis is down, so an outage costs a cache miss no latency; the
//! connections reconnect by themselves and the breaker closes on the first success. A
//! record that does not parse is `StoreError::Corrupt` naming it, for that key only (the
//! cache answers it as an unknown key and logs the id).

mod breaker;
mod codec;
mod keys;
mod scripts;
#[cfg(test)]
mod tests;

use crate::key::KeyHash;
use crate::store::{
    AuditEvent, AuditQuery, ChangeBatch, KeyFilter, KeyRecord, KeyStore, Lookup, OrgRecord,
    StoreError, UserRecord,
};
use ::redis::aio::MultiplexedConnection;
use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, Value,
};
use async_trait::async_trait;
use breaker::Breaker;
use codec::{bytes, items, Fields};
use std::future::Future;
use std::time::Duration;

/// How long any one Redis command may take before the caller gets an error. A lookup on a
/// healthy Redis takes well under a millisecond; past this, a 503 (or a stale cached answer)
/// serves the client better than waiting.
pub const STORE_TIMEOUT: Duration = Duration::from_millis(250);

/// The connections' own response timeout fires a little before ours, so that a connection
/// that stopped answering is noticed by the client library and replaced; ours is the
/// backstop that also bounds connecting.
const TIMEOUT_SLACK: Duration = Duration::from_millis(50);

/// How long one `changes_since` waits for new events. About a second: a revocation reaches
/// every gateway at once, and the follower's loop still turns often enough to notice a
/// lost connection.
pub const FEED_BLOCK: Duration = Duration::from_millis(1000);

/// At most this many change events per `changes_since`. Past it (a bulk import), dropping
/// the whole cache is cheaper than evicting key by key.
pub const MAX_CHANGE_BATCH: usize = 4096;

/// The stream keeps about this many events. At the write rates of key management this is
/// hours to days; a gateway away longer sees the gap and empties its cache.
pub const STREAM_MAXLEN: u64 = 100_000;

/// Keys read per round trip by `list_keys`, and uses written per script by
/// `record_last_used`: each round trip stays far below the timeout, and Redis is never
/// busy with one of them for long.
const CHUNK: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    #[error("command failed: {0}")]
    Command(#[from] RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("unavailable: failing fast after repeated errors (circuit breaker open)")]
    CircuitOpen,
    #[error("cannot use redis URL #{index} of the config: {source}")]
    Url {
        index: usize,
        #[source]
        source: RedisError,
    },
    #[error("`store.url` names no Redis")]
    NoUrl,
    #[error("key {id} has the same hash as key {holder}")]
    HashTaken { id: String, holder: String },
    #[error("unexpected reply to {what}: {detail}")]
    Reply { what: &'static str, detail: String },
}

fn reply_error(what: &'static str) -> impl FnOnce(String) -> StoreError {
    move |detail| RedisStoreError::Reply { what, detail }.into()
}

/// The store over a single node or a cluster. Cheap to share: every method takes `&self`.
pub struct RedisStore {
    link: Link,
    /// The change feed's own connection (a blocking read must not hold up lookups).
    /// Dropped after any failed read, so the next read starts on a fresh one.
    feed: tokio::sync::Mutex<Option<Conn>>,
    /// The feed epoch the last read saw ("": none yet); `None` before the first read.
    epoch: std::sync::Mutex<Option<String>>,
    breaker: Breaker,
}

// One per store, made once: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Link {
    Single {
        client: Client,
        manager: ConnectionManager,
    },
    Cluster(ClusterLink),
}

struct ClusterLink {
    main: ClusterClient,
    /// Same nodes, with a response timeout above `FEED_BLOCK`.
    feed: ClusterClient,
    /// Connected on first use: the store opens while Redis is down, and the cluster
    /// connection then reconnects by itself.
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

/// One connection of either kind, so commands and scripts are written once.
#[derive(Clone)]
enum Conn {
    Manager(ConnectionManager),
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Multiplexed(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Multiplexed(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Multiplexed(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Whether an error says Redis cannot serve (counts toward the circuit breaker), as opposed
/// to an answer about this one request.
fn is_outage(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                )
        )
}

impl RedisStore {
    /// Prepares the store for `urls` (one URL, or a cluster's seed nodes). Connects lazily:
    /// a gateway starts while Redis is down and serves once it is back; a URL that does not
    /// parse is an error here. Must be called within a tokio runtime.
    pub fn open(urls: &[String], cluster: bool) -> Result<RedisStore, StoreError> {
        let link = if cluster {
            for (index, url) in urls.iter().enumerate() {
                Client::open(url.as_str())
                    .map_err(|source| RedisStoreError::Url { index, source })?;
            }
            let build = |response: Duration| {
                ClusterClient::builder(urls.iter().map(String::as_str))
                    .connection_timeout(STORE_TIMEOUT)
                    .response_timeout(response)
                    .retries(2)
                    .build()
                    .map_err(|source| RedisStoreError::Url { index: 0, source })
            };
            Link::Cluster(ClusterLink {
                main: build(STORE_TIMEOUT)?,
                feed: build(FEED_BLOCK + STORE_TIMEOUT)?,
                conn: tokio::sync::OnceCell::new(),
            })
        } else {
            let url = urls.first().ok_or(RedisStoreError::NoUrl)?;
            let client = Client::open(url.as_str())
                .map_err(|source| RedisStoreError::Url { index: 0, source })?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(STORE_TIMEOUT))
                .set_response_timeout(Some(STORE_TIMEOUT))
                // Reconnects quickly and gives up soon: the next call starts a new round,
                // and the breaker keeps calls from piling onto a dead Redis meanwhile.
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)
                .map_err(RedisStoreError::Command)?;
            Link::Single { client, manager }
        };
        tracing::debug!(cluster, nodes = urls.len(), "redis store opened");
        Ok(RedisStore {
            link,
            feed: tokio::sync::Mutex::new(None),
            epoch: std::sync::Mutex::new(None),
            breaker: Breaker::default(),
        })
    }

    async fn conn(&self) -> RedisResult<Conn> {
        match &self.link {
            Link::Single { manager, .. } => Ok(Conn::Manager(manager.clone())),
            Link::Cluster(c) => c
                .conn
                .get_or_try_init(|| c.main.get_async_connection())
                .await
                .cloned()
                .map(Conn::Cluster),
        }
    }

    async fn connect_feed(&self) -> RedisResult<Conn> {
        match &self.link {
            Link::Single { client, .. } => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(STORE_TIMEOUT))
                    .set_response_timeout(Some(FEED_BLOCK + STORE_TIMEOUT));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Conn::Multiplexed)
            }
            Link::Cluster(c) => c.feed.get_async_connection().await.map(Conn::Cluster),
        }
    }

    /// Runs `f` on the main connection within the timeout, through the breaker.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.breaker.admit() {
            return Err(RedisStoreError::CircuitOpen.into());
        }
        let limit = STORE_TIMEOUT + TIMEOUT_SLACK;
        let result = tokio::time::timeout(limit, async {
            let conn = self.conn().await?;
            f(conn).await
        })
        .await;
        self.settle(result, limit)
    }

    /// Tells the breaker how a call went, and turns its result into the store's.
    fn settle<T>(
        &self,
        result: Result<RedisResult<T>, tokio::time::error::Elapsed>,
        limit: Duration,
    ) -> Result<T, StoreError> {
        match result {
            Err(_) => {
                self.breaker.failure();
                Err(RedisStoreError::Timeout(limit).into())
            }
            Ok(Err(e)) if is_outage(&e) => {
                self.breaker.failure();
                Err(RedisStoreError::Command(e).into())
            }
            Ok(result) => {
                self.breaker.success();
                result.map_err(|e| RedisStoreError::Command(e).into())
            }
        }
    }

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

    async fn query<T: ::redis::FromRedisValue>(&self, cmd: Cmd) -> Result<T, StoreError> {
        self.run(|mut c| async move { cmd.query_async(&mut c).await })
            .await
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
struct FeedEntry {
    seq: Option<u64>,
    hash: Option<KeyHash>,
    /// When the change was written (unix ms, Redis's clock); `None` for events written
    /// before keygate recorded it.
    at: Option<i64>,
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
fn batch_from(cursor: u64, end: u64, entries: Vec<FeedEntry>) -> ChangeBatch {
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

/// The audit event's three script arguments: JSON, whether it names a key, the key id.
fn event_args(event: &AuditEvent, args: &mut Vec<String>) {
    args.push(codec::event_json(event));
    match &event.key_id {
        Some(id) => args.extend(["1".to_owned(), id.clone()]),
        None => args.extend(["0".to_owned(), String::new()]),
    }
}

/// The arguments every write script starts with.
fn writer_args() -> Vec<String> {
    vec![keys::PREFIX.to_owned(), STREAM_MAXLEN.to_string()]
}

/// A write script's `{'ok'}` / `{'conflict', …}` / `{'hash_taken', …}` answer.
fn write_outcome(reply: Vec<String>, conflict: impl FnOnce() -> String) -> Result<(), StoreError> {
    match reply.first().map(String::as_str) {
        Some("ok") => Ok(()),
        Some("conflict") => Err(StoreError::Conflict {
            record: reply.get(1).cloned().unwrap_or_else(conflict),
        }),
        Some("hash_taken") if reply.len() == 3 => Err(RedisStoreError::HashTaken {
            id: reply[1].clone(),
            holder: reply[2].clone(),
        }
        .into()),
        _ => Err(RedisStoreError::Reply {
            what: "a write",
            detail: format!("{} items", reply.len()),
        }
        .into()),
    }
}

#[async_trait]
impl KeyStore for RedisStore {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<Lookup>, StoreError> {
        let index = keys::hash(hash);
        let reply: Value = self
            .run(|mut c| async move {
                let mut call = scripts::LOOKUP_SCRIPT.key(index);
                call.arg(keys::PREFIX);
                call.invoke_async(&mut c).await
            })
            .await?;
        let mut parts = items(reply).map_err(reply_error("lookup"))?.into_iter();
        let Some(id) = parts.next() else {
            return Ok(None);
        };
        let id = bytes(id).map_err(reply_error("lookup"))?;
        let id = String::from_utf8_lossy(&id).into_owned();
        let (Some(key_fields), Some(user_fields)) = (parts.next(), parts.next()) else {
            // The hash index names a key that is gone: the key is unknown.
            tracing::warn!(key_id = %id, "redis store: hash index names a missing key");
            return Ok(None);
        };
        let org_suspended = parts
            .next()
            .ok_or_else(|| "no org state".to_owned())
            .and_then(bytes)
            .and_then(|s| codec::flag(&String::from_utf8_lossy(&s), "org suspended"))
            .map_err(reply_error("lookup"))?;
        let key_fields =
            Fields::from_value(key_fields).map_err(|reason| codec::corrupt(id.clone(), reason))?;
        let key = codec::key_from_fields(&id, &key_fields)?;
        if key.hash != *hash {
            tracing::warn!(key_id = %id, "redis store: hash index names a key with another hash");
            return Ok(None);
        }
        let owner = match &key.owner {
            Some(user) => {
                let fields = Fields::from_value(user_fields)
                    .map_err(|reason| codec::corrupt(format!("user {}/{user}", key.org), reason))?;
                if fields.is_empty() {
                    None
                } else {
                    Some(codec::user_from_fields(&key.org, user, &fields)?)
                }
            }
            None => None,
        };
        Ok(Some(Lookup {
            key,
            owner,
            org_suspended,
        }))
    }

    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let mut cmd = ::redis::cmd("HGETALL");
        cmd.arg(keys::key(id));
        let reply: Value = self.query(cmd).await?;
        let fields =
            Fields::from_value(reply).map_err(|reason| codec::corrupt(id.to_owned(), reason))?;
        if fields.is_empty() {
            return Ok(None);
        }
        codec::key_from_fields(id, &fields).map(Some)
    }

    async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyRecord>, StoreError> {
        let index = filter.org.as_deref().map_or_else(keys::all, keys::org);
        let mut cmd = ::redis::cmd("ZRANGE");
        cmd.arg(index).arg(0).arg(-1);
        let ids: Vec<String> = self.query(cmd).await?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let mut pipe = ::redis::pipe();
            for id in chunk {
                pipe.cmd("HGETALL").arg(keys::key(id));
            }
            let replies: Vec<Value> = self
                .run(|mut c| async move { pipe.query_async(&mut c).await })
                .await?;
            for (id, reply) in chunk.iter().zip(replies) {
                let fields = Fields::from_value(reply)
                    .map_err(|reason| codec::corrupt(id.clone(), reason))?;
                if fields.is_empty() {
                    // Deleted between the index read and this one.
                    continue;
                }
                let key = codec::key_from_fields(id, &fields)?;
                let fits = filter
                    .workspace
                    .as_deref()
                    .is_none_or(|w| key.is_org_key() || key.workspaces.iter().any(|k| k == w));
                if fits {
                    out.push(key);
                }
            }
        }
        Ok(out)
    }

    async fn save_keys(&self, keys: &[KeyRecord], events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut args = writer_args();
        args.reserve(2 + keys.len() * scripts::KEY_ARGS + events.len() * 3);
        args.push(keys.len().to_string());
        for key in keys {
            let owner = key.owner.clone();
            args.extend([
                key.id.clone(),
                key.version.to_string(),
                key.hash.to_hex(),
                key.org.clone(),
                if owner.is_some() { "1" } else { "0" }.to_owned(),
                owner.unwrap_or_default(),
                key.created_at.to_string(),
                key.last_used_at.map(|t| t.to_string()).unwrap_or_default(),
                codec::key_json(key),
            ]);
        }
        args.push(events.len().to_string());
        for event in events {
            event_args(event, &mut args);
        }
        let reply: Vec<String> = self
            .run(|mut c| async move {
                let mut call = scripts::SAVE_KEYS_SCRIPT.key(self::keys::events());
                call.arg(args);
                call.invoke_async(&mut c).await
            })
            .await?;
        write_outcome(reply, String::new)
    }

    async fn delete_key(&self, id: &str, event: &AuditEvent) -> Result<bool, StoreError> {
        let mut args = writer_args();
        args.push(id.to_owned());
        event_args(event, &mut args);
        let deleted: i64 = self
            .run(|mut c| async move {
                let mut call = scripts::DELETE_KEY_SCRIPT.key(keys::events());
                call.arg(args);
                call.invoke_async(&mut c).await
            })
            .await?;
        Ok(deleted == 1)
    }

    async fn get_user(&self, org: &str, user: &str) -> Result<Option<UserRecord>, StoreError> {
        let mut cmd = ::redis::cmd("HGETALL");
        cmd.arg(keys::user(org, user));
        let reply: Value = self.query(cmd).await?;
        let fields = Fields::from_value(reply)
            .map_err(|reason| codec::corrupt(format!("user {org}/{user}"), reason))?;
        if fields.is_empty() {
            return Ok(None);
        }
        codec::user_from_fields(org, user, &fields).map(Some)
    }

    async fn user_owns_keys(&self, org: &str, user: &str) -> Result<bool, StoreError> {
        let mut cmd = ::redis::cmd("SCARD");
        cmd.arg(keys::owner(org, user));
        let owned: u64 = self.query(cmd).await?;
        Ok(owned > 0)
    }

    async fn save_user(&self, user: &UserRecord, event: &AuditEvent) -> Result<(), StoreError> {
        let mut args = writer_args();
        args.extend([
            user.org.clone(),
            user.user.clone(),
            user.version.to_string(),
            if user.removed { "1" } else { "0" }.to_owned(),
            codec::names_json(&user.roles),
            codec::names_json(&user.permissions),
        ]);
        event_args(event, &mut args);
        let reply: Vec<String> = self
            .run(|mut c| async move {
                let mut call = scripts::SAVE_USER_SCRIPT.key(keys::events());
                call.arg(args);
                call.invoke_async(&mut c).await
            })
            .await?;
        write_outcome(reply, || format!("user {}/{}", user.org, user.user))
    }

    async fn get_org(&self, org: &str) -> Result<Option<OrgRecord>, StoreError> {
        let mut cmd = ::redis::cmd("HGETALL");
        cmd.arg(keys::org_state(org));
        let reply: Value = self.query(cmd).await?;
        let fields = Fields::from_value(reply)
            .map_err(|reason| codec::corrupt(format!("org {org}"), reason))?;
        if fields.is_empty() {
            return Ok(None);
        }
        codec::org_from_fields(org, &fields).map(Some)
    }

    async fn save_org(&self, org: &OrgRecord, event: &AuditEvent) -> Result<(), StoreError> {
        let mut args = writer_args();
        args.extend([
            org.org.clone(),
            org.version.to_string(),
            if org.suspended { "1" } else { "0" }.to_owned(),
        ]);
        event_args(event, &mut args);
        args.push(MAX_CHANGE_BATCH.to_string());
        let reply: Vec<String> = self
            .run(|mut c| async move {
                let mut call = scripts::SAVE_ORG_SCRIPT.key(keys::events());
                call.arg(args);
                call.invoke_async(&mut c).await
            })
            .await?;
        write_outcome(reply, || format!("org {}", org.org))
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let index = query
            .key_id
            .as_deref()
            .map_or_else(keys::audit, keys::audit_of_key);
        let max = query
            .before
            .map_or_else(|| "+inf".to_owned(), |b| format!("({b}"));
        // Redis reads LIMIT as a signed 64-bit count.
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX).to_string();
        let reply: Vec<Value> = self
            .run(|mut c| async move {
                let mut call = scripts::AUDIT_SCRIPT.key(index);
                call.arg(keys::PREFIX).arg(max).arg(limit);
                call.invoke_async(&mut c).await
            })
            .await?;
        let mut events = Vec::with_capacity(reply.len() / 2);
        let mut it = reply.into_iter();
        while let (Some(id), Some(json)) = (it.next(), it.next()) {
            let id = bytes(id).map_err(reply_error("audit"))?;
            let id: i64 = std::str::from_utf8(&id)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    codec::corrupt("audit index".to_owned(), "an event id".to_owned())
                })?;
            let json = bytes(json).map_err(reply_error("audit"))?;
            events.push(codec::event_from_json(id, &json)?);
        }
        Ok(events)
    }

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

    async fn ping(&self) -> Result<(), StoreError> {
        // A keyed read rather than PING: in a cluster it reaches the node that serves the
        // `{kg}` slot, which is the one readiness depends on.
        let mut cmd = ::redis::cmd("EXISTS");
        cmd.arg(keys::events_seq());
        let _: i64 = self.query(cmd).await?;
        Ok(())
    }
}
