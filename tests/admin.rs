//! The admin API (SPEC §5, §6) over real HTTP: every endpoint, every refusal, admin
//! token scopes, audit with paging, health and metrics. The admin API, the proxy and the
//! CLI share one store, so a change made here must reach the proxy within a second.
//!
//! After every refused write the keys and the audit log are compared with what they
//! were before: a refusal writes nothing.

mod support;

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};
use std::time::Duration;
use support::admin::*;
use support::*;

// ---------------------------------------------------------------- create, get, list

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_shows_the_secret_once_then_never() {
    let gw = TestGateway::start().await;
    let k = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"], "name": "ci deploy",
                "metadata": { "team": "infra" }, "expires_in": "30d", "rate_limit": "100/s" }),
    )
    .await;
    let key = secret(&k);
    assert!(looks_like_secret(&key), "{key}");
    assert!(
        k["notice"].as_str().is_some_and(|n| n.contains("once")),
        "{k}"
    );
    assert!(id(&k).starts_with("key_"), "{k}");
    assert_eq!(k["name"], "ci deploy");
    assert_eq!(k["org"], "acme");
    assert_eq!(k["workspaces"], json!(["*"]));
    assert_eq!(k["type"], "service");
    assert_eq!(k["roles"], json!(["viewer"]));
    assert_eq!(k["permissions"], json!(["models:read"]));
    assert_eq!(k["status"], "active");
    assert_eq!(k["metadata"], json!({ "team": "infra" }));
    assert_eq!(k["rate_limit"], "100/s");
    assert_eq!(k["created_by"], "ops");
    assert!(k["expires_at"].is_string(), "{k}");

    // The key works at the proxy.
    assert_eq!(proxy(&gw, &key).await, (200, String::new()));

    // Never again: not in show, not in the list, not in the audit; nor its hash.
    for path in [
        format!("/v1/keys/{}", id(&k)),
        "/v1/keys".to_owned(),
        format!("/v1/audit?key={}", id(&k)),
    ] {
        let r = ops(&gw, Method::GET, &path, None).await;
        assert_status(&r, 200);
        let body = text(&r);
        assert!(!body.contains(&key), "{path} shows the secret: {body}");
        assert!(
            !contains_secret_shape(&body),
            "{path} shows a secret: {body}"
        );
        assert!(!contains_hex64(&body), "{path} shows a hash: {body}");
    }
    let shown = ops(&gw, Method::GET, &format!("/v1/keys/{}", id(&k)), None)
        .await
        .json();
    assert!(shown.get("key").is_none(), "{shown}");
    assert_eq!(shown["id"], k["id"]);
    assert_eq!(shown["name"], "ci deploy");

    // Two creations, two different secrets and ids.
    let k2 = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;
    assert_ne!(secret(&k2), key);
    assert_ne!(id(&k2), id(&k));
    assert_eq!(k2["name"], k2["id"], "an unnamed key is named by its id");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_personal_workspace_and_inheriting_keys() {
    let gw = TestGateway::start().await;
    let ws = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "workspaces": ["team-a"], "roles": ["editor", "viewer"] }),
    )
    .await;
    assert_eq!(ws["workspaces"], json!(["team-a"]));
    assert_eq!(ws["roles"], json!(["editor", "viewer"]));
    assert_eq!(ws["permissions"], json!(["models:read", "models:write"]));

    let personal = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "owner": "bob", "roles": ["viewer"] }),
    )
    .await;
    assert_eq!(personal["type"], "personal");
    assert_eq!(personal["owner"], "bob");

    // Inheriting needs the owner's roles recorded first.
    let r = ops(
        &gw,
        Method::POST,
        "/v1/keys",
        Some(json!({ "org": "acme", "type": "personal", "owner": "carol", "inherit": true })),
    )
    .await;
    assert_refused(&r, 400, "invalid_request");
    let r = ops(
        &gw,
        Method::PUT,
        "/v1/orgs/acme/users/carol/roles",
        Some(json!({ "roles": ["viewer"] })),
    )
    .await;
    assert_status(&r, 200);
    let inherit = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "type": "personal", "owner": "carol", "inherit": true }),
    )
    .await;
    assert_eq!(inherit["inherit"], true);
    assert_eq!(proxy(&gw, &secret(&inherit)).await, (200, String::new()));

    let at = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"], "expires_at": "2999-01-01T00:00:00Z" }),
    )
    .await;
    assert_eq!(at["expires_at"], "2999-01-01T00:00:00Z");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_org_workspace_and_token_scope() {
    let gw = TestGateway::start().await;
    let acme = id(&create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await);
    let team_a = id(&create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "workspaces": ["team-a"], "roles": ["viewer"] }),
    )
    .await);
    let team_b = id(&create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "workspaces": ["team-b"], "roles": ["viewer"] }),
    )
    .await);
    let globex = id(&create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "globex", "roles": ["viewer"] }),
    )
    .await);

    let list = |token: &'static str, q: &'static str| {
        let gw = &gw;
        async move {
            let r = call(gw, Method::GET, &format!("/v1/keys{q}"), token, None).await;
            assert_status(&r, 200);
            ids(&r.json())
        }
    };
    let all = sorted(vec![
        acme.clone(),
        team_a.clone(),
        team_b.clone(),
        globex.clone(),
    ]);
    assert_eq!(list(OPS_TOKEN, "").await, all);
    assert_eq!(
        list(OPS_TOKEN, "?org=acme").await,
        sorted(vec![acme.clone(), team_a.clone(), team_b.clone()])
    );
    assert_eq!(list(OPS_TOKEN, "?org=globex").await, vec![globex.clone()]);
    assert_eq!(list(OPS_TOKEN, "?org=nobody").await, Vec::<String>::new());
    // A workspace's keys include the org keys, which reach every workspace.
    assert_eq!(
        list(OPS_TOKEN, "?org=acme&workspace=team-a").await,
        sorted(vec![acme.clone(), team_a.clone()])
    );
    assert_eq!(
        list(OPS_TOKEN, "?workspace=team-b").await,
        sorted(vec![acme.clone(), team_b.clone(), globex.clone()])
    );
    // Nothing is unused for a day yet; everything is unused for 0s.
    assert_eq!(
        list(OPS_TOKEN, "?unused_for=1d").await,
        Vec::<String>::new()
    );

    // Limited tokens see only what they manage.
    assert_eq!(
        list(ACME_TOKEN, "").await,
        sorted(vec![acme.clone(), team_a.clone(), team_b.clone()])
    );
    assert_eq!(list(ACME_TOKEN, "?org=globex").await, Vec::<String>::new());
    assert_eq!(list(TEAM_A_TOKEN, "").await, vec![team_a.clone()]);
    assert_eq!(
        list(TEAM_A_TOKEN, "?workspace=team-a").await,
        vec![team_a.clone()]
    );

    // The answer never holds a secret or a hash.
    let body = text(&ops(&gw, Method::GET, "/v1/keys", None).await);
    assert!(
        !contains_secret_shape(&body) && !contains_hex64(&body),
        "list leaks: {body}"
    );

    for bad in [
        "?color=red",
        "?org=acme&org=globex",
        "?unused_for=soon",
        "?org=%zz",
    ] {
        let r = ops(&gw, Method::GET, &format!("/v1/keys{bad}"), None).await;
        assert_refused(&r, 400, "invalid_request");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_404_and_write_nothing() {
    let gw = TestGateway::start().await;
    create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;
    let before = written(&gw).await;
    for id in ["key_doesnotexist00000", "nonsense", "key_%2e%2e", "kg_abc"] {
        for (method, path, body) in [
            (Method::GET, format!("/v1/keys/{id}"), None),
            (
                Method::PATCH,
                format!("/v1/keys/{id}"),
                Some(json!({ "name": "x" })),
            ),
            (Method::DELETE, format!("/v1/keys/{id}"), None),
            (Method::POST, format!("/v1/keys/{id}/revoke"), None),
            (Method::POST, format!("/v1/keys/{id}/disable"), None),
            (Method::POST, format!("/v1/keys/{id}/enable"), None),
            (Method::POST, format!("/v1/keys/{id}/rotate"), None),
            (Method::GET, format!("/v1/keys/{id}/secret"), None),
        ] {
            let r = ops(&gw, method.clone(), &path, body).await;
            assert_refused(&r, 404, "not_found");
        }
    }
    let r = ops(
        &gw,
        Method::GET,
        "/v1/audit?key=key_doesnotexist00000",
        None,
    )
    .await;
    assert_status(&r, 200);
    assert_eq!(r.json()["events"], json!([]));
    assert_eq!(written(&gw).await, before);
    gw.stop().await;
}

// ---------------------------------------------------------------- patch

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_changes_name_metadata_and_limits_only() {
    let gw = TestGateway::start().await;
    let k = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"], "name": "old", "metadata": { "a": "1" } }),
    )
    .await;
    let path = format!("/v1/keys/{}", id(&k));

    let r = ops(
        &gw,
        Method::PATCH,
        &path,
        Some(json!({ "name": "new name" })),
    )
    .await;
    assert_status(&r, 200);
    assert_eq!(r.json()["name"], "new name");
    assert_eq!(r.json()["metadata"], json!({ "a": "1" }));
    assert!(r.json().get("key").is_none());

    let r = ops(
        &gw,
        Method::PATCH,
        &path,
        Some(json!({ "metadata": { "b": "2" } })),
    )
    .await;
    assert_status(&r, 200);
    assert_eq!(r.json()["metadata"], json!({ "b": "2" }));
    assert_eq!(r.json()["name"], "new name");

    let r = ops(
        &gw,
        Method::PATCH,
        &path,
        Some(json!({ "name": "both", "metadata": {} })),
    )
    .await;
    assert_status(&r, 200);
    let shown = ops(&gw, Method::GET, &path, None).await.json();
    assert_eq!(shown["name"], "both");
    assert_eq!(shown["metadata"], json!({}));
    assert_eq!(shown["roles"], json!(["viewer"]));

    let audit = ops(&gw, Method::GET, &format!("/v1/audit?key={}", id(&k)), None)
        .await
        .json();
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        actions,
        ["metadata", "rename", "metadata", "rename", "create"]
    );

    // Anything else is refused whole: the name in the same body is not written either.
    let before = written(&gw).await;
    for field in [
        json!({ "roles": ["editor"] }),
        json!({ "permissions": ["models:write"] }),
        json!({ "org": "globex" }),
        json!({ "workspaces": ["team-a"] }),
        json!({ "expires_at": "2999-01-01T00:00:00Z" }),
        json!({ "expires_in": "1d" }),
        json!({ "type": "personal" }),
        json!({ "owner": "bob" }),
        json!({ "inherit": true }),
        json!({ "status": "active" }),
        json!({ "id": "key_other" }),
        // (`rate_limit` and `quota` change since issue 16: tests/limits.rs.)
        json!({ "hint": "kg_…abcd" }),
        json!({ "name": "sneaky", "roles": ["editor"] }),
        json!({ "metadata": { "x": "y" }, "created_by": "me" }),
    ] {
        let r = ops(&gw, Method::PATCH, &path, Some(field.clone())).await;
        assert_refused(&r, 400, "immutable_field");
    }
    // Wrong types and bad values.
    for (body, code) in [
        (json!({ "name": 5 }), "invalid_request"),
        (json!({ "name": null }), "invalid_request"),
        (json!({ "name": "" }), "invalid_request"),
        (json!({ "name": "a\nb" }), "invalid_request"),
        (json!({ "metadata": { "a": 1 } }), "invalid_request"),
        (json!({ "metadata": "a=1" }), "invalid_request"),
        (
            json!({ "metadata": { "bad key!": "v" } }),
            "invalid_request",
        ),
        (
            json!({ "name": "ok", "metadata": { "bad key!": "v" } }),
            "invalid_request",
        ),
        (json!(["name"]), "invalid_json"),
    ] {
        let r = ops(&gw, Method::PATCH, &path, Some(body)).await;
        assert_refused(&r, 400, code);
    }
    let r = call_raw(&gw, Method::PATCH, &path, OPS_TOKEN, "{\"name\": ").await;
    assert_refused(&r, 400, "invalid_json");
    assert_eq!(written(&gw).await, before);
    assert_eq!(
        ops(&gw, Method::GET, &path, None).await.json()["name"],
        "both"
    );
    gw.stop().await;
}

