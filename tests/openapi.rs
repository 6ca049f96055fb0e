//! `docs/openapi.yaml` is the admin API's contract, kept true here:
//! - its operations are exactly the router's (`keygate::admin::routes::ROUTES`), each
//!   with its path parameters, answers, body schema and security;
//! - every `$ref` resolves, and every error code the admin API can answer is listed;
//! - real answers, over HTTP, have a status documented for their operation and a body
//!   that fits the documented schema: no undocumented field, no missing required one.

mod support;

use http::Method;
use keygate::admin::routes::{Op, ROUTES};
use keygate::error::AdminError;
use keygate::service::ServiceError;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use support::*;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn doc() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("docs/openapi.yaml is readable");
    serde_yaml::from_str(&text).expect("docs/openapi.yaml is YAML with string keys")
}

/// Follows `$ref`s (local ones: `#/a/b`) until a value that is not one.
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(r) = v.get("$ref").and_then(Value::as_str) else {
            return v;
        };
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        v = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("$ref {r} does not resolve"));
    }
    panic!("$ref cycle at {v}");
}

/// One documented operation.
struct Operation<'a> {
    method: String,
    path: String,
    item: &'a Value,
    op: &'a Value,
}

fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let paths = doc["paths"].as_object().expect("paths is a map");
    let mut out = Vec::new();
    for (path, item) in paths {
        let item = resolve(doc, item);
        for (key, op) in item.as_object().expect("a path item is a map") {
            if METHODS.contains(&key.as_str()) {
                out.push(Operation {
                    method: key.to_uppercase(),
                    path: path.clone(),
                    item,
                    op,
                });
            } else {
                assert!(
                    ["parameters", "summary", "description", "servers"].contains(&key.as_str()),
                    "{path}: unexpected key `{key}`"
                );
            }
        }
    }
    out
}

fn route_op(method: &str, path: &str) -> Op {
    ROUTES
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map(|(_, _, op)| *op)
        .unwrap_or_else(|| panic!("{method} {path} is not a route"))
}

/// Operations that read a JSON body.
fn takes_body(op: Op) -> bool {
    matches!(
        op,
        Op::CreateKey | Op::PatchKey | Op::RotateKey | Op::SetUserRoles | Op::ReportLeak
    )
}

#[test]
fn documented_operations_are_exactly_the_routes() {
    let doc = doc();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.0")),
        "openapi: {}",
        doc["openapi"]
    );
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(routes.len(), ROUTES.len(), "a route is listed twice");
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|o| (o.method, o.path))
        .collect();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes missing from docs/openapi.yaml: {undocumented:?}; \
         documented but not routed: {unrouted:?}"
    );
}

