//! Hints (SPEC §1): every key keeps `<prefix>_…` and its secret's last 4 characters, so
//! people can tell keys apart; lists, `show`, the admin API and exports carry it. Keys
//! made before hints existed have none (`null`), and nothing else about them changes.

mod support;

use http::Method;
use serde_json::{json, Value};
use support::admin::*;
use support::*;

fn hint_of(secret: &str) -> String {
    format!("kg_…{}", &secret[secret.len() - 4..])
}

fn hint(v: &Value) -> &Value {
    &v["hint"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_face_of_a_key_shows_its_hint_and_never_more() {
    let gw = TestGateway::start().await;
    let (id, secret) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let want = json!(hint_of(&secret));
    assert!(contains_secret_shape(&secret) && !contains_secret_shape(&hint_of(&secret)));
    let api = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;
    assert_eq!(hint(&api), &json!(hint_of(&secret_of(&api))));

    assert_eq!(hint(&gw.cli(&["keys", "show", &id]).json), &want);
    let listed = gw.cli(&["keys", "list"]).json;
    let mine = listed["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["id"] == id.as_str())
        .expect("listed");
    assert_eq!(hint(mine), &want);
    let r = ops(&gw, Method::GET, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(hint(&r.json()), &want);
    let text = support::cli_text(&gw.config_path, &["keys", "show", &id]);
    assert!(text.contains(want.as_str().expect("hint")), "{text}");
    assert!(
        !text.contains(&secret[3..secret.len() - 4]),
        "no more of the secret"
    );

    // A rotation's new key has its own hint.
    let r = ops(
        &gw,
        Method::POST,
        &format!("/v1/keys/{id}/rotate"),
        Some(json!({})),
    )
    .await;
    assert_status(&r, 201);
    let rotated = r.json();
    assert_eq!(hint(&rotated), &json!(hint_of(&secret_of(&rotated))));
    assert_eq!(hint(&rotated["rotated_from"]), &want);

    // Exports carry it.
    let export_path = gw.dir.path().join("keys.jsonl");
    let out = gw.cli(&[
        "keys",
        "export",
        "--out",
        export_path.to_str().expect("utf-8"),
    ]);
    assert!(out.ok, "{}", out.stderr);
    let export = std::fs::read_to_string(&export_path).expect("export");
    let line: Value = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json line"))
        .find(|l| l["id"] == id.as_str())
        .expect("exported");
    assert_eq!(hint(&line), &want);
    gw.stop().await;
}

fn secret_of(v: &Value) -> String {
    v["key"].as_str().expect("secret").to_owned()
}

/// An export line as a keygate before hints wrote it (no `hint` field).
fn old_export_line(id: &str, sha256: &str) -> String {
    json!({
        "kind": "key", "id": id, "sha256": sha256, "name": "old key", "org": "acme",
        "workspaces": ["*"], "type": "service", "owner": null, "roles": ["viewer"],
        "inherit": false, "permissions": ["models:read"], "expires_at": null,
        "metadata": {}, "rate_limit": null, "state": "active",
        "created_at": 1_700_000_000_000_i64, "created_by": "cli", "last_used_at": null,
        "revoked_at": null, "rotated_to": null
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_from_before_hints_has_none_and_works() {
    let gw = TestGateway::start().await;
    let secret = well_formed_unknown_key();
    let id = "key_0ldKeyWithoutAHint";
    let file = gw.dir.path().join("old.jsonl");
    std::fs::write(&file, old_export_line(id, &sha256_hex(secret.as_bytes()))).expect("write");
    let out = gw.cli(&["keys", "import", "--in", file.to_str().expect("utf-8")]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json["keys_imported"], 1);

    let shown = gw.cli(&["keys", "show", id]).json;
    assert_eq!(hint(&shown), &Value::Null, "{shown}");
    let r = ops(&gw, Method::GET, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(hint(&r.json()), &Value::Null);
    let text = support::cli_text(&gw.config_path, &["keys", "show", id]);
    assert!(text.contains("(no hint)"), "{text}");
    assert_eq!(
        key_verdict(&gw, Method::GET, "/v1/models", &secret).await,
        (200, String::new())
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_with_a_hint_create_would_not_make_is_refused_whole() {
    let gw = TestGateway::start().await;
    let before = written(&gw).await;
    let good = old_export_line("key_g00dOne", &sha256_hex(b"one"));
    for bad_hint in ["kg_…abc", "kg_abcdefgh", "kg_…ab\u{7}d", "<b>_…abcd"] {
        let mut bad: Value =
            serde_json::from_str(&old_export_line("key_badHint", &sha256_hex(b"two")))
                .expect("json");
        bad["hint"] = json!(bad_hint);
        let file = gw.dir.path().join("bad.jsonl");
        std::fs::write(&file, format!("{good}\n{bad}\n")).expect("write");
        let out = gw.cli(&["keys", "import", "--in", file.to_str().expect("utf-8")]);
        assert!(!out.ok, "imported a hint `{bad_hint}`");
        assert!(
            out.stderr.contains("line 2") && out.stderr.contains("hint"),
            "{}",
            out.stderr
        );
    }
    assert_eq!(written(&gw).await, before, "nothing imported");
    gw.stop().await;
}
