//! Routing: path normalization (SPEC §3) and route selection by host, method and the
//! longest whole-segment path prefix.
//!
//! Normalization runs before matching because route rules are only as strong as the
//! agreement between the gateway and the upstream on what a path means: `%2e%2e`,
//! `//admin` or `/a;b` read differently by different frameworks is how rules get
//! bypassed. What cannot be made unambiguous is refused with 400 `bad_path`.

use crate::config::{Config, RouteConfig};
use http::Method;
use std::borrow::Cow;
use std::collections::HashMap;

/// From this many routes on, matching looks routes up by path prefix instead of trying
/// them in turn: a request then costs one lookup per segment of its path, not one
/// comparison per route.
const INDEX_FROM: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path holds an encoded `/` or `\\`")]
    EncodedSeparator,
    #[error("the path climbs above the root")]
    AboveRoot,
    #[error("the path holds a `;` parameter")]
    Parameter,
    #[error("the path holds a bad percent-encoding or character")]
    BadEncoding,
    #[error("the path is not absolute")]
    NotAbsolute,
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Normalizes the path part of a request target (no query): percent-encoded unreserved
/// characters decoded (other escapes kept, hex upper-cased), repeated slashes merged,
/// `.` and `..` segments removed. The result always starts with `/`; a trailing slash
/// is kept (`/a/` and `/a` may differ to the upstream).
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Fast path: most paths are already normal; answer them without allocating.
    if !bytes
        .iter()
        .any(|&c| matches!(c, b'%' | b';' | b'\\') || !(0x21..=0x7e).contains(&c))
        && !bytes.windows(2).any(|w| w == b"//" || w == b"/.")
    {
        return Ok(Cow::Borrowed(raw));
    }
    // Pass 1: decode unreserved escapes, refuse separators hidden in escapes.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'%' => {
                let (h, l) = match (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => (h, l),
                    _ => return Err(PathError::BadEncoding),
                };
                let v = (h << 4) | l;
                if v == b'/' || v == b'\\' {
                    return Err(PathError::EncodedSeparator);
                }
                if v == b';' {
                    return Err(PathError::Parameter);
                }
                if is_unreserved(v) {
                    decoded.push(v);
                } else {
                    decoded.push(b'%');
                    decoded.push(bytes[i + 1].to_ascii_uppercase());
                    decoded.push(bytes[i + 2].to_ascii_uppercase());
                }
                i += 3;
            }
            b';' => return Err(PathError::Parameter),
            b'\\' => return Err(PathError::EncodedSeparator),
            // hyper only hands us valid request-target bytes, but this function is also
            // used on config values: keep to visible ASCII.
            0x21..=0x7e => {
                decoded.push(c);
                i += 1;
            }
            _ => return Err(PathError::BadEncoding),
        }
    }
    // Pass 2: segments, merging empty ones and resolving dots.
    let trailing = decoded.len() > 1 && decoded.last() == Some(&b'/');
    let mut out: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|&c| c == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for seg in &out {
        path.push('/');
        // Every byte is visible ASCII (checked above), so this is valid UTF-8.
        path.push_str(std::str::from_utf8(seg).map_err(|_| PathError::BadEncoding)?);
    }
    let ends_with_dot = decoded.ends_with(b"/.") || decoded.ends_with(b"/..");
    if path.is_empty() || ((trailing || ends_with_dot) && !out.is_empty()) {
        path.push('/');
    }
    Ok(Cow::Owned(path))
}

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
        let fits = |r: &RouteConfig| {
            r.host
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
    fn normalizes() {
        let cases = [
            ("/", "/"),
            ("/v1/models", "/v1/models"),
            ("//v1///models", "/v1/models"),
            ("/v1/./models", "/v1/models"),
            ("/v1/x/../models", "/v1/models"),
            ("/v1/%6dodels", "/v1/models"),
            ("/v1/%2e%2e/admin", "/admin"),
            ("/v1/models/", "/v1/models/"),
            ("/v1/a%20b", "/v1/a%20b"),
            ("/v1/a%3fb", "/v1/a%3Fb"),
            ("/v1/..", "/"),
            ("/v1/.", "/v1/"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refuses() {
        let cases = [
            ("/v1/a%2fb", PathError::EncodedSeparator),
            ("/v1/a%2Fb", PathError::EncodedSeparator),
            ("/v1/a%5cb", PathError::EncodedSeparator),
            ("/v1/a\\b", PathError::EncodedSeparator),
            ("/..", PathError::AboveRoot),
            ("/v1/../../etc", PathError::AboveRoot),
            ("/%2e%2e/x", PathError::AboveRoot),
            ("/v1/models;x=1", PathError::Parameter),
            ("/v1/models%3b", PathError::Parameter),
            ("/v1/%zz", PathError::BadEncoding),
            ("/v1/%2", PathError::BadEncoding),
            ("v1", PathError::NotAbsolute),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw), Err(want), "{raw}");
        }
    }

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

    #[test]
    fn whole_segment_prefixes() {
        assert!(prefix_matches("/v1/models", "/v1/models"));
        assert!(prefix_matches("/v1/models", "/v1/models/7"));
        assert!(!prefix_matches("/v1/models", "/v1/modelsx"));
        assert!(prefix_matches("/", "/anything"));
    }
}