#[test]
fn every_operation_documents_its_parameters_answers_body_and_security() {
    let doc = doc();
    let mut ids = BTreeSet::new();
    for o in operations(&doc) {
        let at = format!("{} {}", o.method, o.path);
        let op = route_op(&o.method, &o.path);
        let id = o.op["operationId"].as_str().unwrap_or_default();
        assert!(
            !id.is_empty() && ids.insert(id.to_owned()),
            "{at}: operationId"
        );

        // Answers: at least one, a success among them, each described.
        let responses = o.op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{at}: no responses"));
        assert!(!responses.is_empty(), "{at}: no responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{at}: no success answer"
        );
        for (status, r) in responses {
            assert!(
                status == "default"
                    || (status.len() == 3
                        && status.parse::<u16>().is_ok_and(|s| (100..600).contains(&s))),
                "{at}: status `{status}`"
            );
            let r = resolve(&doc, r);
            assert!(
                r["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{at} {status}: no description"
            );
            // Every refusal is in the error shape.
            if status.starts_with('4') || (status.starts_with('5') && op != Op::Readyz) {
                let schema = &r["content"]["application/json"]["schema"];
                assert_eq!(
                    schema["$ref"], "#/components/schemas/Error",
                    "{at} {status}: not the error shape"
                );
            }
        }

        // Path parameters: exactly the pattern's, each required.
        let want: BTreeSet<String> = o
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let mut declared = BTreeSet::new();
        for list in [&o.item["parameters"], &o.op["parameters"]] {
            for p in list.as_array().into_iter().flatten() {
                let p = resolve(&doc, p);
                if p["in"] == "path" {
                    assert_eq!(p["required"], true, "{at}: path parameter not required");
                    declared.insert(p["name"].as_str().expect("name").to_owned());
                }
            }
        }
        assert_eq!(declared, want, "{at}: path parameters");

        // Bodies: the operations that read one document it, closed to unknown fields
        // (the handlers refuse them); the others take none.
        if takes_body(op) {
            let schema = resolve(
                &doc,
                &o.op["requestBody"]["content"]["application/json"]["schema"],
            );
            assert_eq!(schema["type"], "object", "{at}: body schema");
            assert_eq!(
                schema["additionalProperties"], false,
                "{at}: body schema open"
            );
            for status in ["400", "413"] {
                assert!(responses.contains_key(status), "{at}: no {status}");
            }
        } else {
            assert!(o.op.get("requestBody").is_none(), "{at}: takes no body");
        }

        // Security: health and metrics are open, everything else needs the bearer.
        if op.is_public() {
            assert_eq!(o.op["security"], json!([]), "{at}: should need no token");
        } else {
            assert!(o.op.get("security").is_none(), "{at}: overrides the bearer");
            for status in ["401", "403"] {
                assert!(responses.contains_key(status), "{at}: no {status}");
            }
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["adminToken"],
        json!({ "type": "http", "scheme": "bearer",
                "description": "An admin token (never an API key)." })
    );
    assert_eq!(doc["security"], json!([{ "adminToken": [] }]));
}

fn every_ref(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| every_ref(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| every_ref(v, out)),
        _ => {}
    }
}

#[test]
fn every_ref_resolves_and_every_error_code_is_listed() {
    let doc = doc();
    let mut refs = Vec::new();
    every_ref(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in &refs {
        resolve(&doc, &json!({ "$ref": r }));
    }

    let listed: BTreeSet<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]
        ["properties"]["code"]["enum"]
        .as_array()
        .expect("error codes")
        .iter()
        .map(|c| c.as_str().expect("code"))
        .collect();
    let store = || keygate::store::StoreError::Unsupported("test");
    let errors = [
        AdminError::Unauthorized,
        AdminError::ApiKeyNotAllowed,
        AdminError::outside_scope("x"),
        AdminError::NoSuchEndpoint,
        AdminError::MethodNotAllowed {
            allow: "GET".into(),
        },
        AdminError::BodyTooLarge,
        AdminError::BodyRead,
        AdminError::BadJson(serde_json::from_str::<Value>("{").expect_err("not JSON")),
        AdminError::BadQuery("q".into()),
        AdminError::ImmutableField("roles".into()),
        AdminError::invalid("f", "m"),
        AdminError::Service(ServiceError::NotRecoverable {
            id: "key_x".into(),
            why: "w",
        }),
        AdminError::Service(ServiceError::Vault {
            id: "key_x".into(),
            source: keygate::key::VaultError::WrongVaultKey,
        }),
        AdminError::Service(ServiceError::Invalid {
            field: "f",
            message: "m".into(),
        }),
        AdminError::Service(ServiceError::UnknownRole("r".into())),
        AdminError::Service(ServiceError::MalformedKey),
        AdminError::Service(ServiceError::NotFound("key_x".into())),
        AdminError::Service(ServiceError::KeyNotActive {
            id: "key_x".into(),
            state: "revoked",
            hint: "h",
        }),
        AdminError::Service(ServiceError::UnknownUser {
            org: "o".into(),
            user: "u".into(),
        }),
        AdminError::Service(ServiceError::Store(store())),
        AdminError::Service(ServiceError::Store(keygate::store::StoreError::Conflict {
            record: "key_x".into(),
        })),
    ];
    let answered: BTreeSet<&str> = errors.iter().map(|e| e.answer().code).collect();
    assert_eq!(
        answered, listed,
        "the codes the admin API answers and the codes the Error schema lists"
    );
}

// ---------------------------------------------------------------- real answers

/// Errors of `value` against `schema` (the subset of OpenAPI 3.0 schemas the document
/// uses). Objects with `properties` are read as closed even under `allOf`, so an
/// undocumented field in an answer is an error.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, errs: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if value.is_null() {
        if schema["nullable"] != true {
            errs.push(format!("{at}: null"));
        }
        return;
    }
    if let Some(all) = schema["allOf"].as_array() {
        let (mut props, mut required) = (BTreeMap::new(), BTreeSet::new());
        for part in all {
            collect_object(doc, part, &mut props, &mut required);
        }
        if all.iter().any(|p| resolve(doc, p)["type"] == "object") {
            check_object(doc, &props, &required, None, value, at, errs);
        }
        for part in all {
            let part = resolve(doc, part);
            if part["type"] != "object" && part.get("allOf").is_none() {
                check(doc, part, value, at, errs);
            }
        }
        return;
    }
    if let Some(choices) = schema["enum"].as_array() {
        if !choices.contains(value) {
            errs.push(format!("{at}: {value} not in {choices:?}"));
        }
    }
    let fits = match schema["type"].as_str() {
        Some("object") => {
            let (mut props, mut required) = (BTreeMap::new(), BTreeSet::new());
            collect_object(doc, schema, &mut props, &mut required);
            let extra = schema.get("additionalProperties");
            check_object(doc, &props, &required, extra, value, at, errs);
            true
        }
        Some("array") => match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check(doc, &schema["items"], item, &format!("{at}[{i}]"), errs);
                }
                true
            }
            None => false,
        },
        Some("string") => value
            .as_str()
            .is_some_and(|s| schema["pattern"] != "^kg_[0-9A-Za-z]{38}$" || looks_like_secret(s)),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        None => true,
        Some(other) => panic!("{at}: schema type {other}"),
    };
    if !fits {
        errs.push(format!("{at}: {value} is not a {}", schema["type"]));
    }
}

