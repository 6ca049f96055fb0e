//! SPEC §3 routing: longest whole-segment prefix, methods, hosts, and the normalized
//! path that both the rules and the upstream see.
//!
//! Which route matched is observed through its rules: a `basic` key lacks
//! `models:read`, so it gets 403 on the `/v1/models` routes and 200 on `/v1`.

mod support;
use http::Method;
use support::*;

/// The base config plus a role without `models:read` and an open GET-only route.
async fn start() -> TestGateway {
    TestGateway::start_with(|y| {
        y.replace("roles:\n", "roles:\n  basic: [other:read]\n")
            .replace(
            "routes:\n",
            "routes:\n  - { path: /only-get, methods: [GET, HEAD], upstream: api, auth: none }\n",
        )
    })
    .await
}

#[tokio::test]
async fn longest_prefix_on_whole_segments() {
    let gw = start().await;
    let (_id, basic) = gw.create_key(&["--org", "acme", "--role", "basic"]);
    let (_v, viewer) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let b = bearer(&basic);
    let cases = [
        ("/v1/models", 403),
        ("/v1/models/", 403),
        ("/v1/models/7", 403),
        ("/v1/models/7/versions", 403),
        ("/v1/modelsx", 200),
        ("/v1/model", 200),
        ("/v1/other", 200),
        ("/v1", 200),
        ("/v1/", 200),
    ];
    for (path, status) in cases {
        let r = get(&gw.url(path), &[("authorization", &b)]).await;
        assert_eq!(r.status, status, "{path}: {:?}", r.body);
        if status == 403 {
            assert_eq!(r.code(), "insufficient_permissions", "{path}");
        } else {
            assert_eq!(r.json()["path"], path, "{path}");
        }
        let r = get(&gw.url(path), &[("authorization", &bearer(&viewer))]).await;
        assert_eq!(r.status, 200, "{path}");
    }
    // `/v1x` is not under `/v1`, and nothing else matches it.
    let r = get(&gw.url("/v1x"), &[("authorization", &b)]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "no_route"));
    let r = get(&gw.url("/publicity"), &[]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "no_route"));
    // `/v1/wsx` falls to `/v1` and needs no workspace; `/v1/ws/x` does.
    let r = get(&gw.url("/v1/wsx"), &[("authorization", &b)]).await;
    assert_eq!(r.status, 200);
    let r = get(&gw.url("/v1/ws/x"), &[("authorization", &bearer(&viewer))]).await;
    assert_eq!(r.code(), "workspace_required");
    gw.stop().await;
}

#[tokio::test]
async fn methods_pick_the_route() {
    let gw = start().await;
    let (_id, basic) = gw.create_key(&["--org", "acme", "--role", "basic"]);
    let (_v, viewer) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let (_e, editor) = gw.create_key(&["--org", "acme", "--role", "editor"]);
    let url = gw.url("/v1/models");

    // GET needs models:read, POST needs models:write.
    assert_eq!(
        get(&url, &[("authorization", &bearer(&viewer))])
            .await
            .status,
        200
    );
    let r = send(Method::POST, &url, &[("authorization", &bearer(&viewer))]).await;
    assert_eq!(r.code(), "insufficient_permissions");
    let r = send(Method::POST, &url, &[("authorization", &bearer(&editor))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["method"], "POST");

    // Neither /v1/models route takes DELETE: it falls to /v1, which needs nothing.
    let r = send(Method::DELETE, &url, &[("authorization", &bearer(&basic))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["method"], "DELETE");
    assert_eq!(r.json()["path"], "/v1/models");

    // A GET-only route with nothing under it: other methods find no route.
    let r = get(&gw.url("/only-get/x"), &[]).await;
    assert_eq!(r.status, 200);
    let r = send(Method::HEAD, &gw.url("/only-get/x"), &[]).await;
    assert_eq!(r.status, 200);
    for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let r = send(m.clone(), &gw.url("/only-get/x"), &[]).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (404, "no_route"),
            "{m}"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn host_routes_need_their_host() {
    let gw = start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);
    let url = gw.url("/hosted/x");

    let r = get(&url, &[("authorization", &auth)]).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "no_route"));
    for host in [
        "api.example.com",
        "API.Example.COM",
        "api.example.com:8443",
        "Api.Example.Com:80",
    ] {
        let r = get(&url, &[("authorization", &auth), ("host", host)]).await;
        assert_eq!(r.status, 200, "{host}: {:?}", r.body);
        assert_eq!(r.json()["path"], "/hosted/x");
        assert_eq!(r.upstream_headers()["x-forwarded-host"], host);
    }
    for host in [
        "other.example.com",
        "api.example.com.evil.net",
        "xapi.example.com",
        "api.example.co",
    ] {
        let r = get(&url, &[("authorization", &auth), ("host", host)]).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (404, "no_route"),
            "{host}"
        );
    }
    // Routes without a host take any host.
    let r = get(
        &gw.url("/v1/models"),
        &[("authorization", &auth), ("host", "whatever.example")],
    )
    .await;
    assert_eq!(r.status, 200);

    // Two Host headers (RFC 9112 §3.2): 400, whichever one a route would have matched,
    // and nothing reaches the upstream.
    for (a, b) in [
        ("api.example.com", "other.example.com"),
        ("other.example.com", "api.example.com"),
        ("api.example.com", "api.example.com"),
    ] {
        let req = format!(
            "GET /hosted/x HTTP/1.1\r\nHost: {a}\r\nHost: {b}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
        );
        let answer =
            String::from_utf8_lossy(&raw_exchange(gw.addr, req.as_bytes()).await).into_owned();
        assert!(answer.starts_with("HTTP/1.1 400 "), "{a}, {b}: {answer}");
        assert!(
            answer.contains(r#""code":"bad_host""#),
            "{a}, {b}: {answer}"
        );
        assert!(!answer.contains(&key), "the key is never echoed");
    }
    gw.stop().await;
}