// ---------------------------------------------------------------- lifecycle

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_via_api_is_refused_by_the_proxy_within_a_second() {
    let gw = TestGateway::start().await;
    let k = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;
    let key = secret(&k);
    // Cached first: the revoke must reach the proxy through the change feed.
    assert_eq!(proxy(&gw, &key).await, (200, String::new()));

    let r = ops(
        &gw,
        Method::POST,
        &format!("/v1/keys/{}/revoke", id(&k)),
        None,
    )
    .await;
    assert_status(&r, 200);
    assert_eq!(r.json()["status"], "revoked");
    assert!(r.json()["revoked_at"].is_string());
    assert!(
        proxy_becomes(&gw, &key, (401, "revoked_key")).await,
        "revoked key still answered {:?}",
        proxy(&gw, &key).await
    );

    // A revoked key stays revoked; revoking again writes nothing.
    let before = written(&gw).await;
    for action in ["enable", "rotate", "disable"] {
        let r = ops(
            &gw,
            Method::POST,
            &format!("/v1/keys/{}/{action}", id(&k)),
            None,
        )
        .await;
        assert_refused(&r, 409, "key_not_active");
    }
    let r = ops(
        &gw,
        Method::POST,
        &format!("/v1/keys/{}/revoke", id(&k)),
        None,
    )
    .await;
    assert_status(&r, 200);
    assert_eq!(r.json()["status"], "revoked");
    assert_eq!(written(&gw).await, before);
    assert_eq!(proxy(&gw, &key).await, (401, "revoked_key".to_owned()));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_then_enable() {
    let gw = TestGateway::start().await;
    let k = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;
    let key = secret(&k);
    assert_eq!(proxy(&gw, &key).await, (200, String::new()));

    let r = ops(
        &gw,
        Method::POST,
        &format!("/v1/keys/{}/disable", id(&k)),
        None,
    )
    .await;
    assert_status(&r, 200);
    assert_eq!(r.json()["status"], "disabled");
    assert!(proxy_becomes(&gw, &key, (401, "disabled_key")).await);

    // A disabled key cannot be rotated.
    let r = ops(
        &gw,
        Method::POST,
        &format!("/v1/keys/{}/rotate", id(&k)),
        None,
    )
    .await;
    assert_refused(&r, 409, "key_not_active");

    let r = ops(
        &gw,
        Method::POST,
        &format!("/v1/keys/{}/enable", id(&k)),
        None,
    )
    .await;
    assert_status(&r, 200);
    assert_eq!(r.json()["status"], "active");
    assert!(proxy_becomes(&gw, &key, (200, "")).await);

    let audit = ops(&gw, Method::GET, &format!("/v1/audit?key={}", id(&k)), None)
        .await
        .json();
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, ["enable", "disable", "create"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_gives_a_new_key_and_keeps_the_old_for_the_grace() {
    let gw = TestGateway::start().await;
    let old = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "workspaces": ["team-a"], "roles": ["viewer"],
                "name": "svc", "metadata": { "env": "prod" } }),
    )
    .await;
    let r = ops(
        &gw,
        Method::POST,
        &format!("/v1/keys/{}/rotate", id(&old)),
        Some(json!({ "grace": "1h" })),
    )
    .await;
    assert_status(&r, 201);
    let new = r.json();
    assert_ne!(id(&new), id(&old));
    assert!(looks_like_secret(&secret(&new)));
    assert_ne!(secret(&new), secret(&old));
    for same in [
        "name",
        "org",
        "workspaces",
        "type",
        "roles",
        "permissions",
        "metadata",
    ] {
        assert_eq!(new[same], old[same], "{same} changed by rotation");
    }
    assert_eq!(new["rotated_from"]["id"], old["id"]);
    assert_eq!(new["rotated_from"]["rotated_to"], new["id"]);
    assert!(new["rotated_from"]["expires_at"].is_string());
    assert!(new["rotated_from"].get("key").is_none());

    // Both work during the grace.
    assert_eq!(proxy(&gw, &secret(&old)).await, (200, String::new()));
    assert_eq!(proxy(&gw, &secret(&new)).await, (200, String::new()));

    // One audit event names both ids.
    let audit = ops(
        &gw,
        Method::GET,
        &format!("/v1/audit?key={}", id(&old)),
        None,
    )
    .await
    .json();
    let rotate = &audit["events"][0];
    assert_eq!(rotate["action"], "rotate");
    assert_eq!(rotate["actor"], "ops");
    assert_eq!(rotate["details"]["new_key_id"], new["id"]);

    // Bad bodies write nothing.
    let before = written(&gw).await;
    let path = format!("/v1/keys/{}/rotate", id(&new));
    for (body, code) in [
        (json!({ "grace": "soon" }), "invalid_request"),
        (json!({ "grace": 3600 }), "invalid_json"),
        (
            json!({ "grace": "1h", "roles": ["editor"] }),
            "invalid_json",
        ),
    ] {
        let r = ops(&gw, Method::POST, &path, Some(body)).await;
        assert_refused(&r, 400, code);
    }
    assert_eq!(written(&gw).await, before);

    // Zero grace ends the rotated key at once; an empty body means the default grace.
    let r = ops(&gw, Method::POST, &path, Some(json!({ "grace": "0s" }))).await;
    assert_status(&r, 201);
    let newest = r.json();
    assert!(proxy_becomes(&gw, &secret(&new), (401, "expired_key")).await);
    assert_eq!(proxy(&gw, &secret(&newest)).await, (200, String::new()));
    let r = ops(&gw, Method::POST, &path, None).await;
    assert_refused(&r, 409, "key_not_active");
    let r = ops(
        &gw,
        Method::POST,
        &format!("/v1/keys/{}/rotate", id(&newest)),
        None,
    )
    .await;
    assert_status(&r, 201);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_204_then_404() {
    let gw = TestGateway::start().await;
    let k = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;
    let key = secret(&k);
    assert_eq!(proxy(&gw, &key).await, (200, String::new()));
    let path = format!("/v1/keys/{}", id(&k));

    let r = ops(&gw, Method::DELETE, &path, None).await;
    assert_status(&r, 204);
    assert!(r.body.is_empty(), "{}", text(&r));
    assert_refused(&ops(&gw, Method::GET, &path, None).await, 404, "not_found");
    assert_refused(
        &ops(&gw, Method::DELETE, &path, None).await,
        404,
        "not_found",
    );
    assert!(ids(&ops(&gw, Method::GET, "/v1/keys", None).await.json()).is_empty());
    assert!(proxy_becomes(&gw, &key, (401, "unknown_key")).await);

    // The audit keeps the key's history, deletion included.
    let audit = ops(&gw, Method::GET, &format!("/v1/audit?key={}", id(&k)), None)
        .await
        .json();
    assert_eq!(audit["events"][0]["action"], "delete");
    assert_eq!(audit["events"][0]["actor"], "ops");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_endpoint_is_404() {
    let gw = TestGateway::start().await;
    let k = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;
    let r = ops(
        &gw,
        Method::GET,
        &format!("/v1/keys/{}/secret", id(&k)),
        None,
    )
    .await;
    assert_refused(&r, 404, "not_found");
    assert!(!text(&r).contains(&secret(&k)));
    gw.stop().await;
}

// ---------------------------------------------------------------- users

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_remove_restore_and_roles() {
    let gw = TestGateway::start().await;
    let bob = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "owner": "bob", "roles": ["viewer"] }),
    )
    .await;
    let service = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;
    assert_eq!(proxy(&gw, &secret(&bob)).await, (200, String::new()));

    let r = ops(&gw, Method::POST, "/v1/orgs/acme/users/bob/remove", None).await;
    assert_status(&r, 200);
    assert_eq!(r.json()["user"], "bob");
    assert_eq!(r.json()["org"], "acme");
    assert_eq!(r.json()["removed"], true);
    assert!(proxy_becomes(&gw, &secret(&bob), (401, "owner_removed")).await);
    assert_eq!(proxy(&gw, &secret(&service)).await, (200, String::new()));

    let r = ops(&gw, Method::POST, "/v1/orgs/acme/users/bob/restore", None).await;
    assert_status(&r, 200);
    assert_eq!(r.json()["removed"], false);
    assert!(proxy_becomes(&gw, &secret(&bob), (200, "")).await);

    let r = ops(
        &gw,
        Method::PUT,
        "/v1/orgs/acme/users/bob/roles",
        Some(json!({ "roles": ["editor"] })),
    )
    .await;
    assert_status(&r, 200);
    assert_eq!(r.json()["roles"], json!(["editor"]));
    assert_eq!(
        r.json()["permissions"],
        json!(["models:read", "models:write"])
    );
    // A key's roles resolved at creation: recording the user's roles changes not it.
    let shown = ops(&gw, Method::GET, &format!("/v1/keys/{}", id(&bob)), None)
        .await
        .json();
    assert_eq!(shown["permissions"], json!(["models:read"]));

    // Names are percent-decoded from the path.
    let r = ops(
        &gw,
        Method::PUT,
        "/v1/orgs/acme/users/dave%40example.com/roles",
        Some(json!({ "roles": ["viewer"] })),
    )
    .await;
    assert_status(&r, 200);
    assert_eq!(r.json()["user"], "dave@example.com");
    let r = ops(
        &gw,
        Method::POST,
        "/v1/orgs/acme/users/dave@example.com/remove",
        None,
    )
    .await;
    assert_status(&r, 200);
    assert_eq!(r.json()["user"], "dave@example.com");

    let audit = ops(&gw, Method::GET, "/v1/audit?limit=4", None)
        .await
        .json();
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        actions,
        [
            "user_remove",
            "user_set_roles",
            "user_set_roles",
            "user_restore"
        ]
    );
    assert_eq!(audit["events"][0]["actor"], "ops");
    assert_eq!(audit["events"][0]["details"]["user"], "dave@example.com");

    // Refusals write nothing.
    let before = written(&gw).await;
    let roles = "/v1/orgs/acme/users/bob/roles";
    for (body, code) in [
        (json!({ "roles": ["admin"] }), "unknown_role"),
        (json!({ "roles": ["viewer", "root"] }), "unknown_role"),
        (json!({ "roles": [] }), "invalid_request"),
        (json!({}), "invalid_json"),
        (json!({ "roles": "viewer" }), "invalid_json"),
        (
            json!({ "roles": ["viewer"], "removed": true }),
            "invalid_json",
        ),
    ] {
        let r = ops(&gw, Method::PUT, roles, Some(body)).await;
        assert_refused(&r, 400, code);
    }
    let r = call_raw(&gw, Method::PUT, roles, OPS_TOKEN, "roles=viewer").await;
    assert_refused(&r, 400, "invalid_json");
    for path in [
        "/v1/orgs/acme/users/nobody/remove",
        "/v1/orgs/acme/users/nobody/restore",
        "/v1/orgs/globex/users/bob/remove",
    ] {
        let r = ops(&gw, Method::POST, path, None).await;
        assert_refused(&r, 404, "unknown_user");
    }
    for path in [
        "/v1/orgs/acme/users/bad%20name/remove",
        "/v1/orgs/acme/users/%ff/remove",
        "/v1/orgs/a%2Fb/users/bob/remove",
    ] {
        let r = ops(&gw, Method::POST, path, None).await;
        assert_refused(&r, 400, "invalid_request");
    }
    assert_eq!(written(&gw).await, before);
    gw.stop().await;
}