fn collect_object<'a>(
    doc: &'a Value,
    schema: &'a Value,
    props: &mut BTreeMap<String, &'a Value>,
    required: &mut BTreeSet<String>,
) {
    let schema = resolve(doc, schema);
    for part in schema["allOf"].as_array().into_iter().flatten() {
        collect_object(doc, part, props, required);
    }
    for (k, v) in schema["properties"].as_object().into_iter().flatten() {
        props.insert(k.clone(), v);
    }
    for r in schema["required"].as_array().into_iter().flatten() {
        required.insert(r.as_str().expect("required names").to_owned());
    }
}

fn check_object(
    doc: &Value,
    props: &BTreeMap<String, &Value>,
    required: &BTreeSet<String>,
    extra: Option<&Value>,
    value: &Value,
    at: &str,
    errs: &mut Vec<String>,
) {
    let Some(obj) = value.as_object() else {
        errs.push(format!("{at}: {value} is not an object"));
        return;
    };
    for r in required {
        if !obj.contains_key(r) {
            errs.push(format!("{at}: required `{r}` missing"));
        }
    }
    for (k, v) in obj {
        let here = format!("{at}.{k}");
        match (props.get(k), extra) {
            (Some(s), _) => check(doc, s, v, &here, errs),
            (None, Some(Value::Bool(false))) => errs.push(format!("{here}: not allowed")),
            (None, Some(s)) if s.is_object() => check(doc, s, v, &here, errs),
            (None, _) if !props.is_empty() => errs.push(format!("{here}: undocumented")),
            (None, _) => {}
        }
    }
}

