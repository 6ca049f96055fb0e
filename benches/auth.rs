//! Micro-benchmarks of the auth step: the format check, sha256, and the whole verdict on
//! a cache hit (credential extraction -> check -> hash -> cache -> state/expiry ->
//! permissions -> workspace). Setup (store, key, warm cache) stays out of the timed part.

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use keygate::auth::{extract_credential, Authenticator};
use keygate::cache::{CacheSettings, CachedKey, KeyCache};
use keygate::config::Config;
use keygate::key::{KeyFormat, KeyHash};
use keygate::service::{KeyService, NewKey};
use keygate::store::now_ms;
use std::hint::black_box;
use std::sync::Arc;

const YAML: &str = r#"
store: { kind: embedded, path: "${DB}" }
roles: { viewer: [models:read] }
upstreams: { api: { targets: ["http://127.0.0.1:9"] } }
routes:
  - { path: /v1/models, upstream: api, permissions: [models:read] }
"#;

struct Setup {
    _dir: tempfile::TempDir,
    auth: Authenticator,
    config: Config,
    headers: HeaderMap,
    secret: String,
}

fn setup(rt: &tokio::runtime::Runtime) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("bench.db").display().to_string();
    let config = Config::from_yaml(YAML, &|_| Some(db.clone())).expect("bench config");
    rt.block_on(async {
        let store = keygate::store::open(&config.store).await.expect("store");
        let svc = KeyService::new(store.clone(), config.roles.clone(), KeyFormat::new("kg"));
        let (_, secret) = svc
            .create(
                NewKey {
                    org: "acme".into(),
                    roles: vec!["viewer".into()],
                    ..NewKey::default()
                },
                "bench",
            )
            .await
            .expect("create key");
        let settings = CacheSettings {
            max_entries: 1000,
            ttl: std::time::Duration::from_secs(3600),
            negative_ttl: std::time::Duration::from_secs(3600),
            stale_if_error: std::time::Duration::from_secs(3600),
        };
        let cache = Arc::new(KeyCache::new(
            store,
            settings,
            Arc::new(keygate::metrics::Metrics::new()),
            Box::new(|l| {
                let id = keygate::auth::Identity::of(&l);
                CachedKey::new(l, id)
            }),
        ));
        let auth = Authenticator::new(&config, cache);
        let secret = secret.expose().to_owned();
        // Warm the cache: the timed loop only ever hits.
        auth.authenticate(&secret, now_ms())
            .await
            .expect("key admitted");
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {secret}")).expect("header"),
        );
        Setup {
            _dir: dir,
            auth,
            config,
            headers,
            secret,
        }
    })
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s = setup(&rt);
    let format = KeyFormat::new("kg");

    c.bench_function("key_format_check", |b| {
        b.iter(|| format.check(black_box(&s.secret)).is_ok())
    });
    c.bench_function("sha256_key", |b| {
        b.iter(|| KeyHash::of(black_box(s.secret.as_bytes())))
    });

    let route = &s.config.routes[0];
    c.bench_function("verdict_cache_hit", |b| {
        b.to_async(&rt).iter(|| async {
            let cred = extract_credential(&s.headers, None, &s.auth.sources).expect("credential");
            let key = s
                .auth
                .authenticate(&cred, now_ms())
                .await
                .expect("admitted");
            let p = s
                .auth
                .authorize(key, route, &s.headers, "/v1/models")
                .expect("authorized");
            black_box(p);
        })
    });

    let unknown = format.generate();
    let unknown = unknown.expose().to_owned();
    rt.block_on(async {
        let _ = s.auth.authenticate(&unknown, now_ms()).await;
    });
    c.bench_function("verdict_negative_cache_hit", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                s.auth
                    .authenticate(black_box(&unknown), now_ms())
                    .await
                    .is_err(),
            )
        })
    });
}

criterion_group!(auth, benches);
criterion_main!(auth);
