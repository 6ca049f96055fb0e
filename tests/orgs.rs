//! Org suspension (SPEC §8): `keygate orgs suspend|restore|show ORG` and
//! `POST /v1/orgs/{org}/suspend|restore`, `GET /v1/orgs/{org}`. Every key of a suspended
//! org answers 401 `org_suspended` on every gateway within a second, also when its answer
//! is cached; restoring brings the keys back; both stores; audited.
//!
//! Every key is first used (200) so its answer is cached (`ttl: 30s`): the suspension must
//! then reach the gateway through the change feed, not a cache miss.

mod support;

use http::Method;
use serde_json::{json, Value};
use std::time::Duration;
use support::admin::{assert_refused, assert_status, call, ops, written};
use support::redis::RedisServer;
use support::*;

const SEEN_WITHIN: Duration = Duration::from_secs(1);
const OK: (u16, &str) = (200, "");
const SUSPENDED: (u16, &str) = (401, "org_suspended");

async fn models(gw: &TestGateway, key: &str) -> (u16, String) {
    key_verdict(gw, Method::GET, "/v1/models", key).await
}

async fn becomes(gw: &TestGateway, key: &str, want: (u16, &str)) -> bool {
    verdict_becomes(gw, Method::GET, "/v1/models", key, want, SEEN_WITHIN).await
}

/// Asserts `key` is admitted on every gateway, and from its cache: a request that made
/// no store lookup. (An answer read while the feed evicted another key is not kept, so
/// the first 200 alone does not prove the key is cached.)
async fn warm(gws: &[&TestGateway], key: &str) {
    for (i, gw) in gws.iter().enumerate() {
        let cache = gw.gateway.cache();
        let cached = eventually(SEEN_WITHIN, || async {
            let lookups = cache.lookups();
            models(gw, key).await == (200, String::new()) && cache.lookups() == lookups
        })
        .await;
        assert!(
            cached,
            "gateway {i}: {:?}, or not from cache",
            models(gw, key).await
        );
    }
}

/// Asserts every gateway answers `want` for `key` within a second.
async fn all_become(gws: &[&TestGateway], key: &str, want: (u16, &str)) {
    for (i, gw) in gws.iter().enumerate() {
        assert!(
            becomes(gw, key, want).await,
            "gateway {i} still answers {:?}, want {want:?}",
            models(gw, key).await
        );
    }
}

