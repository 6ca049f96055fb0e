//! `admin`: the admin listener and its tokens, and the limits a token may carry (checked
//! once the roles are known).

use super::Errors;
use crate::config::raw::*;
use crate::config::{is_ident, AdminConfig, AdminToken};
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn admin(raw: RawAdmin, e: &mut Errors) -> AdminConfig {
    let admin_listen = e.addr("admin.listen", raw.listen.as_deref(), DEFAULT_ADMIN_LISTEN);
    let mut tokens = Vec::new();
    for (i, t) in raw.tokens.into_iter().enumerate() {
        let field = format!("admin.tokens[{i}]");
        if t.name.trim().is_empty() {
            e.push(format!("{field}.name"), "must not be empty");
        }
        match crate::key::KeyHash::from_hex(t.sha256.trim()) {
            Some(h) => tokens.push(AdminToken {
                name: t.name,
                sha256: h.0,
                orgs: t.orgs,
                workspaces: t.workspaces,
                roles: t.roles,
            }),
            None => e.push(
                format!("{field}.sha256"),
                "must be 64 hex characters (sha256 of the token)",
            ),
        }
    }
    AdminConfig {
        listen: admin_listen,
        tokens,
    }
}

/// A token's limits name real things: a workspace limit says whose workspaces (an org),
/// a role ceiling names configured roles, and every name has the shape of one.
pub(super) fn check_token_limits(
    e: &mut Errors,
    tokens: &[AdminToken],
    roles: &BTreeMap<String, BTreeSet<String>>,
) {
    for (i, t) in tokens.iter().enumerate() {
        let field = format!("admin.tokens[{i}]");
        if t.workspaces.is_some() && t.orgs.is_none() {
            e.push(
                format!("{field}.workspaces"),
                "a workspace limit needs `orgs: [..]` naming the org the workspaces belong to; alone it would match that workspace name in every org",
            );
        }
        for (list, what) in [(&t.orgs, "orgs"), (&t.workspaces, "workspaces")] {
            for name in list.iter().flatten() {
                if !is_ident(name) {
                    e.push(
                        format!("{field}.{what}"),
                        format!("`{name}` must be 1-128 characters of [A-Za-z0-9-_.:@]"),
                    );
                }
            }
        }
        for r in t.roles.iter().flatten() {
            if !roles.contains_key(r) {
                e.push(
                    format!("{field}.roles"),
                    format!("`{r}` is not a role of `roles:`"),
                );
            }
        }
    }
}
