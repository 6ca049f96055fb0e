//! Rate limits and quotas of a fleet (SPEC §7): gateways sharing one real `redis-server`
//! together admit a key's rate limit and quota, not one each; while Redis is down each
//! gateway counts its rate limits alone and spends the quota it holds, then answers 503;
//! when Redis is back it recovers by itself.
//!
//! Exact counts hold here because every request is sent one after another and the limits
//! are per hour: the ±10 % accuracy under concurrent load over time is measured by
//! `benches/limits`, not asserted in a test.

mod support;

use http::Method;
use serde_json::json;
use std::time::Duration;
use support::redis::RedisServer;
use support::*;

async fn models(gw: &TestGateway, key: &str) -> Reply {
    get(&gw.url("/v1/models"), &[("authorization", &bearer(key))]).await
}

/// Admitted answers out of `n` requests to each gateway in turn.
async fn admitted_round_robin(gws: &[&TestGateway], key: &str, n: usize) -> usize {
    let mut ok = 0;
    for i in 0..n * gws.len() {
        let r = models(gws[i % gws.len()], key).await;
        match r.status.as_u16() {
            200 => ok += 1,
            429 => {}
            other => panic!("request {i}: {other} {}", r.code()),
        }
    }
    ok
}

#[tokio::test]
async fn three_gateways_admit_one_quota_and_one_rate_limit_together() {
    let redis = RedisServer::start();
    let a = gateway_on_redis(&redis.url()).await;
    let b = gateway_on_redis(&redis.url()).await;
    let c = gateway_on_redis(&redis.url()).await;
    let fleet = [&a, &b, &c];

    // 250 for the fleet, leased 100 at a time: 100 + 100 + 50, then nothing.
    let (id, quota_key) = a.create_key(&["--org", "acme", "--role", "viewer", "--quota", "250"]);
    assert_eq!(admitted_round_robin(&fleet, &quota_key, 100).await, 250);
    for gw in fleet {
        assert_eq!(models(gw, &quota_key).await.code(), "quota_exhausted");
    }
    let reported = eventually(Duration::from_secs(3), || async {
        a.cli(&["keys", "usage", &id]).json["quota"]["used"] == json!(250)
    })
    .await;
    assert!(reported, "{}", a.cli(&["keys", "usage", &id]).stdout);

    // 30 an hour for the fleet: 20 sent to each gateway, 30 admitted in all.
    let (_, rate_key) =
        a.create_key(&["--org", "acme", "--role", "viewer", "--rate-limit", "30/h"]);
    assert_eq!(admitted_round_robin(&fleet, &rate_key, 20).await, 30);
    let r = models(&b, &rate_key).await;
    assert_eq!(r.code(), "rate_limited");
    assert!(r.headers.contains_key("retry-after"));

    // A reset from the admin API of one gateway reaches the others' leases.
    let r = support::admin::ops(
        &c,
        Method::POST,
        &format!("/v1/keys/{id}/usage/reset"),
        None,
    )
    .await;
    support::admin::assert_status(&r, 200);
    for gw in fleet {
        assert!(
            verdict_becomes(
                gw,
                Method::GET,
                "/v1/models",
                &quota_key,
                (200, ""),
                Duration::from_secs(2)
            )
            .await,
            "a gateway still refuses after the reset"
        );
    }
    for gw in [a, b, c] {
        gw.stop().await;
    }
}

#[tokio::test]
async fn while_redis_is_down_quotas_spend_the_lease_then_503_and_rate_limits_count_alone() {
    let mut redis = RedisServer::start();
    let gw = gateway_on_redis(&redis.url()).await;
    let (_, quota_key) = gw.create_key(&["--org", "acme", "--role", "viewer", "--quota", "1000"]);
    let (_, rate_key) =
        gw.create_key(&["--org", "acme", "--role", "viewer", "--rate-limit", "3/h"]);
    // 10 spent of a lease of 100; one of the fleet's 3 an hour.
    for _ in 0..10 {
        assert_eq!(models(&gw, &quota_key).await.status, 200);
    }
    assert_eq!(models(&gw, &rate_key).await.status, 200);

    redis.stop();
    // The 90 units held here, then 503: never more than the lease.
    for left in (0..90).rev() {
        let r = models(&gw, &quota_key).await;
        assert_eq!(r.status, 200, "{} with {left} left", r.code());
    }
    let r = models(&gw, &quota_key).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (503, "store_unavailable")
    );
    // The rate limit holds on this gateway alone: 2 more of 3, then 429.
    assert_eq!(models(&gw, &rate_key).await.status, 200);
    assert_eq!(models(&gw, &rate_key).await.status, 200);
    let r = models(&gw, &rate_key).await;
    assert_eq!(r.code(), "rate_limited");
    assert!(r.headers.contains_key("retry-after"));

    // Back by itself once Redis is.
    redis.restart();
    assert!(
        verdict_becomes(
            &gw,
            Method::GET,
            "/v1/models",
            &quota_key,
            (200, ""),
            Duration::from_secs(5)
        )
        .await,
        "the quota did not recover: {}",
        models(&gw, &quota_key).await.code()
    );
    gw.stop().await;
}
