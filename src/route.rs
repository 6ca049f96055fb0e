//! Routing: route selection by host, method and the longest whole-segment path prefix,
//! over paths normalized by `crate::path` (SPEC §3).

use crate::config::{Config, RouteConfig};
use http::Method;
use std::collections::HashMap;

/// From this many routes on, matching looks routes up by path prefix instead of trying
/// them in turn: a request then costs one lookup per segment of its path, not one
/// comparison per route.
const INDEX_FROM: usize = 16;

/// The 1-based `n`th segment of a normalized path (`/v1/acme/x`, 2 -> `acme`).
pub fn path_segment(path: &str, n: usize) -> Option<&str> {
    path.split('/')
        .skip(1)
        .nth(n.checked_sub(1)?)
        .filter(|s| !s.is_empty())
}

/// Whether `prefix` (normalized, no trailing slash) covers `path` on whole segments.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Routes in match order: longest prefix first, so the first fit is the winner.
#[derive(Debug, Clone)]
pub struct Router {
    /// Indexes into the config's routes, longest path first (ties keep file order).
    order: Vec<usize>,
    routes: Vec<RouteConfig>,
    /// Large tables only: route indexes by path, each list in file order.
    by_path: Option<HashMap<Box<str>, Vec<usize>>>,
}

impl Router {
    pub fn new(config: &Config) -> Self {
        Self::build(config, config.routes.len() >= INDEX_FROM)
    }

    fn build(config: &Config, index: bool) -> Self {
        let routes = config.routes.clone();
        let mut order: Vec<usize> = (0..routes.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(routes[i].path.len()));
        let by_path = index.then(|| {
            let mut map: HashMap<Box<str>, Vec<usize>> = HashMap::new();
            for (i, r) in routes.iter().enumerate() {
                map.entry(r.path.as_str().into()).or_default().push(i);
            }
            map
        });
        Router {
            order,
            routes,
            by_path,
        }
    }

    /// The route for a request. `host` is the request's host without port, any case.
    pub fn find(
        &self,
        host: Option<&str>,
        method: &Method,
        path: &str,
    ) -> Option<(usize, &RouteConfig)> {
        self.find_among(host, method, path, true)
    }

    /// The route for the request a forward-auth check names (SPEC §8): as `find`, but
    /// never a verify route, which judges requests and is none to judge by.
    pub fn find_target(
        &self,
        host: Option<&str>,
        method: &Method,
        path: &str,
    ) -> Option<(usize, &RouteConfig)> {
        self.find_among(host, method, path, false)
    }

    fn find_among(
        &self,
        host: Option<&str>,
        method: &Method,
        path: &str,
        verify_routes: bool,
    ) -> Option<(usize, &RouteConfig)> {
        let fits = |r: &RouteConfig| {
            (verify_routes || !r.verify)
                && r.host
                    .as_deref()
                    .is_none_or(|h| host.is_some_and(|got| got.eq_ignore_ascii_case(h)))
                && r.methods.as_ref().is_none_or(|ms| ms.contains(method))
        };
        let Some(by_path) = &self.by_path else {
            return self
                .order
                .iter()
                .map(|&i| (i, &self.routes[i]))
                .find(|(_, r)| prefix_matches(&r.path, path) && fits(r));
        };
        // The prefixes that match on whole segments, longest first: the path itself, then
        // the path up to each `/` from the right (the one at 0 stands for the root `/`).
        let whole = std::iter::once(path);
        let cut = path.rmatch_indices('/').map(|(at, _)| match at {
            0 => "/",
            _ => &path[..at],
        });
        whole.chain(cut).find_map(|prefix| {
            by_path
                .get(prefix)?
                .iter()
                .map(|&i| (i, &self.routes[i]))
                .find(|(_, r)| fits(r))
        })
    }

    pub fn routes(&self) -> &[RouteConfig] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments() {
        assert_eq!(path_segment("/v1/acme/x", 2), Some("acme"));
        assert_eq!(path_segment("/v1/acme/x", 1), Some("v1"));
        assert_eq!(path_segment("/v1/acme/x", 4), None);
        assert_eq!(path_segment("/v1/", 2), None);
        assert_eq!(path_segment("/v1", 0), None);
    }

    /// The indexed lookup of large tables picks exactly what trying routes in order picks.
    #[test]
    fn indexed_matching_agrees_with_scanning() {
        let mut yaml =
            String::from("upstreams: { api: { targets: [\"http://127.0.0.1:9\"] } }\nroutes:\n");
        for path in [
            "/",
            "/v1",
            "/v1/models",
            "/v1/models/x",
            "/v1/mod",
            "/v2/a/b/c",
            "/v1/models",
        ] {
            for extra in ["", ", methods: [POST]", ", host: api.example.com"] {
                yaml.push_str(&format!("  - {{ path: {path}, upstream: api{extra} }}\n"));
            }
        }
        let config = Config::from_yaml(&yaml, &|_| None).expect("config");
        assert!(config.routes.len() >= INDEX_FROM);
        let (scan, index) = (Router::build(&config, false), Router::build(&config, true));
        assert!(index.by_path.is_some() && scan.by_path.is_none());
        let paths = [
            "/",
            "/v1",
            "/v1/",
            "/v1/models",
            "/v1/models/",
            "/v1/models/x",
            "/v1/models/x/y",
            "/v1/modelsx",
            "/v1/mod/els",
            "/v2",
            "/v2/a/b",
            "/v2/a/b/c/d",
            "/other",
        ];
        for path in paths {
            for host in [None, Some("API.example.com"), Some("other")] {
                for method in [Method::GET, Method::POST] {
                    let want = scan.find(host, &method, path).map(|(i, _)| i);
                    let got = index.find(host, &method, path).map(|(i, _)| i);
                    assert_eq!(got, want, "{method} {host:?} {path}");
                }
            }
        }
        // And it really routes: the longest prefix wins, the first of equals in file order.
        assert_eq!(
            index
                .find(None, &Method::GET, "/v1/models/x/y")
                .map(|(_, r)| r.path.as_str()),
            Some("/v1/models/x")
        );
    }

    /// A forward-auth check is judged by the route its request matches, never by a verify
    /// route: `find_target` passes over them, in small and in indexed tables alike.
    #[test]
    fn find_target_never_picks_a_verify_route() {
        for extra in [0, INDEX_FROM] {
            let mut yaml = String::from(
                "upstreams: { api: { targets: [\"http://127.0.0.1:9\"] } }\nroutes:\n  - { path: /, upstream: api }\n  - { path: /_verify, verify: true }\n",
            );
            for i in 0..extra {
                yaml.push_str(&format!("  - {{ path: /filler/{i}, upstream: api }}\n"));
            }
            let config = Config::from_yaml(&yaml, &|_| None).expect("config");
            let router = Router::new(&config);
            let path = |found: Option<(usize, &RouteConfig)>| found.map(|(_, r)| r.path.clone());
            for p in ["/_verify", "/_verify/v1"] {
                assert_eq!(
                    path(router.find(None, &Method::GET, p)).as_deref(),
                    Some("/_verify")
                );
                assert_eq!(
                    path(router.find_target(None, &Method::GET, p)).as_deref(),
                    Some("/"),
                    "{p}"
                );
            }
        }
    }

    #[test]
    fn whole_segment_prefixes() {
        assert!(prefix_matches("/v1/models", "/v1/models"));
        assert!(prefix_matches("/v1/models", "/v1/models/7"));
        assert!(!prefix_matches("/v1/models", "/v1/modelsx"));
        assert!(prefix_matches("/", "/anything"));
    }
}
