//! Workspace lists (SPEC §1): a key may be scoped to several workspaces of its org
//! (`--workspace a --workspace b`, `workspaces: [a, b]`). It may use those and no other;
//! the `workspace` identity header is the one the route resolved, and absent where the
//! route resolves none (a key of several has no "only" workspace).

mod support;

use http::Method;
use serde_json::json;
use support::admin::*;
use support::*;

async fn in_workspace(gw: &TestGateway, key: &str, ws: &str) -> Reply {
    get(
        &gw.url("/v1/ws/items"),
        &[("authorization", &bearer(key)), ("x-workspace-id", ws)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_two_workspaces_uses_both_and_no_other() {
    let gw = TestGateway::start().await;
    let (id, key) = gw.create_key(&[
        "--org",
        "acme",
        "--workspace",
        "team-a",
        "--workspace",
        "team-b",
        "--role",
        "viewer",
    ]);
    let shown = gw.cli(&["keys", "show", &id]).json;
    assert_eq!(shown["workspaces"], json!(["team-a", "team-b"]));

    for ws in ["team-a", "team-b"] {
        let r = in_workspace(&gw, &key, ws).await;
        assert_eq!(r.status.as_u16(), 200, "{ws}");
        assert_eq!(r.upstream_headers()["x-keygate-workspace"], ws);
    }
    let r = in_workspace(&gw, &key, "team-c").await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "workspace_not_allowed")
    );
    // A route that resolves no workspace: the key has no single one to name.
    let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
    assert_eq!(r.status.as_u16(), 200);
    assert!(!r.upstream_headers().contains_key("x-keygate-workspace"));

    // The list filter finds it under either workspace.
    for ws in ["team-a", "team-b"] {
        let listed = gw.cli(&["keys", "list", "--workspace", ws]).json;
        assert!(
            listed["keys"]
                .as_array()
                .expect("keys")
                .iter()
                .any(|k| k["id"] == id.as_str()),
            "{ws}: {listed}"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_takes_lists_and_a_token_of_one_workspace_cannot_reach_two() {
    let gw = TestGateway::start().await;
    let k = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "workspaces": ["team-a", "team-b"], "roles": ["viewer"] }),
    )
    .await;
    assert_eq!(k["workspaces"], json!(["team-a", "team-b"]));
    let r = in_workspace(&gw, k["key"].as_str().expect("secret"), "team-b").await;
    assert_eq!(r.status.as_u16(), 200);

    // The team-a editor's token: the key reaches beyond team-a.
    let path = format!("/v1/keys/{}", k["id"].as_str().expect("id"));
    let r = call(&gw, Method::GET, &path, TEAM_A_TOKEN, None).await;
    assert_refused(&r, 403, "outside_token_scope");
    let r = call(
        &gw,
        Method::POST,
        "/v1/keys",
        TEAM_A_TOKEN,
        Some(json!({ "org": "acme", "workspaces": ["team-a", "team-b"], "roles": ["viewer"] })),
    )
    .await;
    assert_refused(&r, 403, "outside_token_scope");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_workspace_lists_are_refused_naming_the_field() {
    let gw = TestGateway::start().await;
    let before = written(&gw).await;
    for ws in [
        vec!["team-a", "team-a"],
        vec!["team-a", "*"],
        vec!["team a"],
        vec!["team-a", ""],
    ] {
        let mut args = vec!["keys", "create", "--org", "acme", "--role", "viewer"];
        for w in &ws {
            args.extend(["--workspace", w]);
        }
        let out = gw.cli(&args);
        assert!(!out.ok, "{ws:?} accepted");
        assert!(out.stderr.contains("workspaces"), "{ws:?}: {}", out.stderr);
        let r = call(
            &gw,
            Method::POST,
            "/v1/keys",
            OPS_TOKEN,
            Some(json!({ "org": "acme", "workspaces": ws, "roles": ["viewer"] })),
        )
        .await;
        assert_refused(&r, 400, "invalid_request");
    }
    let many: Vec<String> = (0..65).map(|i| format!("ws{i}")).collect();
    let r = call(
        &gw,
        Method::POST,
        "/v1/keys",
        OPS_TOKEN,
        Some(json!({ "org": "acme", "workspaces": many, "roles": ["viewer"] })),
    )
    .await;
    assert_refused(&r, 400, "invalid_request");
    assert_eq!(written(&gw).await, before);
    gw.stop().await;
}
