//! `keygate check-config` and `serve` on config files (SPEC §3): valid files pass, and
//! every kind of mistake stops the binary with a message naming the field.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A small valid config that the cases below break one way each.
const VALID: &str = r#"
listen: 127.0.0.1:8080
store: { kind: embedded, path: data/keygate.db }
cache: { ttl: 30s, negative_ttl: 5s }
roles:
  viewer: [models:read]
upstreams:
  api: { targets: ["http://127.0.0.1:9000"], connect_timeout: 2s, timeout: 30s }
routes:
  - { path: /v1/models, methods: [GET], upstream: api, permissions: [models:read] }
  - { path: /health, upstream: api, auth: none }
"#;

fn keygate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keygate"));
    c.env_remove("KEYGATE_CONFIG")
        .env_remove("KEYGATE_TEST_UNSET_VAR")
        .env_remove("RUST_LOG");
    c
}

fn write(dir: &Path, yaml: &str) -> PathBuf {
    let p = dir.join("keygate.yaml");
    std::fs::write(&p, yaml).expect("write config");
    p
}

fn check_config(yaml: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), yaml);
    let mut c = keygate();
    c.arg("--config").arg(&path).arg("check-config");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run keygate")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_valid(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
}

/// Exit 1 and a message naming every one of `names`.
#[track_caller]
fn assert_invalid(yaml: &str, names: &[&str]) {
    let o = check_config(yaml, &[]);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "config accepted:\n{yaml}\nstderr: {err}"
    );
    for n in names {
        assert!(err.contains(n), "stderr does not name `{n}`: {err}");
    }
}

#[test]
fn the_repos_example_config_is_valid() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/keygate.yaml"))
            .expect("config/keygate.yaml");
    let o = check_config(&text, &[]);
    assert_valid(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok"), "{:?}", o);
}

#[test]
fn the_demo_config_is_valid_once_its_variables_are_set() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.yaml"))
            .expect("config/demo.yaml");
    let env = [
        ("KEYGATE_DEMO_LISTEN", "127.0.0.1:18080"),
        ("KEYGATE_DEMO_DB", "/tmp/keygate-demo-test.db"),
        ("KEYGATE_DEMO_UPSTREAM", "http://127.0.0.1:19000"),
        ("KEYGATE_DEMO_ADMIN_LISTEN", "127.0.0.1:18081"),
        (
            "KEYGATE_DEMO_ADMIN_SHA256",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ),
    ];
    assert_valid(&check_config(&text, &env));
    // Unset, the first one read is named.
    let o = check_config(&text, &env[1..]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("KEYGATE_DEMO_LISTEN"), "{}", stderr(&o));
}

#[test]
fn the_small_valid_config_is_valid_and_json_says_so() {
    assert_valid(&check_config(VALID, &[]));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), VALID);
    let o = keygate()
        .arg("--config")
        .arg(&path)
        .args(["check-config", "--json"])
        .output()
        .expect("run keygate");
    assert_valid(&o);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    assert_eq!(doc["valid"], true);
}

#[test]
fn config_is_accepted_after_the_subcommand_and_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), VALID);
    let o = keygate()
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run keygate");
    assert_valid(&o);
    let o = keygate()
        .arg("check-config")
        .env("KEYGATE_CONFIG", &path)
        .output()
        .expect("run keygate");
    assert_valid(&o);
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope.yaml");
    let o = keygate()
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .expect("run keygate");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nope.yaml"), "{}", stderr(&o));
}

#[test]
fn unknown_top_level_field() {
    assert_invalid(
        &format!("{VALID}listn: 127.0.0.1:8080\n"),
        &["listn: unknown field `listn`"],
    );
}

