//! SPEC §2's verdict table: every refusal the gateway implements, its status, code,
//! `WWW-Authenticate` and JSON body, and the order in which they win.

mod support;
use http::{HeaderValue, Method};
use std::time::Duration;
use support::*;

const REALM: &str = "Bearer realm=\"keygate\"";
const INVALID_TOKEN: &str = "Bearer realm=\"keygate\", error=\"invalid_token\"";
const INSUFFICIENT_SCOPE: &str = "Bearer realm=\"keygate\", error=\"insufficient_scope\"";

fn www_auth(r: &Reply) -> Option<&str> {
    r.headers
        .get(http::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
}

/// Status, code, the exact `{"error":{"code","message"}}` shape and a JSON content type.
#[track_caller]
fn assert_refused(r: &Reply, status: u16, code: &str) {
    assert_eq!(
        r.status,
        status,
        "want {status} {code}, got body {:?}",
        String::from_utf8_lossy(&r.body)
    );
    let v = r.json();
    let obj = v.as_object().expect("body is a JSON object");
    assert_eq!(obj.len(), 1, "only `error` at the top: {v}");
    let err = v["error"].as_object().expect("`error` is an object");
    assert_eq!(err.len(), 2, "only code and message: {v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    let msg = v["error"]["message"].as_str().expect("message is a string");
    assert!(!msg.is_empty(), "message says something");
    assert_eq!(
        r.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
}

/// A 401 with `error="invalid_token"`, never echoing the presented key.
#[track_caller]
fn assert_401(r: &Reply, code: &str, presented: &str) {
    assert_refused(r, 401, code);
    assert_eq!(www_auth(r), Some(INVALID_TOKEN), "{code}");
    assert_no_secret(r, presented);
}

#[track_caller]
fn assert_no_secret(r: &Reply, presented: &str) {
    // Short fragments would match by chance; a key or a long key fragment must not.
    if presented.len() < 8 {
        return;
    }
    let body = String::from_utf8_lossy(&r.body);
    assert!(!body.contains(presented), "body leaks the key: {body}");
    for (name, v) in &r.headers {
        let v = String::from_utf8_lossy(v.as_bytes());
        assert!(!v.contains(presented), "header {name} leaks the key: {v}");
    }
}

/// Replaces the byte at `i` by another base62 character.
fn change_char(key: &str, i: usize) -> String {
    let mut b = key.as_bytes().to_vec();
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).expect("ascii")
}

#[tokio::test]
async fn missing_key_is_401_without_error_param() {
    let gw = TestGateway::start().await;
    let r = get(&gw.url("/v1/models"), &[]).await;
    assert_refused(&r, 401, "missing_key");
    assert_eq!(www_auth(&r), Some(REALM));

    // Another Authorization scheme is no key.
    let r = get(
        &gw.url("/v1/models"),
        &[("authorization", "Basic dXNlcjpwdw==")],
    )
    .await;
    assert_refused(&r, 401, "missing_key");
    assert_eq!(www_auth(&r), Some(REALM));
    gw.stop().await;
}

#[tokio::test]
async fn more_than_one_credential_is_multiple_keys() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let (_id2, other) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let b = bearer(&key);
    let url = gw.url("/v1/models");

    // Sanity: each source alone admits the key.
    assert_eq!(get(&url, &[("authorization", &b)]).await.status, 200);
    assert_eq!(get(&url, &[("x-api-key", &key)]).await.status, 200);
    assert_eq!(
        get(&gw.url(&format!("/v1/models?api_key={key}")), &[])
            .await
            .status,
        200
    );

    // Two Authorization headers, the same key and two different keys.
    let r = get(&url, &[("authorization", &b), ("authorization", &b)]).await;
    assert_401(&r, "multiple_keys", &key);
    let r = get(
        &url,
        &[("authorization", &b), ("authorization", &bearer(&other))],
    )
    .await;
    assert_401(&r, "multiple_keys", &key);
    assert_no_secret(&r, &other);

    // Header and query.
    let r = get(
        &gw.url(&format!("/v1/models?api_key={key}")),
        &[("authorization", &b)],
    )
    .await;
    assert_401(&r, "multiple_keys", &key);
    let r = get(
        &gw.url(&format!("/v1/models?api_key={key}")),
        &[("x-api-key", &key)],
    )
    .await;
    assert_401(&r, "multiple_keys", &key);

    // Bearer and the key header.
    let r = get(&url, &[("authorization", &b), ("x-api-key", &key)]).await;
    assert_401(&r, "multiple_keys", &key);

    // Two key headers.
    let r = get(&url, &[("x-api-key", &key), ("x-api-key", &other)]).await;
    assert_401(&r, "multiple_keys", &key);

    // The key header spelled with `_` beside the Bearer key: two keys, not the first one
    // admitted and the other smuggled to an upstream that reads `_` as `-`.
    let r = get(&url, &[("authorization", &b), ("X_Api_Key", &other)]).await;
    assert_401(&r, "multiple_keys", &key);

    // A repeated parameter, even with the same value.
    let r = get(
        &gw.url(&format!("/v1/models?api_key={key}&a=1&api_key={key}")),
        &[],
    )
    .await;
    assert_401(&r, "multiple_keys", &key);
    gw.stop().await;
}

#[tokio::test]
async fn malformed_keys_are_refused_without_a_store_lookup() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let url = gw.url("/v1/models");
    assert_eq!(
        get(&url, &[("authorization", &bearer(&key))]).await.status,
        200
    );
    let before = gw.gateway.cache().lookups();

    let body_start = 3; // after `kg_`
    let bad: Vec<(&str, String)> = vec![
        ("wrong prefix", format!("xx{}", &key[2..])),
        ("other prefix same length", format!("gk{}", &key[2..])),
        ("no underscore", format!("kg-{}", &key[3..])),
        ("one char too long", format!("{key}A")),
        ("one char too short", key[..key.len() - 1].to_owned()),
        ("bad charset", {
            let mut b = key.clone().into_bytes();
            b[body_start + 5] = b'-';
            String::from_utf8(b).expect("ascii")
        }),
        (
            "checksum: random part changed",
            change_char(&key, body_start + 7),
        ),
        (
            "checksum: checksum changed",
            change_char(&key, key.len() - 2),
        ),
        ("10 KB key", format!("kg_{}", "a".repeat(10 * 1024))),
        ("short garbage", "k".to_owned()),
    ];
    for (what, k) in &bad {
        assert_ne!(k, &key, "{what}");
        let r = get(&url, &[("authorization", &bearer(k))]).await;
        assert_eq!(r.code(), "malformed_key", "{what}");
        assert_401(&r, "malformed_key", k);
        // The same through the key header and the query parameter.
        let r = get(&url, &[("x-api-key", k)]).await;
        assert_401(&r, "malformed_key", k);
        if k.len() < 100 && !k.contains('-') {
            let r = get(&gw.url(&format!("/v1/models?api_key={k}")), &[]).await;
            assert_401(&r, "malformed_key", k);
        }
    }

    // Non-ASCII bytes in the header value.
    let mut raw = b"Bearer kg_".to_vec();
    raw.extend_from_slice(&[0xff, 0xfe, 0xe9, 0x80]);
    raw.extend_from_slice(&key.as_bytes()[7..]);
    let hv = HeaderValue::from_bytes(&raw).expect("obs-text is a valid header value");
    let r = send_values(Method::GET, &url, &[("authorization", hv)]).await;
    assert_401(&r, "malformed_key", &key);

    // `Bearer` and nothing after it is a (malformed) bearer key, not a missing one.
    for v in ["Bearer", "Bearer ", "bearer    "] {
        let hv = HeaderValue::from_str(v).expect("header");
        let r = send_values(Method::GET, &url, &[("authorization", hv)]).await;
        assert_401(&r, "malformed_key", "");
    }

    // The scheme in any letter case is still Bearer: `bearer k` is a key, a malformed one.
    let r = get(&url, &[("authorization", "bearer k")]).await;
    assert_401(&r, "malformed_key", "");
    let r = get(&url, &[("authorization", "BEARER k")]).await;
    assert_401(&r, "malformed_key", "");

    assert_eq!(
        gw.gateway.cache().lookups(),
        before,
        "malformed keys never reach the store"
    );

    // And lower-case `bearer` with the real key admits it; spaces around are ignored.
    let r = get(&url, &[("authorization", &format!("bearer {key}"))]).await;
    assert_eq!(r.status, 200);
    let r = get(&url, &[("authorization", &format!("BeArEr   {key}  "))]).await;
    assert_eq!(r.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn unknown_and_deleted_keys() {
    let gw = TestGateway::start().await;
    let url = gw.url("/v1/models");
    let never = well_formed_unknown_key();
    let r = get(&url, &[("authorization", &bearer(&never))]).await;
    assert_401(&r, "unknown_key", &never);

    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);
    assert_eq!(get(&url, &[("authorization", &auth)]).await.status, 200);
    let out = gw.cli(&["keys", "delete", &id]);
    assert!(out.ok, "delete: {}", out.stderr);
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&url, &[("authorization", &auth)]).await.code() == "unknown_key"
        })
        .await,
        "a deleted key becomes unknown"
    );
    let r = get(&url, &[("authorization", &auth)]).await;
    assert_401(&r, "unknown_key", &key);
    gw.stop().await;
}

