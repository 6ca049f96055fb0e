//! Recoverable keys (SPEC §1, §5): with `keys.recoverable: true` and `KEYGATE_VAULT_KEY`,
//! a key's secret is kept sealed and can be shown again, audited, through the CLI
//! (`keys reveal`) and the admin API (`GET /v1/keys/{id}/secret`), within a limited
//! token's scope. Off, lost or wrong vault key: nothing is shown, nothing crashes.
//!
//! Every gateway and CLI here gets its vault key through its own environment
//! (`TestGateway::start_with_env`, `cli_env`), never the test process's.
mod support;
use http::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::admin::{assert_refused, assert_status, call, create, id, ops, secret, text};
use support::redis::RedisServer;
use support::*;

const VAULT: &str = "KEYGATE_VAULT_KEY";
const VAULT_A: &str = "3c8e1f4a9b2d7e6f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071";
const VAULT_B: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// The test config with recoverable keys on.
fn recoverable(yaml: String) -> String {
    let on = yaml.replace(
        "query_param: api_key }",
        "query_param: api_key, recoverable: true }",
    );
    assert_ne!(on, yaml, "the keys line of the test config changed");
    on
}

/// Replaces the top-level line of `yaml` that starts with `prefix`.
fn set_line(yaml: String, prefix: &str, line: &str) -> String {
    assert!(yaml.lines().any(|l| l.starts_with(prefix)), "no `{prefix}`");
    yaml.lines()
        .map(|l| if l.starts_with(prefix) { line } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

fn store_line(yaml: &str) -> String {
    yaml.lines()
        .find(|l| l.starts_with("store:"))
        .expect("a store line")
        .to_owned()
}

async fn audit(gw: &TestGateway, key: &Value) -> Value {
    let path = format!("/v1/audit?key={}", id(key));
    ops(gw, Method::GET, &path, None).await.json()
}

async fn on_with(vault: &str) -> TestGateway {
    TestGateway::start_with_env(recoverable, &[(VAULT, vault)]).await
}

/// Another gateway on `gw`'s store, its config edited by `edit` (recoverable on or off,
/// another vault key).
async fn beside(gw: &TestGateway, edit: fn(String) -> String, env: &[(&str, &str)]) -> TestGateway {
    let store = store_line(&std::fs::read_to_string(&gw.config_path).expect("config"));
    TestGateway::start_with_env(move |y| edit(set_line(y, "store:", &store)), env).await
}

/// A config file beside `gw`'s, on the same store, with recoverable keys off.
fn config_off(gw: &TestGateway) -> PathBuf {
    let yaml = std::fs::read_to_string(&gw.config_path).expect("config");
    let off = yaml.replace(", recoverable: true", "");
    assert_ne!(off, yaml);
    let path = gw.dir.path().join("off.yaml");
    std::fs::write(&path, off).expect("write config");
    path
}

fn reveal(gw: &TestGateway, id: &str) -> CliOutput {
    gw.cli(&["keys", "reveal", id])
}

/// Everything a command printed, for "no secret in it" checks.
fn printed(out: &CliOutput) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
}

fn actions(events: &Value) -> Vec<(String, String)> {
    events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_owned(),
                e["actor"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn reveals(events: &Value) -> Vec<String> {
    actions(events)
        .into_iter()
        .filter(|(a, _)| a == "reveal")
        .map(|(_, actor)| actor)
        .collect()
}

#[tokio::test]
async fn cli_reveal_gives_back_the_secret_which_works_and_is_audited() {
    let gw = on_with(VAULT_A).await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);

    let out = reveal(&gw, &id);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json, json!({ "id": id, "key": key }));
    assert_eq!(admin::proxy(&gw, &key).await, (200, String::new()));

    let audit = gw.cli(&["audit", "--key", &id]);
    assert!(audit.ok, "{}", audit.stderr);
    assert_eq!(reveals(&audit.json), ["cli"]);
    assert!(
        !audit.stdout.contains(&key),
        "the audit never holds the secret"
    );

    // Nothing else ever shows the secret or its sealed form.
    for shown in [
        gw.cli(&["keys", "show", &id]).stdout,
        gw.cli(&["keys", "list"]).stdout,
        text(&ops(&gw, Method::GET, &format!("/v1/keys/{id}"), None).await),
        text(&ops(&gw, Method::GET, "/v1/keys", None).await),
    ] {
        assert!(shown.contains(&id), "{shown}");
        assert!(!shown.contains(&key), "{shown}");
        assert!(
            !shown.contains("sealed") && !shown.contains("v1:"),
            "{shown}"
        );
    }

    // Rotation seals the new secret for the new id; the old key keeps its own.
    let out = gw.cli(&["keys", "rotate", &id, "--grace", "1h"]);
    assert!(out.ok, "{}", out.stderr);
    let (new_id, new_key) = (
        out.json["id"].as_str().expect("id").to_owned(),
        out.json["key"].as_str().expect("key").to_owned(),
    );
    assert_eq!(reveal(&gw, &new_id).json["key"], new_key.as_str());
    assert_eq!(reveal(&gw, &id).json["key"], key.as_str());
    // A revoked key's secret can still be shown (it admits nothing any more).
    assert!(gw.cli(&["keys", "revoke", &id]).ok);
    assert_eq!(reveal(&gw, &id).json["key"], key.as_str());

    let out = reveal(&gw, "key_doesnotexist");
    assert!(!out.ok);
    assert!(out.stderr.contains("no key with id"), "{}", out.stderr);
    gw.stop().await;
}

#[tokio::test]
async fn api_reveal_is_scoped_audited_and_not_cached() {
    let gw = on_with(VAULT_A).await;
    let ws_key = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "workspaces": ["team-a"], "roles": ["viewer"] }),
    )
    .await;
    let org_key = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;
    let globex = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "globex", "roles": ["viewer"] }),
    )
    .await;
    let path = |k: &Value| format!("/v1/keys/{}/secret", id(k));

    let r = ops(&gw, Method::GET, &path(&ws_key), None).await;
    assert_status(&r, 200);
    assert_eq!(
        r.json(),
        json!({ "id": id(&ws_key), "key": secret(&ws_key) })
    );
    assert_eq!(r.headers["cache-control"], "no-store");
    let ok = admin::proxy(&gw, r.json()["key"].as_str().expect("key")).await;
    assert_eq!(ok, (200, String::new()));

    // A limited token: inside its scope the secret, outside 403 (and a `denied` event).
    let r = call(&gw, Method::GET, &path(&ws_key), TEAM_A_TOKEN, None).await;
    assert_status(&r, 200);
    assert_eq!(r.json()["key"], secret(&ws_key).as_str());
    let r = call(&gw, Method::GET, &path(&org_key), TEAM_A_TOKEN, None).await;
    assert_refused(&r, 403, "outside_token_scope");
    assert!(!text(&r).contains(&secret(&org_key)));
    let r = call(&gw, Method::GET, &path(&globex), ACME_TOKEN, None).await;
    assert_refused(&r, 403, "outside_token_scope");
    let r = call(&gw, Method::GET, &path(&org_key), ACME_TOKEN, None).await;
    assert_status(&r, 200);
    assert_eq!(r.json()["key"], secret(&org_key).as_str());

    let r = ops(&gw, Method::GET, "/v1/keys/key_doesnotexist/secret", None).await;
    assert_refused(&r, 404, "not_found");
    // An API key never reads secrets, not even its own.
    let r = call(&gw, Method::GET, &path(&ws_key), &secret(&ws_key), None).await;
    assert_refused(&r, 403, "api_key_not_allowed");

    assert_eq!(
        reveals(&audit(&gw, &ws_key).await),
        ["team-a-editor", "ops"]
    );
    assert_eq!(reveals(&audit(&gw, &org_key).await), ["acme-owner"]);
    let org_actions = actions(&audit(&gw, &org_key).await);
    assert_eq!(org_actions[1], ("denied".into(), "team-a-editor".into()));
    assert!(reveals(&audit(&gw, &globex).await).is_empty());

    // Rotation through the API: the new secret is revealable under the new id.
    let r = ops(
        &gw,
        Method::POST,
        &format!("/v1/keys/{}/rotate", id(&org_key)),
        None,
    )
    .await;
    assert_status(&r, 201);
    let rotated = r.json();
    let r = ops(&gw, Method::GET, &path(&rotated), None).await;
    assert_eq!(r.json()["key"], secret(&rotated).as_str());
    gw.stop().await;
}

