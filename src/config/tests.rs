//! `Config::from_yaml`: defaults, the two layers (serde gathers unknown fields, then one
//! validation pass that gathers every error), and the rules of SPEC §3.

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(yaml: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(yaml, &no_env)
}

fn valid(yaml: &str) -> Config {
    parse(yaml).unwrap_or_else(|e| panic!("refused: {e}\n{yaml}"))
}

/// The validation errors of a config that must be refused by validation (not by serde).
fn errors(yaml: &str) -> Vec<String> {
    match parse(yaml) {
        Err(ConfigError::Invalid(v)) => v,
        Err(other) => panic!("refused before validation: {other}"),
        Ok(_) => panic!("accepted:\n{yaml}"),
    }
}

/// Asserts exactly one error, for `field`, and returns it.
#[track_caller]
fn one_error(yaml: &str, field: &str) -> String {
    let errs = errors(yaml);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(&format!("{field}: ")),
        "expected an error for `{field}`: {errs:?}"
    );
    errs[0].clone()
}

const UPSTREAM: &str = "upstreams:\n  api: { targets: [\"http://127.0.0.1:9000\"] }\n";

/// A config with one upstream `api` and the given routes (YAML flow mappings).
fn with_routes(routes: &[&str]) -> String {
    let mut s = format!("roles: {{ viewer: [models:read] }}\n{UPSTREAM}routes:\n");
    for r in routes {
        s.push_str(&format!("  - {r}\n"));
    }
    s
}

#[test]
fn empty_file_takes_every_default() {
    let c = valid("");
    assert_eq!(
        c.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(
        c.admin.listen,
        "127.0.0.1:8081".parse::<SocketAddr>().expect("addr")
    );
    assert!(c.admin.tokens.is_empty());
    assert!(c.tls.is_none());
    match &c.store {
        StoreConfig::Embedded {
            path,
            poll_interval,
        } => {
            assert_eq!(path, Path::new("data/keygate.db"));
            assert_eq!(*poll_interval, Duration::from_millis(250));
        }
        other => panic!("default store: {other:?}"),
    }
    assert_eq!(c.cache.max_entries, 100_000);
    assert_eq!(c.cache.ttl, Duration::from_secs(30));
    assert_eq!(c.cache.negative_ttl, Duration::from_secs(5));
    assert_eq!(c.cache.stale_if_error, Duration::from_secs(300));
    assert_eq!(c.keys.prefix, "kg");
    assert!(c.keys.header.is_none());
    assert!(c.keys.query_param.is_none());
    assert!(!c.keys.forward_credential);
    assert_eq!(c.keys.last_used_flush, Duration::from_secs(30));
    assert_eq!(c.identity.prefix, "x-keygate-");
    assert!(c.roles.is_empty() && c.upstreams.is_empty() && c.routes.is_empty());
    assert_eq!(c.server.workers, None);
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.server.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.server.max_header_bytes, 32 * 1024);
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.level, "info");
    // A comment-only file is the same as an empty one.
    assert_eq!(valid("# nothing here\n").listen, c.listen);
}

#[test]
fn upstream_and_route_defaults() {
    let c = valid(&with_routes(&["{ path: /v1, upstream: api }"]));
    let u = &c.upstreams[0];
    assert_eq!(u.name, "api");
    assert_eq!(u.connect_timeout, Duration::from_secs(2));
    assert_eq!(u.timeout, Duration::from_secs(30));
    assert_eq!(u.idle_timeout, Duration::from_secs(60));
    assert!(
        u.ca.is_none(),
        "https targets are checked against the public roots"
    );
    assert_eq!(
        u.targets,
        vec!["http://127.0.0.1:9000".parse::<http::Uri>().expect("uri")]
    );
    let r = &c.routes[0];
    assert_eq!(r.path, "/v1");
    assert!(r.auth, "auth defaults to key");
    assert_eq!(r.methods, None);
    assert_eq!(r.host, None);
    assert!(r.permissions.is_empty());
    assert_eq!(r.workspace, None);
    assert_eq!(c.route_upstream(r).map(|u| u.name.as_str()), Some("api"));
    assert!(!r.verify, "a route forwards unless it says `verify: true`");
}