/// Asserts that `reply`, the answer of the route `method pattern`, has a documented
/// status and fits the documented body.
fn conforms(doc: &Value, method: &Method, pattern: &str, reply: &Reply) {
    let at = format!("{method} {pattern} -> {}", reply.status.as_u16());
    let op = &doc["paths"][pattern][method.as_str().to_lowercase()];
    let documented = &op["responses"][reply.status.as_str()];
    assert!(
        documented.is_object(),
        "{at}: status not documented ({})",
        String::from_utf8_lossy(&reply.body)
    );
    let documented = resolve(doc, documented);
    let content = documented["content"].as_object();
    match content {
        None => assert!(
            reply.body.is_empty(),
            "{at}: a body where none is documented"
        ),
        Some(types) => {
            let ct = reply.headers["content-type"]
                .to_str()
                .expect("content type");
            let (media, spec) = types
                .iter()
                .find(|(m, _)| ct.starts_with(m.as_str()))
                .unwrap_or_else(|| panic!("{at}: content type {ct} not documented"));
            if media == "application/json" {
                let body: Value = serde_json::from_slice(&reply.body).expect("a JSON body");
                let mut errs = Vec::new();
                check(doc, &spec["schema"], &body, "body", &mut errs);
                assert!(errs.is_empty(), "{at}: {errs:#?}\n{body:#}");
            }
        }
    }
}