#[tokio::test]
async fn recoverable_off_hides_every_secret_and_keys_made_while_off_have_none() {
    let gw = on_with(VAULT_A).await;
    let (sealed_id, sealed_key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);

    // The same store with recoverable keys off: nothing can be shown.
    let off = config_off(&gw);
    let out = cli(&off, &["keys", "reveal", &sealed_id]);
    assert!(!out.ok);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("recoverable keys are off"),
        "{}",
        out.stderr
    );
    assert!(!printed(&out).contains(&sealed_key));
    // Even with a vault key in the environment: `keys.recoverable` decides.
    let out = cli_env(&off, &["keys", "reveal", &sealed_id], &[(VAULT, VAULT_A)]);
    assert!(
        !out.ok && out.stderr.contains("recoverable keys are off"),
        "{}",
        out.stderr
    );

    let gw_off = beside(&gw, |y| y, &[(VAULT, VAULT_A)]).await;
    let r = ops(
        &gw_off,
        Method::GET,
        &format!("/v1/keys/{sealed_id}/secret"),
        None,
    )
    .await;
    assert_refused(&r, 404, "not_found");
    assert!(
        text(&r).contains("recoverable keys are off"),
        "{}",
        text(&r)
    );
    assert!(!text(&r).contains(&sealed_key));

    // A key made while off has no secret kept: turning recoverable on does not help.
    let out = cli(
        &off,
        &["keys", "create", "--org", "acme", "--role", "viewer"],
    );
    assert!(out.ok, "{}", out.stderr);
    let plain_id = out.json["id"].as_str().expect("id").to_owned();
    let plain_key = out.json["key"].as_str().expect("key").to_owned();
    let out = reveal(&gw, &plain_id);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("created while recoverable keys were off"),
        "{}",
        out.stderr
    );
    assert!(!printed(&out).contains(&plain_key));
    let r = ops(
        &gw,
        Method::GET,
        &format!("/v1/keys/{plain_id}/secret"),
        None,
    )
    .await;
    assert_refused(&r, 404, "not_found");
    assert!(
        text(&r).contains("created while recoverable keys were off"),
        "{}",
        text(&r)
    );

    // Back on, the sealed key is revealable again; nothing was audited meanwhile.
    assert_eq!(reveal(&gw, &sealed_id).json["key"], sealed_key.as_str());
    let audit = gw.cli(&["audit", "--key", &sealed_id]);
    assert_eq!(reveals(&audit.json), ["cli"]);
    gw_off.stop().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_wrong_vault_key_is_a_clear_error_and_shows_nothing() {
    let gw = on_with(VAULT_A).await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);

    let out = cli_env(
        &gw.config_path,
        &["keys", "reveal", &id],
        &[(VAULT, VAULT_B)],
    );
    assert!(!out.ok);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .contains("KEYGATE_VAULT_KEY is not the vault key that sealed it"),
        "{}",
        out.stderr
    );
    for s in [key.as_str(), VAULT_A, VAULT_B] {
        assert!(!printed(&out).contains(s), "{}", printed(&out));
    }

    let gw_b = beside(&gw, recoverable, &[(VAULT, VAULT_B)]).await;
    let r = ops(&gw_b, Method::GET, &format!("/v1/keys/{id}/secret"), None).await;
    assert_refused(&r, 500, "vault_error");
    assert!(text(&r).contains("KEYGATE_VAULT_KEY"), "{}", text(&r));
    for s in [key.as_str(), VAULT_A, VAULT_B] {
        assert!(!text(&r).contains(s), "{}", text(&r));
    }
    // Nothing crashed: the admin API and the proxy go on serving, and nothing was audited.
    assert_status(&ops(&gw_b, Method::GET, "/v1/keys", None).await, 200);
    assert_eq!(admin::proxy(&gw_b, &key).await, (200, String::new()));
    assert!(reveals(&gw.cli(&["audit", "--key", &id]).json).is_empty());
    gw_b.stop().await;
    gw.stop().await;
}