#[test]
fn unknown_nested_field_names_its_path() {
    let yaml = VALID.replace("auth: none", "auht: none");
    // The path ends with the unknown key itself; every unknown field is listed at once,
    // with the file's other errors (issue 17 item 5).
    assert_invalid(&yaml, &["routes[1].auht: unknown field `auht`"]);
    let yaml = VALID
        .replace("ttl: 30s,", "ttl: 30s, tll: 5s,")
        .replace("kind: embedded,", "kind: embedded, paht: x,")
        .replace("listen: 127.0.0.1:8080", "listen: nowhere");
    assert_invalid(
        &yaml,
        &[
            "cache.tll: unknown field",
            "store.paht: unknown field",
            "listen:",
        ],
    );
}

#[test]
fn bad_duration() {
    assert_invalid(
        &VALID.replace("ttl: 30s", "ttl: 30x"),
        &["cache.ttl", "30x"],
    );
    assert_invalid(
        &VALID.replace("connect_timeout: 2s", "connect_timeout: 2"),
        &["upstreams.api.connect_timeout"],
    );
}

#[test]
fn route_naming_a_missing_upstream() {
    let yaml = VALID.replace(
        "methods: [GET], upstream: api",
        "methods: [GET], upstream: apii",
    );
    assert_invalid(&yaml, &["routes[0].upstream", "apii"]);
}

#[test]
fn bad_listen_address() {
    assert_invalid(
        &VALID.replace("listen: 127.0.0.1:8080", "listen: localhost:http"),
        &["listen", "localhost:http"],
    );
}

