//! The key cache: moka in front of any store's `KeyLookup`.
//!
//! The request path reaches the store only through `KeyLookup` (once per miss); the
//! background tasks use the store's `ChangeFeed` (the follower) and `UsageSink` (the
//! `last_used_at` flush). The cache holds nothing else of the store.
//!
//! - Positive answers are fresh for `cache.ttl`, unknown keys for `cache.negative_ttl`, so
//!   a flood of unknown keys does not become a flood on the store.
//! - Concurrent misses (or refreshes) of one key run one store lookup: moka's per-key
//!   `and_try_compute_with` serializes them and the waiters find the fresh entry.
//! - A positive entry is kept past its TTL, up to `cache.stale_if_error`, so that when the
//!   store fails the last confirmed answer still serves (SPEC §4).
//! - The change feed evicts keys the moment another process changes them; an epoch
//!   counter keeps a lookup that raced an eviction from caching what it read before.
//! - `last_used_at` is a relaxed atomic store on the hit path and flushed in batches.

use crate::key::KeyHash;
use crate::limits::{KeyLimits, Quota, RateLimit};
use crate::metrics::Metrics;
use crate::store::{
    duration_ms, ChangeFeed, KeyLookup, KeyState, KeyStore, KeyType, Lookup, StoreError, UsageSink,
};
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What the auth step needs to decide a verdict, plus the precomputed identity header
/// values, so a cache hit copies nothing but an `Arc`. Only these facts are kept, not the
/// whole record: names, metadata, roles and audit fields stay in the store, so a cached
/// key costs little memory.
#[derive(Debug)]
pub struct CachedKey {
    pub facts: KeyFacts,
    pub identity: crate::identity::Identity,
    /// Last time this key admitted a request (unix ms), not yet necessarily flushed.
    last_used: AtomicI64,
    flushed: AtomicI64,
    /// The key's rate and quota counters, found on the first limited request of this
    /// entry (`limiter::Limiter::meter`), then an atomic load per request.
    pub meter: std::sync::OnceLock<Arc<crate::limiter::Meter>>,
}

/// The parts of a key's record (and its owner's) a verdict reads.
#[derive(Debug)]
pub struct KeyFacts {
    /// For the `last_used_at` batches.
    pub id: Box<str>,
    pub state: KeyState,
    pub expires_at: Option<i64>,
    pub key_type: KeyType,
    /// A personal key whose owner was removed from the org.
    pub owner_removed: bool,
    /// The key's org is suspended (SPEC §8). Suspending publishes every key of the org on
    /// the change feed, so a cached answer goes at once and the next lookup brings this.
    pub org_suspended: bool,
    /// May use any workspace of its org.
    pub org_key: bool,
    /// The workspaces of a workspace key (empty for an org key).
    pub workspaces: Box<[Box<str>]>,
    /// The key's own rate limit and quota; `None` for a key with neither (a route's or the
    /// default rate limit applies without one).
    pub limits: Option<Box<KeyLimits>>,
}

impl KeyFacts {
    pub fn of(l: &Lookup) -> Self {
        let k = &l.key;
        let org_key = k.is_org_key();
        KeyFacts {
            id: k.id.as_str().into(),
            state: k.state,
            expires_at: k.expires_at,
            key_type: k.key_type,
            owner_removed: l.owner.as_ref().is_some_and(|u| u.removed),
            org_suspended: l.org_suspended,
            org_key,
            workspaces: if org_key {
                Box::default()
            } else {
                k.workspaces.iter().map(|w| w.as_str().into()).collect()
            },
            limits: key_limits(k),
        }
    }

    pub fn is_expired_at(&self, now_ms: i64) -> bool {
        crate::store::expired_at(self.expires_at, now_ms)
    }
}

fn key_limits(k: &crate::store::KeyRecord) -> Option<Box<KeyLimits>> {
    let rate_limit = stored_limit(
        &k.id,
        "rate_limit",
        k.rate_limit.as_deref(),
        RateLimit::parse,
    );
    let quota = stored_limit(&k.id, "quota", k.quota.as_deref(), Quota::parse);
    (rate_limit.is_some() || quota.is_some()).then(|| {
        Box::new(KeyLimits {
            rate_limit,
            quota,
            usage_epoch: k.usage_epoch,
        })
    })
}

