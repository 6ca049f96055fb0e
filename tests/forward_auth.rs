//! Forward-auth (SPEC §8): a `verify: true` route judges the request a proxy in front
//! names (Traefik's `X-Forwarded-Method`/`-Uri`, nginx's `X-Original-Method`/`-URI`, or
//! Envoy's path below the verify route) exactly as a request to the route it matches would
//! be judged, and answers 200 with the identity headers on the answer, or the refusal.
//! Last, a real nginx with `auth_request` in front of keygate and the test upstream.

mod support;

use http::Method;
use std::time::Duration;
use support::*;

const INVALID_TOKEN: &str = "Bearer realm=\"keygate\", error=\"invalid_token\"";
const INSUFFICIENT_SCOPE: &str = "Bearer realm=\"keygate\", error=\"insufficient_scope\"";

/// The test config with a verify route at `/_verify`.
async fn start() -> TestGateway {
    TestGateway::start_with(|y| y + "  - { path: /_verify, verify: true }\n").await
}

/// How the proxy in front names the original request.
#[derive(Clone, Copy, Debug)]
enum Style {
    Traefik,
    Nginx,
}

const STYLES: [Style; 2] = [Style::Traefik, Style::Nginx];

/// A check of `method path` in `style`, with `extra` headers (the original request's).
async fn check(
    gw: &TestGateway,
    style: Style,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let (m, u) = match style {
        Style::Traefik => ("x-forwarded-method", "x-forwarded-uri"),
        Style::Nginx => ("x-original-method", "x-original-uri"),
    };
    let mut headers = vec![(m, method), (u, path)];
    headers.extend_from_slice(extra);
    get(&gw.url("/_verify"), &headers).await
}

fn header<'r>(r: &'r Reply, name: &str) -> Option<&'r str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Every answer header under the identity prefix.
fn identity_of(r: &Reply) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(n, _)| n.as_str().replace('_', "-").starts_with("x-keygate"))
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().expect("ascii").to_owned()))
        .collect();
    found.sort();
    found
}

/// 200, empty body, a request id, and exactly `want` as identity headers.
#[track_caller]
fn assert_passes(r: &Reply, want: &[(&str, &str)]) {
    assert_eq!(r.status, 200, "body: {}", String::from_utf8_lossy(&r.body));
    assert!(r.body.is_empty(), "a passing check has no body");
    assert!(header(r, "x-request-id").is_some_and(|v| !v.is_empty()));
    let mut want: Vec<(String, String)> = want
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    want.sort();
    assert_eq!(identity_of(r), want);
}

/// The refusal a request to the route would get: status, code, JSON body, request id,
/// `WWW-Authenticate`, and no identity.
#[track_caller]
fn assert_refused(r: &Reply, status: u16, code: &str, www_authenticate: Option<&str>) {
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (status, code),
        "body: {}",
        String::from_utf8_lossy(&r.body)
    );
    let v = r.json();
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert_eq!(header(r, "content-type"), Some("application/json"));
    assert!(header(r, "x-request-id").is_some_and(|v| !v.is_empty()));
    assert_eq!(header(r, "www-authenticate"), www_authenticate, "{code}");
    assert!(identity_of(r).is_empty(), "{:?}", identity_of(r));
}

