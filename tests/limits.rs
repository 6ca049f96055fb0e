//! Rate limits and quotas (SPEC §7) through the real gateway, the real CLI and the admin
//! API, on the embedded store: 429 `rate_limited` and `quota_exhausted` with `Retry-After`,
//! the `RateLimit-*` and `X-Quota-Remaining` headers, a quota spent exactly, limits set,
//! cleared and reset (audited), bad input refused naming the field with nothing changed,
//! and a quota refilling at the UTC day boundary under an injected clock.
//!
//! Rate limits here are per hour, so that no test crosses a window boundary while it runs.

mod support;

use http::Method;
use keygate::limiter::{Limiter, QuotaVerdict};
use keygate::limits::Quota;
use keygate::metrics::Metrics;
use keygate::store::{Meters, QuotaTag};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::admin::{assert_refused, assert_status, ops};
use support::*;

const SEEN_WITHIN: Duration = Duration::from_secs(2);

fn header(r: &Reply, name: &str) -> Option<String> {
    r.headers
        .get(name)
        .map(|v| v.to_str().expect("ascii header").to_owned())
}

fn num(r: &Reply, name: &str) -> Option<u64> {
    header(r, name).map(|v| v.parse().expect("a number"))
}

async fn models(gw: &TestGateway, key: &str) -> Reply {
    get(&gw.url("/v1/models"), &[("authorization", &bearer(key))]).await
}

/// A config with a route of its own rate limit and a default for every other route.
fn limited_routes(yaml: String) -> String {
    yaml.replace(
        "  - { path: /v1, upstream: api }",
        "  - { path: /v1/limited, upstream: api, rate_limit: 2/h }\n  - { path: /v1, upstream: api }",
    ) + "limits: { default_rate_limit: 4/h }\n"
}

#[tokio::test]
async fn over_its_rate_limit_a_key_gets_429_with_retry_after_and_the_headers_count_down() {
    let gw = TestGateway::start().await;
    let (_, key) = gw.create_key(&["--org", "acme", "--role", "viewer", "--rate-limit", "3/h"]);
    for want in [2, 1, 0] {
        let r = models(&gw, &key).await;
        assert_eq!(r.status, 200, "{}", r.code());
        assert_eq!(num(&r, "ratelimit-limit"), Some(3));
        assert_eq!(num(&r, "ratelimit-remaining"), Some(want));
        let reset = num(&r, "ratelimit-reset").expect("reset");
        assert!((1..=7200).contains(&reset), "{reset}");
        assert_eq!(
            header(&r, "x-quota-remaining"),
            None,
            "no quota on this key"
        );
    }
    let r = models(&gw, &key).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (429, "rate_limited")
    );
    let retry = num(&r, "retry-after").expect("Retry-After");
    assert!((1..=7200).contains(&retry), "{retry}");
    assert_eq!(num(&r, "ratelimit-remaining"), Some(0));
    assert_eq!(num(&r, "ratelimit-limit"), Some(3));
    assert!(r.body.len() < 200 && !contains_secret_shape(&String::from_utf8_lossy(&r.body)));

    // Counted per key: another key of the same limit is untouched.
    let (_, other) = gw.create_key(&["--org", "acme", "--role", "viewer", "--rate-limit", "3/h"]);
    assert_eq!(models(&gw, &other).await.status, 200);

    // And in /metrics, by code.
    let m = get(&gw.admin_url("/metrics"), &[]).await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("keygate_limited_total{code=\"rate_limited\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("route=\"/v1/models\",code=\"rate_limited\"} 1"),
        "{text}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_keys_own_limit_beats_the_routes_which_beats_the_default() {
    let gw = TestGateway::start_with(limited_routes).await;
    let (_, plain) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let (_, own) = gw.create_key(&["--org", "acme", "--role", "viewer", "--rate-limit", "5/h"]);
    let on = |path: &'static str, key: String| {
        let url = gw.url(path);
        async move { get(&url, &[("authorization", &bearer(&key))]).await }
    };
    // The route's 2/h for a key without a limit of its own.
    for _ in 0..2 {
        assert_eq!(on("/v1/limited", plain.clone()).await.status, 200);
    }
    let r = on("/v1/limited", plain.clone()).await;
    assert_eq!(
        (r.status.as_u16(), num(&r, "ratelimit-limit")),
        (429, Some(2))
    );
    // The default 4/h elsewhere, counted in the same hourly window of the key.
    let r = on("/v1/other", plain.clone()).await;
    assert_eq!(
        (r.status.as_u16(), num(&r, "ratelimit-limit")),
        (200, Some(4))
    );
    assert_eq!(num(&r, "ratelimit-remaining"), Some(1));
    // The key's own 5/h on the limited route too.
    for _ in 0..5 {
        let r = on("/v1/limited", own.clone()).await;
        assert_eq!(
            (r.status.as_u16(), num(&r, "ratelimit-limit")),
            (200, Some(5))
        );
    }
    assert_eq!(on("/v1/limited", own.clone()).await.status, 429);
    // No limit applies on an `auth: none` route: no headers.
    let r = get(&gw.url("/public"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "ratelimit-limit"), None);
    gw.stop().await;
}