#[tokio::test]
async fn revoked_key() {
    let gw = TestGateway::start().await;
    let url = gw.url("/v1/models");
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);
    assert_eq!(get(&url, &[("authorization", &auth)]).await.status, 200);
    assert!(gw.cli(&["keys", "revoke", &id]).ok);
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&url, &[("authorization", &auth)]).await.code() == "revoked_key"
        })
        .await
    );
    assert_401(
        &get(&url, &[("authorization", &auth)]).await,
        "revoked_key",
        &key,
    );
    // Revocation is permanent: enable does not bring it back.
    assert!(!gw.cli(&["keys", "enable", &id]).ok);
    assert_401(
        &get(&url, &[("authorization", &auth)]).await,
        "revoked_key",
        &key,
    );
    gw.stop().await;
}

#[tokio::test]
async fn disabled_key_and_enabled_again() {
    let gw = TestGateway::start().await;
    let url = gw.url("/v1/models");
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);
    assert_eq!(get(&url, &[("authorization", &auth)]).await.status, 200);
    assert!(gw.cli(&["keys", "disable", &id]).ok);
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&url, &[("authorization", &auth)]).await.code() == "disabled_key"
        })
        .await
    );
    assert_401(
        &get(&url, &[("authorization", &auth)]).await,
        "disabled_key",
        &key,
    );
    assert!(gw.cli(&["keys", "enable", &id]).ok);
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&url, &[("authorization", &auth)]).await.status == 200
        })
        .await
    );
    gw.stop().await;
}

