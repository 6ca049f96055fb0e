//! Micro-benchmarks of the request path: the format check, sha256, the whole verdict on a
//! cache hit (credential extraction -> check -> hash -> cache -> state/expiry ->
//! permissions -> workspace) and on a negative-cache hit, route matching among 1,000
//! routes, and the header rewrite for the upstream. Setup (store, key, warm cache, routes)
//! stays out of the timed part.

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use keygate::auth::{extract_credential, Authenticator, Principal};
use keygate::cache::{CacheSettings, KeyCache};
use keygate::config::Config;
use keygate::identity::IdentityNames;
use keygate::key::{KeyFormat, KeyHash};
use keygate::path::normalize_path;
use keygate::proxy::headers;
use keygate::route::Router;
use keygate::service::{KeyService, NewKey};
use keygate::store::{coarse_now_ms, now_ms};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

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
        let svc = KeyService::new(
            store.clone(),
            config.roles.clone(),
            KeyFormat::new("kg"),
            None,
        );
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

    // Every iteration inside one future, as requests run in the gateway's (criterion's
    // `to_async` enters the runtime once per iteration: about 10 ns that are no part of a
    // verdict). The clock is the one the gateway reads per request.
    let route = &s.config.routes[0];
    c.bench_function("verdict_cache_hit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let cred =
                        extract_credential(&s.headers, None, &s.auth.sources).expect("credential");
                    let key = s
                        .auth
                        .authenticate(&cred, coarse_now_ms())
                        .await
                        .expect("admitted");
                    let p = s
                        .auth
                        .authorize(key, route, &s.headers, "/v1/models")
                        .expect("authorized");
                    black_box(p);
                }
                start.elapsed()
            })
        })
    });

    let unknown = format.generate();
    let unknown = unknown.expose().to_owned();
    rt.block_on(async {
        let _ = s.auth.authenticate(&unknown, now_ms()).await;
    });
    c.bench_function("verdict_negative_cache_hit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(
                        s.auth
                            .authenticate(black_box(&unknown), coarse_now_ms())
                            .await
                            .is_err(),
                    );
                }
                start.elapsed()
            })
        })
    });
}

/// 1,000 routes: 100 services with 10 resources each, a host on every tenth service and
/// methods on every other route, so matching does what a large real table makes it do.
fn many_routes() -> Config {
    let mut yaml =
        String::from("upstreams: { api: { targets: [\"http://127.0.0.1:9\"] } }\nroutes:\n");
    for svc in 0..100 {
        for res in 0..10 {
            let host = if svc % 10 == 0 {
                format!(", host: svc{svc}.example.com")
            } else {
                String::new()
            };
            let methods = if res % 2 == 0 {
                ", methods: [GET, POST]"
            } else {
                ""
            };
            yaml.push_str(&format!(
                "  - {{ path: /v1/svc{svc}/res{res}, upstream: api{host}{methods} }}\n"
            ));
        }
    }
    Config::from_yaml(&yaml, &|_| None).expect("route config")
}

fn routing(c: &mut Criterion) {
    let config = many_routes();
    let router = Router::new(&config);
    let get = http::Method::GET;
    // Matches late in any scan order, and a path that matches nothing.
    let path = "/v1/svc57/res9/items/42";
    assert!(router.find(None, &get, path).is_some());
    c.bench_function("route_match_1000_routes", |b| {
        b.iter(|| {
            let p = normalize_path(black_box(path)).expect("path");
            black_box(router.find(None, &get, &p).map(|(i, _)| i))
        })
    });
    c.bench_function("route_miss_1000_routes", |b| {
        b.iter(|| {
            black_box(
                router
                    .find(None, &get, black_box("/v2/nothing/here"))
                    .is_none(),
            )
        })
    });
}

/// The upstream request's headers from a typical client request: hop-by-hop removal,
/// spoofed identity removal, credential removal, identity added, X-Forwarded-*, request id.
fn header_rewrite(c: &mut Criterion, s: &Setup, rt: &tokio::runtime::Runtime) {
    let key = rt
        .block_on(s.auth.authenticate(&s.secret, now_ms()))
        .expect("admitted");
    let principal = Principal {
        key,
        workspace: None,
    };
    let names = IdentityNames::new("x-keygate-");
    let mut template = s.headers.clone();
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("connection", "keep-alive"),
        ("content-type", "application/json"),
        ("x-forwarded-for", "10.0.0.1"),
    ] {
        template.insert(k, HeaderValue::from_static(v));
    }
    let peer: std::net::IpAddr = [127, 0, 0, 1].into();
    c.bench_function("header_rewrite", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |h| {
                let host = h.get(http::header::HOST).cloned();
                let seen = headers::Seen::of(h, &names, None);
                let id = headers::request_id(h, &seen);
                if seen.hop_by_hop {
                    headers::remove_hop_by_hop(h);
                }
                if seen.identity {
                    headers::strip_identity(h, &names);
                }
                h.remove(http::header::AUTHORIZATION);
                headers::add_identity(h, &names, &principal);
                headers::set_forwarded(h, &seen, peer, false, host);
                h.insert(headers::X_REQUEST_ID, id);
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn proxy_benches(c: &mut Criterion) {
    routing(c);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s = setup(&rt);
    header_rewrite(c, &s, &rt);
}

criterion_group!(auth, benches, proxy_benches);
criterion_main!(auth);
