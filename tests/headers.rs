//! SPEC §2 step 3: what the upstream receives. Identity headers exactly, no spoofed
//! identity, no credential, no hop-by-hop headers, forwarding headers and request ids.

mod support;
use http::Method;
use serde_json::{Map, Value};
use support::*;

const IDENTITY: [&str; 7] = [
    "x-keygate-key-id",
    "x-keygate-key-name",
    "x-keygate-org",
    "x-keygate-workspace",
    "x-keygate-key-type",
    "x-keygate-actor",
    "x-keygate-permissions",
];

/// Every upstream header under the identity prefix, any case, `_` read as `-`.
fn identity_headers(h: &Map<String, Value>) -> Map<String, Value> {
    h.iter()
        .filter(|(k, _)| {
            k.to_ascii_lowercase()
                .replace('_', "-")
                .starts_with("x-keygate")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn ok(r: &Reply) -> Map<String, Value> {
    assert_eq!(r.status, 200, "body: {}", String::from_utf8_lossy(&r.body));
    r.upstream_headers()
}

#[tokio::test]
async fn service_key_identity_is_exact() {
    let gw = TestGateway::start().await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "editor", "--name", "billing-bot"]);
    let h = ok(&get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await);
    let ids = identity_headers(&h);
    let want = serde_json::json!({
        "x-keygate-key-id": id,
        "x-keygate-key-name": "billing-bot",
        "x-keygate-org": "acme",
        "x-keygate-key-type": "service",
        "x-keygate-actor": "billing-bot",
        "x-keygate-permissions": "models:read,models:write",
    });
    // An org key on a route without a workspace rule has no workspace header.
    assert_eq!(Value::Object(ids), want);
    assert!(id.starts_with("key_"));
    gw.stop().await;
}

#[tokio::test]
async fn unnamed_key_is_named_by_its_id() {
    let gw = TestGateway::start().await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let h = ok(&get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await);
    assert_eq!(h["x-keygate-key-name"], id.as_str());
    assert_eq!(h["x-keygate-actor"], id.as_str());
    assert_eq!(h["x-keygate-permissions"], "models:read");
    gw.stop().await;
}

#[tokio::test]
async fn permissions_are_sorted_and_deduplicated() {
    let gw = TestGateway::start_with(|y| {
        y.replace(
            "roles:\n",
            "roles:\n  zed: [zz:write, aa:read, models:read]\n",
        )
    })
    .await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "zed", "--role", "editor"]);
    let h = ok(&get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await);
    assert_eq!(
        h["x-keygate-permissions"],
        "aa:read,models:read,models:write,zz:write"
    );
    gw.stop().await;
}

#[tokio::test]
async fn workspace_header_follows_the_route_then_the_key() {
    let gw = TestGateway::start().await;
    let (_a, one) = gw.create_key(&["--org", "acme", "--workspace", "team-a", "--role", "viewer"]);
    let (_o, org) = gw.create_key(&["--org", "acme", "--role", "viewer"]);

    // No workspace rule: the key's only workspace, else (an org key) absent.
    let h = ok(&get(&gw.url("/v1/models"), &[("authorization", &bearer(&one))]).await);
    assert_eq!(h["x-keygate-workspace"], "team-a");
    let h = ok(&get(&gw.url("/v1/models"), &[("authorization", &bearer(&org))]).await);
    assert!(!h.contains_key("x-keygate-workspace"), "{h:?}");

    // A workspace route: the resolved one.
    let h = ok(&get(
        &gw.url("/v1/ws"),
        &[
            ("authorization", &bearer(&one)),
            ("x-workspace-id", "team-a"),
        ],
    )
    .await);
    assert_eq!(h["x-keygate-workspace"], "team-a");
    let h = ok(&get(
        &gw.url("/v1/ws"),
        &[
            ("authorization", &bearer(&org)),
            ("x-workspace-id", "team-z"),
        ],
    )
    .await);
    assert_eq!(h["x-keygate-workspace"], "team-z");
    let h = ok(&get(
        &gw.url("/v1/orgs/team-q/x"),
        &[("authorization", &bearer(&org))],
    )
    .await);
    assert_eq!(h["x-keygate-workspace"], "team-q");
    gw.stop().await;
}

#[tokio::test]
async fn personal_key_acts_for_its_owner() {
    let gw = TestGateway::start().await;
    let (id, key) = gw.create_key(&[
        "--org",
        "acme",
        "--type",
        "personal",
        "--owner",
        "alice",
        "--name",
        "alice-laptop",
        "--role",
        "viewer",
    ]);
    let h = ok(&get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await);
    assert_eq!(h["x-keygate-key-id"], id.as_str());
    assert_eq!(h["x-keygate-key-name"], "alice-laptop");
    assert_eq!(h["x-keygate-key-type"], "personal");
    assert_eq!(h["x-keygate-actor"], "alice");
    gw.stop().await;
}