/// A limit as stored. Writes check it, so one that does not parse was put there by hand:
/// it is logged and the key is limited by its route or the default instead.
fn stored_limit<T, E: std::fmt::Display>(
    id: &str,
    field: &str,
    value: Option<&str>,
    parse: fn(&str) -> Result<T, E>,
) -> Option<T> {
    let value = value?;
    parse(value)
        .map_err(|e| tracing::warn!(key_id = %id, field, error = %e, "stored limit ignored"))
        .ok()
}

impl CachedKey {
    /// Notes a use; a relaxed store at most once a second per key, no lock.
    pub fn touch(&self, now_ms: i64) {
        if now_ms - self.last_used.load(Ordering::Relaxed) >= 1_000 {
            self.last_used.store(now_ms, Ordering::Relaxed);
        }
    }
}

/// One cached answer: the key (or `None`: unknown) and when the store last said so.
///
/// Times are unix ms from the clock the request already read for key expiry, so a cache
/// hit reads no clock of its own. An answer "confirmed" in the future (the wall clock
/// stepped back) counts as stale, so a clock step never stretches an answer past its TTL;
/// it costs one refresh per key.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: Option<Arc<CachedKey>>,
    confirmed_ms: i64,
    /// After a failed refresh, the stale answer serves without asking the store again
    /// until then: a dead store costs one lookup per key per second, not one per request.
    retry_ms: Option<i64>,
}

/// How long a failed refresh is not retried (stale answers keep serving meanwhile), ms.
const REFRESH_RETRY_MS: i64 = 1_000;

#[derive(Debug, thiserror::Error)]
#[error("key store unavailable: {0}")]
pub struct LookupError(#[source] pub Arc<StoreError>);

#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    pub max_entries: u64,
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub stale_if_error: Duration,
}

/// `CacheSettings` in ms, the unit of `Entry`'s times.
#[derive(Debug, Clone, Copy)]
struct Limits {
    ttl: i64,
    negative_ttl: i64,
    stale_if_error: i64,
}

impl Limits {
    /// Whether `e` may answer at `now_ms` without asking the store.
    fn is_fresh(&self, e: &Entry, now_ms: i64) -> bool {
        let ttl = if e.key.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        };
        (0..ttl).contains(&(now_ms - e.confirmed_ms))
            || (self.stale_usable(e, now_ms) && e.retry_ms.is_some_and(|t| now_ms < t))
    }

    /// A known key the store confirmed within `stale_if_error`.
    fn stale_usable(&self, e: &Entry, now_ms: i64) -> bool {
        e.key.is_some() && (0..self.stale_if_error).contains(&(now_ms - e.confirmed_ms))
    }
}