#[tokio::test]
async fn expired_key_also_from_cache() {
    let gw = TestGateway::start().await;
    let url = gw.url("/v1/models");
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer", "--expires-in", "1s"]);
    let auth = bearer(&key);
    // Whether the first request still makes it depends on how fast the box is; once it
    // expires, the cached answer (ttl 30s) must not keep it alive.
    let first = get(&url, &[("authorization", &auth)]).await;
    assert!(
        first.status == 200 || first.code() == "expired_key",
        "{:?}",
        first.body
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&url, &[("authorization", &auth)]).await.code() == "expired_key"
        })
        .await
    );
    assert_401(
        &get(&url, &[("authorization", &auth)]).await,
        "expired_key",
        &key,
    );
    gw.stop().await;
}

#[tokio::test]
async fn personal_key_of_a_removed_owner() {
    let gw = TestGateway::start().await;
    let url = gw.url("/v1/models");
    let (_id, key) = gw.create_key(&[
        "--org", "acme", "--type", "personal", "--owner", "alice", "--role", "viewer",
    ]);
    let (_sid, service) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);
    assert_eq!(get(&url, &[("authorization", &auth)]).await.status, 200);
    let out = gw.cli(&["users", "remove", "--org", "acme", "alice"]);
    assert!(out.ok, "users remove: {}", out.stderr);
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&url, &[("authorization", &auth)]).await.code() == "owner_removed"
        })
        .await
    );
    assert_401(
        &get(&url, &[("authorization", &auth)]).await,
        "owner_removed",
        &key,
    );
    // Service keys do not depend on any user.
    let r = get(&url, &[("authorization", &bearer(&service))]).await;
    assert_eq!(r.status, 200);

    let out = gw.cli(&["users", "restore", "--org", "acme", "alice"]);
    assert!(out.ok, "users restore: {}", out.stderr);
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&url, &[("authorization", &auth)]).await.status == 200
        })
        .await,
        "the key works again once its owner is restored"
    );
    gw.stop().await;
}