const SPOOFS: [(&str, &str); 7] = [
    ("X-KEYGATE-ORG", "evil-1"),
    ("x_keygate_org", "evil-2"),
    ("X-Keygate-Key_Id", "evil-3"),
    ("x-keygate-workspace", "evil-4"),
    ("X_KEYGATE_ACTOR", "evil-5"),
    ("x-keygate-permissions", "evil-6"),
    ("x-keygate-something-else", "evil-7"),
];

#[tokio::test]
async fn spoofed_identity_is_removed_on_auth_routes() {
    let gw = TestGateway::start().await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);
    let mut headers: Vec<(&str, &str)> = SPOOFS.to_vec();
    headers.push(("authorization", &auth));
    let r = get(&gw.url("/v1/models"), &headers).await;
    let body = String::from_utf8_lossy(&r.body).into_owned();
    let h = ok(&r);
    assert!(
        !body.contains("evil"),
        "a spoofed value got through: {body}"
    );
    let ids = identity_headers(&h);
    let mut names: Vec<&str> = ids.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut want: Vec<&str> = IDENTITY
        .iter()
        .copied()
        .filter(|n| *n != "x-keygate-workspace")
        .collect();
    want.sort_unstable();
    assert_eq!(names, want);
    assert_eq!(h["x-keygate-org"], "acme");
    assert_eq!(h["x-keygate-key-id"], id.as_str());
    gw.stop().await;
}

#[tokio::test]
async fn spoofed_identity_is_removed_on_open_routes() {
    let gw = TestGateway::start().await;
    let r = get(&gw.url("/public/x"), &SPOOFS).await;
    let body = String::from_utf8_lossy(&r.body).into_owned();
    let h = ok(&r);
    assert!(
        !body.contains("evil"),
        "a spoofed value got through: {body}"
    );
    assert!(identity_headers(&h).is_empty(), "{h:?}");
    gw.stop().await;
}

#[tokio::test]
async fn open_routes_neither_check_nor_strip_credentials() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);

    let h = ok(&get(
        &gw.url("/public"),
        &[("authorization", "Basic dXNlcjpwdw==")],
    )
    .await);
    assert_eq!(h["authorization"], "Basic dXNlcjpwdw==");

    // "The request passes as it came": not checked, not turned into identity.
    let r = get(
        &gw.url("/public?api_key=whatever"),
        &[("authorization", "Bearer not-a-key"), ("x-api-key", &key)],
    )
    .await;
    let h = ok(&r);
    assert_eq!(h["authorization"], "Bearer not-a-key");
    assert_eq!(h["x-api-key"], key.as_str());
    assert_eq!(r.json()["query"], "api_key=whatever");
    assert!(identity_headers(&h).is_empty(), "{h:?}");
    gw.stop().await;
}

#[tokio::test]
async fn credential_removed_from_every_source() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);

    let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
    let h = ok(&r);
    assert!(!h.contains_key("authorization"), "{h:?}");
    assert!(!String::from_utf8_lossy(&r.body).contains(&key));

    let r = get(&gw.url("/v1/models"), &[("X-Api-Key", &key)]).await;
    let h = ok(&r);
    assert!(!h.contains_key("x-api-key"), "{h:?}");
    assert!(!String::from_utf8_lossy(&r.body).contains(&key));

    // The key header spelled with `_` (which some upstreams read as `-`) is the key too.
    let r = get(&gw.url("/v1/models"), &[("X_Api_Key", &key)]).await;
    let h = ok(&r);
    assert!(!h.contains_key("x_api_key"), "{h:?}");
    assert!(!String::from_utf8_lossy(&r.body).contains(&key));

    // The query parameter goes, the other parameters stay in order.
    let r = get(
        &gw.url(&format!("/v1/models?a=1&api_key={key}&b=two&c")),
        &[],
    )
    .await;
    ok(&r);
    assert_eq!(r.json()["query"], "a=1&b=two&c");
    assert_eq!(r.json()["path"], "/v1/models");
    assert!(!String::from_utf8_lossy(&r.body).contains(&key));

    // Only the parameter: no query left (or an empty one).
    let r = get(&gw.url(&format!("/v1/models?api_key={key}")), &[]).await;
    ok(&r);
    let q = &r.json()["query"];
    assert!(q.is_null() || q == "", "query left: {q}");
    assert!(!String::from_utf8_lossy(&r.body).contains(&key));

    // A percent-encoded key in the query is still the key, and still removed.
    let encoded = format!("{}%{:02X}{}", &key[..5], key.as_bytes()[5], &key[6..]);
    let r = get(&gw.url(&format!("/v1/models?x=1&api_key={encoded}")), &[]).await;
    ok(&r);
    assert_eq!(r.json()["query"], "x=1");
    gw.stop().await;
}