pub struct KeyCache {
    /// Hashed with a keyed hash (`ahash`) of the sha256's first 8 bytes (see `KeyHash`'s
    /// `Hash`): the key is already uniform, so SipHash over all 32 bytes bought nothing.
    cache: Cache<KeyHash, Entry, ahash::RandomState>,
    /// Asked on a miss: the request path's only use of the store.
    lookup: Arc<dyn KeyLookup>,
    /// Read by `follow_changes`.
    feed: Arc<dyn ChangeFeed>,
    /// Written by `flush_once`.
    usage: Arc<dyn UsageSink>,
    limits: Limits,
    /// Bumped by every eviction; a lookup that saw it change does not cache its answer.
    epoch: AtomicU64,
    lookups: AtomicU64,
    /// Uses of keys no longer cached, not yet written. Locked only on eviction and flush,
    /// never on the request path.
    orphaned: Arc<Mutex<Vec<(String, i64)>>>,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data is a plain list: a panic elsewhere cannot leave it half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KeyCache {
    /// The cache over `store`, of which it keeps the lookup, the change feed and the usage
    /// sink (all three the same object: upcasts, no wrapper, so a miss makes one virtual
    /// call as before).
    pub fn new(store: Arc<dyn KeyStore>, settings: CacheSettings, metrics: Arc<Metrics>) -> Self {
        let orphaned: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
        let sink = orphaned.clone();
        // One TTL for every entry, the longest an answer may serve (a known key is kept
        // past `ttl` for `stale_if_error`): it only gives memory back. Whether an answer
        // may serve is `is_fresh`'s call, so moka needs no per-entry expiry (its timer
        // wheel costs memory per entry and clock conversions per read).
        let keep = settings
            .ttl
            .max(settings.stale_if_error)
            .max(settings.negative_ttl);
        let cache = Cache::builder()
            .max_capacity(settings.max_entries)
            .time_to_live(keep)
            // An entry that leaves the cache (evicted by a change, by size or by age)
            // hands its unwritten use to the next flush. Not on `Replaced`: a refresh
            // carries the use over to the new entry itself.
            .eviction_listener(move |_, e: Entry, cause| {
                if cause == RemovalCause::Replaced {
                    return;
                }
                if let Some(k) = e.key {
                    let used = k.last_used.load(Ordering::Relaxed);
                    if used > k.flushed.load(Ordering::Relaxed) {
                        lock(&sink).push((k.facts.id.to_string(), used));
                    }
                }
            })
            .build_with_hasher(ahash::RandomState::new());
        KeyCache {
            cache,
            lookup: store.clone(),
            feed: store.clone(),
            usage: store,
            limits: Limits {
                ttl: duration_ms(settings.ttl),
                negative_ttl: duration_ms(settings.negative_ttl),
                stale_if_error: duration_ms(settings.stale_if_error),
            },
            epoch: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
            orphaned,
            metrics,
        }
    }

    /// The answer for a well-formed key's hash at `now_ms` (unix ms): cached when fresh,
    /// else from the store (one lookup for all concurrent callers), else the stale answer
    /// while the store fails and `stale_if_error` allows.
    pub async fn get(
        &self,
        hash: &KeyHash,
        now_ms: i64,
    ) -> Result<Option<Arc<CachedKey>>, LookupError> {
        match self.fresh(hash, now_ms).await {
            Some(answer) => Ok(answer),
            None => self.load(hash, now_ms).await,
        }
    }

    /// The cached answer if it is fresh at `now_ms`: `Some(None)` is a key known to be
    /// unknown, `None` means the store must be asked (`load`).
    pub async fn fresh(&self, hash: &KeyHash, now_ms: i64) -> Option<Option<Arc<CachedKey>>> {
        let e = self.cache.get(hash).await?;
        if self.limits.is_fresh(&e, now_ms) {
            self.metrics.cache_hits.inc();
            Some(e.key)
        } else {
            None
        }
    }

    /// The store's answer, after `fresh` had none (see `get`). `now_ms` is the request's
    /// clock; the refresh reads the clock again after waiting for its turn and takes the
    /// later of the two (so tests can step time forward instead of sleeping).
    pub async fn load(
        &self,
        hash: &KeyHash,
        now_ms: i64,
    ) -> Result<Option<Arc<CachedKey>>, LookupError> {
        self.metrics.cache_misses.inc();
        // Boxed: the miss path's future is large, and inline it would be moved with every
        // request's future, hit or miss.
        Box::pin(self.refresh(*hash, now_ms)).await
    }

    async fn refresh(
        &self,
        hash: KeyHash,
        now: i64,
    ) -> Result<Option<Arc<CachedKey>>, LookupError> {
        // Read before the lookup: if an eviction lands while we read the store, what we
        // read may predate the change and must not stay cached (checked after the insert,
        // which moka makes only once our closure has finished).
        let epoch = self.epoch.load(Ordering::Acquire);
        let result = self
            .cache
            .entry(hash)
            .and_try_compute_with(|current| async move {
                // Read after the wait: an answer another caller just stored must count as
                // fresh, not as confirmed in this request's future.
                let now = now.max(crate::store::coarse_now_ms());
                let current = current.map(|c| c.into_value());
                if let Some(c) = &current {
                    if self.limits.is_fresh(c, now) {
                        // Another caller refreshed it while we waited.
                        return Ok(Op::Nop);
                    }
                }
                self.lookups.fetch_add(1, Ordering::Relaxed);
                self.metrics.store_lookups.inc();
                let looked = match self.lookup.lookup(&hash).await {
                    Err(StoreError::Corrupt { key_id, reason }) => {
                        // One bad record must not fail every request for its key with a
                        // 503, nor stop the gateway: that key is unknown until it is fixed.
                        self.metrics.store_errors.inc();
                        tracing::error!(%key_id, %reason, "stored key record does not parse; answering as an unknown key");
                        Ok(None)
                    }
                    other => other,
                };
                match looked {
                    Ok(found) => {
                        let prev = current.as_ref().and_then(|c| c.key.clone());
                        let key = found.map(|l| {
                            let k = CachedKey::new(l);
                            if let Some(p) = prev {
                                // Keep the unflushed use across the refresh.
                                k.last_used
                                    .store(p.last_used.load(Ordering::Relaxed), Ordering::Relaxed);
                                k.flushed
                                    .store(p.flushed.load(Ordering::Relaxed), Ordering::Relaxed);
                                // And its counters: a refresh is no new window.
                                if let Some(m) = p.meter.get() {
                                    let _ = k.meter.set(m.clone());
                                }
                            }
                            Arc::new(k)
                        });
                        Ok(Op::Put(Entry {
                            key,
                            confirmed_ms: now,
                            retry_ms: None,
                        }))
                    }
                    Err(err) => {
                        self.metrics.store_errors.inc();
                        match current {
                            Some(c) if self.limits.stale_usable(&c, now) => {
                                tracing::warn!(error = %err, "key store lookup failed; serving the cached answer (stale_if_error)");
                                Ok(Op::Put(Entry {
                                    retry_ms: Some(now + REFRESH_RETRY_MS),
                                    ..c
                                }))
                            }
                            _ => Err(LookupError(Arc::new(err))),
                        }
                    }
                }
            })
            .await?;
        let (entry, inserted) = match result {
            CompResult::Inserted(e) | CompResult::ReplacedWith(e) => (Some(e), true),
            CompResult::Unchanged(e) => (Some(e), false),
            CompResult::Removed(_) | CompResult::StillNone(_) => (None, false),
        };
        if inserted && self.epoch.load(Ordering::Acquire) != epoch {
            // An eviction raced our read: answer this caller, keep nothing.
            self.cache.invalidate(&hash).await;
        }
        Ok(entry.and_then(|e| e.into_value().key))
    }

    /// Drops one key's answer (change feed).
    pub async fn evict(&self, hash: &KeyHash) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.metrics.cache_evictions.inc();
        self.cache.invalidate(hash).await;
    }