#[test]
fn empty_targets() {
    let yaml = VALID.replace(r#"targets: ["http://127.0.0.1:9000"]"#, "targets: []");
    assert_invalid(&yaml, &["upstreams.api.targets"]);
}

#[test]
fn target_with_a_path_that_is_not_normalized() {
    // A normalized path is the upstream's own (issue 17, tests/path_rewrite.rs).
    let yaml = VALID.replace("http://127.0.0.1:9000", "http://127.0.0.1:9000/api/./../x");
    assert_invalid(&yaml, &["upstreams.api.targets[0]", "/api/./../x"]);
    let yaml = VALID.replace("http://127.0.0.1:9000", "ftp://127.0.0.1:9000");
    assert_invalid(&yaml, &["upstreams.api.targets[0]"]);
}

#[test]
fn malformed_yaml() {
    assert_invalid(
        &format!("{VALID}routes: [ {{ path: /x\n"),
        &["YAML", "line"],
    );
    assert_invalid("listen: [127.0.0.1:8080\n", &["YAML"]);
}

#[test]
fn every_error_is_reported_at_once() {
    let yaml = VALID
        .replace("ttl: 30s", "ttl: 30x")
        .replace("listen: 127.0.0.1:8080", "listen: nowhere")
        .replace("upstream: api, auth", "upstream: gone, auth");
    assert_invalid(&yaml, &["cache.ttl", "listen", "routes[1].upstream"]);
}

#[test]
fn unset_variable_is_named() {
    let yaml = VALID.replace(
        "listen: 127.0.0.1:8080",
        "listen: ${KEYGATE_TEST_UNSET_VAR}",
    );
    assert_invalid(&yaml, &["KEYGATE_TEST_UNSET_VAR", "`listen`"]);
    let yaml = VALID.replace("http://127.0.0.1:9000", "${KEYGATE_TEST_UNSET_VAR}");
    assert_invalid(
        &yaml,
        &["KEYGATE_TEST_UNSET_VAR", "upstreams.api.targets[0]"],
    );
}

#[test]
fn variables_are_substituted_when_set() {
    let yaml = VALID
        .replace("listen: 127.0.0.1:8080", "listen: ${KG_TEST_LISTEN}")
        .replace("http://127.0.0.1:9000", "http://${KG_TEST_HOST}:9000");
    assert_valid(&check_config(
        &yaml,
        &[
            ("KG_TEST_LISTEN", "127.0.0.1:9999"),
            ("KG_TEST_HOST", "10.0.0.7"),
        ],
    ));
    // The value is what gets validated.
    let o = check_config(
        &yaml,
        &[
            ("KG_TEST_LISTEN", "not-an-address"),
            ("KG_TEST_HOST", "10.0.0.7"),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not-an-address"), "{}", stderr(&o));
    // A `${VAR}` in a comment is not required.
    let yaml = format!("# listen: ${{KEYGATE_TEST_UNSET_VAR}}\n{VALID}");
    assert_valid(&check_config(&yaml, &[]));
}

#[test]
fn serve_with_an_invalid_config_exits_78_without_serving() {
    // The port is held here: a server that bound before validating would fail with a
    // bind error (exit 1), not with EX_CONFIG.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = VALID
        .replace("listen: 127.0.0.1:8080", &format!("listen: {addr}"))
        .replace("ttl: 30s", "ttl: 30x")
        .replace(
            "path: data/keygate.db",
            &format!("path: {}", dir.path().join("keygate.db").display()),
        );
    let path = write(dir.path(), &yaml);
    let mut child = keygate()
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keygate serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve with an invalid config did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    assert_eq!(status.code(), Some(78), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("cache.ttl"), "{}", stderr(&out));
    // The store was not opened either.
    assert!(!dir.path().join("keygate.db").exists());
    drop(held);
}

/// The container image's config (issue 17 item 8): valid once `KEYGATE_UPSTREAM` is set
/// (the image sets it), both listeners on every interface; the compose fleet's too.
#[test]
fn the_container_configs_are_valid_and_listen_on_every_interface() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let env = [("KEYGATE_UPSTREAM", "http://127.0.0.1:9000")];
    for file in ["config/container.yaml", "docs/compose-keygate.yaml"] {
        let text = std::fs::read_to_string(root.join(file)).expect(file);
        assert_valid(&check_config(&text, &env));
        let o = check_config(&text, &[]);
        assert_eq!(o.status.code(), Some(1), "{file}");
        assert!(
            stderr(&o).contains("KEYGATE_UPSTREAM"),
            "{file}: {}",
            stderr(&o)
        );
        let lookup = |name: &str| (name == "KEYGATE_UPSTREAM").then(|| env[0].1.to_owned());
        let c = keygate::config::Config::from_yaml(&text, &lookup).expect(file);
        assert!(
            c.listen.ip().is_unspecified() && c.listen.port() == 8080,
            "{file}"
        );
        assert!(
            c.admin.listen.ip().is_unspecified() && c.admin.listen.port() == 8081,
            "{file}"
        );
    }
}

/// The Dockerfile copies what the build reads (every `include_str!` of `src/`), exposes
/// both ports, keeps the key store in a volume and checks `/healthz`. (No image is built
/// in the test suite: that needs a Docker daemon and the image registry.)
#[test]
fn the_dockerfile_copies_what_the_build_reads_and_declares_the_container() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let mut included = std::collections::BTreeSet::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for part in text.split("include_str!(\"").skip(1) {
                let rel = part.split('"').next().unwrap_or("");
                let target = path.parent().expect("a dir").join(rel);
                let target = target.canonicalize().expect("an included file");
                let top = target
                    .strip_prefix(root.canonicalize().expect("root"))
                    .expect("inside the repository")
                    .components()
                    .next()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .expect("a top directory");
                included.insert(top);
            }
        }
    }
    assert!(
        included.contains("docs") && included.contains("config"),
        "{included:?}"
    );
    for top in &included {
        assert!(
            dockerfile.contains(&format!("COPY {top} ./{top}")),
            "the build reads {top}/ but the Dockerfile does not copy it"
        );
    }
    for line in [
        "EXPOSE 8080 8081",
        "VOLUME [\"/var/lib/keygate\"]",
        "http://127.0.0.1:8081/healthz",
        "COPY config/container.yaml /etc/keygate/keygate.yaml",
    ] {
        assert!(dockerfile.contains(line), "Dockerfile lacks `{line}`");
    }
}