/// One request to the admin API, its answer checked against the document.
async fn drive(
    doc: &Value,
    gw: &TestGateway,
    (method, pattern, path, token, body, want): Step,
) -> Reply {
    let auth = bearer(&token);
    let mut headers = vec![("content-type", "application/json")];
    if !token.is_empty() {
        headers.push(("authorization", auth.as_str()));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let r = send_body(method.clone(), &gw.admin_url(&path), &headers, body.into()).await;
    assert_eq!(
        r.status.as_u16(),
        want,
        "{method} {path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    conforms(doc, &method, pattern, &r);
    r
}

/// Method, route pattern, path, token (empty: none), JSON body, expected status.
type Step = (Method, &'static str, String, String, Option<Value>, u16);

/// Drives every route over real HTTP, successes and refusals, and checks each answer
/// against the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_fit_the_document() {
    let doc = doc();
    let gw = TestGateway::start().await;
    let ops = OPS_TOKEN.to_owned();
    let none = String::new();
    let post = Method::POST;

    let created = drive(
        &doc,
        &gw,
        (
            post.clone(),
            "/v1/keys",
            "/v1/keys".into(),
            ops.clone(),
            Some(
                json!({ "org": "acme", "roles": ["viewer"], "name": "doc", "owner": "bob",
                     "metadata": { "a": "b" }, "rate_limit": "10/s", "expires_in": "1d" }),
            ),
            201,
        ),
    )
    .await;
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let key = created.json()["key"].as_str().expect("key").to_owned();
    let rotated = drive(
        &doc,
        &gw,
        (
            post.clone(),
            "/v1/keys/{id}/rotate",
            format!("/v1/keys/{id}/rotate"),
            ops.clone(),
            Some(json!({ "grace": "1m" })),
            201,
        ),
    )
    .await;
    let new_id = rotated.json()["id"].as_str().expect("new id").to_owned();
    let leaked = rotated.json()["key"].as_str().expect("new key").to_owned();

    let k = |suffix: &str| format!("/v1/keys/{id}{suffix}");
    let user = |what: &str| format!("/v1/orgs/acme/users/bob/{what}");
    // A table: one request a line reads better than rustfmt's one field a line.
    #[rustfmt::skip]
    let steps: Vec<Step> = vec![
        (Method::GET, "/v1/keys", "/v1/keys?org=acme".into(), ops.clone(), None, 200),
        (Method::GET, "/v1/keys/{id}", k(""), ops.clone(), None, 200),
        (Method::PATCH, "/v1/keys/{id}", k(""), ops.clone(),
            Some(json!({ "name": "doc2", "metadata": {} })), 200),
        (post.clone(), "/v1/keys/{id}/disable", k("/disable"), ops.clone(), None, 200),
        (post.clone(), "/v1/keys/{id}/enable", k("/enable"), ops.clone(), None, 200),
        (Method::GET, "/v1/keys/{id}/secret", k("/secret"), ops.clone(), None, 404),
        (Method::PATCH, "/v1/keys/{id}", k(""), ops.clone(),
            Some(json!({ "rate_limit": "10/s", "quota": "1000/month" })), 200),
        (Method::PATCH, "/v1/keys/{id}", k(""), ops.clone(), Some(json!({ "quota": "1/week" })), 400),
        (Method::GET, "/v1/keys/{id}/usage", k("/usage"), ops.clone(), None, 200),
        (post.clone(), "/v1/keys/{id}/usage/reset", k("/usage/reset"), ops.clone(), None, 200),
        (Method::PATCH, "/v1/keys/{id}", k(""), ops.clone(), Some(json!({ "quota": null })), 200),
        (Method::GET, "/v1/keys/{id}/usage", k("/usage"), ops.clone(), None, 200),
        (Method::GET, "/v1/keys/{id}/usage", "/v1/keys/key_nope/usage".into(), ops.clone(), None, 404),
        (post.clone(), "/v1/keys/{id}/revoke", k("/revoke"), ops.clone(), None, 200),
        (post.clone(), "/v1/orgs/{org}/users/{user}/remove", user("remove"), ops.clone(), None, 200),
        (post.clone(), "/v1/orgs/{org}/users/{user}/restore", user("restore"), ops.clone(), None, 200),
        (Method::PUT, "/v1/orgs/{org}/users/{user}/roles", user("roles"), ops.clone(),
            Some(json!({ "roles": ["editor"] })), 200),
        (Method::GET, "/v1/audit", "/v1/audit?limit=3".into(), ops.clone(), None, 200),
        (Method::GET, "/v1/audit", format!("/v1/audit?key={id}"), ops.clone(), None, 200),
        (Method::GET, "/healthz", "/healthz".into(), none.clone(), None, 200),
        (Method::GET, "/openapi.yaml", "/openapi.yaml".into(), none.clone(), None, 200),
        (Method::GET, "/readyz", "/readyz".into(), none.clone(), None, 200),
        (Method::GET, "/metrics", "/metrics".into(), none.clone(), None, 200),
        (Method::DELETE, "/v1/keys/{id}", k(""), ops.clone(), None, 204),
        // Refusals, each with a documented status, in the error shape.
        (Method::GET, "/v1/keys/{id}", k(""), ops.clone(), None, 404),
        (Method::DELETE, "/v1/keys/{id}", k(""), ops.clone(), None, 404),
        (Method::GET, "/v1/keys", "/v1/keys".into(), none.clone(), None, 401),
        (Method::GET, "/v1/keys", "/v1/keys".into(), key.clone(), None, 403),
        (Method::GET, "/v1/keys", "/v1/keys?bogus=1".into(), ops.clone(), None, 400),
        (post.clone(), "/v1/keys", "/v1/keys".into(), ops.clone(),
            Some(json!({ "org": "acme", "roles": ["root"] })), 400),
        (post.clone(), "/v1/keys", "/v1/keys".into(), ACME_TOKEN.into(),
            Some(json!({ "org": "globex", "roles": ["viewer"] })), 403),
        (post.clone(), "/v1/keys", "/v1/keys".into(), ops.clone(),
            Some(json!({ "org": "x".repeat(70_000) })), 413),
        (Method::PATCH, "/v1/keys/{id}", format!("/v1/keys/{new_id}"), ops.clone(),
            Some(json!({ "roles": [] })), 400),
        (post.clone(), "/v1/keys/{id}/revoke", format!("/v1/keys/{new_id}/revoke"), ops.clone(),
            None, 200),
        (post.clone(), "/v1/keys/{id}/enable", format!("/v1/keys/{new_id}/enable"), ops.clone(),
            None, 409),
        (post.clone(), "/v1/keys/{id}/rotate", format!("/v1/keys/{new_id}/rotate"), ops.clone(),
            None, 409),
        (post.clone(), "/v1/orgs/{org}/users/{user}/remove",
            "/v1/orgs/acme/users/nobody/remove".into(), ops.clone(), None, 404),
        (Method::PUT, "/v1/orgs/{org}/users/{user}/roles", user("roles"), TEAM_A_TOKEN.into(),
            Some(json!({ "roles": ["viewer"] })), 403),
        (Method::GET, "/v1/audit", "/v1/audit".into(), ACME_TOKEN.into(), None, 403),
        (post.clone(), "/v1/keys/leaked", "/v1/keys/leaked".into(), ops.clone(),
            Some(json!({ "key": leaked })), 200),
        (post.clone(), "/v1/keys/leaked", "/v1/keys/leaked".into(), ops.clone(),
            Some(json!({ "key": well_formed_unknown_key() })), 200),
        (post.clone(), "/v1/keys/leaked", "/v1/keys/leaked".into(), ops.clone(),
            Some(json!({ "key": "kg_nope" })), 400),
        (post.clone(), "/v1/orgs/{org}/suspend", "/v1/orgs/acme/suspend".into(), ops.clone(),
            None, 200),
        (Method::GET, "/v1/orgs/{org}", "/v1/orgs/acme".into(), ACME_TOKEN.into(), None, 200),
        (post.clone(), "/v1/orgs/{org}/restore", "/v1/orgs/acme/restore".into(), ops.clone(),
            None, 200),
        (post.clone(), "/v1/orgs/{org}/suspend", "/v1/orgs/acme/suspend".into(),
            ACME_TOKEN.into(), None, 403),
        (Method::GET, "/v1/orgs/{org}", "/v1/orgs/globex".into(), ACME_TOKEN.into(), None, 403),
        (post.clone(), "/v1/orgs/{org}/restore", "/v1/orgs/a%20b/restore".into(), ops.clone(),
            None, 400),
    ];
    let mut seen: BTreeSet<(String, &str)> = BTreeSet::from([
        ("POST".to_owned(), "/v1/keys"),
        ("POST".to_owned(), "/v1/keys/{id}/rotate"),
    ]);
    for step in steps {
        seen.insert((step.0.to_string(), step.1));
        drive(&doc, &gw, step).await;
    }
    let all: BTreeSet<(String, &str)> =
        ROUTES.iter().map(|(m, p, _)| (m.to_string(), *p)).collect();
    assert_eq!(seen, all, "every route is driven here");
    gw.stop().await;
}

/// The secret endpoint with recoverable keys on (off, it answers 404, driven above): its
/// 200, 403 and 404, and the audit with a `reveal` event, fit the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recoverable_answers_fit_the_document() {
    let doc = doc();
    let vault = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let gw = TestGateway::start_with_env(
        |y| {
            y.replace(
                "query_param: api_key }",
                "query_param: api_key, recoverable: true }",
            )
        },
        &[(keygate::key::VAULT_KEY_ENV, vault)],
    )
    .await;
    let ops = OPS_TOKEN.to_owned();
    let secret = "/v1/keys/{id}/secret";
    let (id, _) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    #[rustfmt::skip]
    let steps: Vec<Step> = vec![
        (Method::GET, secret, format!("/v1/keys/{id}/secret"), ops.clone(), None, 200),
        (Method::GET, secret, format!("/v1/keys/{id}/secret"), TEAM_A_TOKEN.into(), None, 403),
        (Method::GET, secret, "/v1/keys/key_nothere/secret".into(), ops.clone(), None, 404),
        (Method::GET, "/v1/audit", format!("/v1/audit?key={id}"), ops.clone(), None, 200),
    ];
    for step in steps {
        drive(&doc, &gw, step).await;
    }
    gw.stop().await;
}

/// The admin listener serves this very document, without a token (issue 17 item 6).
#[tokio::test]
async fn the_document_is_served_at_openapi_yaml() {
    let gw = TestGateway::start().await;
    let r = get(&gw.admin_url("/openapi.yaml"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"]
        .to_str()
        .is_ok_and(|ct| ct.starts_with("application/yaml")));
    let file =
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml"))
            .expect("docs/openapi.yaml");
    assert_eq!(&r.body[..], &file[..]);
    gw.stop().await;
}