    /// Drops every answer (a gap in the change feed).
    pub fn evict_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
    }

    /// Store lookups made so far (for tests and load reports).
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// Keys in the cache, counted exactly (moka's own count lags its pending work).
    pub async fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }

    /// Takes the uses not yet written: `(key id, last used)` for one batch write.
    pub async fn take_last_used(&self) -> Vec<(String, i64)> {
        // Let moka deliver pending removals to the listener first.
        self.cache.run_pending_tasks().await;
        let mut out = std::mem::take(&mut *lock(&self.orphaned));
        for (_, e) in self.cache.iter() {
            if let Some(k) = &e.key {
                let used = k.last_used.load(Ordering::Relaxed);
                if used > k.flushed.load(Ordering::Relaxed) {
                    k.flushed.store(used, Ordering::Relaxed);
                    out.push((k.facts.id.to_string(), used));
                }
            }
        }
        // One write per key, its latest use (a key evicted twice, or a retried batch,
        // appears more than once).
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        out.dedup_by(|later, first| later.0 == first.0);
        out
    }

    /// Where the change feed ends now. Read before the gateway serves, so no change
    /// between a first lookup and the follower's start can be missed.
    pub async fn change_cursor(&self) -> Option<u64> {
        match self.feed.change_cursor().await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the change feed position");
                None
            }
        }
    }

    /// Follows the store's change feed forever from `cursor`, evicting what changed.
    /// Polls at `every`; on a store error it keeps its cursor and tries again (answers
    /// keep their TTL). Without a starting cursor it empties the cache once it has one,
    /// since it cannot know what it missed.
    pub async fn follow_changes(self: Arc<Self>, cursor: Option<u64>, every: Duration) {
        let mut cursor = match cursor {
            Some(c) => c,
            None => loop {
                tokio::time::sleep(every).await;
                if let Some(c) = self.change_cursor().await {
                    self.evict_all();
                    break c;
                }
            },
        };
        let blocking = self.feed.feed_blocks();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A polled feed is read every `every`; a blocking one waits for events itself
            // and is read again at once (after an error, once per `every`).
            if !blocking {
                tick.tick().await;
            }
            match self.feed.changes_since(cursor).await {
                Ok(batch) => {
                    if batch.evict_all {
                        tracing::info!("change feed has a gap; emptying the key cache");
                        self.evict_all();
                    }
                    for h in &batch.evict {
                        self.evict(h).await;
                    }
                    if let Some(at) = batch.written_at_ms {
                        // Clocks of two hosts: a store clock ahead of ours reads as 0.
                        // `at` comes from the store: saturating, so no value of it overflows.
                        let lag =
                            u64::try_from(crate::store::now_ms().saturating_sub(at)).unwrap_or(0);
                        let lag = Duration::from_millis(lag);
                        self.metrics.change_feed_lag.observe(lag);
                        tracing::debug!(
                            lag_ms = lag.as_millis() as u64,
                            keys = batch.evict.len(),
                            all = batch.evict_all,
                            "applied key changes"
                        );
                    }
                    cursor = batch.cursor;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the change feed");
                    if blocking {
                        tick.tick().await;
                    }
                }
            }
        }
    }

    /// Writes `last_used_at` in one batch every `every`, never per request.
    pub async fn flush_last_used(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.flush_once().await;
        }
    }

    pub async fn flush_once(&self) {
        let batch = self.take_last_used().await;
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.usage.record_last_used(&batch).await {
            tracing::warn!(error = %e, keys = batch.len(), "cannot record last_used_at; will retry");
            // Keep them for the next round.
            lock(&self.orphaned).extend(batch);
        }
    }
}