/// The identity of an org-wide service key of org `acme` with `permissions`.
fn acme_identity<'a>(id: &'a str, name: &'a str, permissions: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("x-keygate-key-id", id),
        ("x-keygate-key-name", name),
        ("x-keygate-org", "acme"),
        ("x-keygate-key-type", "service"),
        ("x-keygate-actor", name),
        ("x-keygate-permissions", permissions),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_would_pass_answers_200_with_the_identity_on_the_answer() {
    let gw = start().await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer", "--name", "bot"]);
    let auth = bearer(&key);
    let want = acme_identity(&id, "bot", "models:read");
    for style in STYLES {
        let r = check(&gw, style, "GET", "/v1/models", &[("authorization", &auth)]).await;
        assert_passes(&r, &want);
        // The key header and the original URI's query parameter are credentials too.
        let r = check(&gw, style, "GET", "/v1/models/7", &[("x-api-key", &key)]).await;
        assert_passes(&r, &want);
        let r = check(&gw, style, "GET", &format!("/v1/models?api_key={key}"), &[]).await;
        assert_passes(&r, &want);
    }
    // Both styles at once, naming the same request: as one.
    let r = check(
        &gw,
        Style::Traefik,
        "GET",
        "/v1/models",
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/v1/models"),
            ("authorization", &auth),
        ],
    )
    .await;
    assert_passes(&r, &want);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_is_refused_as_a_request_to_its_route_would_be() {
    let gw = start().await;
    let (_id, viewer) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let (revoked_id, revoked) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    assert!(gw.cli(&["keys", "revoke", &revoked_id]).ok);
    let unknown = well_formed_unknown_key();
    let auth = bearer(&viewer);
    for style in STYLES {
        let r = check(&gw, style, "GET", "/v1/models", &[]).await;
        assert_refused(&r, 401, "missing_key", Some("Bearer realm=\"keygate\""));
        let r = check(
            &gw,
            style,
            "GET",
            "/v1/models",
            &[("authorization", "Bearer kg_x")],
        )
        .await;
        assert_refused(&r, 401, "malformed_key", Some(INVALID_TOKEN));
        let r = check(
            &gw,
            style,
            "GET",
            "/v1/models",
            &[("authorization", &bearer(&unknown))],
        )
        .await;
        assert_refused(&r, 401, "unknown_key", Some(INVALID_TOKEN));
        let r = check(
            &gw,
            style,
            "GET",
            "/v1/models",
            &[("authorization", &bearer(&revoked))],
        )
        .await;
        assert_refused(&r, 401, "revoked_key", Some(INVALID_TOKEN));
        // A header key and a query key: two credentials.
        let r = check(
            &gw,
            style,
            "GET",
            &format!("/v1/models?api_key={viewer}"),
            &[("authorization", &auth)],
        )
        .await;
        assert_refused(&r, 401, "multiple_keys", Some(INVALID_TOKEN));
        // POST /v1/models needs models:write: the original method picks the route.
        let r = check(
            &gw,
            style,
            "POST",
            "/v1/models",
            &[("authorization", &auth)],
        )
        .await;
        assert_refused(
            &r,
            403,
            "insufficient_permissions",
            Some(INSUFFICIENT_SCOPE),
        );
        let r = check(&gw, style, "GET", "/nowhere", &[("authorization", &auth)]).await;
        assert_refused(&r, 404, "no_route", None);
        for bad in ["/v1/%2e%2e/%2e%2e/x", "/v1/a%2Fb", "/v1;x=1"] {
            let r = check(&gw, style, "GET", bad, &[("authorization", &auth)]).await;
            assert_refused(&r, 400, "bad_path", None);
        }
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspaces_are_read_from_the_original_request() {
    let gw = start().await;
    let (id, key) = gw.create_key(&[
        "--org",
        "acme",
        "--workspace",
        "team-a",
        "--role",
        "viewer",
        "--name",
        "ws-bot",
    ]);
    let auth = bearer(&key);
    let mut want = acme_identity(&id, "ws-bot", "models:read");
    want.push(("x-keygate-workspace", "team-a"));
    for style in STYLES {
        // By header: the check carries the original request's headers.
        let r = check(
            &gw,
            style,
            "GET",
            "/v1/ws/items",
            &[("authorization", &auth), ("x-workspace-id", "team-a")],
        )
        .await;
        assert_passes(&r, &want);
        let r = check(
            &gw,
            style,
            "GET",
            "/v1/ws/items",
            &[("authorization", &auth)],
        )
        .await;
        assert_refused(&r, 400, "workspace_required", None);
        let r = check(
            &gw,
            style,
            "GET",
            "/v1/ws/items",
            &[("authorization", &auth), ("x-workspace-id", "team-b")],
        )
        .await;
        assert_refused(&r, 403, "workspace_not_allowed", Some(INSUFFICIENT_SCOPE));
        // By path segment: of the original path, not the check's.
        let r = check(
            &gw,
            style,
            "GET",
            "/v1/orgs/team-a/x",
            &[("authorization", &auth)],
        )
        .await;
        assert_passes(&r, &want);
        let r = check(
            &gw,
            style,
            "GET",
            "/v1/orgs/team-b/x",
            &[("authorization", &auth)],
        )
        .await;
        assert_refused(&r, 403, "workspace_not_allowed", Some(INSUFFICIENT_SCOPE));
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_org_is_refused_through_the_check() {
    let gw = start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);
    let verdict = || async {
        let r = check(
            &gw,
            Style::Nginx,
            "GET",
            "/v1/models",
            &[("authorization", &auth)],
        )
        .await;
        (r.status.as_u16(), r.code())
    };
    assert_eq!(verdict().await, (200, String::new()));
    assert!(gw.cli(&["orgs", "suspend", "acme"]).ok);
    let suspended = eventually(Duration::from_secs(5), || async {
        verdict().await == (401, "org_suspended".to_owned())
    })
    .await;
    assert!(suspended, "still {:?}", verdict().await);
    let r = check(
        &gw,
        Style::Traefik,
        "GET",
        "/v1/models",
        &[("authorization", &auth)],
    )
    .await;
    assert_refused(&r, 401, "org_suspended", Some(INVALID_TOKEN));
    gw.stop().await;
}

/// A passing check is a request the proxy sends on: it counts against the key's rate
/// limit and quota, and says so in the same headers as a forwarded answer.
#[tokio::test]
async fn checks_count_against_the_keys_rate_limit_and_quota() {
    let gw = start().await;
    let (_, limited) = gw.create_key(&["--org", "acme", "--role", "viewer", "--rate-limit", "2/h"]);
    let (_, metered) = gw.create_key(&["--org", "acme", "--role", "viewer", "--quota", "2"]);
    for (key, header_name) in [
        (&limited, "ratelimit-remaining"),
        (&metered, "x-quota-remaining"),
    ] {
        let auth = bearer(key);
        for (i, want) in ["1", "0"].into_iter().enumerate() {
            let style = STYLES[i % 2];
            let r = check(&gw, style, "GET", "/v1/models", &[("authorization", &auth)]).await;
            assert_eq!(r.status, 200, "{style:?}: {}", r.code());
            assert_eq!(header(&r, header_name), Some(want), "{style:?}");
        }
        let r = check(
            &gw,
            Style::Nginx,
            "GET",
            "/v1/models",
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(r.status, 429);
        assert!(header(&r, "retry-after").is_some() || r.code() == "quota_exhausted");
        assert!(identity_of(&r).is_empty(), "a refusal carries no identity");
    }
    let r = check(
        &gw,
        Style::Traefik,
        "GET",
        "/v1/models",
        &[("authorization", &bearer(&limited))],
    )
    .await;
    assert_eq!(r.code(), "rate_limited");
    let r = check(
        &gw,
        Style::Traefik,
        "GET",
        "/v1/models",
        &[("authorization", &bearer(&metered))],
    )
    .await;
    assert_eq!(r.code(), "quota_exhausted");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_none_route_passes_without_identity_and_spoofs_never_reach_the_answer() {
    let gw = start().await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer", "--name", "bot"]);
    let spoofs = [
        ("x-keygate-org", "evil"),
        ("x-keygate-workspace", "evil"),
        ("X_Keygate_Key_Id", "key_evil"),
        ("x-keygate-permissions", "admin"),
    ];
    for style in STYLES {
        // auth: none: 200, no identity, whatever the check carries.
        let r = check(&gw, style, "GET", "/public/x", &[]).await;
        assert_passes(&r, &[]);
        let mut with_key = spoofs.to_vec();
        let auth = bearer(&key);
        with_key.push(("authorization", &auth));
        let r = check(&gw, style, "GET", "/public/x", &with_key).await;
        assert_passes(&r, &[]);
        // A key route: keygate's identity only, none of the check's.
        let r = check(&gw, style, "GET", "/v1/models", &with_key).await;
        assert_passes(&r, &acme_identity(&id, "bot", "models:read"));
        // Refused: no identity at all.
        let r = check(&gw, style, "GET", "/v1/models", &spoofs).await;
        assert_refused(&r, 401, "missing_key", Some("Bearer realm=\"keygate\""));
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_is_the_forwarded_one_and_a_verify_route_is_never_the_target() {
    let gw = start().await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer", "--name", "bot"]);
    let auth = bearer(&key);
    let r = check(
        &gw,
        Style::Traefik,
        "GET",
        "/hosted/x",
        &[
            ("authorization", &auth),
            ("x-forwarded-host", "API.example.com:8443"),
        ],
    )
    .await;
    assert_passes(&r, &acme_identity(&id, "bot", "models:read"));
    // Without it, the check's own Host (keygate's address) routes: no route there.
    let r = check(
        &gw,
        Style::Traefik,
        "GET",
        "/hosted/x",
        &[("authorization", &auth)],
    )
    .await;
    assert_refused(&r, 404, "no_route", None);
    // The check's own Host counts when no X-Forwarded-Host is sent (Envoy keeps it).
    let r = check(
        &gw,
        Style::Nginx,
        "GET",
        "/hosted/x",
        &[("authorization", &auth), ("host", "api.example.com")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // A check of the verify route itself matches the routes below it, not the verify route.
    for path in ["/_verify", "/_verify/v1/models"] {
        let r = check(&gw, Style::Nginx, "GET", path, &[("authorization", &auth)]).await;
        assert_refused(&r, 404, "no_route", None);
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_names_no_request_or_two_is_bad_verify_request() {
    let gw = start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);
    let url = gw.url("/_verify");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("nothing", vec![]),
        ("a method alone", vec![("x-forwarded-method", "GET")]),
        ("a URI alone", vec![("x-original-uri", "/v1/models")]),
        (
            "two URIs",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/v1/models"),
                ("x-forwarded-uri", "/public"),
            ],
        ),
        (
            "the styles disagree on the URI",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/v1/models"),
                ("x-original-method", "GET"),
                ("x-original-uri", "/public"),
            ],
        ),
        (
            "the styles disagree on the method",
            vec![
                ("x-forwarded-method", "POST"),
                ("x-forwarded-uri", "/v1/models"),
                ("x-original-method", "GET"),
                ("x-original-uri", "/v1/models"),
            ],
        ),
        (
            "not a method",
            vec![
                ("x-forwarded-method", "GE T"),
                ("x-forwarded-uri", "/v1/models"),
            ],
        ),
        (
            "not a request target",
            vec![
                ("x-original-method", "GET"),
                ("x-original-uri", "/v1/models x"),
            ],
        ),
        (
            "an empty URI",
            vec![("x-original-method", "GET"), ("x-original-uri", "")],
        ),
        (
            "two forwarded hosts",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/v1/models"),
                ("x-forwarded-host", "a.example"),
                ("x-forwarded-host", "b.example"),
            ],
        ),
    ];
    for (what, mut headers) in cases {
        headers.push(("authorization", &auth));
        let r = get(&url, &headers).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (400, "bad_verify_request"),
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_refused(&r, 400, "bad_verify_request", None);
    }
    // Envoy's way (below the verify route) against a header that names another request.
    let r = get(
        &gw.url("/_verify/public"),
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/v1/models"),
            ("authorization", &auth),
        ],
    )
    .await;
    assert_refused(&r, 400, "bad_verify_request", None);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_checks_name_the_request_by_their_own_method_and_the_path_below_the_route() {
    let gw = start().await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer", "--name", "bot"]);
    let auth = bearer(&key);
    let r = get(
        &gw.url("/_verify/v1/models?a=1"),
        &[("authorization", &auth)],
    )
    .await;
    assert_passes(&r, &acme_identity(&id, "bot", "models:read"));
    let r = get(&gw.url(&format!("/_verify/v1/models?api_key={key}")), &[]).await;
    assert_passes(&r, &acme_identity(&id, "bot", "models:read"));
    let r = send(
        Method::POST,
        &gw.url("/_verify/v1/models"),
        &[("authorization", &auth)],
    )
    .await;
    assert_refused(
        &r,
        403,
        "insufficient_permissions",
        Some(INSUFFICIENT_SCOPE),
    );
    let r = get(&gw.url("/_verify/public/x"), &[]).await;
    assert_passes(&r, &[]);
    // A header that names the same request agrees with it.
    let r = get(
        &gw.url("/_verify/v1/models"),
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/v1/models"),
            ("authorization", &auth),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_are_counted_under_the_verify_route() {
    let gw = start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);
    assert_eq!(
        check(
            &gw,
            Style::Nginx,
            "GET",
            "/v1/models",
            &[("authorization", &auth)]
        )
        .await
        .status,
        200
    );
    assert_eq!(
        check(&gw, Style::Nginx, "GET", "/v1/models", &[])
            .await
            .status,
        401
    );
    assert_eq!(
        check(&gw, Style::Nginx, "GET", "/nowhere", &[])
            .await
            .status,
        404
    );
    let m = get(&gw.admin_url("/metrics"), &[]).await;
    let m = String::from_utf8_lossy(&m.body);
    for series in [
        r#"keygate_requests_total{route="/_verify",code="ok"} 1"#,
        r#"keygate_requests_total{route="/_verify",code="missing_key"} 1"#,
        r#"keygate_requests_total{route="/_verify",code="no_route"} 1"#,
    ] {
        assert!(m.lines().any(|l| l == series), "no `{series}` in\n{m}");
    }
    // Nothing was counted as a request to the routes the checks named.
    assert!(!m.contains(r#"route="/v1/models""#), "{m}");
    gw.stop().await;
}

// ---- nginx `auth_request` in front of keygate ----

/// An nginx child process with its own prefix, config, pid and logs, killed on drop.
struct Nginx {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// The nginx binary: on PATH, or where Debian's package puts it (`/usr/sbin` is not on
/// every user's PATH).
fn nginx_binary() -> Option<std::path::PathBuf> {
    ["nginx", "/usr/sbin/nginx"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|bin| {
            std::process::Command::new(bin)
                .arg("-v")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// The nginx config: every path under `dir`, one process (`master_process off`, so killing
/// its PID ends it all), `auth_request` to keygate's verify route in front of `upstream`.
fn nginx_conf(
    dir: &std::path::Path,
    port: u16,
    keygate: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
) -> String {
    let d = dir.display();
    format!(
        r#"
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        location = /_kg_verify {{
            internal;
            proxy_pass http://{keygate}/_verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Forwarded-Host $host;
        }}
        location / {{
            auth_request /_kg_verify;
            auth_request_set $kg_key_id $upstream_http_x_keygate_key_id;
            auth_request_set $kg_org $upstream_http_x_keygate_org;
            auth_request_set $kg_status $upstream_status;
            auth_request_set $kg_retry_after $upstream_http_retry_after;
            proxy_set_header X-Keygate-Key-Id $kg_key_id;
            proxy_set_header X-Keygate-Org $kg_org;
            proxy_pass http://{upstream};
            error_page 500 = @kg_refused;
        }}
        location @kg_refused {{
            if ($kg_status = 429) {{ add_header Retry-After $kg_retry_after always; return 429; }}
            if ($kg_status = 404) {{ return 404; }}
            return 500;
        }}
    }}
}}
"#
    )
}

/// Starts nginx on a free port of 127.0.0.1. A port is taken from a listener that is then
/// closed; if another process takes it first, nginx exits and another port is tried.
async fn start_nginx(
    bin: &std::path::Path,
    keygate: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
) -> Nginx {
    for _ in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("tmp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, nginx_conf(dir.path(), port, keygate, upstream))
            .expect("write nginx.conf");
        let child = std::process::Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .arg("-g")
            .arg("daemon off;")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            child,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        let addr = nginx.addr;
        let up = eventually(Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        if up && nginx.child.try_wait().ok().flatten().is_none() {
            return nginx;
        }
        eprintln!(
            "nginx did not start on {port}, trying another port: {}",
            nginx.log()
        );
    }
    panic!("nginx did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_admits_a_valid_key_with_its_identity_and_stops_a_bad_or_limited_one() {
    let Some(bin) = nginx_binary() else {
        eprintln!("skipped: nginx not installed; `apt-get install -y nginx`");
        return;
    };
    let gw = start().await;
    let nginx = start_nginx(&bin, gw.addr, gw.upstream.addr).await;
    let url = |path: &str| format!("http://{}{}", nginx.addr, path);
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);

    // A valid key: the upstream sees the request, with the identity nginx took from the
    // check, and nginx's own values override a client's spoof.
    let r = get(
        &url("/v1/models?x=1"),
        &[
            ("authorization", &bearer(&key)),
            ("x-keygate-key-id", "key_evil"),
        ],
    )
    .await;
    assert_eq!(
        r.status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&r.body),
        nginx.log()
    );
    let seen = r.json();
    assert_eq!(seen["path"], "/v1/models", "{seen}");
    let h = r.upstream_headers();
    assert_eq!(h["x-keygate-key-id"], id.as_str(), "{h:?}");
    assert_eq!(h["x-keygate-org"], "acme", "{h:?}");

    // A bad key, and none: 401 from nginx with keygate's WWW-Authenticate; the upstream
    // sees nothing (its echo would be a JSON object with the request's path).
    for auth in [bearer(&well_formed_unknown_key()), String::new()] {
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("authorization", &auth)]
        };
        let r = get(&url("/v1/models"), &headers).await;
        assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
        assert!(
            header(&r, "www-authenticate")
                .is_some_and(|w| w.starts_with("Bearer realm=\"keygate\"")),
            "{:?}",
            r.headers
        );
        assert!(
            r.json().get("path").is_none(),
            "the upstream answered: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // Permissions: 403 passes through nginx as is.
    let r = send(
        Method::POST,
        &url("/v1/models"),
        &[("authorization", &bearer(&key))],
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.json().get("path").is_none());
    // Any other status becomes 500 in nginx; the config maps it back (README).
    let r = get(&url("/nowhere"), &[("authorization", &bearer(&key))]).await;
    assert_eq!(r.status, 404, "{}", nginx.log());
    assert!(r.json().get("path").is_none());

    // Limits count through nginx as for a forwarded request: over the rate limit, the
    // config maps nginx's 500 back to 429 with keygate's Retry-After (README).
    let (_, limited) = gw.create_key(&["--org", "acme", "--role", "viewer", "--rate-limit", "1/h"]);
    let r = get(&url("/v1/models"), &[("authorization", &bearer(&limited))]).await;
    assert_eq!(r.status, 200, "{}", nginx.log());
    let r = get(&url("/v1/models"), &[("authorization", &bearer(&limited))]).await;
    assert_eq!(r.status, 429, "{}", nginx.log());
    let retry: u64 = header(&r, "retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After from keygate");
    assert!(retry >= 1);
    assert!(r.json().get("path").is_none(), "the upstream answered");
    drop(nginx);
    gw.stop().await;
}
