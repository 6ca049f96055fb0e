//! Fleet measurements on a real Redis (not criterion; `cargo bench --bench fleet`):
//! - revocation lag: 3 gateways share a `redis-server`; for 100 keys, the time from the
//!   revoke returning to the last gateway answering 401, p50 / p99 / max;
//! - load shielding: store lookups for 10,000 distinct unknown keys, and for 100,000
//!   requests with one unknown key;
//! - Redis commands per proxied request with a warm cache (`INFO commandstats`).
//!
//! Everything runs on 127.0.0.1 free ports with its own data dir, and stops by itself.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keygate::app::App;
use keygate::config::Config;
use keygate::key::KeyFormat;
use keygate::service::{KeyService, NewKey};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// The fleet tests' Redis harness: `redis-server` on a free port with its own temp dir.
#[allow(dead_code)]
#[path = "../tests/support/redis.rs"]
mod redis_support;
use redis_support::RedisServer;

/// Total calls of every command so far (`INFO commandstats`).
fn commands(redis: &RedisServer) -> u64 {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| l.split("calls=").nth(1))
        .filter_map(|r| r.split(',').next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

async fn status(client: &HttpClient, gw: SocketAddr, key: &str) -> u16 {
    let req = http::Request::get(format!("http://{gw}/v1/x"))
        .header("authorization", format!("Bearer {key}"))
        .body(Empty::new())
        .expect("request");
    match client.request(req).await {
        Ok(resp) => {
            let s = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            s
        }
        Err(_) => 0,
    }
}

/// `total` requests with `key`, over `conns` concurrent workers.
async fn load(
    client: &HttpClient,
    gw: SocketAddr,
    keys: Arc<Vec<String>>,
    total: usize,
    conns: usize,
) -> Duration {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..conns {
        let (client, keys) = (client.clone(), keys.clone());
        tasks.spawn(async move {
            let mut i = w;
            while i < total {
                status(&client, gw, &keys[i % keys.len()]).await;
                i += conns;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    start.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let redis = RedisServer::start();
    let upstream = keygate::demo::start_echo(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("echo");
    let yaml = format!(
        r#"
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
store: {{ kind: redis, url: "{url}" }}
cache: {{ max_entries: 200000, ttl: 30s, negative_ttl: 5s, stale_if_error: 5m }}
keys: {{ last_used_flush: 1s }}
roles: {{ reader: [bench:read] }}
log: {{ level: warn }}
upstreams: {{ echo: {{ targets: ["http://{upstream}"] }} }}
routes: [ {{ path: /, upstream: echo }} ]
"#,
        url = redis.url()
    );
    let config = Config::from_yaml(&yaml, &|_| None).expect("bench config");
    let mut gateways = Vec::new();
    for _ in 0..3 {
        let running = App::build(config.clone())
            .await
            .expect("redis store")
            .start()
            .await
            .expect("serve");
        gateways.push(running);
    }
    let addrs: Vec<SocketAddr> = gateways.iter().map(|r| r.addr()).collect();
    let cli_store = keygate::store::open(&config.store)
        .await
        .expect("redis store");
    let svc = KeyService::new(cli_store, config.roles.clone(), KeyFormat::new("kg"), None);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // Revocation lag.
    let mut keys = Vec::new();
    for i in 0..100 {
        let (rec, secret) = svc
            .create(
                NewKey {
                    org: "bench".into(),
                    name: Some(format!("k{i}")),
                    roles: vec!["reader".into()],
                    ..NewKey::default()
                },
                "bench",
            )
            .await
            .expect("create");
        keys.push((rec.id, secret.expose().to_owned()));
    }
    for (_, secret) in &keys {
        for gw in &addrs {
            assert_eq!(status(&client, *gw, secret).await, 200, "warm-up");
        }
    }
    let mut lags = Vec::new();
    for (id, secret) in &keys {
        svc.revoke(id, "bench").await.expect("revoke");
        let t0 = Instant::now();
        let mut pending: Vec<SocketAddr> = addrs.clone();
        let deadline = t0 + Duration::from_secs(35);
        while !pending.is_empty() && Instant::now() < deadline {
            let mut still = Vec::new();
            for gw in pending {
                if status(&client, gw, secret).await != 401 {
                    still.push(gw);
                }
            }
            pending = still;
        }
        lags.push(t0.elapsed());
    }
    lags.sort();
    println!(
        "revocation lag over {} revocations, 3 gateways: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lags.len(),
        percentile(&lags, 0.5).as_secs_f64() * 1e3,
        percentile(&lags, 0.99).as_secs_f64() * 1e3,
        lags[lags.len() - 1].as_secs_f64() * 1e3
    );

    // Load shielding on gateway 0.
    let gw0 = &gateways[0].app().gateway;
    let fmt = KeyFormat::new("kg");
    let unknown: Vec<String> = (0..10_000)
        .map(|_| fmt.generate().expose().to_owned())
        .collect();
    let before = gw0.cache().lookups();
    let took = load(&client, addrs[0], Arc::new(unknown), 10_000, 64).await;
    println!(
        "10,000 distinct unknown keys: {} store lookups ({:.0} req/s)",
        gw0.cache().lookups() - before,
        10_000.0 / took.as_secs_f64()
    );
    let one = Arc::new(vec![fmt.generate().expose().to_owned()]);
    let before = gw0.cache().lookups();
    let took = load(&client, addrs[0], one, 100_000, 64).await;
    println!(
        "100,000 requests with one unknown key: {} store lookups ({:.0} req/s)",
        gw0.cache().lookups() - before,
        100_000.0 / took.as_secs_f64()
    );

    // Redis commands per proxied request, warm cache.
    let (_, live) = svc
        .create(
            NewKey {
                org: "bench".into(),
                roles: vec!["reader".into()],
                ..NewKey::default()
            },
            "bench",
        )
        .await
        .expect("create");
    let live = Arc::new(vec![live.expose().to_owned()]);
    load(&client, addrs[0], live.clone(), 1_000, 16).await; // warm
    let before = commands(&redis);
    let n = 50_000;
    let took = load(&client, addrs[0], live, n, 64).await;
    // Let the next `last_used_at` batch (every second here) land inside the window.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = commands(&redis);
    println!(
        "warm cache: {} Redis commands for {n} proxied requests = {:.4} per request ({:.0} req/s; \
         all 3 gateways' change-feed reads and gateway 0's last_used_at batches, flushed every \
         second, included)",
        after - before,
        (after - before) as f64 / n as f64,
        n as f64 / took.as_secs_f64()
    );
    for running in gateways {
        running.shutdown_draining(Duration::from_secs(1)).await;
    }
}
