//! Limited admin tokens create keys inside their own scope only (SPEC §5): their orgs and
//! workspaces, roles they may grant, and personal keys only for users within their reach.
//! Before this held, a workspace editor's token could mint an `inherit` key owned by the
//! org owner (carrying the owner's permissions), and a token naming workspaces but no org
//! matched those workspace names in every org. Each refusal is 403 `outside_token_scope`,
//! is audited, and writes nothing else.

mod support;

use http::Method;
use serde_json::json;
use support::admin::*;
use support::*;

/// A workspace token without a role ceiling, and an org token with one.
const BARE_WS_TOKEN: &str = "workspace-token-without-roles";
const ORG_VIEWER_TOKEN: &str = "org-token-granting-viewer-only";

async fn start() -> TestGateway {
    TestGateway::start_with(|y| {
        let extra = format!(
            "    - {{ name: bare-ws, sha256: \"{}\", orgs: [acme], workspaces: [team-a] }}\n    - {{ name: org-viewer, sha256: \"{}\", orgs: [acme], roles: [viewer] }}\n",
            sha256_hex(BARE_WS_TOKEN.as_bytes()),
            sha256_hex(ORG_VIEWER_TOKEN.as_bytes()),
        );
        y.replacen("store:", &format!("{extra}store:"), 1)
    })
    .await
}