#[test]
fn verify_routes_take_no_upstream_and_no_rules_of_their_own() {
    let c = valid(&with_routes(&[
        "{ path: /_verify, verify: true }",
        "{ path: /_check, methods: [GET], host: auth.internal, verify: \"true\" }",
        "{ path: /v1, upstream: api, verify: false }",
    ]));
    let (v, w, r) = (&c.routes[0], &c.routes[1], &c.routes[2]);
    assert!(v.verify && w.verify && !r.verify);
    assert_eq!(c.route_upstream(v).map(|u| u.name.as_str()), None);
    assert_eq!(v.upstream, None);
    assert_eq!(w.host.as_deref(), Some("auth.internal"));
    assert_eq!(r.upstream, Some(0));
    // Rules of its own would never apply (the matched route's do): each is named.
    for (field, extra) in [
        ("upstream", "upstream: api"),
        ("permissions", "permissions: [models:read]"),
        ("workspace", "workspace: { header: x-ws }"),
        ("auth", "auth: key"),
    ] {
        let e = one_error(
            &with_routes(&[&format!("{{ path: /_verify, verify: true, {extra} }}")]),
            &format!("routes[0].{field}"),
        );
        assert!(e.contains("verify: true"), "{e}");
    }
    // Every other route still needs an upstream.
    let e = one_error(&with_routes(&["{ path: /v1 }"]), "routes[0].upstream");
    assert!(e.contains("required"), "{e}");
    one_error(
        &with_routes(&["{ path: /v1, verify: false }"]),
        "routes[0].upstream",
    );
    one_error(
        &with_routes(&["{ path: /v1, upstream: nowhere }"]),
        "routes[0].upstream",
    );
}

#[test]
fn an_upstream_ca_file_is_read_when_the_config_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.pem");
    let no_cert = dir.path().join("no-cert.pem");
    std::fs::write(&no_cert, "not a certificate\n").expect("write");
    let with_ca = |target: &str, ca: &std::path::Path| {
        format!(
            "upstreams:\n  api: {{ targets: [\"{target}\"], ca: \"{}\" }}\nroutes:\n  - {{ path: /, upstream: api }}\n",
            ca.display()
        )
    };
    let e = one_error(
        &with_ca("https://127.0.0.1:9443", &missing),
        "upstreams.api.ca",
    );
    assert!(e.contains("cannot read"), "{e}");
    let e = one_error(
        &with_ca("https://127.0.0.1:9443", &no_cert),
        "upstreams.api.ca",
    );
    assert!(e.contains("no certificate"), "{e}");
    // A CA for an upstream with no https target is a mistake, said as one.
    let errs = errors(&with_ca("http://127.0.0.1:9000", &no_cert));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("upstreams.api.ca: is only used by https")),
        "{errs:?}"
    );
}

