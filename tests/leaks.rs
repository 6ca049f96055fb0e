//! Leak reports (SPEC §8): `keygate keys leaked --stdin` and `POST /v1/keys/leaked` find
//! a key by its secret's hash and revoke it (audit action `leaked`), seen by the proxy
//! within a second, on every gateway of a Redis fleet too. A malformed secret is 400
//! `malformed_key` and revokes nothing; a secret no key has answers `{"found": false}`.

mod support;

use http::Method;
use serde_json::json;
use support::admin::*;
use support::redis::RedisServer;
use support::*;

const REVOKED: (u16, &str) = (401, "revoked_key");

async fn leak_report(gw: &TestGateway, token: &str, secret: &str) -> Reply {
    call(
        gw,
        Method::POST,
        "/v1/keys/leaked",
        token,
        Some(json!({ "key": secret })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leak_reported_by_the_cli_revokes_the_key_at_once() {
    let gw = TestGateway::start().await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let (_, other) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    assert_eq!(proxy(&gw, &key).await, (200, String::new()), "cached");

    let out = cli_with_stdin(
        &gw.config_path,
        &["keys", "leaked", "--stdin"],
        Some(&format!("{key}\n")),
    );
    assert!(out.ok, "leaked failed: {}", out.stderr);
    assert_eq!(out.json["found"], true);
    assert_eq!(out.json["id"], id.as_str());
    assert_eq!(out.json["key"]["status"], "revoked");
    assert!(
        !out.stdout.contains(&key),
        "the secret is never printed back"
    );
    assert!(proxy_becomes(&gw, &key, REVOKED).await);
    assert_eq!(
        proxy(&gw, &other).await,
        (200, String::new()),
        "others keep working"
    );

    let audit = ops(&gw, Method::GET, &format!("/v1/audit?key={id}"), None)
        .await
        .json();
    assert_eq!(audit["events"][0]["action"], "leaked", "{audit}");
    assert_eq!(audit["events"][0]["actor"], "cli");

    // Reported again: still revoked, the report recorded, nothing else.
    let out = cli_with_stdin(&gw.config_path, &["keys", "leaked", "--stdin"], Some(&key));
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json["found"], true);
    let audit = ops(&gw, Method::GET, &format!("/v1/audit?key={id}"), None)
        .await
        .json();
    assert_eq!(audit["events"][0]["action"], "leaked");
    assert_eq!(audit["events"][0]["details"]["already_revoked"], true);

    // No key has this secret.
    let out = cli_with_stdin(
        &gw.config_path,
        &["keys", "leaked", "--stdin"],
        Some(&well_formed_unknown_key()),
    );
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json, json!({ "found": false }));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_report_is_refused_and_revokes_nothing() {
    let gw = TestGateway::start().await;
    let (_, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let before = written(&gw).await;
    // A typo in the last character breaks the checksum; another prefix; garbage.
    let mut typo = key.clone();
    let last = typo.pop().expect("a character");
    typo.push(if last == 'a' { 'b' } else { 'a' });
    for bad in [typo.as_str(), "gh_abc", "", "kg_short"] {
        let r = leak_report(&gw, OPS_TOKEN, bad).await;
        assert_refused(&r, 400, "malformed_key");
        assert!(
            bad.is_empty() || !String::from_utf8_lossy(&r.body).contains(bad),
            "the reported secret is not echoed"
        );
        let out = cli_with_stdin(&gw.config_path, &["keys", "leaked", "--stdin"], Some(bad));
        assert!(!out.ok, "CLI accepted `{bad}`");
        assert!(out.stderr.contains("malformed"), "{}", out.stderr);
    }
    let r = call(
        &gw,
        Method::POST,
        "/v1/keys/leaked",
        OPS_TOKEN,
        Some(json!({ "secret": key })),
    )
    .await;
    assert_refused(&r, 400, "invalid_json");
    let out = cli(&gw.config_path, &["keys", "leaked"]);
    assert!(
        !out.ok,
        "--stdin is required: the secret is never an argument"
    );
    assert_eq!(written(&gw).await, before, "nothing revoked or written");
    assert_eq!(proxy(&gw, &key).await, (200, String::new()));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_takes_leak_reports_within_the_tokens_scope() {
    let gw = TestGateway::start().await;
    let (acme_id, acme) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let (_, globex) = gw.create_key(&["--org", "globex", "--role", "viewer"]);
    assert_eq!(proxy(&gw, &acme).await, (200, String::new()));

    // The acme owner's token may not revoke a globex key, whatever it holds.
    let r = leak_report(&gw, ACME_TOKEN, &globex).await;
    assert_refused(&r, 403, "outside_token_scope");
    assert_eq!(proxy(&gw, &globex).await, (200, String::new()));

    let r = leak_report(&gw, ACME_TOKEN, &acme).await;
    assert_status(&r, 200);
    assert_eq!(r.json()["found"], true);
    assert_eq!(r.json()["id"], acme_id.as_str());
    assert!(proxy_becomes(&gw, &acme, REVOKED).await);
    let audit = ops(&gw, Method::GET, &format!("/v1/audit?key={acme_id}"), None)
        .await
        .json();
    assert_eq!(audit["events"][0]["action"], "leaked");
    assert_eq!(audit["events"][0]["actor"], "acme-owner");

    let r = leak_report(&gw, OPS_TOKEN, &well_formed_unknown_key()).await;
    assert_status(&r, 200);
    assert_eq!(r.json(), json!({ "found": false }));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leak_reported_to_one_gateway_is_revoked_on_every_gateway_of_the_fleet() {
    let redis = RedisServer::start();
    let a = gateway_on_redis(&redis.url()).await;
    let b = gateway_on_redis(&redis.url()).await;
    let (_, key) = a.create_key(&["--org", "acme", "--role", "viewer"]);
    for gw in [&a, &b] {
        assert_eq!(proxy(gw, &key).await, (200, String::new()), "cached");
    }
    let r = leak_report(&b, OPS_TOKEN, &key).await;
    assert_status(&r, 200);
    assert_eq!(r.json()["found"], true);
    for gw in [&a, &b] {
        assert!(proxy_becomes(gw, &key, REVOKED).await, "still admitted");
    }
    a.stop().await;
    b.stop().await;
}
