//! Rate limits, quotas and usage of a key (SPEC §7): set or clear them, read the usage,
//! reset it. Each change is audited; a reset bumps the key's usage epoch, so every gateway
//! starts counting from zero once the change feed brings the key back.

use super::{conflict_backoff, invalid, KeyService, ServiceError, CONFLICT_RETRIES};
use crate::limits::{Quota, RateLimit};
use crate::store::StoreError;
use crate::store::{now_ms, KeyRecord, QuotaTag};
use serde::Serialize;
use serde_json::json;

/// A limit as given, checked (`rate_limit` / `quota` name the field in errors).
pub fn check_rate_limit(s: &str) -> Result<(), ServiceError> {
    RateLimit::parse(s)
        .map(|_| ())
        .map_err(|e| invalid("rate_limit", e.to_string()))
}

pub fn check_quota(s: &str) -> Result<(), ServiceError> {
    Quota::parse(s)
        .map(|_| ())
        .map_err(|e| invalid("quota", e.to_string()))
}

/// A change of limits: `None` leaves one as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct LimitChange {
    pub rate_limit: Option<Option<String>>,
    pub quota: Option<Option<String>>,
}

impl LimitChange {
    pub fn is_empty(&self) -> bool {
        self.rate_limit.is_none() && self.quota.is_none()
    }

    fn check(&self) -> Result<(), ServiceError> {
        if let Some(Some(r)) = &self.rate_limit {
            check_rate_limit(r)?;
        }
        if let Some(Some(q)) = &self.quota {
            check_quota(q)?;
        }
        Ok(())
    }
}

/// `GET /v1/keys/{id}/usage` and `keys usage`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub key_id: String,
    pub rate_limit: Option<String>,
    pub quota: Option<QuotaUsage>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QuotaUsage {
    pub limit: u64,
    /// `day`, `month` or `total`.
    pub period: &'static str,
    /// Admitted requests in this period, as the gateways reported them (each reports
    /// every second).
    pub used: u64,
    /// What gateways may still lease: the quota less what they were granted (spent, held
    /// by a running gateway, or lost with a killed one).
    pub remaining: u64,
    /// Granted to gateways in this period.
    pub leased: u64,
    /// RFC 3339, when the quota refills (`null`: never by itself).
    pub resets_at: Option<String>,
}

impl KeyService {
    /// Sets or clears a key's rate limit and quota (audited `limit`).
    pub async fn set_limits(
        &self,
        id: &str,
        change: &LimitChange,
        actor: &str,
    ) -> Result<KeyRecord, ServiceError> {
        change.check()?;
        if change.is_empty() {
            return Err(invalid(
                "rate_limit",
                "give a rate limit or a quota to set (or none to clear)",
            ));
        }
        retrying!(self.set_limits_once(id, change, actor).await)
    }

    async fn set_limits_once(
        &self,
        id: &str,
        change: &LimitChange,
        actor: &str,
    ) -> Result<KeyRecord, ServiceError> {
        let key = self.must_get(id).await?;
        let mut next = key.clone();
        if let Some(r) = &change.rate_limit {
            next.rate_limit = r.clone();
        }
        if let Some(q) = &change.quota {
            next.quota = q.clone();
        }
        if (&next.rate_limit, &next.quota) == (&key.rate_limit, &key.quota) {
            return Ok(key);
        }
        let details = json!({
            "rate_limit": { "from": key.rate_limit, "to": next.rate_limit },
            "quota": { "from": key.quota, "to": next.quota },
        });
        self.update(key, "limit", actor, details, |k| {
            k.rate_limit = next.rate_limit;
            k.quota = next.quota;
        })
        .await
    }

    /// The key's limits and its quota's counters now.
    pub async fn usage(&self, id: &str) -> Result<Usage, ServiceError> {
        let key = self.must_get(id).await?;
        self.usage_of(&key, now_ms()).await
    }

    /// The usage of `key` at `now_ms` (tests pass a day boundary in).
    pub async fn usage_of(&self, key: &KeyRecord, now_ms: i64) -> Result<Usage, ServiceError> {
        let quota = match key.quota.as_deref().map(Quota::parse) {
            Some(Ok(q)) => Some(q),
            Some(Err(e)) => return Err(invalid("quota", format!("stored quota: {e}"))),
            None => None,
        };
        let quota = match quota {
            None => None,
            Some(q) => {
                let now = QuotaTag {
                    epoch: key.usage_epoch,
                    period: q.period_of(now_ms),
                };
                // Counters of an older tag are of a period (or a usage) that is over.
                let counters = self
                    .store
                    .quota_counters(&key.id)
                    .await?
                    .filter(|c| c.tag >= now)
                    .unwrap_or_default();
                let resets_at = q
                    .resets_at(counters.tag.period.max(now.period))
                    .map(super::view::rfc3339);
                Some(QuotaUsage {
                    limit: q.limit,
                    period: q.period.as_str(),
                    used: counters.used,
                    remaining: q.limit.saturating_sub(counters.leased.max(counters.used)),
                    leased: counters.leased,
                    resets_at,
                })
            }
        };
        Ok(Usage {
            key_id: key.id.clone(),
            rate_limit: key.rate_limit.clone(),
            quota,
        })
    }

    /// Starts the key's quota from zero (audited `usage_reset`).
    pub async fn reset_usage(&self, id: &str, actor: &str) -> Result<KeyRecord, ServiceError> {
        retrying!(self.reset_usage_once(id, actor).await)
    }

    async fn reset_usage_once(&self, id: &str, actor: &str) -> Result<KeyRecord, ServiceError> {
        let key = self.must_get(id).await?;
        let details = json!({ "epoch": key.usage_epoch + 1 });
        self.update(key, "usage_reset", actor, details, |k| k.usage_epoch += 1)
            .await
    }
}