#[tokio::test]
async fn other_authorization_scheme_passes_with_a_header_key() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let h = ok(&get(
        &gw.url("/v1/models"),
        &[("authorization", "Basic dXNlcjpwdw=="), ("x-api-key", &key)],
    )
    .await);
    assert_eq!(h["authorization"], "Basic dXNlcjpwdw==");
    assert!(!h.contains_key("x-api-key"));

    // A scheme that merely starts with "Bearer" is another scheme: no key, not removed.
    let h = ok(&get(
        &gw.url("/v1/models"),
        &[("authorization", "BearerToken abc"), ("x-api-key", &key)],
    )
    .await);
    assert_eq!(h["authorization"], "BearerToken abc");
    assert!(!h.contains_key("x-api-key"));
    gw.stop().await;
}

#[tokio::test]
async fn forward_credential_keeps_it() {
    let gw = TestGateway::start_with(|y| {
        y.replace(
            "keys: { prefix: kg,",
            "keys: { prefix: kg, forward_credential: true,",
        )
    })
    .await;
    assert!(gw.config.keys.forward_credential);
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let h = ok(&get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await);
    assert_eq!(h["authorization"], bearer(&key).as_str());
    assert_eq!(h["x-keygate-org"], "acme");
    let h = ok(&get(&gw.url("/v1/models"), &[("x-api-key", &key)]).await);
    assert_eq!(h["x-api-key"], key.as_str());
    let r = get(&gw.url(&format!("/v1/models?a=1&api_key={key}")), &[]).await;
    ok(&r);
    assert_eq!(r.json()["query"], format!("a=1&api_key={key}").as_str());
    gw.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);
    for path in ["/v1/models", "/public"] {
        let h = ok(&get(
            &gw.url(path),
            &[
                ("authorization", &auth),
                ("connection", "x-foo, keep-alive"),
                ("x-foo", "secret-hop"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("upgrade", "foo/1"),
                ("proxy-authorization", "Basic cHJveHk6cHc="),
                ("proxy-connection", "keep-alive"),
                ("x-kept", "1"),
            ],
        )
        .await);
        for gone in [
            "connection",
            "x-foo",
            "keep-alive",
            "te",
            "upgrade",
            "proxy-authorization",
            "proxy-connection",
        ] {
            assert!(
                !h.contains_key(gone),
                "{path}: {gone} reached the upstream: {h:?}"
            );
        }
        assert_eq!(h["x-kept"], "1", "{path}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn forwarding_headers() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);

    let h = ok(&get(&gw.url("/v1/models"), &[("authorization", &auth)]).await);
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gw.addr.to_string().as_str());
    // The upstream sees its own name in Host.
    assert_eq!(h["host"], gw.upstream.addr.to_string().as_str());

    let h = ok(&get(
        &gw.url("/v1/models"),
        &[
            ("authorization", &auth),
            ("x-forwarded-for", "203.0.113.9, 198.51.100.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "spoofed.example"),
            ("host", "api.example.com:8443"),
        ],
    )
    .await);
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 198.51.100.2, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "api.example.com:8443");
    gw.stop().await;
}

fn response_request_id(r: &Reply) -> String {
    r.headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id on the response")
        .to_owned()
}

#[tokio::test]
async fn request_id_added_kept_and_returned() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);

    let r = get(&gw.url("/v1/models"), &[("authorization", &auth)]).await;
    let h = ok(&r);
    let sent = h["x-request-id"]
        .as_str()
        .expect("request id upstream")
        .to_owned();
    assert!(!sent.is_empty());
    assert_eq!(response_request_id(&r), sent);

    let r2 = get(&gw.url("/v1/models"), &[("authorization", &auth)]).await;
    assert_ne!(response_request_id(&r2), sent, "ids are unique");

    let r = get(
        &gw.url("/v1/models"),
        &[("authorization", &auth), ("x-request-id", "req-123")],
    )
    .await;
    let h = ok(&r);
    assert_eq!(h["x-request-id"], "req-123");
    assert_eq!(response_request_id(&r), "req-123");

    let r = get(&gw.url("/public"), &[("x-request-id", "open-1")]).await;
    assert_eq!(ok(&r)["x-request-id"], "open-1");
    assert_eq!(response_request_id(&r), "open-1");
    gw.stop().await;
}

