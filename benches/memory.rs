//! Scale of the key cache (not criterion; `cargo bench --bench memory`):
//! - resident memory per cached key: VmRSS before and after N keys are looked up into the
//!   cache (records, identity header values, moka's bookkeeping);
//! - the cache-hit lookup with 1,000 and with 1,000,000 keys in the store and in the cache:
//!   one hot key, and every key in turn (so the CPU caches see the whole table).
//!
//! The store is an embedded SQLite file in a temp dir; records are written directly in
//! batches (no CLI, no audit), since only their number matters here.

use keygate::cache::{CacheSettings, KeyCache};
use keygate::key::KeyHash;
use keygate::store::{KeyRecord, KeyState, KeyStore, KeyType};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn record(i: usize) -> KeyRecord {
    KeyRecord {
        id: format!("key_{i:016}"),
        hash: hash(i),
        name: format!("service key {i}"),
        org: "acme".to_owned(),
        workspaces: vec!["*".to_owned()],
        key_type: KeyType::Service,
        owner: None,
        roles: vec!["viewer".to_owned()],
        inherit: false,
        permissions: vec!["models:read".to_owned(), "models:write".to_owned()],
        expires_at: None,
        metadata: Default::default(),
        rate_limit: None,
        quota: None,
        usage_epoch: 0,
        state: KeyState::Active,
        created_at: 1_700_000_000_000,
        created_by: "bench".to_owned(),
        last_used_at: None,
        revoked_at: None,
        rotated_to: None,
        hint: None,
        sealed_secret: None,
        version: 0,
    }
}

fn hash(i: usize) -> KeyHash {
    KeyHash::of(format!("bench-secret-{i}").as_bytes())
}

struct Scale {
    _dir: tempfile::TempDir,
    cache: Arc<KeyCache>,
    hashes: Vec<KeyHash>,
}

async fn scale(n: usize) -> Scale {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = keygate::config::StoreConfig::Embedded {
        path: dir.path().join("scale.db"),
        poll_interval: Duration::from_millis(250),
    };
    let store: Arc<dyn KeyStore> = keygate::store::open(&config).await.expect("store");
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let keys: Vec<KeyRecord> = chunk.iter().map(|&i| record(i)).collect();
        store.save_keys(&keys, &[]).await.expect("save");
    }
    println!("{n} keys written to the store in {:.1?}", started.elapsed());
    let settings = CacheSettings {
        max_entries: 2 * n as u64,
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(3600),
        stale_if_error: Duration::from_secs(3600),
    };
    let cache = Arc::new(KeyCache::new(
        store,
        settings,
        Arc::new(keygate::metrics::Metrics::new()),
    ));
    let hashes = (0..n).map(hash).collect();
    Scale {
        _dir: dir,
        cache,
        hashes,
    }
}

/// Looks every key up once (filling the cache); the growth of resident memory per key.
async fn warm(s: &Scale) -> f64 {
    let before = rss_bytes();
    for h in &s.hashes {
        let found = s
            .cache
            .get(h, keygate::store::coarse_now_ms())
            .await
            .expect("lookup");
        assert!(found.is_some(), "every key is in the store");
    }
    let cached = s.cache.entry_count().await;
    assert_eq!(cached, s.hashes.len() as u64, "every key stays cached");
    (rss_bytes().saturating_sub(before)) as f64 / s.hashes.len() as f64
}

/// Nanoseconds per cache hit over `rounds` lookups, cycling through `hashes`.
async fn hits(cache: &KeyCache, hashes: &[KeyHash], rounds: usize) -> f64 {
    let lookups_before = cache.lookups();
    let started = Instant::now();
    for i in 0..rounds {
        let found = cache
            .get(&hashes[i % hashes.len()], keygate::store::coarse_now_ms())
            .await
            .expect("hit");
        std::hint::black_box(found);
    }
    let ns = started.elapsed().as_nanos() as f64 / rounds as f64;
    assert_eq!(cache.lookups(), lookups_before, "all hits, no store lookup");
    ns
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut rows = Vec::new();
        for n in [1_000usize, 1_000_000] {
            let s = scale(n).await;
            let started = Instant::now();
            let per_key = warm(&s).await;
            println!("{n} keys looked up into the cache in {:.1?}", started.elapsed());
            let hot = hits(&s.cache, &s.hashes[..1], 2_000_000).await;
            let cycling = hits(&s.cache, &s.hashes, 2_000_000).await;
            rows.push((n, per_key, hot, cycling));
        }
        println!();
        println!("| keys in store and cache | RSS per cached key | hit, one hot key | hit, every key in turn |");
        println!("|---:|---:|---:|---:|");
        for (n, per_key, hot, cycling) in rows {
            println!("| {n} | {per_key:.0} B | {hot:.0} ns | {cycling:.0} ns |");
        }
    });
}