#[tokio::test]
async fn upstream_receives_the_normalized_path() {
    let gw = start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);
    let cases = [
        ("//v1///models/./x", "/v1/models/x"),
        ("/v1/%6dodels", "/v1/models"),
        ("/v1/%6Dodels/%7Ex", "/v1/models/~x"),
        ("/v1/x/../models", "/v1/models"),
        ("/v1/%2e%2e/v1/models", "/v1/models"),
        ("/v1/./a/./b/", "/v1/a/b/"),
        ("/v1/a%20b", "/v1/a%20b"),
        ("/v1/a%3fb", "/v1/a%3Fb"),
        ("/v1/models", "/v1/models"),
    ];
    for (raw, want) in cases {
        let r = get(&gw.url(raw), &[("authorization", &auth)]).await;
        assert_eq!(r.status, 200, "{raw}: {:?}", r.body);
        assert_eq!(r.json()["path"], want, "{raw}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn rules_apply_to_the_normalized_path() {
    let gw = start().await;
    let (_id, basic) = gw.create_key(&["--org", "acme", "--role", "basic"]);
    let b = bearer(&basic);
    // Each of these is /v1/models once normalized: the models rules must hold.
    for raw in [
        "//v1/models",
        "/v1//models",
        "/v1/./models",
        "/v1/x/../models",
        "/v1/%6dodels",
        "/%76%31/models",
        "/v1/%2e/models",
        "/v1/x/%2e%2e/models/7",
    ] {
        let r = get(&gw.url(raw), &[("authorization", &b)]).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (403, "insufficient_permissions"),
            "{raw}"
        );
    }
    // And the workspace rule reads the segment of the normalized path.
    let (_w, ws_key) =
        gw.create_key(&["--org", "acme", "--workspace", "team-a", "--role", "viewer"]);
    let r = get(
        &gw.url("/v1//orgs/./team-b/x"),
        &[("authorization", &bearer(&ws_key))],
    )
    .await;
    assert_eq!(r.code(), "workspace_not_allowed");
    let r = get(
        &gw.url("//v1/orgs/%74eam-a/x"),
        &[("authorization", &bearer(&ws_key))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/v1/orgs/team-a/x");
    assert_eq!(r.upstream_headers()["x-keygate-workspace"], "team-a");
    gw.stop().await;
}

#[tokio::test]
async fn query_string_is_preserved() {
    let gw = start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);
    for (raw, path, query) in [
        ("/v1/models?b=2&a=1", "/v1/models", "b=2&a=1"),
        (
            "/v1/models?x=%20y&z=%2F&e=",
            "/v1/models",
            "x=%20y&z=%2F&e=",
        ),
        ("//v1/./models?q=a/../b", "/v1/models", "q=a/../b"),
        ("/v1/%6dodels?flag", "/v1/models", "flag"),
    ] {
        let r = get(&gw.url(raw), &[("authorization", &auth)]).await;
        assert_eq!(r.status, 200, "{raw}");
        assert_eq!(r.json()["path"], path, "{raw}");
        assert_eq!(r.json()["query"], query, "{raw}");
    }
    let r = get(&gw.url("/v1/models"), &[("authorization", &auth)]).await;
    assert!(r.json()["query"].is_null());
    gw.stop().await;
}

#[tokio::test]
async fn http2_host_routing_reads_the_authority() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let gw = start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    for (authority, status) in [
        ("api.example.com", 200),
        ("API.EXAMPLE.COM:8443", 200),
        ("other.example.com", 404),
    ] {
        let req = http::Request::builder()
            .uri(format!("http://{authority}/hosted/x"))
            .header("authorization", bearer(&key))
            .body(Empty::<bytes::Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        assert_eq!(resp.status(), status, "{authority}");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        if status == 200 {
            let v: serde_json::Value = serde_json::from_slice(&body).expect("echo json");
            assert_eq!(v["path"], "/hosted/x");
            assert_eq!(v["headers"]["x-forwarded-host"], authority);
        }
    }
    gw.stop().await;
}
