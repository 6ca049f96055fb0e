//! `routes`: path prefix, host, methods, upstream, permissions, workspace, auth, verify,
//! limits and path rewriting.

use super::{breaks_label, is_label_value, Errors};
use crate::config::raw::*;
use crate::config::{is_name, PathRewrite, RouteConfig, UpstreamConfig, WorkspaceRule};
use http::Method;
use std::collections::BTreeMap;

/// `upstream_index`: the upstreams by name, as `upstreams` built them.
pub(super) fn routes(
    raw: Vec<RawRoute>,
    upstream_index: &BTreeMap<String, usize>,
    upstreams: &[UpstreamConfig],
    e: &mut Errors,
) -> Vec<RouteConfig> {
    let mut routes = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let field = format!("routes[{i}]");
        let path = match crate::path::normalize_path(&r.path) {
            Ok(p) if r.path.starts_with('/') => {
                let p = if p.len() > 1 {
                    p.trim_end_matches('/').to_owned()
                } else {
                    p.into_owned()
                };
                if p != r.path.trim_end_matches('/') && !(p == "/" && r.path == "/") {
                    e.push(
                        format!("{field}.path"),
                        format!("`{}` is not normalized; write `{p}`", r.path),
                    );
                }
                p
            }
            _ => {
                e.push(
                    format!("{field}.path"),
                    format!("`{}` must be an absolute, normalized path", r.path),
                );
                String::new()
            }
        };
        let verify = r.verify.unwrap_or(false);
        // A verify route judges requests by the route they match (SPEC §8): rules of its
        // own would never apply, so they are refused rather than silently ignored.
        if verify {
            let own = [
                ("upstream", r.upstream.is_some()),
                ("permissions", !r.permissions.is_empty()),
                ("workspace", r.workspace.is_some()),
                ("auth", r.auth.is_some()),
                ("strip_prefix", r.strip_prefix.is_some()),
                ("rewrite", r.rewrite.is_some()),
            ];
            for (name, _) in own.iter().filter(|(_, given)| *given) {
                e.push(
                    format!("{field}.{name}"),
                    "a `verify: true` route forwards nothing and judges requests by the rules of the route they match: remove it",
                );
            }
        }
        let upstream = match (&r.upstream, verify) {
            (_, true) => None,
            (Some(name), false) => match upstream_index.get(name) {
                Some(&ix) => Some(ix),
                None => {
                    e.push(
                        format!("{field}.upstream"),
                        format!("no upstream named `{name}`"),
                    );
                    None
                }
            },
            (None, false) => {
                e.push(
                    format!("{field}.upstream"),
                    "required (only a `verify: true` route has none)",
                );
                None
            }
        };
        let no_methods = r.methods.as_ref().is_some_and(Vec::is_empty);
        let methods = r.methods.map(|ms| {
            ms.iter()
                .filter_map(
                    |m| match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                        Ok(m) => Some(m),
                        Err(_) => {
                            e.push(
                                format!("{field}.methods"),
                                format!("`{m}` is not an HTTP method"),
                            );
                            None
                        }
                    },
                )
                .collect::<Vec<_>>()
        });
        let auth = match r.auth.as_deref().unwrap_or("key") {
            "key" => true,
            "none" => false,
            other => {
                e.push(
                    format!("{field}.auth"),
                    format!("`{other}` is not `key` or `none`"),
                );
                true
            }
        };
        let workspace = match r.workspace {
            None => None,
            Some(RawWorkspace {
                header: Some(h),
                path_segment: None,
            }) => e
                .header_name(&format!("{field}.workspace.header"), &h)
                .map(WorkspaceRule::Header),
            Some(RawWorkspace {
                header: None,
                path_segment: Some(n),
            }) if n >= 1 => Some(WorkspaceRule::PathSegment(n as usize)),
            Some(_) => {
                e.push(
                    format!("{field}.workspace"),
                    "needs exactly one of `header` or `path_segment` (1-based)",
                );
                None
            }
        };
        if !auth && (!r.permissions.is_empty() || workspace.is_some()) {
            e.push(
                field.clone(),
                "an `auth: none` route cannot require permissions or a workspace",
            );
        }
        // A route whose permission no key can hold, whose host can never equal a request's
        // (the request's port is not compared), or that allows no method would refuse or
        // miss every request: refused here instead.
        if let Some(p) = r.permissions.iter().find(|p| !is_name(p)) {
            e.push(
                format!("{field}.permissions"),
                format!("`{p}` is not a permission name ([A-Za-z0-9-_.:]+)"),
            );
        }
        if let Some(h) = &r.host {
            if h.contains(':') && h.parse::<std::net::Ipv6Addr>().is_err() {
                e.push(
                    format!("{field}.host"),
                    format!("`{h}`: a route's host is a name or an IP, without port or brackets (the request's port is not compared)"),
                );
            }
        }
        if no_methods {
            e.push(
                format!("{field}.methods"),
                "lists no method; omit `methods` to allow every method",
            );
        }
        let mut permissions = r.permissions;
        permissions.sort();
        permissions.dedup();
        // A name given is checked; without one the path names the route (a normalized
        // path has no backslash or control character, but may hold a `"`).
        match r.name.as_deref() {
            Some(n) if !is_label_value(n) => e.push(
                format!("{field}.name"),
                "a route name is 1-256 characters without `\"`, `\\` or control characters",
            ),
            None if breaks_label(&path) => e.push(
                format!("{field}.name"),
                "the path names the route in metrics and holds a `\"`: give the route a name",
            ),
            _ => {}
        }
        let rate_limit = r.rate_limit.as_deref().and_then(|l| {
            crate::limits::RateLimit::parse(l)
                .map_err(|err| e.push(format!("{field}.rate_limit"), err.to_string()))
                .ok()
        });
        if !auth && rate_limit.is_some() {
            e.push(
                format!("{field}.rate_limit"),
                "an `auth: none` route has no key to count a rate limit against",
            );
        }
        let upstream_path = upstream
            .and_then(|i| upstreams.get(i))
            .and_then(|u| u.path.as_deref());
        let path_rewrite = path_rewrite(
            &field,
            &path,
            r.strip_prefix.unwrap_or(false),
            r.rewrite.as_deref(),
            upstream_path,
            e,
        );
        let name = r.name.unwrap_or_else(|| path.clone());
        routes.push(RouteConfig {
            name,
            path,
            host: r.host.map(|h| h.to_ascii_lowercase()),
            methods,
            upstream,
            permissions,
            workspace,
            auth,
            rate_limit,
            verify,
            path_rewrite,
        });
    }
    routes
}

