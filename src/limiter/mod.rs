//! Rate limits and quotas at request time (SPEC §7).
//!
//! Each limited key has a `Meter`: its rate windows (`window.rs`) and its quota lease
//! (`quota.rs`) behind two small per-key locks, so no lock is shared by all requests. The
//! cached key holds its meter (`CachedKey::meter`), found once per cache entry in a table
//! by key id that drops the meters of keys idle for an hour (their state is void by then).
//!
//! The store is asked only when a key's leased allowance runs out (`Meters`): on Redis the
//! fleet shares each key's rate window and quota through it, and no request waits on Redis
//! except the one that finds its lease empty. A background task reports spent quota every
//! second and gives leases back when the gateway stops.

mod quota;
mod window;

pub use quota::QuotaVerdict;
pub use window::{RateInfo, RateVerdict};

use crate::limits::{Quota, RateLimit};
use crate::metrics::Metrics;
use crate::store::{monotonic_coarse_ms, Meters, QuotaAsk, QuotaSettle, QuotaTag, StoreError};
use quota::QuotaState;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use window::Window;

/// A key's counters on this gateway.
pub struct Meter {
    id: Box<str>,
    /// One window per window length in use (a key's own limit, or its routes').
    rates: Mutex<Vec<Window>>,
    quota: Mutex<QuotaState>,
    /// One quota lease at a time per key; those who waited find its units.
    leasing: tokio::sync::Mutex<()>,
    /// One rate-window lease at a time per key, likewise.
    rate_leasing: tokio::sync::Mutex<()>,
    /// On the flusher's list.
    dirty: AtomicBool,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters only: a panic elsewhere leaves them usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the limit stage decided, and what the answer's headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitHeaders {
    pub rate: Option<RateInfo>,
    pub quota_remaining: Option<u64>,
}

/// Why a request was refused by a limit.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("the rate limit of this API key is exceeded")]
    RateLimited { retry_after_s: u64 },
    #[error("the usage quota of this API key is used up")]
    QuotaExhausted { retry_after_s: Option<u64> },
    #[error("the key store is unavailable to lease quota")]
    StoreUnavailable(#[source] StoreError),
}

/// How long the fleet's windows are not asked after the store failed (ms): rate limits
/// count on this gateway alone meanwhile.
const FLEET_RETRY_MS: i64 = 1_000;

pub struct Limiter {
    meters: moka::sync::Cache<String, Arc<Meter>, ahash::RandomState>,
    store: Arc<dyn Meters>,
    fleet: bool,
    quota_batch: u64,
    dirty: Mutex<Vec<Arc<Meter>>>,
    /// Monotonic ms until which rate limits count locally (the store failed).
    fleet_down_until: AtomicI64,
    metrics: Arc<Metrics>,
}

impl Limiter {
    /// `idle`: how long a meter outlives its key's last cache entry.
    pub fn new(
        store: Arc<dyn Meters>,
        quota_batch: u64,
        idle: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let fleet = store.shares_rate_windows();
        Limiter {
            meters: moka::sync::Cache::builder()
                .time_to_idle(idle)
                .build_with_hasher(ahash::RandomState::new()),
            store,
            fleet,
            quota_batch: quota_batch.max(1),
            dirty: Mutex::default(),
            fleet_down_until: AtomicI64::new(i64::MIN),
            metrics,
        }
    }

    /// The meter of key `id`: the one in use, or a new one.
    pub fn meter(&self, id: &str) -> Arc<Meter> {
        self.meters.get_with_by_ref(id, || {
            Arc::new(Meter {
                id: id.into(),
                rates: Mutex::default(),
                quota: Mutex::default(),
                leasing: tokio::sync::Mutex::const_new(()),
                rate_leasing: tokio::sync::Mutex::const_new(()),
                dirty: AtomicBool::new(false),
            })
        })
    }

