//! Key stores: where key records, users and the audit log live. The gateway and the CLI
//! see them only through the traits below, so the embedded SQLite store and the Redis store
//! (for fleets) are interchangeable and the cache can wrap either. One trait per concern
//! (`KeyLookup` for the hot path, `KeyRepo`, `AuditLog`, `UsageSink`, `ChangeFeed`,
//! `Meters`, `Health`), each implemented per store in a file of its own (`embedded/`, `redis/`);
//! `KeyStore` is all of them at once.

#[cfg(test)]
mod conformance;
pub mod embedded;
#[cfg(test)]
pub(crate) mod fixtures;
mod record;
mod record_json;
pub mod redis;

pub use record::*;

use crate::config::StoreConfig;
use crate::key::KeyHash;
use async_trait::async_trait;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("embedded store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot open the store at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the stored record of {key_id} cannot be read: {reason}")]
    Corrupt { key_id: String, reason: String },
    #[error(
        "the store's schema version {found} is newer than this keygate supports ({supported})"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("{record} was changed by someone else meanwhile")]
    Conflict { record: String },
    #[error("store kind `{0}` is not supported by this version")]
    Unsupported(&'static str),
    #[error("redis store: {0}")]
    Redis(#[from] self::redis::RedisStoreError),
}

/// What the auth step needs from one lookup: the key, the owner's state for a personal
/// key (removed, and the permissions an `--inherit` key follows), and whether the key's
/// org is suspended. All three come from one snapshot of the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    pub key: KeyRecord,
    pub owner: Option<UserRecord>,
    /// The key's org is suspended (SPEC §8): every key of it answers `org_suspended`.
    pub org_suspended: bool,
}

/// Keys whose cached answers are stale, from one read of the store's change feed.
#[derive(Debug, Clone, Default)]
pub struct ChangeBatch {
    /// Position to ask from next time.
    pub cursor: u64,
    pub evict: Vec<KeyHash>,
    /// The feed has a gap (pruned or lost): drop every cached answer.
    pub evict_all: bool,
    /// When the oldest change in the batch was written (unix ms, the store's clock), for
    /// the change-feed lag metric; `None` when the batch holds no change.
    pub written_at_ms: Option<i64>,
}

/// Two batches are equal when they ask the reader to do the same: the write time is a
/// measurement, not an instruction.
impl PartialEq for ChangeBatch {
    fn eq(&self, other: &Self) -> bool {
        (self.cursor, &self.evict, self.evict_all) == (other.cursor, &other.evict, other.evict_all)
    }
}

/// Which keys `list_keys` returns; `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    pub org: Option<String>,
    /// Keys that may use this workspace (workspace keys of it, and org keys).
    pub workspace: Option<String>,
}

/// The hot path: the one thing a request's verdict needs from a store, asked once per
/// cache miss. Everything else a store does happens off the request path.
#[async_trait]
pub trait KeyLookup: Send + Sync {
    /// The auth path's lookup by hash. `None`: no such key (never created, or deleted).
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<Lookup>, StoreError>;
}

/// Key, user and org records as the CLI and the admin API manage them. Every write appends
/// its audit events and publishes what it changed on the change feed, in one transaction.
#[async_trait]
pub trait KeyRepo: Send + Sync {
    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError>;

    /// Keys by filter, oldest first.
    async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyRecord>, StoreError>;

    /// Inserts or replaces `keys`, appends `events` and publishes their hashes on the change
    /// feed, all in one transaction.
    async fn save_keys(&self, keys: &[KeyRecord], events: &[AuditEvent]) -> Result<(), StoreError>;

    /// Removes a key for good, with its audit event and change. `false`: no such key.
    async fn delete_key(&self, id: &str, event: &AuditEvent) -> Result<bool, StoreError>;

    async fn get_user(&self, org: &str, user: &str) -> Result<Option<UserRecord>, StoreError>;

    /// Whether any key of `org` names `user` as its owner.
    async fn user_owns_keys(&self, org: &str, user: &str) -> Result<bool, StoreError>;

    /// Inserts or replaces a user, appends `event` and publishes the hashes of every key
    /// the user owns in the org (their answers depend on the user).
    async fn save_user(&self, user: &UserRecord, event: &AuditEvent) -> Result<(), StoreError>;

    /// The state of `org`; `None` when it was never suspended or restored (active).
    async fn get_org(&self, org: &str) -> Result<Option<OrgRecord>, StoreError>;

    /// Writes an org's state, appends `event` and publishes the hashes of every key of the
    /// org (their answers embed its state), all in one transaction. Compare-and-set on
    /// `version`, strictly: the save succeeds only if the store still holds the revision
    /// the caller read, 0 meaning none (so of two racing first suspensions one conflicts,
    /// and re-reads a suspended org).
    async fn save_org(&self, org: &OrgRecord, event: &AuditEvent) -> Result<(), StoreError>;
}

/// Reading the audit log. Events are appended by `KeyRepo`'s writes, in their transaction.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Audit events, newest first, optionally for one key, `before` an event id (paging).
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;
}

/// Where the cache's write-behind of key usage lands.
#[async_trait]
pub trait UsageSink: Send + Sync {
    /// Writes `last_used_at` for many keys at once (ids with unix-ms times). Never called
    /// per request: the cache batches these.
    async fn record_last_used(&self, batch: &[(String, i64)]) -> Result<(), StoreError>;
}

