//! `cache`: size and lifetimes of the in-process key cache.

use super::Errors;
use crate::config::raw::*;
use crate::config::CacheConfig;
use std::time::Duration;

pub(super) fn cache(raw: RawCache, e: &mut Errors) -> CacheConfig {
    let cache = CacheConfig {
        max_entries: raw.max_entries.unwrap_or(DEFAULT_CACHE_MAX_ENTRIES),
        // Above zero: a zero TTL would quietly send every request to the store. At most a
        // day: it bounds how long a revoked key can live when change events are lost.
        ttl: e.bounded(
            "cache.ttl",
            raw.ttl.as_deref(),
            DEFAULT_CACHE_TTL,
            Duration::from_secs(24 * 3600),
        ),
        // Zero turns either off. The bounds keep them sane, and within what moka accepts
        // as an entry's lifetime (the longest of the three): beyond it, start-up panicked.
        negative_ttl: e.at_most(
            "cache.negative_ttl",
            raw.negative_ttl.as_deref(),
            DEFAULT_NEGATIVE_TTL,
            Duration::from_secs(24 * 3600),
        ),
        stale_if_error: e.at_most(
            "cache.stale_if_error",
            raw.stale_if_error.as_deref(),
            DEFAULT_STALE_IF_ERROR,
            Duration::from_secs(7 * 24 * 3600),
        ),
    };
    if cache.max_entries == 0 {
        e.push("cache.max_entries", "must be at least 1");
    }
    cache
}