    /// Counts one request against `rate` (the rate limit that applies) without waiting,
    /// or says the fleet's allowance must be leased (`RateVerdict::Lease`). When the
    /// fleet's lease runs low, the next one is asked for in the background.
    pub fn check_rate(
        self: &Arc<Self>,
        meter: &Arc<Meter>,
        rate: RateLimit,
        now_mono: i64,
    ) -> RateVerdict {
        let (verdict, ahead) = self.count_rate(meter, rate, now_mono);
        if ahead {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(self.clone().lease_rate_ahead(meter.clone(), rate));
            } else if let Some(w) = lock(&meter.rates)
                .iter_mut()
                .find(|w| w.window_ms == rate.window_ms)
            {
                w.ahead_failed();
            }
        }
        verdict
    }

    /// The verdict, and whether to lease ahead.
    fn count_rate(&self, meter: &Meter, rate: RateLimit, now_mono: i64) -> (RateVerdict, bool) {
        let mut rates = lock(&meter.rates);
        let w = match rates.iter().position(|w| w.window_ms == rate.window_ms) {
            Some(i) => &mut rates[i],
            None => {
                rates.push(Window::new(rate.window_ms));
                rates.last_mut().expect("just pushed")
            }
        };
        if self.fleet && now_mono >= self.fleet_down_until.load(Ordering::Relaxed) {
            let v = w.admit_fleet(rate, now_mono);
            let ahead =
                matches!(v, RateVerdict::Admit(_)) && w.ahead(window::lease_size(rate), now_mono);
            (v, ahead)
        } else {
            (w.admit_local(rate, now_mono), false)
        }
    }

    /// The background lease of `check_rate`: added to what the meter holds.
    async fn lease_rate_ahead(self: Arc<Self>, meter: Arc<Meter>, rate: RateLimit) {
        let _one = meter.rate_leasing.lock().await;
        self.metrics.meter_calls.inc();
        let want = window::lease_size(rate);
        let grant = self
            .store
            .lease_rate(&meter.id, rate.count, rate.window_ms, want)
            .await;
        let now = monotonic_coarse_ms();
        let mut rates = lock(&meter.rates);
        if let Some(w) = rates.iter_mut().find(|w| w.window_ms == rate.window_ms) {
            match grant {
                Ok(Some(grant)) => w.granted_ahead(grant, now),
                // The request that finds the lease empty asks again, and falls back to
                // counting alone if the store is still down.
                Ok(None) | Err(_) => w.ahead_failed(),
            }
        }
    }

    /// Leases from the fleet's window and counts the request; on a store failure the
    /// gateway counts alone for a second.
    pub async fn lease_rate(self: &Arc<Self>, meter: &Arc<Meter>, rate: RateLimit) -> RateVerdict {
        let _one = meter.rate_leasing.lock().await;
        // Another request may have leased while this one waited.
        match self.check_rate(meter, rate, monotonic_coarse_ms()) {
            RateVerdict::Lease => {}
            done => return done,
        }
        self.metrics.meter_calls.inc();
        let want = window::lease_size(rate);
        match self
            .store
            .lease_rate(&meter.id, rate.count, rate.window_ms, want)
            .await
        {
            Ok(Some(grant)) => {
                let now = monotonic_coarse_ms();
                let mut rates = lock(&meter.rates);
                if let Some(w) = rates.iter_mut().find(|w| w.window_ms == rate.window_ms) {
                    w.granted(grant, now);
                }
                drop(rates);
                match self.check_rate(meter, rate, now) {
                    // Granted and spent by others meanwhile: refuse rather than loop.
                    RateVerdict::Lease => RateVerdict::Refuse(
                        RateInfo {
                            limit: rate.count,
                            remaining: 0,
                            reset_s: 1,
                        },
                        1,
                    ),
                    v => v,
                }
            }
            Ok(None) => self.check_rate(meter, rate, monotonic_coarse_ms()),
            Err(e) => {
                let now = monotonic_coarse_ms();
                if self
                    .fleet_down_until
                    .swap(now + FLEET_RETRY_MS, Ordering::Relaxed)
                    < now
                {
                    tracing::warn!(error = %e, "rate limits: the store failed; counting on this gateway alone");
                }
                self.check_rate(meter, rate, now)
            }
        }
    }

    /// Spends one unit of `quota` without waiting, or says a lease is needed. When the
    /// units held run low, more are leased in the background (never more than a batch
    /// held), so requests seldom wait for the store.
    pub fn check_quota(
        self: &Arc<Self>,
        meter: &Arc<Meter>,
        quota: Quota,
        epoch: u64,
        now_wall: i64,
        now_mono: i64,
    ) -> QuotaVerdict {
        let batch = self.quota_batch.min(quota.limit);
        let (verdict, ahead) = {
            let mut q = lock(&meter.quota);
            let v = q.spend(quota, epoch, now_wall, now_mono);
            let ahead = match v {
                QuotaVerdict::Admit(_) => q.ahead(batch),
                _ => None,
            };
            (v, ahead)
        };
        if matches!(verdict, QuotaVerdict::Admit(_)) {
            self.mark_dirty(meter);
        }
        if let Some((tag, want)) = ahead {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let ask = quota_ask(quota, tag, want);
                    rt.spawn(self.clone().lease_quota_ahead(meter.clone(), ask));
                }
                Err(_) => lock(&meter.quota).ahead_done(),
            }
        }
        verdict
    }

    /// The background lease of `check_quota`.
    async fn lease_quota_ahead(self: Arc<Self>, meter: Arc<Meter>, ask: QuotaAsk) {
        let _one = meter.leasing.lock().await;
        self.metrics.meter_calls.inc();
        let grant = self.store.lease_quota(&meter.id, ask).await;
        let mut q = lock(&meter.quota);
        if let Ok(grant) = grant {
            q.granted(grant, monotonic_coarse_ms());
        }
        // On a failure the request that finds nothing held asks again (503 if the store
        // is still down).
        q.ahead_done();
    }

    /// Leases a batch of `quota` (one caller per key at a time) and spends one unit.
    pub async fn lease_quota(
        self: &Arc<Self>,
        meter: &Arc<Meter>,
        quota: Quota,
        epoch: u64,
        now_wall: i64,
    ) -> Result<QuotaVerdict, LimitError> {
        let _one = meter.leasing.lock().await;
        // Another request may have leased while this one waited.
        let tag = match self.check_quota(meter, quota, epoch, now_wall, monotonic_coarse_ms()) {
            QuotaVerdict::Lease(tag) => tag,
            done => return Ok(done),
        };
        self.metrics.meter_calls.inc();
        let ask = quota_ask(quota, tag, self.quota_batch.min(quota.limit));
        let grant = self
            .store
            .lease_quota(&meter.id, ask)
            .await
            .map_err(LimitError::StoreUnavailable)?;
        let now_mono = monotonic_coarse_ms();
        lock(&meter.quota).granted(grant, now_mono);
        Ok(
            match self.check_quota(meter, quota, epoch, now_wall, now_mono) {
                // Nothing left after a fresh lease of nothing: used up.
                QuotaVerdict::Lease(_) => {
                    QuotaVerdict::Exhausted(quota.refills_in_s(tag.period, now_wall))
                }
                v => v,
            },
        )
    }

    fn mark_dirty(&self, meter: &Arc<Meter>) {
        if !meter.dirty.swap(true, Ordering::AcqRel) {
            lock(&self.dirty).push(meter.clone());
        }
    }

    /// Reports spent quota (and, with `release`, gives back every lease held) to the
    /// store. What the store does not take stays for the next flush.
    pub async fn flush(&self, release: bool) {
        let meters: Vec<Arc<Meter>> = if release {
            self.meters.iter().map(|(_, m)| m).collect()
        } else {
            std::mem::take(&mut *lock(&self.dirty))
        };
        let mut reports = Vec::new();
        for m in &meters {
            m.dirty.store(false, Ordering::Release);
            reports.extend(lock(&m.quota).take_reports(&m.id, release));
        }
        if !reports.is_empty() {
            self.metrics.meter_calls.inc();
            if let Err(e) = self.store.settle_quota(&reports).await {
                tracing::warn!(error = %e, reports = reports.len(), "quota usage not reported; will retry");
                for m in &meters {
                    let mine: Vec<QuotaSettle> = reports
                        .iter()
                        .filter(|r| *r.key_id == *m.id)
                        .cloned()
                        .collect();
                    if !mine.is_empty() {
                        lock(&m.quota).restore(mine);
                        self.mark_dirty(m);
                    }
                }
            }
        }
        let held: u64 = self.meters.iter().map(|(_, m)| lock(&m.quota).held()).sum();
        self.metrics
            .quota_leased
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// Flushes every `every` until the task is dropped.
    pub async fn run_flusher(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.flush(false).await;
        }
    }
}

/// A lease of `want` units of `quota` in `tag`.
fn quota_ask(quota: Quota, tag: QuotaTag, want: u64) -> QuotaAsk {
    QuotaAsk {
        tag,
        want,
        limit: quota.limit,
        keep_until_ms: quota.keep_until(tag.period),
    }
}
