//! Stage 4, limit (SPEC §2's later rows, §7): the rate limit, then the org's state, then
//! the quota, in the SPEC's order, between the verdict and the rewrite: a refused request
//! costs no upstream work and a limit never counts a request the verdict refused.
//!
//! `check` decides without waiting whenever this gateway holds what it needs (a cache hit
//! with allowance left); only a key whose leased allowance ran out returns `Pending`, and
//! `finish` asks the store for more.

use crate::auth::{AuthError, Principal};
use crate::cache::CachedKey;
use crate::config::RouteConfig;
use crate::error::GatewayError;
use crate::limiter::{LimitError, LimitHeaders, Limiter, Meter, QuotaVerdict, RateVerdict};
use crate::limits::{Quota, RateLimit};
use crate::store::monotonic_coarse_ms;
use std::sync::Arc;

/// What is left to ask the store.
pub enum Pending {
    Rate(RateLimit),
    Quota(Quota),
}

fn meter<'k>(limiter: &Limiter, key: &'k CachedKey) -> &'k Arc<Meter> {
    key.meter.get_or_init(|| limiter.meter(&key.facts.id))
}

/// The key's own rate limit, else the route's, else the default.
fn rate_of(key: &CachedKey, route: &RouteConfig, default: Option<RateLimit>) -> Option<RateLimit> {
    key.facts
        .limits
        .as_ref()
        .and_then(|l| l.rate_limit)
        .or(route.rate_limit)
        .or(default)
}

/// The key's quota and the usage epoch to count it under.
fn quota_of(key: &CachedKey) -> Option<(Quota, u64)> {
    let l = key.facts.limits.as_deref()?;
    Some((l.quota?, l.usage_epoch))
}

fn rate_verdict(v: RateVerdict, headers: &mut LimitHeaders) -> Result<bool, GatewayError> {
    match v {
        RateVerdict::Admit(info) => {
            headers.rate = Some(info);
            Ok(true)
        }
        RateVerdict::Refuse(info, retry_after_s) => {
            headers.rate = Some(info);
            Err(LimitError::RateLimited { retry_after_s }.into())
        }
        RateVerdict::Lease => Ok(false),
    }
}

fn quota_verdict(v: QuotaVerdict, headers: &mut LimitHeaders) -> Result<bool, GatewayError> {
    match v {
        QuotaVerdict::Admit(remaining) => {
            headers.quota_remaining = Some(remaining);
            Ok(true)
        }
        QuotaVerdict::Exhausted(retry_after_s) => {
            headers.quota_remaining = Some(0);
            Err(LimitError::QuotaExhausted { retry_after_s }.into())
        }
        QuotaVerdict::Lease(_) => Ok(false),
    }
}

/// Decides what can be decided now. `Ok(None)`: admitted.
#[inline]
pub fn check(
    limiter: &Arc<Limiter>,
    principal: &Principal,
    route: &RouteConfig,
    default: Option<RateLimit>,
    now_ms: i64,
    headers: &mut LimitHeaders,
) -> Result<Option<Pending>, GatewayError> {
    let key = &*principal.key;
    if let Some(rate) = rate_of(key, route, default) {
        let v = limiter.check_rate(meter(limiter, key), rate, monotonic_coarse_ms());
        if !rate_verdict(v, headers)? {
            return Ok(Some(Pending::Rate(rate)));
        }
    }
    after_rate(limiter, key, now_ms, headers)
}

/// The org's state, then the quota.
fn after_rate(
    limiter: &Arc<Limiter>,
    key: &CachedKey,
    now_ms: i64,
    headers: &mut LimitHeaders,
) -> Result<Option<Pending>, GatewayError> {
    if key.facts.org_suspended {
        return Err(AuthError::OrgSuspended.into());
    }
    let Some((quota, epoch)) = quota_of(key) else {
        return Ok(None);
    };
    let v = limiter.check_quota(
        meter(limiter, key),
        quota,
        epoch,
        now_ms,
        monotonic_coarse_ms(),
    );
    Ok((!quota_verdict(v, headers)?).then_some(Pending::Quota(quota)))
}

/// Asks the store for what `check` could not decide, then decides the rest.
pub async fn finish(
    limiter: &Arc<Limiter>,
    principal: &Principal,
    pending: Pending,
    now_ms: i64,
    headers: &mut LimitHeaders,
) -> Result<(), GatewayError> {
    let key = &*principal.key;
    let quota = match pending {
        Pending::Rate(rate) => {
            let v = limiter.lease_rate(meter(limiter, key), rate).await;
            rate_verdict(v, headers)?;
            match after_rate(limiter, key, now_ms, headers)? {
                Some(Pending::Quota(q)) => q,
                _ => return Ok(()),
            }
        }
        Pending::Quota(q) => q,
    };
    let epoch = quota_of(key).map_or(0, |(_, e)| e);
    let v = limiter
        .lease_quota(meter(limiter, key), quota, epoch, now_ms)
        .await?;
    quota_verdict(v, headers)?;
    Ok(())
}