/// The route's `strip_prefix` / `rewrite` with its upstream's path: how the upstream's path
/// is made, or `None` when it is the request's as it is.
fn path_rewrite(
    field: &str,
    route_path: &str,
    strip: bool,
    rewrite: Option<&str>,
    upstream_path: Option<&str>,
    e: &mut Errors,
) -> Option<PathRewrite> {
    let replacement = match (strip, rewrite) {
        (true, Some(_)) => {
            e.push(
                format!("{field}.rewrite"),
                "give `strip_prefix: true` or `rewrite`, not both (`rewrite: /` strips)",
            );
            return None;
        }
        (true, None) => Some(""),
        (false, Some(r)) => {
            let normalized = crate::path::normalize_path(r).ok();
            let trimmed = r.trim_end_matches('/');
            if !r.starts_with('/')
                || normalized.as_deref().map(|n| n.trim_end_matches('/')) != Some(trimmed)
            {
                e.push(
                    format!("{field}.rewrite"),
                    format!("`{r}` must be an absolute, normalized path (like `/v2/models`)"),
                );
                return None;
            }
            Some(trimmed)
        }
        (false, None) => None,
    };
    if replacement.is_none() && upstream_path.is_none() {
        return None;
    }
    // The route `/` matches every path whole: stripping it removes nothing.
    let drop = match replacement {
        Some(_) if route_path != "/" => route_path.len(),
        _ => 0,
    };
    Some(PathRewrite {
        drop,
        prefix: format!(
            "{}{}",
            upstream_path.unwrap_or(""),
            replacement.unwrap_or("")
        ),
    })
}

/// A route permission that no role grants would refuse every key (403): refused here.
pub(super) fn check_grantable(
    routes: &[RouteConfig],
    roles: &BTreeMap<String, std::collections::BTreeSet<String>>,
    e: &mut Errors,
) {
    for (i, r) in routes.iter().enumerate() {
        for p in &r.permissions {
            // A name that is not a permission name is refused as such already.
            if is_name(p) && !roles.values().any(|perms| perms.contains(p)) {
                e.push(
                    format!("routes[{i}].permissions"),
                    format!("`{p}` is granted by no role, so no key could pass this route; add it to a role in `roles`"),
                );
            }
        }
    }
}
