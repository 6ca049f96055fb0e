//! `keys export` from one store, `keys import` into another: keys keep working (only
//! hashes move), states and owners come along, nothing is imported twice, and a bad file
//! writes nothing.
mod support;
use support::*;

#[tokio::test]
async fn exported_keys_work_on_the_store_they_are_imported_into() {
    let from = TestGateway::start().await;
    let (_, service_key) = from.create_key(&["--org", "acme", "--role", "viewer"]);
    let (revoked_id, revoked_key) = from.create_key(&["--org", "acme", "--role", "viewer"]);
    assert!(from.cli(&["keys", "revoke", &revoked_id]).ok);
    let (_, personal_key) =
        from.create_key(&["--org", "acme", "--role", "viewer", "--owner", "alice"]);
    assert!(from.cli(&["users", "remove", "--org", "acme", "alice"]).ok);

    let file = from.dir.path().join("export.jsonl");
    let out = from.cli(&[
        "keys",
        "export",
        "--out",
        file.to_str().expect("utf-8 path"),
    ]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json["exported_keys"], 3);
    assert_eq!(out.json["exported_users"], 1);
    let text = std::fs::read_to_string(&file).expect("export file");
    for secret in [&service_key, &revoked_key, &personal_key] {
        assert!(
            !text.contains(secret.as_str()),
            "an export never holds a secret"
        );
    }
    assert!(text.contains(&sha256_hex(service_key.as_bytes())));

    let to = TestGateway::start().await;
    let out = to.cli(&["keys", "import", "--in", file.to_str().expect("utf-8 path")]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json["keys_imported"], 3);
    assert_eq!(out.json["users_imported"], 1);

    let verdict = |key: String| {
        let url = to.url("/v1/models");
        async move { get(&url, &[("authorization", &bearer(&key))]).await }
    };
    assert_eq!(verdict(service_key.clone()).await.status, 200);
    assert_eq!(verdict(revoked_key.clone()).await.code(), "revoked_key");
    assert_eq!(verdict(personal_key.clone()).await.code(), "owner_removed");

    // Again: everything is already there, nothing changes.
    let again = to.cli(&["keys", "import", "--in", file.to_str().expect("utf-8 path")]);
    assert!(again.ok, "{}", again.stderr);
    assert_eq!(again.json["keys_imported"], 0);
    assert_eq!(again.json["keys_present"], 3);
    let audit = to.cli(&["audit", "--limit", "100"]);
    let imports = audit.json["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["action"] == "import")
        .count();
    assert_eq!(imports, 4, "3 keys and 1 user, each imported once");
    from.stop().await;
    to.stop().await;
}

#[tokio::test]
async fn a_bad_line_imports_nothing() {
    let gw = TestGateway::start().await;
    let file = gw.dir.path().join("bad.jsonl");
    let good =
        r#"{"kind":"user","org":"acme","user":"bob","removed":false,"roles":[],"permissions":[]}"#;
    std::fs::write(
        &file,
        format!("{good}\n{{\"kind\":\"key\",\"id\":\"key_x\"}}\n"),
    )
    .expect("write");
    let out = gw.cli(&["keys", "import", "--in", file.to_str().expect("utf-8 path")]);
    assert!(!out.ok);
    assert!(out.stderr.contains("line 2"), "{}", out.stderr);
    let audit = gw.cli(&["audit"]);
    assert_eq!(
        audit.json["events"].as_array().map(Vec::len),
        Some(0),
        "nothing written"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_export_is_checked_as_create_would_check_it() {
    let from = TestGateway::start().await;
    let (_, key) = from.create_key(&["--org", "acme", "--role", "viewer"]);
    let file = from.dir.path().join("export.jsonl");
    let path = file.to_str().expect("utf-8 path");
    assert!(from.cli(&["keys", "export", "--out", path]).ok);
    let line = std::fs::read_to_string(&file).expect("export file");
    let record: serde_json::Value = serde_json::from_str(line.trim()).expect("one key line");

    // Each tampered field alone: a permission holding a comma would pass for two in the
    // joined identity header, and the others are what `keys create` refuses.
    let to = TestGateway::start().await;
    let bad_user = r#"{"kind":"user","org":"acme","user":"bob eve","removed":false,"roles":[],"permissions":[]}"#;
    let cases: [(&str, serde_json::Value); 6] = [
        ("permissions", serde_json::json!(["models:read,admin:all"])),
        ("org", serde_json::json!("acme\r\nx-evil: 1")),
        ("workspaces", serde_json::json!(["a", "*"])),
        ("owner", serde_json::json!("bob")),
        ("roles", serde_json::json!([])),
        ("name", serde_json::json!("new\nline")),
    ];
    for (field, value) in cases {
        let mut tampered = record.clone();
        tampered[field] = value;
        std::fs::write(&file, format!("{tampered}\n")).expect("write");
        let out = to.cli(&["keys", "import", "--in", path]);
        assert!(!out.ok, "{field} accepted");
        assert!(
            out.stderr.contains("line 1") && out.stderr.contains(field),
            "{field}: {}",
            out.stderr
        );
    }
    std::fs::write(&file, format!("{bad_user}\n")).expect("write");
    let out = to.cli(&["keys", "import", "--in", path]);
    assert!(!out.ok && out.stderr.contains("user"), "{}", out.stderr);

    // Nothing came in: the key is unknown there.
    let r = get(&to.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
    assert_eq!(r.status, 401);
    from.stop().await;
    to.stop().await;
}

/// A suspended org stays suspended in the store its keys move to: its keys never come
/// back active there, and an org already known there is left as it is.
#[tokio::test]
async fn a_suspended_org_moves_with_its_keys() {
    let from = TestGateway::start().await;
    let (_, acme_key) = from.create_key(&["--org", "acme", "--role", "viewer"]);
    let (_, globex_key) = from.create_key(&["--org", "globex", "--role", "viewer"]);
    assert!(from.cli(&["orgs", "suspend", "acme"]).ok);
    let file = from.dir.path().join("export.jsonl");
    let path = file.to_str().expect("utf-8 path");
    let out = from.cli(&["keys", "export", "--out", path]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json["exported_orgs"], 1, "{}", out.json);

    let to = TestGateway::start().await;
    let out = to.cli(&["keys", "import", "--in", path]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json["orgs_imported"], 1, "{}", out.json);
    let verdict = |key: String| {
        let url = to.url("/v1/models");
        async move { get(&url, &[("authorization", &bearer(&key))]).await }
    };
    assert_eq!(verdict(acme_key.clone()).await.code(), "org_suspended");
    assert_eq!(verdict(globex_key).await.status, 200);
    let shown = to.cli(&["orgs", "show", "acme"]);
    assert_eq!(shown.json["suspended"], true, "{}", shown.json);

    // Restored there, a second import leaves it restored.
    assert!(to.cli(&["orgs", "restore", "acme"]).ok);
    let again = to.cli(&["keys", "import", "--in", path]);
    assert!(again.ok, "{}", again.stderr);
    assert_eq!(again.json["orgs_present"], 1);
    assert_eq!(to.cli(&["orgs", "show", "acme"]).json["suspended"], false);

    // A bad org name in an org line refuses the file.
    std::fs::write(&file, r#"{"kind":"org","org":"a b","suspended":true}"#).expect("write");
    let out = to.cli(&["keys", "import", "--in", path]);
    assert!(
        !out.ok && out.stderr.contains("line 1") && out.stderr.contains("org"),
        "{}",
        out.stderr
    );
    from.stop().await;
    to.stop().await;
}