#[tokio::test]
async fn request_id_on_error_responses() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);
    let cases: [(Method, &str, Option<&str>, u16); 5] = [
        (Method::GET, "/v1/models", None, 401),
        (Method::POST, "/v1/models", Some(&auth), 403),
        (Method::GET, "/nothing", None, 404),
        (Method::GET, "/v1/a%2fb", None, 400),
        (Method::GET, "/dead", Some(&auth), 502),
    ];
    for (m, path, hs, status) in cases {
        let mut h: Vec<(&str, &str)> = hs.map(|a| ("authorization", a)).into_iter().collect();
        let r = send(m.clone(), &gw.url(path), &h).await;
        assert_eq!(r.status, status, "{m} {path}");
        assert!(!response_request_id(&r).is_empty(), "{m} {path}");
        h.push(("x-request-id", "err-42"));
        let r = send(m.clone(), &gw.url(path), &h).await;
        assert_eq!(r.status, status, "{m} {path}");
        assert_eq!(response_request_id(&r), "err-42", "{m} {path}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn connection_header_cannot_remove_identity() {
    // `Connection` may name headers to drop at the hop; it must not be able to drop
    // the identity keygate adds (an upstream would read a workspace key without its
    // workspace header as an org key).
    let gw = TestGateway::start().await;
    let (id, key) = gw.create_key(&["--org", "acme", "--workspace", "team-a", "--role", "viewer"]);
    let listed = IDENTITY.join(", ");
    let r = get(
        &gw.url("/v1/models"),
        &[("authorization", &bearer(&key)), ("connection", &listed)],
    )
    .await;
    let h = ok(&r);
    assert_eq!(
        h.get("x-keygate-key-id"),
        Some(&Value::from(id.as_str())),
        "{h:?}"
    );
    assert_eq!(h.get("x-keygate-org"), Some(&Value::from("acme")), "{h:?}");
    assert_eq!(
        h.get("x-keygate-workspace"),
        Some(&Value::from("team-a")),
        "{h:?}"
    );
    assert_eq!(
        h.get("x-keygate-permissions"),
        Some(&Value::from("models:read")),
        "{h:?}"
    );
    assert_eq!(
        h.get("x-keygate-actor"),
        Some(&Value::from(id.as_str())),
        "{h:?}"
    );
    assert!(h.contains_key("x-keygate-key-name") && h.contains_key("x-keygate-key-type"));
    // Nor the forwarding headers or the request id keygate sets.
    let r = get(
        &gw.url("/v1/models"),
        &[
            ("authorization", &bearer(&key)),
            (
                "connection",
                "x-forwarded-for, x-forwarded-proto, x-forwarded-host, x-request-id",
            ),
        ],
    )
    .await;
    let h = ok(&r);
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(h.contains_key("x-forwarded-host"));
    assert_eq!(
        h["x-request-id"].as_str(),
        Some(response_request_id(&r).as_str())
    );
    gw.stop().await;
}

#[tokio::test]
async fn upstream_and_client_see_the_same_request_id() {
    // An id keygate does not keep (too long, empty, not visible ASCII) is replaced; the
    // upstream, the log and the client must then all carry the replacement.
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let long = "r".repeat(300);
    for sent in [long.as_str(), ""] {
        let r = get(
            &gw.url("/v1/models"),
            &[("authorization", &bearer(&key)), ("x-request-id", sent)],
        )
        .await;
        let h = ok(&r);
        let returned = response_request_id(&r);
        assert!(!returned.is_empty());
        assert_eq!(
            h["x-request-id"].as_str(),
            Some(returned.as_str()),
            "sent {} chars",
            sent.len()
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn custom_identity_prefix() {
    let gw = TestGateway::start_with(|y| {
        y.replace("keys: {", "identity_headers: { prefix: X_Auth_ }\nkeys: {")
    })
    .await;
    assert_eq!(gw.config.identity.prefix, "x-auth-");
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let h = ok(&get(
        &gw.url("/v1/models"),
        &[
            ("authorization", &bearer(&key)),
            ("X_AUTH_ORG", "evil"),
            ("x-auth-key-id", "evil"),
            ("x-keygate-org", "not-ours-now"),
        ],
    )
    .await);
    assert_eq!(h["x-auth-org"], "acme");
    assert_eq!(h["x-auth-key-id"], id.as_str());
    assert!(!h.contains_key("x_auth_org"));
    assert_eq!(h["x-keygate-org"], "not-ours-now");
    gw.stop().await;
}