#[tokio::test]
async fn insufficient_permissions_is_403_insufficient_scope() {
    let gw = TestGateway::start().await;
    let (_v, viewer) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let (_e, editor) = gw.create_key(&["--org", "acme", "--role", "editor"]);
    let url = gw.url("/v1/models");
    let r = send(Method::POST, &url, &[("authorization", &bearer(&viewer))]).await;
    assert_refused(&r, 403, "insufficient_permissions");
    assert_eq!(www_auth(&r), Some(INSUFFICIENT_SCOPE));
    assert_no_secret(&r, &viewer);
    let r = send(Method::POST, &url, &[("authorization", &bearer(&editor))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["method"], "POST");
    gw.stop().await;
}

#[tokio::test]
async fn workspace_required_when_the_request_names_none() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);
    let r = get(&gw.url("/v1/ws"), &[("authorization", &auth)]).await;
    assert_refused(&r, 400, "workspace_required");
    let r = get(
        &gw.url("/v1/ws"),
        &[("authorization", &auth), ("x-workspace-id", "")],
    )
    .await;
    assert_refused(&r, 400, "workspace_required");
    // The path-segment rule: /v1/orgs with no third segment.
    let r = get(&gw.url("/v1/orgs"), &[("authorization", &auth)]).await;
    assert_refused(&r, 400, "workspace_required");
    gw.stop().await;
}

#[tokio::test]
async fn workspace_key_outside_its_workspace() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--workspace", "team-a", "--role", "viewer"]);
    let auth = bearer(&key);

    // Header rule.
    let r = get(
        &gw.url("/v1/ws"),
        &[("authorization", &auth), ("x-workspace-id", "team-b")],
    )
    .await;
    assert_refused(&r, 403, "workspace_not_allowed");
    assert_eq!(www_auth(&r), Some(INSUFFICIENT_SCOPE));
    let r = get(
        &gw.url("/v1/ws"),
        &[("authorization", &auth), ("x-workspace-id", "team-a")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_headers()["x-keygate-workspace"], "team-a");

    // Path-segment rule: /v1/orgs/<ws>.
    let r = get(
        &gw.url("/v1/orgs/team-b/things"),
        &[("authorization", &auth)],
    )
    .await;
    assert_refused(&r, 403, "workspace_not_allowed");
    assert_eq!(www_auth(&r), Some(INSUFFICIENT_SCOPE));
    let r = get(
        &gw.url("/v1/orgs/team-a/things"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_headers()["x-keygate-workspace"], "team-a");
    gw.stop().await;
}

#[tokio::test]
async fn org_keys_may_use_any_workspace() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);
    for ws in ["team-a", "team-b", "anything"] {
        let r = get(
            &gw.url("/v1/ws"),
            &[("authorization", &auth), ("x-workspace-id", ws)],
        )
        .await;
        assert_eq!(r.status, 200, "{ws}");
        assert_eq!(r.upstream_headers()["x-keygate-workspace"], ws);
        let r = get(
            &gw.url(&format!("/v1/orgs/{ws}/x")),
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(r.status, 200, "{ws}");
        assert_eq!(r.upstream_headers()["x-keygate-workspace"], ws);
    }
    gw.stop().await;
}