#[test]
fn durations_in_every_unit() {
    let c = valid(
        "cache: { ttl: 500ms, negative_ttl: 2m, stale_if_error: 1h }\n\
         keys: { last_used_flush: 45s }\n\
         store: { poll_interval: 100ms }\n\
         server: { header_read_timeout: 3s, drain_timeout: 0s }\n",
    );
    assert_eq!(c.cache.ttl, Duration::from_millis(500));
    assert_eq!(c.cache.negative_ttl, Duration::from_secs(120));
    assert_eq!(c.cache.stale_if_error, Duration::from_secs(3600));
    assert_eq!(c.keys.last_used_flush, Duration::from_secs(45));
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(3));
    assert_eq!(c.server.drain_timeout, Duration::ZERO);
    match c.store {
        StoreConfig::Embedded { poll_interval, .. } => {
            assert_eq!(poll_interval, Duration::from_millis(100))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn wildcard_permissions_are_refused() {
    one_error("roles: { admin: [\"*\"] }", "roles.admin");
    one_error("roles: { admin: [\"models:*\"] }", "roles.admin");
}

#[test]
fn timers_must_be_above_zero_and_bounded() {
    one_error("keys: { last_used_flush: 0s }", "keys.last_used_flush");
    // SPEC §1: last_used_at may lag by up to a minute, no more.
    one_error("keys: { last_used_flush: 2m }", "keys.last_used_flush");
    one_error("store: { poll_interval: 0ms }", "store.poll_interval");
    one_error(
        "server: { header_read_timeout: 0s }",
        "server.header_read_timeout",
    );
    one_error(
        "upstreams:\n  api: { targets: [\"http://a:1\"], timeout: 0s }\n",
        "upstreams.api.timeout",
    );
    one_error(
        "upstreams:\n  api: { targets: [\"http://a:1\"], idle_timeout: 0s }\n",
        "upstreams.api.idle_timeout",
    );
}

#[test]
fn bad_durations_name_their_field() {
    let e = one_error("cache: { ttl: 30x }", "cache.ttl");
    assert!(e.contains("30x"), "{e}");
    one_error("cache: { negative_ttl: 1.5s }", "cache.negative_ttl");
    // Beyond these, moka's builder panicked at start-up (an entry may live 1000 years).
    one_error("cache: { negative_ttl: 2d }", "cache.negative_ttl");
    one_error("cache: { stale_if_error: 365001d }", "cache.stale_if_error");
    one_error("cache: { stale_if_error: 8d }", "cache.stale_if_error");
    let c = valid("cache: { negative_ttl: 0s, stale_if_error: 0s }");
    assert!(c.cache.negative_ttl.is_zero() && c.cache.stale_if_error.is_zero());
    one_error("cache: { ttl: 0s }", "cache.ttl");
    one_error(
        "upstreams: { api: { targets: [\"http://u:p@127.0.0.1:9\"] } }",
        "upstreams.api.targets[0]",
    );
    one_error("cache: { ttl: 2d }", "cache.ttl");
    one_error("keys: { last_used_flush: 1h30m }", "keys.last_used_flush");
    let e = one_error(
        "upstreams:\n  api: { targets: [\"http://a:1\"], timeout: soon }\n",
        "upstreams.api.timeout",
    );
    assert!(e.contains("soon"), "{e}");
}

#[test]
fn every_error_is_gathered_in_one_invalid() {
    let errs = errors(
        "listen: nowhere\n\
         admin: { listen: 127.0.0.1 }\n\
         cache: { ttl: 30x, max_entries: 0 }\n\
         keys: { prefix: k-g }\n\
         log: { format: xml }\n\
         upstreams:\n  api: { targets: [] }\n\
         routes:\n\
         \x20 - { path: /a, upstream: missing }\n\
         \x20 - { path: b, upstream: api }\n",
    );
    let fields: Vec<&str> = errs
        .iter()
        .map(|e| e.split(": ").next().expect("field"))
        .collect();
    for f in [
        "listen",
        "admin.listen",
        "cache.ttl",
        "cache.max_entries",
        "keys.prefix",
        "log.format",
        "upstreams.api.targets",
        "routes[0].upstream",
        "routes[1].path",
    ] {
        assert!(fields.contains(&f), "no error for `{f}` in {errs:?}");
    }
    assert_eq!(errs.len(), 9, "{errs:?}");
    // The Display lists them all, one per line.
    let shown = parse("listen: nowhere\ncache: { ttl: 30x }\n")
        .expect_err("invalid")
        .to_string();
    assert!(
        shown.contains("listen: ") && shown.contains("cache.ttl: "),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 3, "{shown}");
}

#[test]
fn unknown_fields_are_refused_with_their_path_and_every_other_error() {
    let one = |yaml: &str, field: &str| one_error(yaml, field);
    let msg = one("listn: 127.0.0.1:1\n", "listn");
    assert!(msg.contains("unknown field `listn`"), "{msg}");
    one(
        &with_routes(&["{ path: /v1, upstream: api, auht: none }"]),
        "routes[0].auht",
    );
    // The typo, and what it leaves missing: both named.
    let errs = errors(&with_routes(&[
        "{ path: /v1, upstream: api, workspace: { heder: x-ws } }",
    ]));
    assert_eq!(
        errs,
        [
            "routes[0].workspace.heder: unknown field `heder`",
            "routes[0].workspace: needs exactly one of `header` or `path_segment` (1-based)"
        ]
    );
    one(
        "upstreams:\n  api: { targets: [\"http://a:1\"], timout: 1s }\n",
        "upstreams.api.timout",
    );
    // A typo no longer hides the rest of the file's errors (issue 17 item 5).
    let errs = errors(
        &(with_routes(&["{ path: /v1, upstream: gone, auht: none }"])
            + "listn: 127.0.0.1:1\ncache: { ttl: 0s }\n"),
    );
    for field in ["listn", "routes[0].auht", "routes[0].upstream", "cache.ttl"] {
        assert!(
            errs.iter().any(|e| e.starts_with(&format!("{field}: "))),
            "{field}: {errs:?}"
        );
    }
    // A wrong type still stops the parse, with its path.
    match parse("cache: { max_entries: many }\n") {
        Err(ConfigError::Field { path, .. }) => assert_eq!(path, "cache.max_entries"),
        other => panic!("{other:?}"),
    }
    // Malformed YAML is its own error.
    assert!(matches!(parse("a: [1\n"), Err(ConfigError::Yaml(_))));
}

#[test]
fn env_substitution() {
    let env = |name: &str| match name {
        "LISTEN" => Some("127.0.0.1:7000".to_owned()),
        "HOST" => Some("10.0.0.1".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    let c = Config::from_yaml(
        "listen: ${LISTEN}\nkeys: { prefix: \"kg${EMPTY}\" }\n\
         upstreams:\n  api: { targets: [\"http://${HOST}:80${EMPTY}\"] }\n",
        &env,
    )
    .expect("valid");
    assert_eq!(
        c.listen,
        "127.0.0.1:7000".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(c.keys.prefix, "kg");
    assert_eq!(c.upstreams[0].targets[0].host(), Some("10.0.0.1"));

    match Config::from_yaml(
        "upstreams:\n  api: { targets: [\"http://${NOPE}:1\"] }\n",
        &env,
    ) {
        Err(ConfigError::Field { path, message }) => {
            assert_eq!(path, "upstreams.api.targets[0]");
            assert!(message.contains("`NOPE`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Config::from_yaml("listen: ${LISTEN\n", &env),
        Err(ConfigError::Field { .. })
    ));
    // Numbers and booleans may come from the environment too.
    let env = |name: &str| match name {
        "WORKERS" => Some("4".to_owned()),
        "ENTRIES" => Some("2000".to_owned()),
        "FORWARD" => Some("true".to_owned()),
        "HEAD" => Some("65536".to_owned()),
        "BAD" => Some("four".to_owned()),
        _ => None,
    };
    let c = Config::from_yaml(
        // Block style takes `${VAR}` bare; in a flow mapping (`{ … }`) it must be quoted.
        "server:\n  workers: ${WORKERS}\n  max_header_bytes: \"${HEAD}\"\n\
         cache: { max_entries: \"${ENTRIES}\" }\nkeys: { forward_credential: \"${FORWARD}\" }\n",
        &env,
    )
    .expect("valid");
    assert_eq!(c.server.workers, Some(4));
    assert_eq!(c.server.max_header_bytes, 65536);
    assert_eq!(c.cache.max_entries, 2000);
    assert!(c.keys.forward_credential);
    match Config::from_yaml("server: { workers: \"${BAD}\" }\n", &env) {
        Err(ConfigError::Field { path, message }) => {
            assert_eq!(path, "server.workers");
            assert!(message.contains("`four`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Written directly, they are as before.
    let c = valid("server: { workers: 2 }\nkeys: { forward_credential: false }\n");
    assert_eq!(c.server.workers, Some(2));
    assert!(!c.keys.forward_credential);

    // A substituted value is data, never YAML.
    let inject = |_: &str| Some("1\nlistn: x".to_owned());
    let e = Config::from_yaml("log: { level: \"${X}\" }\n", &inject).expect("valid");
    assert_eq!(e.log.level, "1\nlistn: x");
}

#[test]
fn route_paths_are_normalized_prefixes() {
    let c = valid(&with_routes(&[
        "{ path: /v1/models/, upstream: api }",
        "{ path: /, upstream: api }",
        "{ path: /v1/models, upstream: api }",
    ]));
    assert_eq!(c.routes[0].path, "/v1/models");
    assert_eq!(c.routes[1].path, "/");
    assert_eq!(c.routes[2].path, "/v1/models");

    for bad in [
        "/v1/../x",
        "/../x",
        "/v1/./x",
        "/v1//models",
        "v1/models",
        "",
        "/v1/%2F",
        "/v1;x",
    ] {
        let yaml = with_routes(&[&format!("{{ path: \"{bad}\", upstream: api }}")]);
        one_error(&yaml, "routes[0].path");
    }
    let e = one_error(
        &with_routes(&["{ path: /v1/../x, upstream: api }"]),
        "routes[0].path",
    );
    assert!(e.contains("`/x`"), "suggests the normalized form: {e}");
}

#[test]
fn auth_none_routes_take_no_permissions_or_workspace() {
    let c = valid(&with_routes(&[
        "{ path: /health, upstream: api, auth: none }",
    ]));
    assert!(!c.routes[0].auth);
    one_error(
        &with_routes(&["{ path: /h, upstream: api, auth: none, permissions: [models:read] }"]),
        "routes[0]",
    );
    one_error(
        &with_routes(&["{ path: /h, upstream: api, auth: none, workspace: { header: x-ws } }"]),
        "routes[0]",
    );
    one_error(
        &with_routes(&["{ path: /h, upstream: api, auth: nobody }"]),
        "routes[0].auth",
    );
    assert!(valid(&with_routes(&["{ path: /h, upstream: api, auth: key }"])).routes[0].auth);
}

#[test]
fn workspace_rule_needs_exactly_one_of_header_or_path_segment() {
    let c = valid(&with_routes(&[
        "{ path: /a, upstream: api, workspace: { header: X-Workspace-Id } }",
        "{ path: /b, upstream: api, workspace: { path_segment: 2 } }",
    ]));
    assert_eq!(
        c.routes[0].workspace,
        Some(WorkspaceRule::Header(HeaderName::from_static(
            "x-workspace-id"
        )))
    );
    assert_eq!(c.routes[1].workspace, Some(WorkspaceRule::PathSegment(2)));
    for bad in [
        "{ header: x-ws, path_segment: 2 }",
        "{}",
        "{ path_segment: 0 }",
        "{ path_segment: -1 }",
    ] {
        let yaml = with_routes(&[&format!("{{ path: /a, upstream: api, workspace: {bad} }}")]);
        one_error(&yaml, "routes[0].workspace");
    }
    one_error(
        &with_routes(&["{ path: /a, upstream: api, workspace: { header: \"bad header\" } }"]),
        "routes[0].workspace.header",
    );
}

#[test]
fn methods_are_uppercased_and_checked() {
    let c = valid(&with_routes(&[
        "{ path: /a, upstream: api, methods: [get, Post, DELETE] }",
    ]));
    assert_eq!(
        c.routes[0].methods,
        Some(vec![Method::GET, Method::POST, Method::DELETE])
    );
    one_error(
        &with_routes(&["{ path: /a, upstream: api, methods: [\"GE T\"] }"]),
        "routes[0].methods",
    );
}

#[test]
fn route_fields_are_canonical() {
    let c = valid(
        &(with_routes(&[
            "{ path: /a, host: API.Example.COM, upstream: api, permissions: [b, a, b] }",
        ])
        .replace("viewer: [models:read]", "viewer: [models:read], ab: [a, b]")),
    );
    assert_eq!(c.routes[0].host.as_deref(), Some("api.example.com"));
    assert_eq!(c.routes[0].permissions, vec!["a", "b"]);
    // A permission no role grants would refuse every key (issue 17 item 5).
    let msg = one_error(
        &with_routes(&["{ path: /a, upstream: api, permissions: [models:read, models:wrte] }"]),
        "routes[0].permissions",
    );
    assert!(msg.contains("`models:wrte` is granted by no role"), "{msg}");
    one_error(
        &with_routes(&["{ path: /a, upstream: nope }"]),
        "routes[0].upstream",
    );
}

#[test]
fn upstream_targets() {
    let c = valid("upstreams:\n  api: { targets: [\"http://a:1\", \"https://b.example:443/\"] }\n");
    assert_eq!(c.upstreams[0].targets.len(), 2);
    assert_eq!(c.upstreams[0].path, None);
    // A target's own path (issue 17): put in front of every forwarded path.
    let c = valid("upstreams:\n  api: { targets: [\"http://a:1/api/\", \"http://b:2/api\"] }\n");
    assert_eq!(c.upstreams[0].path.as_deref(), Some("/api"));
    for (bad, field) in [
        ("[]", "upstreams.api.targets"),
        ("[\"http://a:1/api/../x\"]", "upstreams.api.targets[0]"),
        ("[\"http://a:1//api\"]", "upstreams.api.targets[0]"),
        (
            "[\"http://a:1/api\", \"http://a:2/other\"]",
            "upstreams.api.targets",
        ),
        ("[\"http://a:1?x=1\"]", "upstreams.api.targets[0]"),
        ("[\"ftp://a:1\"]", "upstreams.api.targets[0]"),
        ("[\"a:1\"]", "upstreams.api.targets[0]"),
    ] {
        one_error(&format!("upstreams:\n  api: {{ targets: {bad} }}\n"), field);
    }
}

#[test]
fn keys_and_identity_settings() {
    let c = valid(
        "keys: { prefix: acme2, header: X-Api-Key, query_param: api_key, forward_credential: true }\n\
         identity_headers: { prefix: X_Corp- }\n",
    );
    assert_eq!(c.keys.prefix, "acme2");
    assert_eq!(c.keys.header, Some(HeaderName::from_static("x-api-key")));
    assert_eq!(c.keys.query_param.as_deref(), Some("api_key"));
    assert!(c.keys.forward_credential);
    assert_eq!(c.identity.prefix, "x-corp-");

    one_error("keys: { prefix: \"\" }", "keys.prefix");
    one_error("keys: { prefix: abcdefghijklmnopq }", "keys.prefix");
    one_error("keys: { header: Authorization }", "keys.header");
    one_error("keys: { query_param: \"a b\" }", "keys.query_param");
    one_error(
        "identity_headers: { prefix: \"x \" }",
        "identity_headers.prefix",
    );
}

#[test]
fn roles_are_checked() {
    let c = valid("roles: { editor: [models:write, models:read, models:read] }\n");
    let perms: Vec<&str> = c.roles["editor"].iter().map(String::as_str).collect();
    assert_eq!(perms, vec!["models:read", "models:write"]);
    one_error("roles: { empty: [] }", "roles.empty");
    one_error("roles: { viewer: [\"models read\"] }", "roles.viewer");
}

#[test]
fn store_kinds() {
    one_error("store: { kind: mongo }", "store.kind");
    one_error("store: { kind: embedded, url: \"redis://x\" }", "store.url");
    one_error("store: { kind: redis }", "store");
    one_error("store: { kind: redis, url: \"http://x\" }", "store.url");
    let c = valid("store: { kind: redis, cluster: [\"redis://a:7000\", \"redis://b:7000\"] }\n");
    match c.store {
        StoreConfig::Redis { urls, cluster } => {
            assert!(cluster);
            assert_eq!(urls.len(), 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn admin_tokens() {
    let sha = "ab".repeat(32);
    let c = valid(&format!(
        "admin: {{ tokens: [ {{ name: ops, sha256: \"{sha}\", orgs: [acme] }} ] }}\n"
    ));
    assert_eq!(c.admin.tokens[0].name, "ops");
    assert_eq!(c.admin.tokens[0].sha256, [0xab; 32]);
    assert_eq!(c.admin.tokens[0].orgs, Some(vec!["acme".to_owned()]));
    one_error(
        "admin: { tokens: [ { name: ops, sha256: abc } ] }",
        "admin.tokens[0].sha256",
    );
    one_error(
        &format!("admin: {{ tokens: [ {{ name: \" \", sha256: \"{sha}\" }} ] }}\n"),
        "admin.tokens[0].name",
    );
}

#[test]
fn server_limits() {
    one_error("server: { workers: 0 }", "server.workers");
    one_error(
        "server: { max_header_bytes: 1024 }",
        "server.max_header_bytes",
    );
    assert_eq!(valid("server: { workers: 3 }").server.workers, Some(3));
}

#[test]
fn names_that_would_break_metrics_labels_are_refused() {
    // Route and upstream names are written into /metrics as label values, unescaped.
    let e = one_error(
        &with_routes(&[r#"{ name: "a\"} 1\nkeygate_fake 9\n#", path: /a, upstream: api }"#]),
        "routes[0].name",
    );
    assert!(e.contains("control characters"), "{e}");
    one_error(
        &with_routes(&[r#"{ name: "back\\slash", path: /a, upstream: api }"#]),
        "routes[0].name",
    );
    one_error(
        "upstreams:\n  \"a\\\"b\": { targets: [\"http://127.0.0.1:9000\"] }\n",
        "upstreams.a\"b",
    );
    let c = valid(&with_routes(&[
        "{ name: models-v1.list:all, path: /a, upstream: api }",
    ]));
    assert_eq!(c.routes[0].name, "models-v1.list:all");
    // Without a name the path names the route: a long one is fine, a quote in it is not.
    let long = format!("/{}", "a".repeat(300));
    let c = valid(&with_routes(&[&format!(
        "{{ path: {long}, upstream: api }}"
    )]));
    assert_eq!(c.routes[0].name, long);
    one_error(
        &with_routes(&[r#"{ path: '/a"b', upstream: api }"#]),
        "routes[0].name",
    );
}

#[test]
fn routes_that_could_never_admit_a_request_are_refused() {
    one_error(
        &with_routes(&["{ path: /a, upstream: api, permissions: [\"models:read,admin\"] }"]),
        "routes[0].permissions",
    );
    one_error(
        &with_routes(&["{ path: /a, upstream: api, host: api.example.com:8080 }"]),
        "routes[0].host",
    );
    one_error(
        &with_routes(&["{ path: /a, upstream: api, methods: [] }"]),
        "routes[0].methods",
    );
    let c = valid(&with_routes(&[
        "{ path: /a, upstream: api, host: \"::1\", methods: [get] }",
    ]));
    assert_eq!(c.routes[0].host.as_deref(), Some("::1"));
}

#[test]
fn recoverable_keys_read_the_vault_key_from_the_environment() {
    const VAULT: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let with = |value: Option<&'static str>| {
        move |name: &str| {
            (name == "KEYGATE_VAULT_KEY")
                .then_some(value)
                .flatten()
                .map(str::to_owned)
        }
    };
    let on = format!("keys: {{ recoverable: true }}\n{UPSTREAM}");
    let off = format!("keys: {{ recoverable: false }}\n{UPSTREAM}");

    // Off (the default): no vault key, even when one is in the environment.
    assert!(valid(UPSTREAM).keys.vault.is_none());
    let c = Config::from_yaml(&off, &with(Some(VAULT))).expect("valid");
    assert!(c.keys.vault.is_none());

    let c = Config::from_yaml(&on, &with(Some(VAULT))).expect("valid");
    assert_eq!(c.keys.vault, Some(VaultKey::from_hex(VAULT).expect("key")));
    assert!(
        !format!("{c:?}").contains(VAULT),
        "Debug of the config shows the vault key"
    );

    // Missing, empty or malformed: refused, naming the field and the variable, never the value.
    for value in [None, Some(""), Some("not-hex"), Some(&VAULT[..62])] {
        match Config::from_yaml(&on, &with(value)) {
            Err(ConfigError::Invalid(errs)) => {
                assert_eq!(errs.len(), 1, "{errs:?}");
                assert!(errs[0].starts_with("keys.recoverable: "), "{errs:?}");
                assert!(errs[0].contains("KEYGATE_VAULT_KEY"), "{errs:?}");
                if let Some(v) = value.filter(|v| !v.is_empty()) {
                    assert!(!errs[0].contains(v), "the value is echoed: {errs:?}");
                }
            }
            other => panic!("{value:?} accepted or refused elsewhere: {other:?}"),
        }
    }
}

#[test]
fn limits_are_read_and_bad_ones_named() {
    let c = valid(
        &(with_routes(&["{ path: /v1, upstream: api, rate_limit: 10/m }"])
            + "limits: { default_rate_limit: 100/s, quota_batch: \"250\" }\n"),
    );
    assert_eq!(
        c.routes[0].rate_limit,
        Some(crate::limits::RateLimit {
            count: 10,
            window_ms: 60_000
        })
    );
    assert_eq!(c.limits.default_rate_limit.map(|l| l.count), Some(100));
    assert_eq!(c.limits.quota_batch, 250);
    assert_eq!(valid("").limits.quota_batch, 100);
    assert_eq!(valid("").limits.default_rate_limit, None);

    one_error(
        &with_routes(&["{ path: /v1, upstream: api, rate_limit: 10/fortnight }"]),
        "routes[0].rate_limit",
    );
    one_error(
        &with_routes(&["{ path: /p, upstream: api, auth: none, rate_limit: 1/s }"]),
        "routes[0].rate_limit",
    );
    one_error(
        "limits: { default_rate_limit: 0/s }\n",
        "limits.default_rate_limit",
    );
    one_error(
        "limits: { default_rate_limit: -5/m }\n",
        "limits.default_rate_limit",
    );
    one_error("limits: { quota_batch: 0 }\n", "limits.quota_batch");
    let unknown = parse("limits: { burst: 5 }\n").expect_err("an unknown field");
    assert!(unknown.to_string().contains("burst"), "{unknown}");
}
