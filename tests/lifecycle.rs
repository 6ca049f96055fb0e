//! The key lifecycle end to end: the real CLI binary writes the SQLite store while the
//! in-process gateway serves, and the gateway must see every change within a second
//! (SPEC §4 "embedded"), even for keys it already holds in its cache.
//!
//! Each test first gets a 200 with the key so that the answer is cached: the change must
//! then reach the gateway through the change feed, not through a cache miss.

mod support;

use http::Method;
use std::time::Duration;
use support::*;

const SEEN_WITHIN: Duration = Duration::from_secs(1);
const OK: (u16, &str) = (200, "");

async fn get_models(gw: &TestGateway, key: &str) -> (u16, String) {
    key_verdict(gw, Method::GET, "/v1/models", key).await
}

async fn becomes(gw: &TestGateway, key: &str, want: (u16, &str)) -> bool {
    verdict_becomes(gw, Method::GET, "/v1/models", key, want, SEEN_WITHIN).await
}

fn answer(want: (u16, &str)) -> (u16, String) {
    (want.0, want.1.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_key_works_and_revoke_is_seen_within_a_second() {
    let gw = TestGateway::start().await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    assert_eq!(get_models(&gw, &key).await, answer(OK));

    let out = gw.cli(&["keys", "revoke", &id]);
    assert!(out.ok, "revoke failed: {}", out.stderr);
    assert_eq!(out.json["status"], "revoked");
    assert!(out.json["revoked_at"].is_string(), "{}", out.stdout);

    assert!(
        becomes(&gw, &key, (401, "revoked_key")).await,
        "revoked key still answered {:?}",
        get_models(&gw, &key).await
    );
    let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
    assert_eq!(
        r.headers["www-authenticate"],
        r#"Bearer realm="keygate", error="invalid_token""#
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_then_enable() {
    let gw = TestGateway::start().await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    assert_eq!(get_models(&gw, &key).await, answer(OK));

    let out = gw.cli(&["keys", "disable", &id]);
    assert!(out.ok, "disable failed: {}", out.stderr);
    assert_eq!(out.json["status"], "disabled");
    assert!(
        becomes(&gw, &key, (401, "disabled_key")).await,
        "disabled key answered {:?}",
        get_models(&gw, &key).await
    );

    let out = gw.cli(&["keys", "enable", &id]);
    assert!(out.ok, "enable failed: {}", out.stderr);
    assert_eq!(out.json["status"], "active");
    assert!(
        becomes(&gw, &key, OK).await,
        "enabled key answered {:?}",
        get_models(&gw, &key).await
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_keeps_the_old_key_for_the_grace_then_ends_it() {
    let gw = TestGateway::start().await;
    let (old_id, old_key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    assert_eq!(get_models(&gw, &old_key).await, answer(OK));

    let out = gw.cli(&["keys", "rotate", &old_id, "--grace", "2s"]);
    assert!(out.ok, "rotate failed: {}", out.stderr);
    let new_id = out.json["id"].as_str().expect("new id").to_owned();
    let new_key = out.json["key"].as_str().expect("new secret").to_owned();
    assert_ne!(new_id, old_id);
    assert_ne!(new_key, old_key);
    assert_eq!(out.json["rotated_from"]["id"], old_id.as_str());
    assert_eq!(out.json["rotated_from"]["rotated_to"], new_id.as_str());
    assert!(out.json["rotated_from"]["expires_at"].is_string());
    // Same attributes on the new key.
    assert_eq!(out.json["org"], "acme");
    assert_eq!(out.json["roles"], serde_json::json!(["viewer"]));

    // During the grace both work (the 2 s grace started when the CLI ran, just now).
    assert_eq!(get_models(&gw, &old_key).await, answer(OK));
    assert_eq!(get_models(&gw, &new_key).await, answer(OK));

    // After it the old one is expired, the new one still works.
    assert!(
        verdict_becomes(
            &gw,
            Method::GET,
            "/v1/models",
            &old_key,
            (401, "expired_key"),
            Duration::from_secs(5)
        )
        .await,
        "old key after the grace answered {:?}",
        get_models(&gw, &old_key).await
    );
    assert_eq!(get_models(&gw, &new_key).await, answer(OK));
    let shown = gw.cli(&["keys", "show", &old_id]);
    assert_eq!(shown.json["status"], "expired");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_with_zero_grace_ends_the_old_key_at_once() {
    let gw = TestGateway::start().await;
    let (old_id, old_key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    assert_eq!(get_models(&gw, &old_key).await, answer(OK));

    let out = gw.cli(&["keys", "rotate", &old_id, "--grace", "0s"]);
    assert!(out.ok, "rotate failed: {}", out.stderr);
    let new_key = out.json["key"].as_str().expect("new secret").to_owned();

    assert!(
        becomes(&gw, &old_key, (401, "expired_key")).await,
        "old key answered {:?}",
        get_models(&gw, &old_key).await
    );
    assert_eq!(get_models(&gw, &new_key).await, answer(OK));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_key_becomes_unknown() {
    let gw = TestGateway::start().await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    assert_eq!(get_models(&gw, &key).await, answer(OK));

    let out = gw.cli(&["keys", "delete", &id]);
    assert!(out.ok, "delete failed: {}", out.stderr);
    assert_eq!(out.json["deleted"], id.as_str());

    assert!(
        becomes(&gw, &key, (401, "unknown_key")).await,
        "deleted key answered {:?}",
        get_models(&gw, &key).await
    );
    let shown = gw.cli(&["keys", "show", &id]);
    assert!(
        !shown.ok,
        "a deleted key is gone for good: {}",
        shown.stdout
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_owner_stops_personal_keys_only_until_restored() {
    let gw = TestGateway::start().await;
    let (_pid, personal) = gw.create_key(&[
        "--org", "acme", "--type", "personal", "--owner", "alice", "--role", "viewer",
    ]);
    let (_sid, service) = gw.create_key(&["--org", "acme", "--name", "ci", "--role", "viewer"]);
    let r = get(
        &gw.url("/v1/models"),
        &[("authorization", &bearer(&personal))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_headers()["x-keygate-actor"], "alice");
    assert_eq!(r.upstream_headers()["x-keygate-key-type"], "personal");
    let r = get(
        &gw.url("/v1/models"),
        &[("authorization", &bearer(&service))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_headers()["x-keygate-actor"], "ci");

    let out = gw.cli(&["users", "remove", "--org", "acme", "alice"]);
    assert!(out.ok, "users remove failed: {}", out.stderr);
    assert_eq!(out.json["removed"], true);
    assert!(
        becomes(&gw, &personal, (401, "owner_removed")).await,
        "personal key of a removed owner answered {:?}",
        get_models(&gw, &personal).await
    );
    assert_eq!(
        get_models(&gw, &service).await,
        answer(OK),
        "service keys do not depend on users"
    );

    let out = gw.cli(&["users", "restore", "--org", "acme", "alice"]);
    assert!(out.ok, "users restore failed: {}", out.stderr);
    assert_eq!(out.json["removed"], false);
    assert!(
        becomes(&gw, &personal, OK).await,
        "personal key of a restored owner answered {:?}",
        get_models(&gw, &personal).await
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inheriting_key_follows_its_owners_roles() {
    let gw = TestGateway::start().await;
    let out = gw.cli(&[
        "users",
        "set-roles",
        "--org",
        "acme",
        "bob",
        "--role",
        "editor",
    ]);
    assert!(out.ok, "set-roles failed: {}", out.stderr);
    assert_eq!(
        out.json["permissions"],
        serde_json::json!(["models:read", "models:write"])
    );
    let (_id, key) = gw.create_key(&[
        "--org",
        "acme",
        "--type",
        "personal",
        "--owner",
        "bob",
        "--inherit",
    ]);

    let r = send(
        Method::POST,
        &gw.url("/v1/models"),
        &[("authorization", &bearer(&key))],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.upstream_headers()["x-keygate-permissions"],
        "models:read,models:write"
    );

    let out = gw.cli(&[
        "users",
        "set-roles",
        "--org",
        "acme",
        "bob",
        "--role",
        "viewer",
    ]);
    assert!(out.ok, "set-roles failed: {}", out.stderr);
    assert!(
        verdict_becomes(
            &gw,
            Method::POST,
            "/v1/models",
            &key,
            (403, "insufficient_permissions"),
            SEEN_WITHIN
        )
        .await,
        "POST after the owner lost models:write answered {:?}",
        key_verdict(&gw, Method::POST, "/v1/models", &key).await
    );
    let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_headers()["x-keygate-permissions"], "models:read");
    gw.stop().await;
}