#[tokio::test]
async fn no_route_is_404() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    for path in ["/nothing", "/v2/models", "/", "/hosted"] {
        let r = get(&gw.url(path), &[("authorization", &bearer(&key))]).await;
        assert_refused(&r, 404, "no_route");
        assert!(www_auth(&r).is_none(), "{path}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn unsafe_paths_are_400_bad_path() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    for path in [
        "/v1/a%2fb",
        "/v1/a%2Fb",
        "/..",
        "/v1/../../etc",
        "/v1/x;y",
        "/v1/models;v=1",
        "/v1/%5c",
        "/v1/%3b",
        "/v1/%zz",
    ] {
        let r = get(&gw.url(path), &[("authorization", &bearer(&key))]).await;
        assert_refused(&r, 400, "bad_path");
        assert!(www_auth(&r).is_none(), "{path}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn path_and_route_verdicts_win_over_credentials() {
    let gw = TestGateway::start().await;
    let malformed = "kg_nope".to_owned();
    let unknown = well_formed_unknown_key();
    let creds: [Vec<(&str, String)>; 4] = [
        vec![],
        vec![("authorization", bearer(&malformed))],
        vec![("authorization", bearer(&unknown))],
        vec![
            ("authorization", bearer(&unknown)),
            ("x-api-key", unknown.clone()),
        ],
    ];
    let before = gw.gateway.cache().lookups();
    for c in &creds {
        let h: Vec<(&str, &str)> = c.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = get(&gw.url("/v1/a%2fb"), &h).await;
        assert_refused(&r, 400, "bad_path");
        let r = get(&gw.url("/.."), &h).await;
        assert_refused(&r, 400, "bad_path");
        let r = get(&gw.url("/nothing"), &h).await;
        assert_refused(&r, 404, "no_route");
        assert!(www_auth(&r).is_none());
    }
    assert_eq!(
        gw.gateway.cache().lookups(),
        before,
        "no key is looked up for a request without a route"
    );
    gw.stop().await;
}

#[tokio::test]
async fn unknown_keys_are_negative_cached_and_coalesced() {
    let gw = TestGateway::start().await;
    let unknown = well_formed_unknown_key();
    let url = gw.url("/v1/models");
    let before = gw.gateway.cache().lookups();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let url = url.clone();
        let auth = bearer(&unknown);
        set.spawn(async move { get(&url, &[("authorization", &auth)]).await });
    }
    while let Some(r) = set.join_next().await {
        let r = r.expect("task");
        assert_401(&r, "unknown_key", &unknown);
    }
    let after = gw.gateway.cache().lookups();
    assert!(
        after - before <= 1,
        "50 requests with one unknown key made {} store lookups",
        after - before
    );
    // And sequentially afterwards: still answered from the negative cache.
    for _ in 0..10 {
        let r = get(&url, &[("authorization", &bearer(&unknown))]).await;
        assert_401(&r, "unknown_key", &unknown);
    }
    assert_eq!(gw.gateway.cache().lookups(), after);
    gw.stop().await;
}

#[tokio::test]
async fn percent_encoded_parameter_name_is_still_the_credential() {
    // Upstream frameworks decode parameter names: `api%5Fkey` is `api_key` to them. A
    // second key hidden that way is a second credential, and must never reach the
    // upstream next to the one keygate checked.
    let gw = TestGateway::start().await;
    let (_a, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let (_b, other) = gw.create_key(&["--org", "other", "--role", "editor"]);
    let r = get(
        &gw.url(&format!("/v1/models?api%5Fkey={other}")),
        &[("authorization", &bearer(&key))],
    )
    .await;
    assert!(
        !String::from_utf8_lossy(&r.body).contains(&other),
        "a second key reached the upstream: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_401(&r, "multiple_keys", &other);
    gw.stop().await;
}
