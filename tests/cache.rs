//! The cache over a store that fails on demand (the real embedded store behind a switch):
//! stale answers within `stale_if_error`, one retry per second while the store is down,
//! errors (503 at the gateway) for keys it never confirmed, recovery when it is back.
//!
//! Time is injected: the cache judges freshness by the `now_ms` each call passes (the
//! request's clock), so the tests step it past a TTL or a retry pause instead of sleeping.
mod support;

use keygate::cache::{CacheSettings, KeyCache};
use keygate::key::{KeyFormat, KeyHash};
use keygate::metrics::Metrics;
use keygate::service::{KeyService, NewKey};
use keygate::store::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::switchable::Switchable;

/// A duration in the cache's unit, ms.
fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).expect("a short duration")
}

async fn setup(
    ttl: Duration,
    stale: Duration,
) -> (tempfile::TempDir, Arc<Switchable>, KeyCache, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = keygate::config::StoreConfig::Embedded {
        path: dir.path().join("k.db"),
        poll_interval: Duration::from_millis(100),
    };
    let inner = keygate::store::open(&cfg).await.expect("open");
    let store = Arc::new(Switchable {
        inner: inner.clone(),
        down: AtomicBool::new(false),
    });
    let roles = [("viewer".to_owned(), ["models:read".to_owned()].into())].into();
    let svc = KeyService::new(inner, roles, KeyFormat::new("kg"), None);
    let (_, secret) = svc
        .create(
            NewKey {
                org: "acme".into(),
                roles: vec!["viewer".into()],
                ..NewKey::default()
            },
            "t",
        )
        .await
        .expect("create");
    let settings = CacheSettings {
        max_entries: 100,
        ttl,
        negative_ttl: ttl,
        stale_if_error: stale,
    };
    let cache = KeyCache::new(store.clone(), settings, Arc::new(Metrics::new()));
    (dir, store, cache, secret.expose().to_owned())
}

#[tokio::test]
async fn stale_answers_serve_while_the_store_is_down_then_recover() {
    let ttl = Duration::from_millis(50);
    let (_dir, store, cache, secret) = setup(ttl, Duration::from_secs(60)).await;
    let known = KeyHash::of(secret.as_bytes());
    let t0 = now_ms();
    assert!(cache.get(&known, t0).await.expect("up").is_some());
    assert_eq!(cache.lookups(), 1);

    store.down.store(true, Ordering::SeqCst);
    let past_ttl = t0 + ms(ttl * 2); // the next get refreshes
    let stale = cache
        .get(&known, past_ttl)
        .await
        .expect("stale answer while down");
    assert!(stale.is_some());
    assert_eq!(cache.lookups(), 2, "one failed refresh");
    for i in 0..50 {
        let t = past_ttl + i * 10; // within the retry pause
        assert!(cache.get(&known, t).await.expect("stale").is_some());
    }
    assert_eq!(
        cache.lookups(),
        2,
        "no lookup per request while the store is down"
    );

    // A key the store never confirmed: an error (503 store_unavailable at the gateway).
    let unknown = KeyHash::of(KeyFormat::new("kg").generate().expose().as_bytes());
    assert!(cache.get(&unknown, past_ttl).await.is_err());

    store.down.store(false, Ordering::SeqCst);
    let past_retry = past_ttl + 1_100; // past the one-second retry pause
    assert!(cache
        .get(&known, past_retry)
        .await
        .expect("recovered")
        .is_some());
    assert!(cache
        .get(&unknown, past_retry)
        .await
        .expect("recovered")
        .is_none());
}

#[tokio::test]
async fn stale_answers_end_after_stale_if_error() {
    let ttl = Duration::from_millis(20);
    let stale = Duration::from_millis(100);
    let (_dir, store, cache, secret) = setup(ttl, stale).await;
    let known = KeyHash::of(secret.as_bytes());
    let t0 = now_ms();
    assert!(cache.get(&known, t0).await.expect("up").is_some());
    store.down.store(true, Ordering::SeqCst);
    assert!(
        cache.get(&known, t0 + ms(stale * 2)).await.is_err(),
        "past stale_if_error the key is no longer vouched for"
    );
}
