//! Prometheus metrics (SPEC §6), all prefixed `keygate_`, served on the admin listener.
//!
//! The request path only touches atomics: per-(route, code) counters are resolved once
//! (lazily, then kept), and latency histograms are lock-free bucket counters, since
//! prometheus-client's own histogram takes a lock on every observation.

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use std::time::Duration;

/// Every verdict code a request can end with; `ok` for a forwarded request or a passing
/// forward-auth check.
pub const CODES: [&str; 23] = [
    "ok",
    "missing_key",
    "multiple_keys",
    "malformed_key",
    "unknown_key",
    "revoked_key",
    "disabled_key",
    "expired_key",
    "owner_removed",
    "insufficient_permissions",
    "workspace_required",
    "workspace_not_allowed",
    "rate_limited",
    "org_suspended",
    "quota_exhausted",
    "store_unavailable",
    "no_route",
    "bad_path",
    "bad_host",
    "bad_body",
    "bad_verify_request",
    "upstream_unavailable",
    "upstream_timeout",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

/// Upper bounds in seconds: 100 µs to 10 s.
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A latency histogram of atomic counters: `observe` never locks. Clones share counts.
#[derive(Debug, Default, Clone)]
pub struct LatencyHistogram(Arc<HistogramCounts>);

#[derive(Debug, Default)]
pub struct HistogramCounts {
    buckets: [AtomicU64; 16],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl std::ops::Deref for LatencyHistogram {
    type Target = HistogramCounts;
    fn deref(&self) -> &HistogramCounts {
        &self.0
    }
}

impl HistogramCounts {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // Per-bucket counts; the encoder accumulates them. The last bucket is +Inf
        // (written as f64::MAX, as prometheus-client's own histogram does).
        let mut buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&le, n)| (le, n.load(Ordering::Relaxed)))
            .collect();
        let count = self.count.load(Ordering::Relaxed);
        let bucketed: u64 = buckets.iter().map(|(_, n)| n).sum();
        buckets.push((f64::MAX, count.saturating_sub(bucketed)));
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    pub request_duration: LatencyHistogram,
    pub auth_duration: LatencyHistogram,
    /// From a change written to the store to this gateway dropping the cached answer.
    pub change_feed_lag: LatencyHistogram,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_evictions: Counter,
    pub store_lookups: Counter,
    pub store_errors: Counter,
    upstream_errors: Family<UpstreamLabels, Counter>,
    pub in_flight: Gauge,
    pub cache_keys: Gauge,
    /// Requests refused by a limit (`rate_limited`, `quota_exhausted`).
    limited: Family<CodeLabels, Counter>,
    /// Quota units this gateway holds in leases, not yet spent.
    pub quota_leased: Gauge,
    /// Calls to the store's meters (leases and reports), for commands per request.
    pub meter_calls: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keygate");
        let m = Metrics {
            requests: Family::default(),
            request_duration: LatencyHistogram::default(),
            auth_duration: LatencyHistogram::default(),
            change_feed_lag: LatencyHistogram::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_evictions: Counter::default(),
            store_lookups: Counter::default(),
            store_errors: Counter::default(),
            upstream_errors: Family::default(),
            in_flight: Gauge::default(),
            cache_keys: Gauge::default(),
            limited: Family::default(),
            quota_leased: Gauge::default(),
            meter_calls: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests by route and verdict code",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Whole request, from head received to response head sent",
            m.request_duration.clone(),
        );
        registry.register(
            "auth_duration_seconds",
            "Auth step: credential, format check, hash, cache or store, verdict",
            m.auth_duration.clone(),
        );
        registry.register(
            "change_feed_lag_seconds",
            "Revocation lag: from a key change written to the store (the store's clock) to \
             this gateway dropping its cached answer",
            m.change_feed_lag.clone(),
        );
        registry.register(
            "cache_hits",
            "Key lookups answered by the cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Key lookups that went to the store",
            m.cache_misses.clone(),
        );
        registry.register(
            "cache_evictions",
            "Cached keys dropped because the store changed them",
            m.cache_evictions.clone(),
        );
        registry.register(
            "store_lookups",
            "Key lookups made in the store",
            m.store_lookups.clone(),
        );
        registry.register(
            "store_errors",
            "Failed store operations",
            m.store_errors.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed upstream requests",
            m.upstream_errors.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests being handled",
            m.in_flight.clone(),
        );
        registry.register(
            "cache_keys",
            "Keys in the cache (known and unknown)",
            m.cache_keys.clone(),
        );
        registry.register(
            "limited",
            "Requests refused by a rate limit or a quota, by code",
            m.limited.clone(),
        );
        registry.register(
            "quota_leased",
            "Quota units this gateway holds in leases and has not spent",
            m.quota_leased.clone(),
        );
        registry.register(
            "meter_calls",
            "Store calls made for rate limits and quotas (leases and usage reports)",
            m.meter_calls.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The counter of one (route, code) series, created on first use.
    pub fn request_counter(&self, route: &str, code: &str) -> Counter {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                code: code.to_owned(),
            })
            .clone()
    }

    /// Counts a refusal by a limit.
    pub fn limited(&self, code: &'static str) {
        self.limited.get_or_create(&CodeLabels { code }).inc();
    }

    pub fn upstream_error(&self, upstream: &str) {
        self.upstream_errors
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
            })
            .inc();
    }

    /// The text exposition (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counters of one route, one per code of `CODES`, resolved on first use and then a
/// plain atomic increment.
pub struct RouteCounters {
    route: String,
    by_code: [OnceLock<Counter>; CODES.len()],
}

impl RouteCounters {
    pub fn new(route: &str) -> Self {
        RouteCounters {
            route: route.to_owned(),
            by_code: Default::default(),
        }
    }

    pub fn inc(&self, metrics: &Metrics, code: &str) {
        let Some(i) = CODES.iter().position(|&c| c == code) else {
            return;
        };
        self.by_code[i]
            .get_or_init(|| metrics.request_counter(&self.route, code))
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_encodes_cumulative_buckets() {
        let m = Metrics::new();
        m.request_duration.observe(Duration::from_micros(50));
        m.request_duration.observe(Duration::from_millis(3));
        let text = m.encode();
        assert!(
            text.contains("keygate_request_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("keygate_request_duration_seconds_bucket{le=\"0.0001\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("keygate_request_duration_seconds_bucket{le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("keygate_request_duration_seconds_bucket{le=\"+Inf\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn route_counters_count_by_code() {
        let m = Metrics::new();
        let c = RouteCounters::new("/v1/models");
        c.inc(&m, "ok");
        c.inc(&m, "ok");
        c.inc(&m, "revoked_key");
        let text = m.encode();
        assert!(
            text.contains("keygate_requests_total{route=\"/v1/models\",code=\"ok\"} 2"),
            "{text}"
        );
        assert!(text.contains("code=\"revoked_key\"} 1"), "{text}");
    }
}
