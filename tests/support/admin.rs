//! Helpers of the admin API tests: one request with a token, the refusal shape, the
//! store's contents as the operator sees them, the proxy's verdict on a key.

use super::*;
use bytes::Bytes;
use http::Method;
use serde_json::Value;
use std::time::Duration;

pub const SEEN_WITHIN: Duration = Duration::from_secs(1);

/// One admin request with `token` (none when empty) and a JSON body.
pub async fn call(
    gw: &TestGateway,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Reply {
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    call_raw(gw, method, path, token, body).await
}

/// One admin request whose body is sent as given (malformed JSON, huge bodies).
pub async fn call_raw(
    gw: &TestGateway,
    method: Method,
    path: &str,
    token: &str,
    body: impl Into<Bytes>,
) -> Reply {
    let auth = bearer(token);
    let mut headers = vec![("content-type", "application/json")];
    if !token.is_empty() {
        headers.push(("authorization", auth.as_str()));
    }
    send_body(method, &gw.admin_url(path), &headers, body.into()).await
}

pub async fn ops(gw: &TestGateway, method: Method, path: &str, body: Option<Value>) -> Reply {
    call(gw, method, path, OPS_TOKEN, body).await
}

pub fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// A refusal with this status and code, in the SPEC's error shape, with a message.
#[track_caller]
pub fn assert_refused(r: &Reply, status: u16, code: &str) {
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (status, code),
        "body: {}",
        text(r)
    );
    let message = r.json()["error"]["message"].as_str().map(str::to_owned);
    assert!(
        message.is_some_and(|m| !m.is_empty()),
        "no message: {}",
        text(r)
    );
    assert_eq!(r.headers["content-type"], "application/json");
}

#[track_caller]
pub fn assert_status(r: &Reply, status: u16) {
    assert_eq!(r.status.as_u16(), status, "body: {}", text(r));
}

/// Creates a key through the API and returns the answer (with its secret).
pub async fn create(gw: &TestGateway, token: &str, body: Value) -> Value {
    let r = call(gw, Method::POST, "/v1/keys", token, Some(body)).await;
    assert_status(&r, 201);
    r.json()
}

pub fn id(key: &Value) -> String {
    key["id"].as_str().expect("key id").to_owned()
}

pub fn secret(key: &Value) -> String {
    key["key"].as_str().expect("secret").to_owned()
}

/// What the store holds as the operator sees it: every key (without `last_used_at`,
/// which the proxy updates) and the whole audit log.
pub async fn written(gw: &TestGateway) -> (Value, Value) {
    let mut keys = ops(gw, Method::GET, "/v1/keys", None).await.json()["keys"].clone();
    for k in keys.as_array_mut().expect("keys array") {
        k.as_object_mut()
            .expect("key object")
            .remove("last_used_at");
    }
    let audit = ops(gw, Method::GET, "/v1/audit?limit=1000", None)
        .await
        .json()["events"]
        .clone();
    assert!(audit.is_array(), "audit: {audit}");
    (keys, audit)
}

pub fn ids(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .map(id)
        .collect();
    v.sort();
    v
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

pub async fn proxy(gw: &TestGateway, key: &str) -> (u16, String) {
    key_verdict(gw, Method::GET, "/v1/models", key).await
}

pub async fn proxy_becomes(gw: &TestGateway, key: &str, want: (u16, &str)) -> bool {
    verdict_becomes(gw, Method::GET, "/v1/models", key, want, SEEN_WITHIN).await
}

/// Since `before`, the keys are unchanged and the audit log gained exactly `n` `denied`
/// events (a limited token's refusals are audited, and write nothing else), each naming
/// `actor` and a reason.
#[track_caller]
pub fn assert_only_denials(before: &(Value, Value), after: &(Value, Value), actor: &str, n: usize) {
    assert_eq!(after.0, before.0, "a refusal changed keys");
    let (old, new) = (
        before.1.as_array().expect("audit"),
        after.1.as_array().expect("audit"),
    );
    assert_eq!(new.len(), old.len() + n, "audit: {}", after.1);
    // Newest first: the new events lead, the old ones follow unchanged.
    assert_eq!(&new[n..], &old[..]);
    for e in &new[..n] {
        assert_eq!(e["action"], "denied", "{e}");
        assert_eq!(e["actor"], actor, "{e}");
        assert!(
            e["details"]["reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "{e}"
        );
    }
}