impl CachedKey {
    /// The cached form of `lookup` (which is dropped: only its facts and identity header
    /// values stay).
    pub fn new(lookup: Lookup) -> Self {
        CachedKey {
            facts: KeyFacts::of(&lookup),
            identity: crate::identity::Identity::of(&lookup),
            last_used: AtomicI64::new(0),
            flushed: AtomicI64::new(0),
            meter: std::sync::OnceLock::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures;

    const LIMITS: Limits = Limits {
        ttl: 30_000,
        negative_ttl: 5_000,
        stale_if_error: 3_600_000,
    };

    fn known(confirmed_ms: i64, retry_ms: Option<i64>) -> Entry {
        let lookup = Lookup {
            key: fixtures::key("key_a", "acme", &["*"], 0),
            owner: None,
            org_suspended: false,
        };
        Entry {
            key: Some(Arc::new(CachedKey::new(lookup))),
            confirmed_ms,
            retry_ms,
        }
    }

    fn unknown(confirmed_ms: i64) -> Entry {
        Entry {
            key: None,
            confirmed_ms,
            retry_ms: None,
        }
    }

    #[test]
    fn answers_are_fresh_for_their_ttl() {
        let t = 1_700_000_000_000;
        assert!(LIMITS.is_fresh(&known(t, None), t));
        assert!(LIMITS.is_fresh(&known(t, None), t + 29_999));
        assert!(!LIMITS.is_fresh(&known(t, None), t + 30_000));
        assert!(LIMITS.is_fresh(&unknown(t), t + 4_999));
        assert!(!LIMITS.is_fresh(&unknown(t), t + 5_000));
    }

    #[test]
    fn an_answer_from_the_future_is_stale() {
        // The wall clock stepped back: the answer's age is unknown, so the store is asked.
        let t = 1_700_000_000_000;
        assert!(!LIMITS.is_fresh(&known(t, None), t - 1));
        assert!(!LIMITS.is_fresh(&unknown(t), t - 60_000));
        assert!(!LIMITS.stale_usable(&known(t, Some(t + 1_000)), t - 1));
        assert!(!LIMITS.is_fresh(&known(t, Some(t + 1_000)), t - 1));
    }

    #[test]
    fn a_stale_known_key_serves_until_its_retry_within_stale_if_error() {
        let t = 1_700_000_000_000;
        let late = t + 40_000;
        let e = known(t, Some(late + 1_000));
        assert!(LIMITS.stale_usable(&e, late));
        assert!(LIMITS.is_fresh(&e, late), "before the retry time");
        assert!(!LIMITS.is_fresh(&e, late + 1_000), "at the retry time");
        let old = known(t, Some(t + 3_700_000));
        assert!(!LIMITS.stale_usable(&old, t + 3_600_000));
        assert!(!LIMITS.is_fresh(&old, t + 3_600_000), "past stale_if_error");
        // An unknown key never serves stale.
        assert!(!LIMITS.stale_usable(&unknown(t), t + 6_000));
    }
}
