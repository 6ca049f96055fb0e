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
//! | `{kg}:quota:<id>` | hash | the key's quota counters: `epoch`, `period` (the tag), `leased`, `used`; expires a day after its period |
//! | `{kg}:rate:<id>:<window ms>:<index>` | string | requests leased in one window of the key's shared rate limit; expires after two windows |
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

//!
//! # Files
//!
//! `RedisStore` (here) owns the connections, the timeouts and the breaker; each store
//! trait is implemented in a file of its own: `lookup.rs`, `repo.rs`, `audit.rs`,
//! `usage.rs`, `feed.rs` (with the stream reading), `meters.rs`, `health.rs`.

mod audit;
mod breaker;
mod codec;
mod feed;
mod health;
mod keys;
mod lookup;
mod meters;
mod repo;
mod scripts;
#[cfg(test)]
mod tests;
mod usage;

use crate::store::StoreError;
use ::redis::aio::MultiplexedConnection;
use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, Value,
};
use breaker::Breaker;
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

    async fn query<T: ::redis::FromRedisValue>(&self, cmd: Cmd) -> Result<T, StoreError> {
        self.run(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }
}

/// The arguments every write script starts with.
fn writer_args() -> Vec<String> {
    vec![keys::PREFIX.to_owned(), STREAM_MAXLEN.to_string()]
}
