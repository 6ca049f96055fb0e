//! `limits`: the default rate limit and the quota lease size (SPEC §7).

use super::Errors;
use crate::config::raw::*;
use crate::config::LimitsConfig;
use crate::limits::RateLimit;

/// Largest quota lease: a gateway may admit this many past a quota on Redis, and loses
/// them if it is killed.
const MAX_QUOTA_BATCH: u64 = 1_000_000;

pub(super) fn limits(raw: RawLimits, e: &mut Errors) -> LimitsConfig {
    let default_rate_limit = raw.default_rate_limit.as_deref().and_then(|l| {
        RateLimit::parse(l)
            .map_err(|err| e.push("limits.default_rate_limit", err.to_string()))
            .ok()
    });
    let quota_batch = raw.quota_batch.unwrap_or(DEFAULT_QUOTA_BATCH);
    if !(1..=MAX_QUOTA_BATCH).contains(&quota_batch) {
        e.push("limits.quota_batch", format!("must be 1-{MAX_QUOTA_BATCH}"));
    }
    LimitsConfig {
        default_rate_limit,
        quota_batch,
    }
}