/// Runs `keygate serve` with `env` and waits for it to exit (it must: a bad config stops
/// it before any port is bound); killed and failed if it is still running after a while.
fn serve_exit(config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env_remove("KEYGATE_CONFIG")
        .env_remove(VAULT)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn keygate serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err).expect("stderr");
            }
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keygate serve kept running with a bad vault key");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_missing_or_malformed_vault_key_stops_check_config_and_serve() {
    let gw = on_with(VAULT_A).await;
    let config = &gw.config_path;
    let out = cli_env(config, &["check-config"], &[(VAULT, VAULT_A)]);
    assert!(out.ok, "{}", out.stderr);

    let malformed = "not-a-vault-key-but-a-secret-all-the-same-0123456789abcdefABCDEF";
    for env in [
        vec![],
        vec![(VAULT, "")],
        vec![(VAULT, malformed)],
        vec![(VAULT, &VAULT_A[..60])],
    ] {
        let out = cli_env(config, &["check-config"], &env);
        assert_eq!(out.code, Some(1), "{env:?}: {}", out.stderr);
        assert!(out.stderr.contains("KEYGATE_VAULT_KEY"), "{}", out.stderr);
        assert!(out.stderr.contains("keys.recoverable"), "{}", out.stderr);
        let (code, err) = serve_exit(config, &env);
        assert_eq!(code, Some(78), "{env:?}: {err}");
        assert!(err.contains("KEYGATE_VAULT_KEY"), "{err}");
        // Management commands read the same config and refuse the same way.
        let out = cli_env(config, &["keys", "list"], &env);
        assert!(
            !out.ok && out.stderr.contains("KEYGATE_VAULT_KEY"),
            "{}",
            out.stderr
        );
        for (_, value) in env.iter().filter(|(_, v)| !v.is_empty()) {
            assert!(
                !out.stderr.contains(value) && !err.contains(value),
                "the value is echoed"
            );
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn sealed_secrets_travel_with_an_export_and_a_malformed_one_is_refused() {
    let from = on_with(VAULT_A).await;
    let (id, key) = from.create_key(&["--org", "acme", "--role", "viewer"]);
    let file = from.dir.path().join("export.jsonl");
    let file_arg = file.to_str().expect("utf-8 path");
    let out = from.cli(&["keys", "export", "--out", file_arg]);
    assert!(out.ok, "{}", out.stderr);
    let export = std::fs::read_to_string(&file).expect("export");
    assert!(export.contains("\"sealed_secret\":\"v1:"), "{export}");
    assert!(
        !export.contains(&key),
        "an export never holds a secret in clear"
    );

    // A malformed sealed secret is refused whole, like any bad line.
    let to = on_with(VAULT_A).await;
    for bad in ["kg_notsealed", "v1:zz", "v1:00ff"] {
        let edited: Vec<String> = export
            .lines()
            .map(|line| {
                let mut v: Value = serde_json::from_str(line).expect("a JSON line");
                if v["kind"] == "key" {
                    v["sealed_secret"] = json!(bad);
                }
                v.to_string()
            })
            .collect();
        let bad_file = to.dir.path().join("bad.jsonl");
        std::fs::write(&bad_file, edited.join("\n")).expect("write");
        let out = to.cli(&[
            "keys",
            "import",
            "--in",
            bad_file.to_str().expect("utf-8 path"),
        ]);
        assert!(!out.ok, "{bad} imported: {}", out.stdout);
        assert!(out.stderr.contains("sealed_secret"), "{}", out.stderr);
        assert!(!reveal(&to, &id).ok, "nothing was written");
    }

    // The same vault key on the other side: the key stays recoverable.
    let out = to.cli(&["keys", "import", "--in", file_arg]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(reveal(&to, &id).json["key"], key.as_str());
    assert_eq!(admin::proxy(&to, &key).await, (200, String::new()));
    from.stop().await;
    to.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reveal_round_trip_on_redis() {
    let redis = RedisServer::start();
    let store = format!("store: {{ kind: redis, url: \"{}\" }}", redis.url());
    let gw = TestGateway::start_with_env(
        move |y| recoverable(set_line(y, "store:", &store)),
        &[(VAULT, VAULT_A)],
    )
    .await;
    let (cli_id, cli_key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let api_key = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;

    let out = reveal(&gw, &id(&api_key));
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json["key"], secret(&api_key).as_str());
    let r = ops(&gw, Method::GET, &format!("/v1/keys/{cli_id}/secret"), None).await;
    assert_status(&r, 200);
    assert_eq!(r.json()["key"], cli_key.as_str());
    for k in [&cli_key, &secret(&api_key)] {
        assert_eq!(admin::proxy(&gw, k).await, (200, String::new()));
    }
    let audit = ops(&gw, Method::GET, &format!("/v1/audit?key={cli_id}"), None).await;
    assert_eq!(reveals(&audit.json()), ["ops"]);

    let out = cli_env(
        &gw.config_path,
        &["keys", "reveal", &cli_id],
        &[(VAULT, VAULT_B)],
    );
    assert!(
        !out.ok && out.stderr.contains("KEYGATE_VAULT_KEY"),
        "{}",
        out.stderr
    );
    assert!(!printed(&out).contains(&cli_key));
    gw.stop().await;
}