/// The change feed: which keys' cached answers went stale, for every gateway's follower.
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// The current end of the change feed (where a new gateway starts reading).
    async fn change_cursor(&self) -> Result<u64, StoreError>;

    /// Changes after `cursor`. Returns promptly when `feed_blocks` is false (the caller
    /// then polls); otherwise it may wait a bounded time (about a second) for events.
    async fn changes_since(&self, cursor: u64) -> Result<ChangeBatch, StoreError>;

    /// Whether `changes_since` waits for events itself (a Redis stream read with BLOCK),
    /// so the follower calls it again at once instead of polling.
    fn feed_blocks(&self) -> bool {
        false
    }
}

/// A quota's counters are kept per key and per `QuotaTag`: a newer tag (the key's usage was
/// reset, or a new day or month began) starts from zero. Ordered: epoch, then period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct QuotaTag {
    /// `KeyRecord::usage_epoch`: bumped by each reset.
    pub epoch: u64,
    /// `Quota::period_of`: days or months since 1970, 0 for a total quota.
    pub period: i64,
}

/// A gateway asking for more of a key's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaAsk {
    pub tag: QuotaTag,
    pub want: u64,
    /// The quota: leases never add up past it within a tag.
    pub limit: u64,
    /// When the tag's counters may be dropped (unix ms; a day after its period ends),
    /// `None` for a total quota.
    pub keep_until_ms: Option<i64>,
}

/// What `lease_quota` granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaGrant {
    pub granted: u64,
    /// Leased by every gateway in the tag, this grant included.
    pub leased: u64,
    /// The tag the counters are in. Newer than the asked one when the caller is behind (a
    /// reset it has not seen yet, a clock behind the fleet's): the grant is of that tag.
    pub tag: QuotaTag,
}

/// One gateway's report for one key: requests admitted since its last report, and (when it
/// stops or lets the key go) the leased units it will not spend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaSettle {
    pub key_id: String,
    pub tag: QuotaTag,
    pub used: u64,
    pub release: u64,
}

/// A key's stored quota counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaCounters {
    pub tag: QuotaTag,
    /// Granted to gateways (spent, held, or lost with a killed gateway).
    pub leased: u64,
    /// Admitted requests, as gateways reported them.
    pub used: u64,
}

/// What `lease_rate` granted from a key's fleet-wide window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateGrant {
    pub granted: u64,
    /// What the fleet may still admit in this window after the grant.
    pub remaining: u64,
    /// Until the store's window ends (the grant is void after), ms.
    pub window_left_ms: i64,
    /// When nothing was granted: how long until the window frees one request, ms.
    pub retry_ms: i64,
}

/// The counters behind rate limits and quotas (SPEC §7). Gateways take allowance in
/// batches (leases) and report what they spent, so no request waits on the store except
/// the one that finds its batch empty.
#[async_trait]
pub trait Meters: Send + Sync {
    /// Leases up to `ask.want` units of a key's quota in `ask.tag`, never past `ask.limit`
    /// in total. Counters of an older tag are dropped first.
    async fn lease_quota(&self, key_id: &str, ask: QuotaAsk) -> Result<QuotaGrant, StoreError>;

    /// Adds what gateways report; a report of another tag than the stored one is dropped
    /// (it counted a period or a usage that a reset has since replaced).
    async fn settle_quota(&self, batch: &[QuotaSettle]) -> Result<(), StoreError>;

    /// A key's counters, `None` when it never leased.
    async fn quota_counters(&self, key_id: &str) -> Result<Option<QuotaCounters>, StoreError>;

    /// Leases up to `want` requests of a key's shared rate window (`limit` per `window_ms`,
    /// a sliding window on the store's clock). `None`: this store keeps no shared windows
    /// (the embedded store: one gateway), so each gateway counts alone.
    async fn lease_rate(
        &self,
        _key_id: &str,
        _limit: u64,
        _window_ms: i64,
        _want: u64,
    ) -> Result<Option<RateGrant>, StoreError> {
        Ok(None)
    }

    /// Whether `lease_rate` shares windows between gateways.
    fn shares_rate_windows(&self) -> bool {
        false
    }
}

/// Whether the store can serve, for `/readyz`.
#[async_trait]
pub trait Health: Send + Sync {
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// A whole store: every concern above, from one backend. `open` returns one, and the CLI,
/// the service layer and the admin API use it whole; the cache keeps only the narrow
/// parts it needs (`KeyLookup`, `ChangeFeed`, `UsageSink`). Implemented for every type
/// that implements the parts: a store implements those, never this.
pub trait KeyStore:
    KeyLookup + KeyRepo + AuditLog + UsageSink + ChangeFeed + Meters + Health + Send + Sync + 'static
{
}

impl<T> KeyStore for T where
    T: KeyLookup
        + KeyRepo
        + AuditLog
        + UsageSink
        + ChangeFeed
        + Meters
        + Health
        + Send
        + Sync
        + 'static
{
}

/// Opens the store the config names.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn KeyStore>, StoreError> {
    match config {
        StoreConfig::Embedded { path, .. } => {
            let path = path.clone();
            let store =
                tokio::task::spawn_blocking(move || embedded::EmbeddedStore::open(&path)).await??;
            Ok(Arc::new(store))
        }
        StoreConfig::Redis { urls, cluster } => {
            Ok(Arc::new(self::redis::RedisStore::open(urls, *cluster)?))
        }
    }
}
