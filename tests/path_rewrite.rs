//! Path rewriting per route (issue 17 item 2): `strip_prefix: true` (Kong's `strip_path`,
//! Traefik's StripPrefix), `rewrite: /new/prefix`, and an upstream target's own path
//! (`http://h:9000/api`) put in front. Rules apply to the normalized path, the result is
//! normalized, and the query travels unchanged.

mod support;

use support::*;

async fn gateway() -> TestGateway {
    TestGateway::start_with(|y| {
        let up = y
            .lines()
            .find_map(|l| l.trim().strip_prefix("api: { targets: [\"http://"))
            .and_then(|rest| rest.split('"').next())
            .expect("the test upstream's address")
            .to_owned();
        y.replace(
            "upstreams:\n",
            &format!("upstreams:\n  based: {{ targets: [\"http://{up}/base/\"] }}\n"),
        )
        .replace(
            "routes:\n",
            "routes:
  - { path: /strip, upstream: api, strip_prefix: true }
  - { path: /old, upstream: api, rewrite: /new/place }
  - { path: /root, upstream: api, rewrite: / }
  - { path: /pre, upstream: based }
  - { path: /both, upstream: based, strip_prefix: true }
  - { path: /swap, upstream: based, rewrite: /v2 }
",
        )
    })
    .await
}

#[tokio::test]
async fn the_upstream_gets_the_path_its_route_makes() {
    let gw = gateway().await;
    let (_, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let auth = bearer(&key);
    for (sent, path, query) in [
        ("/strip/a/b?x=1&y=2", "/a/b", Some("x=1&y=2")),
        ("/strip", "/", None),
        ("/strip/", "/", None),
        ("/old/x", "/new/place/x", None),
        ("/old", "/new/place", None),
        ("/root/deep/er", "/deep/er", None),
        ("/pre/x", "/base/pre/x", None),
        ("/both/x?q=1", "/base/x", Some("q=1")),
        ("/both", "/base", None),
        ("/swap/models/7", "/base/v2/models/7", None),
        // Normalized first (dot segments, doubled slashes, encoded unreserved bytes), then
        // rewritten: the upstream never sees `..` or `//`.
        ("/strip//a/./b/../c", "/a/c", None),
        ("/old/%61bc", "/new/place/abc", None),
        // Whole segments only: `/stripx` is not `/strip`'s.
        ("/v1/stripx", "/v1/stripx", None),
    ] {
        let r = get(&gw.url(sent), &[("authorization", &auth)]).await;
        assert_eq!(r.status, 200, "{sent}: {}", r.code());
        let seen = r.json();
        assert_eq!(seen["path"], path, "{sent}");
        assert_eq!(seen["query"].as_str(), query, "{sent}");
    }
    // What no route may hold is still refused before any rewriting.
    for bad in ["/strip/a%2fb", "/old/..%2f..", "/strip/x;y=1"] {
        let r = get(&gw.url(bad), &[("authorization", &auth)]).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (400, "bad_path"),
            "{bad}"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn bad_rewrites_and_target_paths_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "upstreams: { api: { targets: [\"http://127.0.0.1:9\"] } }\nroutes: [ { path: /a, upstream: api, strip_prefix: true, rewrite: /b } ]\n",
            "routes[0].rewrite",
        ),
        (
            "upstreams: { api: { targets: [\"http://127.0.0.1:9\"] } }\nroutes: [ { path: /a, upstream: api, rewrite: b } ]\n",
            "routes[0].rewrite",
        ),
        (
            "upstreams: { api: { targets: [\"http://127.0.0.1:9\"] } }\nroutes: [ { path: /a, upstream: api, rewrite: /b/../c } ]\n",
            "routes[0].rewrite",
        ),
        (
            "upstreams: { api: { targets: [\"http://127.0.0.1:9/x/../y\"] } }\n",
            "upstreams.api.targets[0]",
        ),
        (
            "upstreams: { api: { targets: [\"http://127.0.0.1:9/x\", \"http://127.0.0.1:10/y\"] } }\n",
            "upstreams.api.targets",
        ),
    ];
    for (i, (yaml, field)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.yaml"));
        std::fs::write(&path, yaml).expect("write");
        let out = cli(&path, &["check-config"]);
        assert!(!out.ok, "{yaml} was accepted");
        assert!(
            out.stderr.contains(&format!("{field}:")) || out.stdout.contains(&format!("{field}:")),
            "{yaml}: {} {}",
            out.stdout,
            out.stderr
        );
    }
}