async fn set_roles(gw: &TestGateway, token: &str, user: &str, roles: &[&str]) -> Reply {
    call(
        gw,
        Method::PUT,
        &format!("/v1/orgs/acme/users/{user}/roles"),
        token,
        Some(json!({ "roles": roles })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_token_cannot_mint_keys_stronger_than_its_own() {
    let gw = start().await;
    // The org owner holds editor; a team member holds viewer.
    assert_status(&set_roles(&gw, OPS_TOKEN, "ceo", &["editor"]).await, 200);
    assert_status(&set_roles(&gw, OPS_TOKEN, "dev", &["viewer"]).await, 200);
    let before = written(&gw).await;

    let team_a = |extra: serde_json::Value| {
        let mut body = json!({ "org": "acme", "workspaces": ["team-a"] });
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        body
    };
    let refused = [
        // The hole: an inheriting key of the org owner carries the owner's permissions.
        team_a(json!({ "type": "personal", "owner": "ceo", "inherit": true })),
        // A personal key acting as the owner, even with the token's own roles.
        team_a(json!({ "owner": "ceo", "roles": ["viewer"] })),
        // An owner keygate knows nothing of could be anyone.
        team_a(json!({ "owner": "stranger", "roles": ["viewer"] })),
        // A role beyond the token's ceiling (`roles: [viewer]`).
        team_a(json!({ "roles": ["editor"] })),
        team_a(json!({ "roles": ["viewer", "editor"] })),
    ];
    for body in &refused {
        let r = call(
            &gw,
            Method::POST,
            "/v1/keys",
            TEAM_A_TOKEN,
            Some(body.clone()),
        )
        .await;
        assert_refused(&r, 403, "outside_token_scope");
    }
    assert_only_denials(&before, &written(&gw).await, "team-a-editor", refused.len());

    // Within its reach: its roles, and its team member's keys.
    let k = create(&gw, TEAM_A_TOKEN, team_a(json!({ "roles": ["viewer"] }))).await;
    assert_eq!(k["permissions"], json!(["models:read"]));
    let mine = create(
        &gw,
        TEAM_A_TOKEN,
        team_a(json!({ "type": "personal", "owner": "dev", "inherit": true })),
    )
    .await;
    assert_eq!(mine["owner"], "dev");
    let r = key_verdict(&gw, Method::GET, "/v1/models", &secret(&mine)).await;
    assert_eq!(r, (200, String::new()));

    // A removed team member gets no new key.
    let r = call(
        &gw,
        Method::POST,
        "/v1/orgs/acme/users/dev/remove",
        OPS_TOKEN,
        None,
    )
    .await;
    assert_status(&r, 200);
    let r = call(
        &gw,
        Method::POST,
        "/v1/keys",
        TEAM_A_TOKEN,
        Some(team_a(json!({ "owner": "dev", "roles": ["viewer"] }))),
    )
    .await;
    assert_refused(&r, 403, "outside_token_scope");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_token_without_roles_grants_none() {
    let gw = start().await;
    let before = written(&gw).await;
    let r = call(
        &gw,
        Method::POST,
        "/v1/keys",
        BARE_WS_TOKEN,
        Some(json!({ "org": "acme", "workspaces": ["team-a"], "roles": ["viewer"] })),
    )
    .await;
    assert_refused(&r, 403, "outside_token_scope");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("viewer")),
        "the message names the role: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_only_denials(&before, &written(&gw).await, "bare-ws", 1);

    // It still manages the workspace's keys the operator made.
    let k = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "workspaces": ["team-a"], "roles": ["editor"] }),
    )
    .await;
    let r = call(
        &gw,
        Method::POST,
        &format!("/v1/keys/{}/revoke", id(&k)),
        BARE_WS_TOKEN,
        None,
    )
    .await;
    assert_status(&r, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_token_with_a_role_ceiling_stays_under_it() {
    let gw = start().await;
    assert_status(&set_roles(&gw, OPS_TOKEN, "ceo", &["editor"]).await, 200);
    let before = written(&gw).await;
    let refusals: Vec<Reply> = vec![
        call(
            &gw,
            Method::POST,
            "/v1/keys",
            ORG_VIEWER_TOKEN,
            Some(json!({ "org": "acme", "roles": ["editor"] })),
        )
        .await,
        call(
            &gw,
            Method::POST,
            "/v1/keys",
            ORG_VIEWER_TOKEN,
            Some(json!({ "org": "acme", "type": "personal", "owner": "ceo", "inherit": true })),
        )
        .await,
        // Raising a user would raise their inheriting keys.
        set_roles(&gw, ORG_VIEWER_TOKEN, "bob", &["editor"]).await,
        // Nor may it demote, remove or restore someone above it.
        set_roles(&gw, ORG_VIEWER_TOKEN, "ceo", &["viewer"]).await,
        call(
            &gw,
            Method::POST,
            "/v1/orgs/acme/users/ceo/remove",
            ORG_VIEWER_TOKEN,
            None,
        )
        .await,
        call(
            &gw,
            Method::POST,
            "/v1/orgs/acme/users/ceo/restore",
            ORG_VIEWER_TOKEN,
            None,
        )
        .await,
    ];
    for r in &refusals {
        assert_refused(r, 403, "outside_token_scope");
    }
    assert_only_denials(&before, &written(&gw).await, "org-viewer", refusals.len());

    // A user keygate does not know yet: recording one is not a ceiling token's act (the
    // name could be the org owner's, and personal keys acting as them would follow).
    let r = set_roles(&gw, ORG_VIEWER_TOKEN, "newbie", &["viewer"]).await;
    assert_refused(&r, 403, "outside_token_scope");

    // Under the ceiling: a viewer key, a viewer user and that user's inheriting key.
    create(
        &gw,
        ORG_VIEWER_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;
    assert_status(&set_roles(&gw, OPS_TOKEN, "bob", &["viewer"]).await, 200);
    assert_status(
        &set_roles(&gw, ORG_VIEWER_TOKEN, "bob", &["viewer"]).await,
        200,
    );
    let k = create(
        &gw,
        ORG_VIEWER_TOKEN,
        json!({ "org": "acme", "type": "personal", "owner": "bob", "inherit": true }),
    )
    .await;
    assert_eq!(k["owner"], "bob");
    gw.stop().await;
}

/// Rotating or revealing a key hands out a working secret of it: the same rules as
/// creating it. Before, a ceiling token could rotate the operator's stronger keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_cannot_rotate_or_reveal_a_key_stronger_than_it_may_create() {
    let gw = start().await;
    assert_status(&set_roles(&gw, OPS_TOKEN, "ceo", &["editor"]).await, 200);
    let editor = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["editor"] }),
    )
    .await;
    let ceo_in_team_a = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "workspaces": ["team-a"], "type": "personal", "owner": "ceo", "inherit": true }),
    )
    .await;
    let before = written(&gw).await;
    let cases = [
        (ORG_VIEWER_TOKEN, id(&editor)),
        (TEAM_A_TOKEN, id(&ceo_in_team_a)),
    ];
    for (token, key_id) in &cases {
        let r = call(
            &gw,
            Method::POST,
            &format!("/v1/keys/{key_id}/rotate"),
            token,
            None,
        )
        .await;
        assert_refused(&r, 403, "outside_token_scope");
        let r = call(
            &gw,
            Method::GET,
            &format!("/v1/keys/{key_id}/secret"),
            token,
            None,
        )
        .await;
        assert_refused(&r, 403, "outside_token_scope");
    }
    let after = written(&gw).await;
    assert_eq!(after.0, before.0, "nothing rotated");

    // Keys it could have made itself rotate as before.
    let mine = create(
        &gw,
        TEAM_A_TOKEN,
        json!({ "org": "acme", "workspaces": ["team-a"], "roles": ["viewer"] }),
    )
    .await;
    let r = call(
        &gw,
        Method::POST,
        &format!("/v1/keys/{}/rotate", id(&mine)),
        TEAM_A_TOKEN,
        None,
    )
    .await;
    assert_status(&r, 201);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_read_of_another_scope_is_audited_with_the_key() {
    let gw = start().await;
    let other = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "workspaces": ["team-b"], "roles": ["viewer"] }),
    )
    .await;
    let path = format!("/v1/keys/{}", id(&other));
    let r = call(&gw, Method::GET, &path, TEAM_A_TOKEN, None).await;
    assert_refused(&r, 403, "outside_token_scope");
    let audit = call(
        &gw,
        Method::GET,
        &format!("/v1/audit?key={}", id(&other)),
        OPS_TOKEN,
        None,
    )
    .await
    .json();
    let e = &audit["events"][0];
    assert_eq!(e["action"], "denied", "{audit}");
    assert_eq!(e["actor"], "team-a-editor");
    assert_eq!(e["details"]["method"], "GET");
    assert_eq!(e["details"]["path"], path);
    gw.stop().await;
}

#[test]
fn a_workspace_limit_without_an_org_is_refused_by_check_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("keygate.db");
    let yaml = base_yaml("127.0.0.1:9".parse().expect("addr"), &db).replacen(
        "store:",
        &format!(
            "    - {{ name: loose, sha256: \"{}\", workspaces: [team-a] }}\n    - {{ name: bad-role, sha256: \"{}\", orgs: [acme], roles: [owner] }}\nstore:",
            sha256_hex(b"a"),
            sha256_hex(b"b")
        ),
        1,
    );
    let path = dir.path().join("keygate.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let out = cli(&path, &["check-config"]);
    assert!(!out.ok, "check-config passed: {}", out.stdout);
    assert!(
        out.stderr.contains("admin.tokens[3].workspaces"),
        "names the field: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("admin.tokens[4].roles"),
        "names the unknown role: {}",
        out.stderr
    );
}