#[tokio::test]
async fn a_quota_is_spent_exactly_then_429_until_reset_and_usage_says_so() {
    let gw = TestGateway::start().await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer", "--quota", "5/day"]);
    for want in [4, 3, 2, 1, 0] {
        let r = models(&gw, &key).await;
        assert_eq!(r.status, 200, "{}", r.code());
        assert_eq!(num(&r, "x-quota-remaining"), Some(want));
        assert_eq!(header(&r, "ratelimit-limit"), None, "no rate limit applies");
    }
    for _ in 0..3 {
        let r = models(&gw, &key).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (429, "quota_exhausted")
        );
        assert_eq!(num(&r, "x-quota-remaining"), Some(0));
        // Until the next UTC midnight.
        let retry = num(&r, "retry-after").expect("Retry-After");
        assert!((1..=86_400).contains(&retry), "{retry}");
    }
    // The gateway reports what it spent every second: exactly the 5 admitted.
    let used = eventually(SEEN_WITHIN, || async {
        gw.cli(&["keys", "usage", &id]).json["quota"]["used"] == json!(5)
    })
    .await;
    let usage = gw.cli(&["keys", "usage", &id]);
    assert!(used, "{}", usage.stdout);
    assert_eq!(usage.json["quota"]["limit"], json!(5));
    assert_eq!(usage.json["quota"]["period"], json!("day"));
    assert_eq!(usage.json["quota"]["remaining"], json!(0));
    assert!(usage.json["quota"]["resets_at"]
        .as_str()
        .is_some_and(|t| t.ends_with("T00:00:00Z")));
    // The admin API answers the same.
    let api = ops(&gw, Method::GET, &format!("/v1/keys/{id}/usage"), None).await;
    assert_status(&api, 200);
    assert_eq!(api.json()["quota"], usage.json["quota"]);

    // A reset (CLI) starts from zero on the gateway, through the change feed.
    let reset = gw.cli(&["keys", "usage", &id, "--reset"]);
    assert!(reset.ok, "{}", reset.stderr);
    assert_eq!(reset.json["quota"]["used"], json!(0));
    assert!(verdict_becomes(&gw, Method::GET, "/v1/models", &key, (200, ""), SEEN_WITHIN).await);
    let audit = gw.cli(&["audit", "--key", &id]);
    assert!(audit.stdout.contains("usage_reset"), "{}", audit.stdout);
    gw.stop().await;
}