// ---------------------------------------------------------------- audit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_names_the_actor_and_pages_back_in_time() {
    let gw = TestGateway::start().await;
    // A CLI change is by `cli`, an API change by the token's name.
    let (cli_id, _) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let out = gw.cli(&["keys", "rename", &cli_id, "from-cli"]);
    assert!(out.ok, "{}", out.stderr);
    let path = format!("/v1/keys/{cli_id}");
    for name in ["one", "two", "three"] {
        let r = ops(&gw, Method::PATCH, &path, Some(json!({ "name": name }))).await;
        assert_status(&r, 200);
    }
    let r = call(
        &gw,
        Method::POST,
        &format!("/v1/keys/{cli_id}/disable"),
        ACME_TOKEN,
        None,
    )
    .await;
    assert_status(&r, 200);
    let other = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;

    let all = ops(&gw, Method::GET, &format!("/v1/audit?key={cli_id}"), None)
        .await
        .json();
    let events = all["events"].as_array().expect("events").clone();
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().expect("action").to_owned(),
                e["actor"].as_str().expect("actor").to_owned(),
            )
        })
        .collect();
    let want = [
        ("disable", "acme-owner"),
        ("rename", "ops"),
        ("rename", "ops"),
        ("rename", "ops"),
        ("rename", "cli"),
        ("create", "cli"),
    ];
    assert_eq!(
        summary,
        want.map(|(a, b)| (a.to_owned(), b.to_owned())).to_vec()
    );
    assert!(events.iter().all(|e| e["key_id"] == json!(cli_id)));
    assert!(events.iter().all(|e| e["at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z') && t.contains('T'))));
    assert_eq!(events[1]["details"]["to"], "three");
    assert_eq!(all["next_before"], Value::Null, "one page holds them all");

    // Pages of two, newest first, going back with `before` = the last `next_before`.
    let mut paged = Vec::new();
    let mut before: Option<i64> = None;
    for _ in 0..10 {
        let q = match before {
            Some(b) => format!("/v1/audit?key={cli_id}&limit=2&before={b}"),
            None => format!("/v1/audit?key={cli_id}&limit=2"),
        };
        let page = ops(&gw, Method::GET, &q, None).await.json();
        let got = page["events"].as_array().expect("events").clone();
        assert!(got.len() <= 2);
        paged.extend(got);
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    assert_eq!(paged, events, "pages put together are the whole log");

    // Without a key filter: every key's events, newest first.
    let r = ops(&gw, Method::GET, "/v1/audit?limit=1", None).await;
    assert_eq!(r.json()["events"][0]["key_id"], other["id"]);
    assert_eq!(r.json()["events"][0]["action"], "create");
    let next = r.json()["next_before"].as_i64().expect("more pages");
    let r = ops(
        &gw,
        Method::GET,
        &format!("/v1/audit?limit=1&before={next}"),
        None,
    )
    .await;
    assert_eq!(r.json()["events"][0]["key_id"], json!(cli_id));
    assert_eq!(r.json()["events"][0]["action"], "disable");

    // Limited tokens read only the audit of keys they manage.
    let r = call(
        &gw,
        Method::GET,
        &format!("/v1/audit?key={cli_id}"),
        ACME_TOKEN,
        None,
    )
    .await;
    assert_status(&r, 200);
    assert_eq!(r.json()["events"].as_array().map(Vec::len), Some(6));
    assert_refused(
        &call(&gw, Method::GET, "/v1/audit", ACME_TOKEN, None).await,
        403,
        "outside_token_scope",
    );
    assert_refused(
        &call(
            &gw,
            Method::GET,
            &format!("/v1/audit?key={cli_id}"),
            TEAM_A_TOKEN,
            None,
        )
        .await,
        403,
        "outside_token_scope",
    );

    for bad in [
        "?limit=many",
        "?before=yesterday",
        "?actor=ops",
        "?key=a&key=b",
    ] {
        let r = ops(&gw, Method::GET, &format!("/v1/audit{bad}"), None).await;
        assert_refused(&r, 400, "invalid_request");
    }
    gw.stop().await;
}

// ---------------------------------------------------------------- tokens and scopes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_wrong_and_api_key_credentials_are_refused() {
    let gw = TestGateway::start().await;
    let k = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;
    let key = secret(&k);
    let before = written(&gw).await;
    let create_body = json!({ "org": "acme", "roles": ["viewer"] }).to_string();
    let url = gw.admin_url("/v1/keys");

    let r = send(Method::GET, &url, &[]).await;
    assert_refused(&r, 401, "unauthorized");
    assert_eq!(r.headers["www-authenticate"], r#"Bearer realm="keygate""#);

    let wrong = bearer("not-a-token");
    let ops_auth = bearer(OPS_TOKEN);
    let basic = format!("Basic {OPS_TOKEN}");
    for headers in [
        vec![("authorization", wrong.as_str())],
        vec![("authorization", "Bearer")],
        vec![("authorization", basic.as_str())],
        vec![
            ("authorization", ops_auth.as_str()),
            ("authorization", ops_auth.as_str()),
        ],
        vec![("x-admin-token", OPS_TOKEN)],
    ] {
        for method in [Method::GET, Method::POST] {
            let r = send_body(method, &url, &headers, Bytes::from(create_body.clone())).await;
            assert_refused(&r, 401, "unauthorized");
            assert!(r.headers.contains_key("www-authenticate"));
        }
    }

    // An API key, wherever the proxy would read it, is refused outright: even next to a
    // good admin token.
    let key_bearer = bearer(&key);
    let key_url = gw.admin_url(&format!("/v1/keys?api_key={key}"));
    for (url, headers) in [
        (url.clone(), vec![("authorization", key_bearer.as_str())]),
        (url.clone(), vec![("x-api-key", key.as_str())]),
        (
            url.clone(),
            vec![
                ("authorization", ops_auth.as_str()),
                ("x-api-key", key.as_str()),
            ],
        ),
        (key_url.clone(), vec![]),
        (key_url.clone(), vec![("authorization", ops_auth.as_str())]),
    ] {
        for method in [Method::GET, Method::POST] {
            let r = send_body(method, &url, &headers, Bytes::from(create_body.clone())).await;
            assert_refused(&r, 403, "api_key_not_allowed");
        }
    }
    for (method, path) in [
        (Method::POST, format!("/v1/keys/{}/revoke", id(&k))),
        (Method::DELETE, format!("/v1/keys/{}", id(&k))),
        (Method::POST, "/v1/orgs/acme/users/bob/remove".to_owned()),
    ] {
        let r = call(&gw, method, &path, &key, None).await;
        assert_refused(&r, 403, "api_key_not_allowed");
    }
    assert_eq!(written(&gw).await, before);
    assert_eq!(proxy(&gw, &key).await, (200, String::new()));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_token_manages_its_orgs_keys_only() {
    let gw = TestGateway::start().await;
    let acme = create(
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
    let r = ops(
        &gw,
        Method::PUT,
        "/v1/orgs/globex/users/gina/roles",
        Some(json!({ "roles": ["viewer"] })),
    )
    .await;
    assert_status(&r, 200);
    let before = written(&gw).await;

    let g = id(&globex);
    for (method, path, body) in [
        (Method::GET, format!("/v1/keys/{g}"), None),
        (
            Method::PATCH,
            format!("/v1/keys/{g}"),
            Some(json!({ "name": "mine now" })),
        ),
        (Method::DELETE, format!("/v1/keys/{g}"), None),
        (Method::POST, format!("/v1/keys/{g}/revoke"), None),
        (Method::POST, format!("/v1/keys/{g}/disable"), None),
        (Method::POST, format!("/v1/keys/{g}/enable"), None),
        (Method::POST, format!("/v1/keys/{g}/rotate"), None),
        (Method::GET, format!("/v1/audit?key={g}"), None),
        (
            Method::POST,
            "/v1/keys".to_owned(),
            Some(json!({ "org": "globex", "roles": ["viewer"] })),
        ),
        (
            Method::POST,
            "/v1/orgs/globex/users/gina/remove".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/v1/orgs/globex/users/gina/restore".to_owned(),
            None,
        ),
        (
            Method::PUT,
            "/v1/orgs/globex/users/gina/roles".to_owned(),
            Some(json!({ "roles": ["editor"] })),
        ),
    ] {
        let r = call(&gw, method.clone(), &path, ACME_TOKEN, body).await;
        assert_refused(&r, 403, "outside_token_scope");
    }
    assert_only_denials(&before, &written(&gw).await, "acme-owner", 12);

    // Its own org: everything, as `acme-owner`.
    let mine = create(
        &gw,
        ACME_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;
    assert_eq!(mine["created_by"], "acme-owner");
    let r = call(
        &gw,
        Method::GET,
        &format!("/v1/keys/{}", id(&acme)),
        ACME_TOKEN,
        None,
    )
    .await;
    assert_status(&r, 200);
    let r = call(
        &gw,
        Method::PUT,
        "/v1/orgs/acme/users/amy/roles",
        ACME_TOKEN,
        Some(json!({ "roles": ["viewer"] })),
    )
    .await;
    assert_status(&r, 200);
    let r = call(
        &gw,
        Method::DELETE,
        &format!("/v1/keys/{}", id(&mine)),
        ACME_TOKEN,
        None,
    )
    .await;
    assert_status(&r, 204);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_token_manages_its_workspace_keys_only() {
    let gw = TestGateway::start().await;
    let org_key = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;
    let team_b = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "workspaces": ["team-b"], "roles": ["viewer"] }),
    )
    .await;
    let before = written(&gw).await;

    // Creating an org key, another workspace's key, or in another org.
    for body in [
        json!({ "org": "acme", "roles": ["viewer"] }),
        json!({ "org": "acme", "workspaces": ["*"], "roles": ["viewer"] }),
        json!({ "org": "acme", "workspaces": ["team-b"], "roles": ["viewer"] }),
        json!({ "org": "globex", "workspaces": ["team-a"], "roles": ["viewer"] }),
    ] {
        let r = call(&gw, Method::POST, "/v1/keys", TEAM_A_TOKEN, Some(body)).await;
        assert_refused(&r, 403, "outside_token_scope");
    }
    // Another workspace's key, or an org key (it reaches beyond team-a).
    for k in [&team_b, &org_key] {
        let k = id(k);
        for (method, path, body) in [
            (Method::GET, format!("/v1/keys/{k}"), None),
            (
                Method::PATCH,
                format!("/v1/keys/{k}"),
                Some(json!({ "name": "x" })),
            ),
            (Method::DELETE, format!("/v1/keys/{k}"), None),
            (Method::POST, format!("/v1/keys/{k}/revoke"), None),
            (Method::POST, format!("/v1/keys/{k}/disable"), None),
            (Method::POST, format!("/v1/keys/{k}/rotate"), None),
        ] {
            let r = call(&gw, method.clone(), &path, TEAM_A_TOKEN, body).await;
            assert_refused(&r, 403, "outside_token_scope");
        }
    }
    // Users are org-level.
    for (method, path, body) in [
        (Method::POST, "/v1/orgs/acme/users/bob/remove", None),
        (Method::POST, "/v1/orgs/acme/users/bob/restore", None),
        (
            Method::PUT,
            "/v1/orgs/acme/users/bob/roles",
            Some(json!({ "roles": ["viewer"] })),
        ),
    ] {
        let r = call(&gw, method, path, TEAM_A_TOKEN, body).await;
        assert_refused(&r, 403, "outside_token_scope");
    }
    assert_only_denials(&before, &written(&gw).await, "team-a-editor", 4 + 2 * 6 + 3);

    // Its own workspace: create, manage, as `team-a-editor`.
    let mine = create(
        &gw,
        TEAM_A_TOKEN,
        json!({ "org": "acme", "workspaces": ["team-a"], "roles": ["viewer"] }),
    )
    .await;
    assert_eq!(mine["created_by"], "team-a-editor");
    let path = format!("/v1/keys/{}", id(&mine));
    let r = call(
        &gw,
        Method::PATCH,
        &path,
        TEAM_A_TOKEN,
        Some(json!({ "name": "team a ci" })),
    )
    .await;
    assert_status(&r, 200);
    let r = call(&gw, Method::GET, "/v1/keys", TEAM_A_TOKEN, None).await;
    assert_eq!(ids(&r.json()), vec![id(&mine)]);
    let r = call(
        &gw,
        Method::POST,
        &format!("{path}/revoke"),
        TEAM_A_TOKEN,
        None,
    )
    .await;
    assert_status(&r, 200);
    gw.stop().await;
}

// ---------------------------------------------------------------- bad input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_create_bodies_are_400_and_write_nothing() {
    let gw = TestGateway::start().await;
    create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;
    let before = written(&gw).await;

    let raw_cases: [(&str, &str); 7] = [
        (
            "{\"org\": \"acme\", \"roles\": [\"viewer\"]",
            "invalid_json",
        ),
        ("{org: acme}", "invalid_json"),
        ("not json", "invalid_json"),
        ("[]", "invalid_json"),
        ("null", "invalid_json"),
        ("", "invalid_json"),
        (
            "{\"org\": \"acme\", \"roles\": [\"viewer\"]} trailing",
            "invalid_json",
        ),
    ];
    for (body, code) in raw_cases {
        let r = call_raw(&gw, Method::POST, "/v1/keys", OPS_TOKEN, body).await;
        assert_refused(&r, 400, code);
    }
    let r = call_raw(
        &gw,
        Method::POST,
        "/v1/keys",
        OPS_TOKEN,
        Bytes::from_static(b"{\"org\": \"\xff\xfe\"}"),
    )
    .await;
    assert_refused(&r, 400, "invalid_json");

    let cases = [
        // Wrong types.
        (json!({ "org": 5, "roles": ["viewer"] }), "invalid_json"),
        (json!({ "org": "acme", "roles": "viewer" }), "invalid_json"),
        (json!({ "org": "acme", "roles": [1] }), "invalid_json"),
        (
            json!({ "org": "acme", "roles": ["viewer"], "inherit": "yes" }),
            "invalid_json",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "metadata": { "a": 1 } }),
            "invalid_json",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "workspaces": "team-a" }),
            "invalid_json",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "expires_in": 3600 }),
            "invalid_json",
        ),
        // Unknown and missing fields.
        (
            json!({ "org": "acme", "roles": ["viewer"], "permissions": ["models:write"] }),
            "invalid_json",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "Org": "globex" }),
            "invalid_json",
        ),
        (json!({ "roles": ["viewer"] }), "invalid_json"),
        // Unknown roles.
        (json!({ "org": "acme", "roles": ["admin"] }), "unknown_role"),
        (
            json!({ "org": "acme", "roles": ["viewer", "Viewer"] }),
            "unknown_role",
        ),
        // Expiry.
        (
            json!({ "org": "acme", "roles": ["viewer"], "expires_at": "2001-01-01T00:00:00Z" }),
            "invalid_request",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "expires_at": "tomorrow" }),
            "invalid_request",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "expires_at": "2999-01-01" }),
            "invalid_request",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "expires_in": "0s" }),
            "invalid_request",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "expires_in": "-1d" }),
            "invalid_request",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "expires_in": "1d",
                 "expires_at": "2999-01-01T00:00:00Z" }),
            "invalid_request",
        ),
        // Other rules.
        (json!({ "org": "acme", "roles": [] }), "invalid_request"),
        (json!({ "org": "acme" }), "invalid_request"),
        (json!({ "org": "", "roles": ["viewer"] }), "invalid_request"),
        (
            json!({ "org": "ac me", "roles": ["viewer"] }),
            "invalid_request",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "type": "robot" }),
            "invalid_request",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "type": "service", "owner": "bob" }),
            "invalid_request",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "type": "personal" }),
            "invalid_request",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "inherit": true, "owner": "bob" }),
            "invalid_request",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "workspaces": ["a", "a"] }),
            "invalid_request",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "workspaces": ["a", "*"] }),
            "invalid_request",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "workspaces": [] }),
            "invalid_request",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "name": "" }),
            "invalid_request",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "name": "a\u{7}b" }),
            "invalid_request",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "rate_limit": "fast" }),
            "invalid_request",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "rate_limit": "0/s" }),
            "invalid_request",
        ),
        (
            json!({ "org": "acme", "roles": ["viewer"], "metadata": { "bad key": "v" } }),
            "invalid_request",
        ),
    ];
    for (body, code) in cases {
        let r = ops(&gw, Method::POST, "/v1/keys", Some(body.clone())).await;
        assert_refused(&r, 400, code);
        let message = r.json()["error"]["message"].clone();
        assert!(
            !message.to_string().contains("kg_"),
            "{body}: message {message}"
        );
    }
    // The message says what was wrong.
    let r = ops(
        &gw,
        Method::POST,
        "/v1/keys",
        Some(json!({ "org": "acme", "roles": ["viewer"], "colour": "red" })),
    )
    .await;
    assert!(text(&r).contains("colour"), "{}", text(&r));
    let r = ops(
        &gw,
        Method::POST,
        "/v1/keys",
        Some(json!({ "org": "acme", "roles": ["admin"] })),
    )
    .await;
    assert!(text(&r).contains("admin"), "{}", text(&r));

    assert_eq!(written(&gw).await, before);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_64_kb_are_413_and_write_nothing() {
    let gw = TestGateway::start().await;
    let k = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;
    let before = written(&gw).await;

    // Valid JSON, just too big (a long name would otherwise be a 400).
    let big = |n: usize| json!({ "org": "acme", "roles": ["viewer"], "name": "x".repeat(n) });
    let over = big(70 * 1024).to_string();
    assert!(over.len() > 64 * 1024);
    for (method, path) in [
        (Method::POST, "/v1/keys".to_owned()),
        (Method::PATCH, format!("/v1/keys/{}", id(&k))),
        (Method::POST, format!("/v1/keys/{}/rotate", id(&k))),
        (Method::PUT, "/v1/orgs/acme/users/bob/roles".to_owned()),
    ] {
        let r = call_raw(&gw, method, &path, OPS_TOKEN, over.clone()).await;
        assert_refused(&r, 413, "body_too_large");
    }

    // Without a Content-Length (chunked), the limit holds while reading.
    let head = format!(
        "POST /v1/keys HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {OPS_TOKEN}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    let mut raw = head.into_bytes();
    for chunk in over.as_bytes().chunks(8 * 1024) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = String::from_utf8_lossy(&raw_exchange(gw.admin_addr, &raw).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");

    assert_eq!(written(&gw).await, before);

    // Just under the limit is read (and here refused for its too-long name, not its size).
    let under = big(60 * 1024).to_string();
    assert!(under.len() < 64 * 1024);
    let r = call_raw(&gw, Method::POST, "/v1/keys", OPS_TOKEN, under).await;
    assert_refused(&r, 400, "invalid_request");
    assert_eq!(written(&gw).await, before);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let gw = TestGateway::start().await;
    for path in [
        "/",
        "/v1",
        "/v1/nope",
        "/v1/keys/",
        "/v1/keys/a/b/c",
        "/v2/keys",
        "/console/../v1/keys",
        "/v1/orgs/acme/users/bob",
        "/metrics/",
    ] {
        for token in [OPS_TOKEN, ""] {
            let r = call(&gw, Method::GET, path, token, None).await;
            assert_refused(&r, 404, "not_found");
        }
    }
    for (method, path, allow) in [
        (Method::PUT, "/v1/keys", "POST, GET"),
        (Method::DELETE, "/v1/keys", "POST, GET"),
        (Method::POST, "/v1/keys/key_abc", "GET, PATCH, DELETE"),
        (Method::GET, "/v1/keys/key_abc/revoke", "POST"),
        (Method::PUT, "/v1/keys/key_abc/secret", "GET"),
        (Method::POST, "/v1/orgs/acme/users/bob/roles", "PUT"),
        (Method::DELETE, "/v1/audit", "GET"),
        (Method::POST, "/healthz", "GET"),
        (Method::HEAD, "/readyz", "GET"),
        (Method::POST, "/metrics", "GET"),
    ] {
        let r = ops(&gw, method.clone(), path, None).await;
        assert_eq!(r.status.as_u16(), 405, "{method} {path}: {}", text(&r));
        assert_eq!(r.headers["allow"], allow, "{method} {path}");
        if method != Method::HEAD {
            assert_refused(&r, 405, "method_not_allowed");
        }
    }
    gw.stop().await;
}

// ---------------------------------------------------------------- health and metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_need_no_token() {
    let gw = TestGateway::start().await;
    for token in ["", "wrong-token", OPS_TOKEN] {
        let r = call(&gw, Method::GET, "/healthz", token, None).await;
        assert_status(&r, 200);
        assert_eq!(r.json()["status"], "ok");
        let r = call(&gw, Method::GET, "/readyz", token, None).await;
        assert_status(&r, 200);
        assert_eq!(r.json()["status"], "ready");
        let r = call(&gw, Method::GET, "/metrics", token, None).await;
        assert_status(&r, 200);
        let ct = r.headers["content-type"].to_str().expect("content type");
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        let body = text(&r);
        assert!(body.contains("# TYPE keygate_cache_hits counter"), "{body}");
        assert!(
            body.contains("# TYPE keygate_auth_duration_seconds histogram"),
            "{body}"
        );
        assert!(body.trim_end().ends_with("# EOF"), "{body}");
    }
    gw.stop().await;
}

/// The value of one series (`name{labels}` exactly as exposed), 0 when absent.
/// A request whose client goes away before the answer is counted out of
/// `requests_in_flight` all the same (an HTTP/2 client that closes its connection: hyper
/// drops the request's future, which then never finishes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_in_flight_is_counted_out() {
    // A long upstream timeout: the request must still be waiting when the client leaves.
    let gw = TestGateway::start_with(|y| {
        assert!(y.contains("timeout: 1s }\n  dead"));
        y.replace(
            "connect_timeout: 1s, timeout: 1s }\n  dead",
            "connect_timeout: 1s, timeout: 30s }\n  dead",
        )
    })
    .await;
    let (_, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let in_flight = || async { sample(&metrics(&gw).await, "keygate_requests_in_flight") };
    assert_eq!(in_flight().await, 0.0);

    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let req = http::Request::get(gw.url("/slow"))
        .header("authorization", bearer(&key))
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    let pending = tokio::spawn(async move { sender.send_request(req).await.map(|r| r.status()) });
    assert!(
        eventually(Duration::from_secs(10), || async {
            in_flight().await == 1.0
        })
        .await,
        "the request never showed in flight"
    );

    // The client goes away while the upstream (3 s) has not answered.
    pending.abort();
    conn.abort();
    assert!(
        eventually(Duration::from_secs(10), || async {
            in_flight().await == 0.0
        })
        .await,
        "a dropped request stayed in flight"
    );
}

fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

async fn metrics(gw: &TestGateway) -> String {
    let r = get(&gw.admin_url("/metrics"), &[]).await;
    assert_status(&r, 200);
    text(&r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_change_as_requests_flow() {
    let gw = TestGateway::start().await;
    let k = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;
    let key = secret(&k);
    let ok = r#"keygate_requests_total{route="/v1/models",code="ok"}"#;
    let unknown = r#"keygate_requests_total{route="/v1/models",code="unknown_key"}"#;
    let missing = r#"keygate_requests_total{route="/v1/models",code="missing_key"}"#;
    let no_route = r#"keygate_requests_total{route="",code="no_route"}"#;
    let bad_host = r#"keygate_requests_total{route="",code="bad_host"}"#;

    let m0 = metrics(&gw).await;
    assert_eq!(sample(&m0, ok), 0.0, "{m0}");
    for series in [
        "keygate_cache_hits_total",
        "keygate_cache_misses_total",
        "keygate_cache_evictions_total",
        "keygate_store_errors_total",
        "keygate_requests_in_flight",
        "keygate_cache_keys",
        "keygate_auth_duration_seconds_count",
        "keygate_request_duration_seconds_count",
        "keygate_change_feed_lag_seconds_count",
    ] {
        assert!(
            m0.lines().any(|l| l.starts_with(&format!("{series} "))),
            "{series} missing:\n{m0}"
        );
    }
    assert!(m0.contains("keygate_request_duration_seconds_bucket{le=\"+Inf\"}"));

    for _ in 0..3 {
        assert_eq!(proxy(&gw, &key).await, (200, String::new()));
    }
    let unknown_key = well_formed_unknown_key();
    assert_eq!(
        proxy(&gw, &unknown_key).await,
        (401, "unknown_key".to_owned())
    );
    assert_eq!(get(&gw.url("/v1/models"), &[]).await.status.as_u16(), 401);
    assert_eq!(get(&gw.url("/nowhere"), &[]).await.status.as_u16(), 404);
    let two_hosts = b"GET /v1/models HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(gw.addr, two_hosts).await;
    assert!(answer.starts_with(b"HTTP/1.1 400 "), "{answer:?}");

    let m1 = metrics(&gw).await;
    let delta = |series: &str| sample(&m1, series) - sample(&m0, series);
    assert_eq!(delta(ok), 3.0, "{m1}");
    assert_eq!(delta(unknown), 1.0, "{m1}");
    assert_eq!(delta(missing), 1.0, "{m1}");
    assert_eq!(delta(no_route), 1.0, "{m1}");
    assert_eq!(delta(bad_host), 1.0, "{m1}");
    // Auth ran for the four requests that carried a key and the one that did not.
    assert_eq!(delta("keygate_auth_duration_seconds_count"), 5.0, "{m1}");
    assert_eq!(delta("keygate_request_duration_seconds_count"), 7.0, "{m1}");
    // The first look-up of each key misses, the next ones hit.
    assert!(delta("keygate_cache_hits_total") >= 2.0, "{m1}");
    assert!(delta("keygate_cache_misses_total") >= 2.0, "{m1}");
    assert_eq!(sample(&m1, "keygate_requests_in_flight"), 0.0, "{m1}");
    // The cache counts its entries lazily (moka): poll, with traffic to let it catch up.
    assert!(
        eventually(Duration::from_secs(3), || async {
            proxy(&gw, &key).await;
            sample(&metrics(&gw).await, "keygate_cache_keys") >= 1.0
        })
        .await,
        "keygate_cache_keys stays 0"
    );

    // A revoke evicts the cached key.
    let r = ops(
        &gw,
        Method::POST,
        &format!("/v1/keys/{}/revoke", id(&k)),
        None,
    )
    .await;
    assert_status(&r, 200);
    assert!(proxy_becomes(&gw, &key, (401, "revoked_key")).await);
    let m2 = metrics(&gw).await;
    assert!(
        sample(&m2, "keygate_cache_evictions_total") > sample(&m1, "keygate_cache_evictions_total"),
        "{m2}"
    );
    // The change feed delivered the revocation, and its lag was observed.
    let lag_count = "keygate_change_feed_lag_seconds_count";
    assert!(
        eventually(Duration::from_secs(3), || async {
            sample(&metrics(&gw).await, lag_count) > sample(&m1, lag_count)
        })
        .await,
        "{lag_count} did not move"
    );
    assert!(
        sample(
            &m2,
            r#"keygate_requests_total{route="/v1/models",code="revoked_key"}"#
        ) >= 1.0
    );

    // Upstream errors are counted by upstream.
    let k2 = create(
        &gw,
        OPS_TOKEN,
        json!({ "org": "acme", "roles": ["viewer"] }),
    )
    .await;
    let r = get(
        &gw.url("/dead"),
        &[("authorization", &bearer(&secret(&k2)))],
    )
    .await;
    assert_eq!(r.status.as_u16(), 502, "{}", text(&r));
    let m3 = metrics(&gw).await;
    assert_eq!(
        sample(&m3, r#"keygate_upstream_errors_total{upstream="dead"}"#),
        1.0,
        "{m3}"
    );
    assert_eq!(
        sample(
            &m3,
            r#"keygate_requests_total{route="/dead",code="upstream_unavailable"}"#
        ),
        1.0,
        "{m3}"
    );
    gw.stop().await;
}

/// `GET /v1/keys` pages and filters by status (issue 17 item 6): every key once, in order,
/// whatever the page size; a bad page size, status or cursor is 400.
#[tokio::test]
async fn list_pages_with_a_cursor_and_filters_by_status() {
    let gw = TestGateway::start().await;
    let mut made = Vec::new();
    for i in 0..7 {
        let (id, _) = gw.create_key(&[
            "--org",
            "acme",
            "--role",
            "viewer",
            "--name",
            &format!("k{i}"),
        ]);
        made.push(id);
    }
    assert!(gw.cli(&["keys", "revoke", &made[2]]).ok);
    assert!(gw.cli(&["keys", "disable", &made[5]]).ok);
    // The order of one whole page (oldest first; keys made in the same millisecond by id),
    // which every page size must give back, each key once (`ids` sorts: not here).
    let in_order = |page: &serde_json::Value| -> Vec<String> {
        page["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(id)
            .collect()
    };
    let whole = in_order(
        &ops(&gw, Method::GET, "/v1/keys?org=acme", None)
            .await
            .json(),
    );
    assert_eq!(sorted(whole.clone()), sorted(made.clone()));
    for limit in [1, 3, 7, 100] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                None => format!("/v1/keys?org=acme&limit={limit}"),
                Some(c) => format!("/v1/keys?org=acme&limit={limit}&cursor={c}"),
            };
            let r = ops(&gw, Method::GET, &path, None).await;
            assert_status(&r, 200);
            let page = r.json();
            let ids = in_order(&page);
            assert!(ids.len() <= limit);
            seen.extend(ids);
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, whole, "limit {limit}");
    }
    let status = |s: &'static str| {
        let gw = &gw;
        async move {
            ids(&ops(
                gw,
                Method::GET,
                &format!("/v1/keys?org=acme&status={s}"),
                None,
            )
            .await
            .json())
        }
    };
    assert_eq!(status("revoked").await, vec![made[2].clone()]);
    assert_eq!(status("disabled").await, vec![made[5].clone()]);
    assert_eq!(status("active").await.len(), 5);
    assert!(status("expired").await.is_empty());
    for bad in [
        "status=gone",
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=nope",
    ] {
        let r = ops(&gw, Method::GET, &format!("/v1/keys?{bad}"), None).await;
        assert_refused(&r, 400, "invalid_request");
    }
    gw.stop().await;
}
