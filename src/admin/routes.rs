//! The admin API's route table: one list that the router dispatches from and that the
//! OpenAPI document is checked against (tests/openapi.rs), so they cannot drift apart.

use http::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    CreateKey,
    ListKeys,
    GetKey,
    PatchKey,
    DeleteKey,
    RevokeKey,
    DisableKey,
    EnableKey,
    RotateKey,
    RevealSecret,
    ReportLeak,
    RemoveUser,
    RestoreUser,
    SetUserRoles,
    Audit,
    Healthz,
    Readyz,
    Metrics,
    GetOrg,
    SuspendOrg,
    RestoreOrg,
    KeyUsage,
    ResetUsage,
    OpenApi,
}

impl Op {
    /// Health and metrics answer without a token (SPEC §5).
    pub fn is_public(self) -> bool {
        matches!(self, Op::Healthz | Op::Readyz | Op::Metrics | Op::OpenApi)
    }
}

/// Method, path pattern (`{name}` is one segment), operation.
pub const ROUTES: &[(&str, &str, Op)] = &[
    ("POST", "/v1/keys", Op::CreateKey),
    ("GET", "/v1/keys", Op::ListKeys),
    ("GET", "/v1/keys/{id}", Op::GetKey),
    ("PATCH", "/v1/keys/{id}", Op::PatchKey),
    ("DELETE", "/v1/keys/{id}", Op::DeleteKey),
    ("POST", "/v1/keys/{id}/revoke", Op::RevokeKey),
    ("POST", "/v1/keys/{id}/disable", Op::DisableKey),
    ("POST", "/v1/keys/{id}/enable", Op::EnableKey),
    ("POST", "/v1/keys/{id}/rotate", Op::RotateKey),
    ("GET", "/v1/keys/{id}/secret", Op::RevealSecret),
    ("GET", "/v1/keys/{id}/usage", Op::KeyUsage),
    ("POST", "/v1/keys/{id}/usage/reset", Op::ResetUsage),
    ("POST", "/v1/keys/leaked", Op::ReportLeak),
    ("POST", "/v1/orgs/{org}/users/{user}/remove", Op::RemoveUser),
    (
        "POST",
        "/v1/orgs/{org}/users/{user}/restore",
        Op::RestoreUser,
    ),
    ("PUT", "/v1/orgs/{org}/users/{user}/roles", Op::SetUserRoles),
    ("GET", "/v1/audit", Op::Audit),
    ("GET", "/healthz", Op::Healthz),
    ("GET", "/readyz", Op::Readyz),
    ("GET", "/metrics", Op::Metrics),
    ("GET", "/openapi.yaml", Op::OpenApi),
    ("GET", "/v1/orgs/{org}", Op::GetOrg),
    ("POST", "/v1/orgs/{org}/suspend", Op::SuspendOrg),
    ("POST", "/v1/orgs/{org}/restore", Op::RestoreOrg),
];

/// Path parameters of a matched route, in pattern order.
pub type Params<'a> = Vec<(&'static str, &'a str)>;

fn match_pattern<'a>(pattern: &'static str, path: &'a str) -> Option<Params<'a>> {
    let mut params = Vec::new();
    let mut got = path.split('/');
    for want in pattern.split('/') {
        let seg = got.next()?;
        if let Some(name) = want.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
            if seg.is_empty() {
                return None;
            }
            params.push((name, seg));
        } else if want != seg {
            return None;
        }
    }
    got.next().is_none().then_some(params)
}

pub enum Found<'a> {
    Op(Op, Params<'a>),
    /// The path exists with other methods: these (for the 405's `Allow`).
    WrongMethod(Vec<&'static str>),
    NotFound,
}

pub fn find<'a>(method: &Method, path: &'a str) -> Found<'a> {
    let mut allowed = Vec::new();
    for &(m, pattern, op) in ROUTES {
        if let Some(params) = match_pattern(pattern, path) {
            if m == method.as_str() {
                return Found::Op(op, params);
            }
            allowed.push(m);
        }
    }
    if allowed.is_empty() {
        Found::NotFound
    } else {
        Found::WrongMethod(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches() {
        match find(&Method::POST, "/v1/keys/key_abc/rotate") {
            Found::Op(Op::RotateKey, p) => assert_eq!(p, vec![("id", "key_abc")]),
            _ => panic!("no match"),
        }
        match find(&Method::PUT, "/v1/orgs/acme/users/bob/roles") {
            Found::Op(Op::SetUserRoles, p) => assert_eq!(p, vec![("org", "acme"), ("user", "bob")]),
            _ => panic!("no match"),
        }
        match find(&Method::PUT, "/v1/keys") {
            Found::WrongMethod(allowed) => assert_eq!(allowed, vec!["POST", "GET"]),
            _ => panic!("PUT /v1/keys is a wrong method"),
        }
        match find(&Method::POST, "/v1/orgs/acme/suspend") {
            Found::Op(Op::SuspendOrg, p) => assert_eq!(p, vec![("org", "acme")]),
            _ => panic!("no match"),
        }
        match find(&Method::DELETE, "/v1/orgs/acme") {
            Found::WrongMethod(allowed) => assert_eq!(allowed, vec!["GET"]),
            _ => panic!("DELETE /v1/orgs/acme is a wrong method"),
        }
        assert!(matches!(find(&Method::GET, "/v1/keys/"), Found::NotFound));
        assert!(matches!(
            find(&Method::GET, "/v1/keys/a/b/c"),
            Found::NotFound
        ));
    }
}