#[tokio::test]
async fn a_total_quota_never_refills_by_itself_and_a_raised_one_admits_again() {
    let gw = TestGateway::start().await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer", "--quota", "2"]);
    assert_eq!(models(&gw, &key).await.status, 200);
    assert_eq!(models(&gw, &key).await.status, 200);
    let r = models(&gw, &key).await;
    assert_eq!(r.code(), "quota_exhausted");
    assert_eq!(header(&r, "retry-after"), None, "no refill to wait for");
    // Raised from the admin API: admitted again once the change reaches the gateway.
    let r = ops(
        &gw,
        Method::PATCH,
        &format!("/v1/keys/{id}"),
        Some(json!({ "quota": 3 })),
    )
    .await;
    assert_status(&r, 200);
    assert_eq!(r.json()["quota"], json!("3"));
    assert!(verdict_becomes(&gw, Method::GET, "/v1/models", &key, (200, ""), SEEN_WITHIN).await);
    assert_eq!(models(&gw, &key).await.code(), "quota_exhausted");
    // Cleared: no quota at all.
    let r = ops(
        &gw,
        Method::PATCH,
        &format!("/v1/keys/{id}"),
        Some(json!({ "quota": null })),
    )
    .await;
    assert_status(&r, 200);
    assert_eq!(r.json().get("quota"), None);
    assert!(verdict_becomes(&gw, Method::GET, "/v1/models", &key, (200, ""), SEEN_WITHIN).await);
    let r = models(&gw, &key).await;
    assert_eq!(header(&r, "x-quota-remaining"), None);
    let audit = gw.cli(&["audit", "--key", &id]);
    assert_eq!(
        audit.stdout.matches("\"limit\"").count(),
        2,
        "{}",
        audit.stdout
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_spec_orders_rate_limit_then_org_suspension_then_quota() {
    let gw = TestGateway::start().await;
    let (_, limited) = gw.create_key(&["--org", "acme", "--role", "viewer", "--rate-limit", "1/h"]);
    let (_, spent) = gw.create_key(&["--org", "acme", "--role", "viewer", "--quota", "1"]);
    assert_eq!(models(&gw, &limited).await.status, 200);
    assert_eq!(models(&gw, &spent).await.status, 200);
    assert_eq!(models(&gw, &limited).await.code(), "rate_limited");
    assert_eq!(models(&gw, &spent).await.code(), "quota_exhausted");
    assert!(gw.cli(&["orgs", "suspend", "acme"]).ok);
    assert!(
        verdict_becomes(
            &gw,
            Method::GET,
            "/v1/models",
            &spent,
            (401, "org_suspended"),
            SEEN_WITHIN
        )
        .await
    );
    // Over its rate limit, the limited key still says so first.
    assert_eq!(models(&gw, &limited).await.code(), "rate_limited");
    gw.stop().await;
}

#[tokio::test]
async fn the_cli_sets_and_clears_limits_and_refuses_bad_ones_naming_the_field() {
    let gw = TestGateway::start().await;
    let (id, _) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    for (args, field) in [
        (vec!["--rate-limit", "0/s"], "rate_limit"),
        (vec!["--rate-limit", "-5/m"], "rate_limit"),
        (vec!["--rate-limit", "10/fortnight"], "rate_limit"),
        (vec!["--quota", "9007199254740993/month"], "quota"),
        (vec!["--quota", "10/week"], "quota"),
    ] {
        let mut all = vec!["keys", "limit", id.as_str()];
        all.extend(&args);
        let out = gw.cli(&all);
        assert!(!out.ok, "{args:?} was accepted");
        assert!(out.stderr.contains(field), "{args:?}: {}", out.stderr);
        let mut create = vec!["keys", "create", "--org", "acme", "--role", "viewer"];
        create.extend(&args);
        let out = gw.cli(&create);
        assert!(
            !out.ok && out.stderr.contains(field),
            "{args:?}: {}",
            out.stderr
        );
    }
    let shown = gw.cli(&["keys", "show", &id]);
    assert_eq!(shown.json.get("rate_limit"), None, "nothing changed");
    assert_eq!(shown.json.get("quota"), None, "nothing changed");

    let out = gw.cli(&[
        "keys",
        "limit",
        &id,
        "--rate-limit",
        "100/s",
        "--quota",
        "10000/month",
    ]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json["rate_limit"], json!("100/s"));
    assert_eq!(out.json["quota"], json!("10000/month"));
    let text = cli_text(&gw.config_path, &["keys", "show", &id]);
    assert!(
        text.contains("rate limit: 100/s  quota: 10000/month"),
        "{text}"
    );
    let out = gw.cli(&["keys", "limit", &id, "--rate-limit", "none"]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json.get("rate_limit"), None);
    assert_eq!(out.json["quota"], json!("10000/month"));
    let usage = gw.cli(&["keys", "usage", &id]);
    assert_eq!(usage.json["quota"]["used"], json!(0));
    assert_eq!(usage.json["quota"]["remaining"], json!(10000));
    gw.stop().await;
}

#[tokio::test]
async fn a_bad_patch_is_refused_naming_the_field_and_changes_nothing() {
    let gw = TestGateway::start().await;
    let (id, _) = gw.create_key(&["--org", "acme", "--role", "viewer", "--quota", "5/day"]);
    let path = format!("/v1/keys/{id}");
    let before = gw.cli(&["audit", "--key", &id]).json;
    for (body, field) in [
        (json!({ "rate_limit": "0/s" }), "rate_limit"),
        (json!({ "rate_limit": "-5/m" }), "rate_limit"),
        (json!({ "rate_limit": "10/fortnight" }), "rate_limit"),
        (json!({ "rate_limit": 100 }), "rate_limit"),
        (json!({ "quota": "abc" }), "quota"),
        (json!({ "quota": 9_007_199_254_740_993_u64 }), "quota"),
        (json!({ "quota": -1 }), "quota"),
        (json!({ "quota": true }), "quota"),
        // A good name with a bad limit: nothing is written, not even the name.
        (
            json!({ "name": "renamed", "quota": "5/fortnight" }),
            "quota",
        ),
    ] {
        let r = ops(&gw, Method::PATCH, &path, Some(body.clone())).await;
        assert_refused(&r, 400, "invalid_request");
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(message.contains(field), "{body}: {message}");
    }
    let key = ops(&gw, Method::GET, &path, None).await.json();
    assert_eq!(key["quota"], json!("5/day"));
    assert_ne!(key["name"], json!("renamed"));
    assert_eq!(
        gw.cli(&["audit", "--key", &id]).json,
        before,
        "nothing audited"
    );

    // A good one, and the usage routes.
    let r = ops(
        &gw,
        Method::PATCH,
        &path,
        Some(json!({ "rate_limit": "10/m", "quota": "7/month" })),
    )
    .await;
    assert_status(&r, 200);
    assert_eq!(
        (r.json()["rate_limit"].clone(), r.json()["quota"].clone()),
        (json!("10/m"), json!("7/month"))
    );
    let u = ops(&gw, Method::GET, &format!("{path}/usage"), None).await;
    assert_status(&u, 200);
    assert_eq!(u.json()["rate_limit"], json!("10/m"));
    assert_eq!(u.json()["quota"]["limit"], json!(7));
    assert_eq!(u.json()["quota"]["period"], json!("month"));
    let r = ops(&gw, Method::POST, &format!("{path}/usage/reset"), None).await;
    assert_status(&r, 200);
    let audit = gw.cli(&["audit", "--key", &id]);
    assert!(audit.stdout.contains("usage_reset") && audit.stdout.contains("\"limit\""));
    // A limited token sees usage only of keys in its scope.
    let (other, _) = gw.create_key(&["--org", "globex", "--role", "viewer", "--quota", "5"]);
    let r = support::admin::call(
        &gw,
        Method::GET,
        &format!("/v1/keys/{other}/usage"),
        ACME_TOKEN,
        None,
    )
    .await;
    assert_refused(&r, 403, "outside_token_scope");
    gw.stop().await;
}

/// The limiter itself over a real store, with the wall clock injected: a daily quota used
/// up at 23:59 UTC refills at midnight, without sleeping.
#[tokio::test]
async fn a_daily_quota_refills_at_the_utc_day_boundary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        keygate::store::embedded::EmbeddedStore::open(&dir.path().join("k.db")).expect("open"),
    );
    let limiter = Arc::new(Limiter::new(
        store.clone(),
        100,
        Duration::from_secs(3600),
        Arc::new(Metrics::new()),
    ));
    let meter = limiter.meter("key_day");
    let quota = Quota::parse("3/day").expect("quota");
    // 2026-12-07T23:59:00Z and the next midnight.
    let evening = 1_796_687_940_000;
    let midnight = 1_796_688_000_000;
    let spend = |now| {
        let limiter = &limiter;
        let meter = &meter;
        async move {
            match limiter.check_quota(meter, quota, 0, now, 0) {
                QuotaVerdict::Lease(_) => limiter
                    .lease_quota(meter, quota, 0, now)
                    .await
                    .expect("store up"),
                v => v,
            }
        }
    };
    for want in [2, 1, 0] {
        assert_eq!(spend(evening).await, QuotaVerdict::Admit(want));
    }
    assert_eq!(spend(evening).await, QuotaVerdict::Exhausted(Some(60)));
    assert_eq!(spend(midnight).await, QuotaVerdict::Admit(2));
    limiter.flush(true).await;
    let counters = store
        .quota_counters("key_day")
        .await
        .expect("read")
        .expect("some");
    assert_eq!(
        counters.tag,
        QuotaTag {
            epoch: 0,
            period: quota.period_of(midnight)
        }
    );
    assert_eq!(
        (counters.used, counters.leased),
        (1, 1),
        "the rest given back"
    );
}