/// The audit events with `action`, newest first.
async fn events(gw: &TestGateway, action: &str) -> Vec<Value> {
    let audit = ops(gw, Method::GET, "/v1/audit?limit=1000", None)
        .await
        .json();
    audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

fn viewer(gw: &TestGateway, org: &str) -> String {
    gw.create_key(&["--org", org, "--role", "viewer"]).1
}

// ---- embedded store ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_suspends_an_org_and_its_cached_keys_answer_org_suspended() {
    let gw = TestGateway::start().await;
    let acme = viewer(&gw, "acme");
    let (_, acme_ws) =
        gw.create_key(&["--org", "acme", "--workspace", "team-a", "--role", "viewer"]);
    let globex = viewer(&gw, "globex");
    warm(&[&gw], &acme).await;
    warm(&[&gw], &acme_ws).await;
    warm(&[&gw], &globex).await;

    let out = gw.cli(&["orgs", "suspend", "acme"]);
    assert!(out.ok, "suspend failed: {}", out.stderr);
    assert_eq!(out.json, json!({ "org": "acme", "suspended": true }));
    all_become(&[&gw], &acme, SUSPENDED).await;
    all_become(&[&gw], &acme_ws, SUSPENDED).await;
    // The refusal is a 401 like any other invalid credential.
    let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&acme))]).await;
    assert_eq!(
        r.headers["www-authenticate"],
        r#"Bearer realm="keygate", error="invalid_token""#
    );
    assert!(r.json()["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    // Other orgs are untouched.
    assert_eq!(models(&gw, &globex).await, (200, String::new()));
    let shown = gw.cli(&["orgs", "show", "acme"]);
    assert!(shown.ok, "{}", shown.stderr);
    assert_eq!(shown.json, json!({ "org": "acme", "suspended": true }));
    let metrics = get(&gw.admin_url("/metrics"), &[]).await;
    let body = String::from_utf8_lossy(&metrics.body);
    assert!(
        body.contains(r#"keygate_requests_total{route="/v1/models",code="org_suspended"}"#),
        "{body}"
    );

    let out = gw.cli(&["orgs", "restore", "acme"]);
    assert!(out.ok, "restore failed: {}", out.stderr);
    assert_eq!(out.json, json!({ "org": "acme", "suspended": false }));
    all_become(&[&gw], &acme, OK).await;
    all_become(&[&gw], &acme_ws, OK).await;
    assert_eq!(models(&gw, &globex).await, (200, String::new()));
    let shown = gw.cli(&["orgs", "show", "acme"]);
    assert_eq!(shown.json, json!({ "org": "acme", "suspended": false }));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_suspends_and_restores_an_org() {
    let gw = TestGateway::start().await;
    let acme = viewer(&gw, "acme");
    let globex = viewer(&gw, "globex");
    warm(&[&gw], &acme).await;
    warm(&[&gw], &globex).await;

    let r = ops(&gw, Method::POST, "/v1/orgs/acme/suspend", None).await;
    assert_status(&r, 200);
    assert_eq!(r.json(), json!({ "org": "acme", "suspended": true }));
    all_become(&[&gw], &acme, SUSPENDED).await;
    assert_eq!(models(&gw, &globex).await, (200, String::new()));
    // The operator and the org's own token read the state.
    for token in [OPS_TOKEN, ACME_TOKEN, TEAM_A_TOKEN] {
        let r = call(&gw, Method::GET, "/v1/orgs/acme", token, None).await;
        assert_status(&r, 200);
        assert_eq!(r.json(), json!({ "org": "acme", "suspended": true }));
    }
    let r = ops(&gw, Method::GET, "/v1/orgs/globex", None).await;
    assert_eq!(r.json(), json!({ "org": "globex", "suspended": false }));

    let r = ops(&gw, Method::POST, "/v1/orgs/acme/restore", None).await;
    assert_status(&r, 200);
    assert_eq!(r.json(), json!({ "org": "acme", "suspended": false }));
    all_become(&[&gw], &acme, OK).await;
    let audit = events(&gw, "org_restore").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["actor"], "ops");
    assert_eq!(audit[0]["details"], json!({ "org": "acme" }));
    assert_eq!(audit[0]["key_id"], Value::Null);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_twice_answers_200_and_writes_one_audit_event() {
    let gw = TestGateway::start().await;
    let acme = viewer(&gw, "acme");
    warm(&[&gw], &acme).await;

    for _ in 0..2 {
        let out = gw.cli(&["orgs", "suspend", "acme"]);
        assert!(out.ok, "{}", out.stderr);
        assert_eq!(out.json["suspended"], true);
    }
    let r = ops(&gw, Method::POST, "/v1/orgs/acme/suspend", None).await;
    assert_status(&r, 200);
    assert_eq!(r.json()["suspended"], true);
    let suspends = events(&gw, "org_suspend").await;
    assert_eq!(suspends.len(), 1, "{suspends:?}");
    assert_eq!(suspends[0]["actor"], "cli");
    assert_eq!(suspends[0]["details"], json!({ "org": "acme" }));
    all_become(&[&gw], &acme, SUSPENDED).await;

    for _ in 0..2 {
        let out = gw.cli(&["orgs", "restore", "acme"]);
        assert!(out.ok, "{}", out.stderr);
        assert_eq!(out.json["suspended"], false);
    }
    assert_eq!(events(&gw, "org_restore").await.len(), 1);
    // Restoring an org never suspended writes nothing either.
    let r = ops(&gw, Method::POST, "/v1/orgs/initech/restore", None).await;
    assert_eq!(r.json(), json!({ "org": "initech", "suspended": false }));
    assert_eq!(events(&gw, "org_restore").await.len(), 1);
    all_become(&[&gw], &acme, OK).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_org_name_is_refused_and_nothing_is_written() {
    let gw = TestGateway::start().await;
    viewer(&gw, "acme");
    let before = written(&gw).await;

    for cmd in ["suspend", "restore", "show"] {
        let out = gw.cli(&["orgs", cmd, "a b"]);
        assert!(!out.ok, "orgs {cmd} `a b` succeeded: {}", out.stdout);
        assert_eq!(out.code, Some(1));
        assert!(out.stderr.contains("org"), "{}", out.stderr);
        assert!(out.stdout.trim().is_empty(), "{}", out.stdout);
    }
    for (method, path) in [
        (Method::POST, "/v1/orgs/a%20b/suspend"),
        (Method::POST, "/v1/orgs/a%2Fb/restore"),
        (Method::GET, "/v1/orgs/a%20b"),
    ] {
        let r = ops(&gw, method, path, None).await;
        assert_refused(&r, 400, "invalid_request");
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(message.starts_with("org:"), "{message}");
    }
    assert_eq!(written(&gw).await, before);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_operators_token_suspends_or_restores() {
    let gw = TestGateway::start().await;
    let acme = viewer(&gw, "acme");
    warm(&[&gw], &acme).await;
    let before = written(&gw).await;

    for token in [ACME_TOKEN, TEAM_A_TOKEN] {
        for what in ["suspend", "restore"] {
            let path = format!("/v1/orgs/acme/{what}");
            let r = call(&gw, Method::POST, &path, token, None).await;
            assert_refused(&r, 403, "outside_token_scope");
        }
    }
    // An org token reads its own orgs' state only.
    let r = call(&gw, Method::GET, "/v1/orgs/globex", ACME_TOKEN, None).await;
    assert_refused(&r, 403, "outside_token_scope");
    // Each refusal is audited as `denied` with its token and reason; nothing else is
    // written.
    let after = written(&gw).await;
    assert_eq!(after.0, before.0, "a refusal changed keys");
    let (old, new) = (before.1.as_array(), after.1.as_array());
    assert_eq!(new.map(|n| &n[5..]), old.map(Vec::as_slice), "{}", after.1);
    let denied = events(&gw, "denied").await;
    let actors: Vec<&str> = denied.iter().filter_map(|e| e["actor"].as_str()).collect();
    assert_eq!(
        actors,
        [
            "acme-owner",
            "team-a-editor",
            "team-a-editor",
            "acme-owner",
            "acme-owner"
        ]
    );
    assert!(denied.iter().all(|e| e["details"]["reason"]
        .as_str()
        .is_some_and(|r| !r.is_empty())));
    assert_eq!(
        after.1.as_array().map(Vec::len),
        before.1.as_array().map(|a| a.len() + 5)
    );
    assert!(events(&gw, "org_suspend").await.is_empty());
    assert_eq!(models(&gw, &acme).await, (200, String::new()));
    // No token, or an API key: as everywhere else.
    let r = call(&gw, Method::POST, "/v1/orgs/acme/suspend", "", None).await;
    assert_refused(&r, 401, "unauthorized");
    let r = call(&gw, Method::POST, "/v1/orgs/acme/suspend", &acme, None).await;
    assert_refused(&r, 403, "api_key_not_allowed");
    assert_eq!(models(&gw, &acme).await, (200, String::new()));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_orgs_keys_are_judged_in_the_spec_order() {
    let gw = TestGateway::start().await;
    let acme = viewer(&gw, "acme");
    let (revoked_id, revoked) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    warm(&[&gw], &acme).await;
    warm(&[&gw], &revoked).await;
    let out = gw.cli(&["orgs", "suspend", "acme"]);
    assert!(out.ok, "{}", out.stderr);
    all_become(&[&gw], &acme, SUSPENDED).await;

    // Permissions and workspace come first in SPEC §2's table.
    let lacks = key_verdict(&gw, Method::POST, "/v1/models", &acme).await;
    assert_eq!(lacks, (403, "insufficient_permissions".to_owned()));
    let needs_ws = key_verdict(&gw, Method::GET, "/v1/ws", &acme).await;
    assert_eq!(needs_ws, (400, "workspace_required".to_owned()));
    // A key created while its org is suspended is suspended from the start.
    let late = viewer(&gw, "acme");
    assert_eq!(models(&gw, &late).await, (401, "org_suspended".to_owned()));
    // A key's own state comes first, and stays after a restore.
    let out = gw.cli(&["keys", "revoke", &revoked_id]);
    assert!(out.ok, "{}", out.stderr);
    all_become(&[&gw], &revoked, (401, "revoked_key")).await;
    let out = gw.cli(&["orgs", "restore", "acme"]);
    assert!(out.ok, "{}", out.stderr);
    all_become(&[&gw], &acme, OK).await;
    all_become(&[&gw], &late, OK).await;
    assert_eq!(models(&gw, &revoked).await, (401, "revoked_key".to_owned()));
    gw.stop().await;
}

// ---- Redis: a fleet ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_reaches_every_gateway_of_a_fleet_and_so_does_the_restore() {
    let redis = RedisServer::start();
    let url = redis.url();
    let gw1 = gateway_on_redis(&url).await;
    let gw2 = gateway_on_redis(&url).await;
    let acme = viewer(&gw1, "acme");
    let globex = viewer(&gw2, "globex");
    let fleet = [&gw1, &gw2];
    warm(&fleet, &acme).await;
    warm(&fleet, &globex).await;

    let out = gw1.cli(&["orgs", "suspend", "acme"]);
    assert!(out.ok, "suspend failed: {}", out.stderr);
    assert_eq!(out.json, json!({ "org": "acme", "suspended": true }));
    all_become(&fleet, &acme, SUSPENDED).await;
    warm(&fleet, &globex).await;
    // The other gateway's CLI and admin API see the same state.
    let shown = gw2.cli(&["orgs", "show", "acme"]);
    assert_eq!(
        shown.json,
        json!({ "org": "acme", "suspended": true }),
        "{}",
        shown.stderr
    );
    let r = ops(&gw2, Method::GET, "/v1/orgs/acme", None).await;
    assert_eq!(r.json()["suspended"], true);

    let out = gw2.cli(&["orgs", "restore", "acme"]);
    assert!(out.ok, "restore failed: {}", out.stderr);
    assert_eq!(out.json["suspended"], false);
    all_become(&fleet, &acme, OK).await;

    // Once more through one gateway's admin API.
    let r = ops(&gw2, Method::POST, "/v1/orgs/acme/suspend", None).await;
    assert_status(&r, 200);
    all_become(&fleet, &acme, SUSPENDED).await;
    assert_eq!(events(&gw1, "org_suspend").await.len(), 2);
    gw1.stop().await;
    gw2.stop().await;
}
