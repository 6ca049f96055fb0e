//! Identity headers (SPEC §2 step 3): their names under the configured prefix, and one
//! key's values, computed once when the key enters the cache. Below both the cache, which
//! keeps a key's `Identity`, and the auth step, which reads it for a verdict, so that
//! neither imports the other for it.

use crate::store::{KeyType, Lookup};
use http::header::{HeaderName, HeaderValue};

/// Identity header names under the configured prefix, built once.
#[derive(Debug, Clone)]
pub struct IdentityNames {
    pub prefix: String,
    pub key_id: HeaderName,
    pub key_name: HeaderName,
    pub org: HeaderName,
    pub workspace: HeaderName,
    pub key_type: HeaderName,
    pub actor: HeaderName,
    pub permissions: HeaderName,
}

impl IdentityNames {
    /// `prefix` is validated by config (lower-case, header-name characters).
    pub fn new(prefix: &str) -> Self {
        let h = |suffix: &str| {
            HeaderName::from_bytes(format!("{prefix}{suffix}").as_bytes())
                .expect("config validated the identity prefix")
        };
        IdentityNames {
            prefix: prefix.to_owned(),
            key_id: h("key-id"),
            key_name: h("key-name"),
            org: h("org"),
            workspace: h("workspace"),
            key_type: h("key-type"),
            actor: h("actor"),
            permissions: h("permissions"),
        }
    }

    /// Whether a client header falls under the prefix, in any case and with `_` read as
    /// `-` (some servers and CGI-style frameworks fold `_` into `-`).
    pub fn is_identity_header(&self, name: &HeaderName) -> bool {
        let n = name.as_str().as_bytes();
        let p = self.prefix.as_bytes();
        n.len() >= p.len() && n.iter().zip(p).all(|(&a, &b)| fold_name_byte(a) == b)
    }
}

/// Identity header values of one key, computed when it enters the cache.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key_id: HeaderValue,
    pub key_name: HeaderValue,
    pub org: HeaderValue,
    pub actor: HeaderValue,
    /// Effective permissions (the key's own, or its owner's for `inherit`), sorted and
    /// joined with `,`; also what `authorize` reads (names cannot hold a comma). Empty if
    /// the stored names are not a valid header value.
    pub permissions: HeaderValue,
    /// The key's only workspace, sent when the route resolves none.
    pub default_workspace: Option<HeaderValue>,
}

/// The identity header values of one key, all slices of one buffer: one allocation per
/// cached key instead of one per value.
struct Packed(bytes::BytesMut);

impl Packed {
    fn push(&mut self, s: &str) -> std::ops::Range<usize> {
        let start = self.0.len();
        self.0.extend_from_slice(s.as_bytes());
        start..self.0.len()
    }
}

/// Header value for text the store holds. Names may be UTF-8 (sent as raw bytes, which
/// HTTP allows as obs-text); control characters are refused at creation, so the
/// fallback only guards against records written by other tools.
fn value(buf: &bytes::Bytes, r: std::ops::Range<usize>) -> HeaderValue {
    HeaderValue::from_maybe_shared(buf.slice(r))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

impl Identity {
    pub fn of(l: &Lookup) -> Self {
        let k = &l.key;
        let permission_list: &[String] = if k.inherit {
            l.owner.as_ref().map_or(&[], |u| &u.permissions)
        } else {
            &k.permissions
        };
        let actor = match k.key_type {
            KeyType::Service => k.name.as_str(),
            KeyType::Personal => k.owner.as_deref().unwrap_or(k.name.as_str()),
        };
        let workspace = match k.workspaces.as_slice() {
            [w] if !k.is_org_key() => Some(w.as_str()),
            _ => None,
        };
        let joined: usize = permission_list.iter().map(|p| p.len() + 1).sum();
        let mut p = Packed(bytes::BytesMut::with_capacity(
            k.id.len()
                + k.name.len()
                + k.org.len()
                + actor.len()
                + joined
                + workspace.map_or(0, str::len),
        ));
        let (id, name, org, actor) = (
            p.push(&k.id),
            p.push(&k.name),
            p.push(&k.org),
            p.push(actor),
        );
        let permissions = p.push(&permission_list.join(","));
        let workspace = workspace.map(|w| p.push(w));
        let buf = p.0.freeze();
        Identity {
            key_id: value(&buf, id),
            key_name: value(&buf, name),
            org: value(&buf, org),
            actor: value(&buf, actor),
            permissions: HeaderValue::from_maybe_shared(buf.slice(permissions))
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            default_workspace: workspace.map(|w| value(&buf, w)),
        }
    }

    /// Whether `permission` is among the key's effective permissions.
    pub fn has_permission(&self, permission: &str) -> bool {
        self.permissions
            .as_bytes()
            .split(|&b| b == b',')
            .any(|p| p == permission.as_bytes())
    }
}

/// A header name's byte as servers that fold names read it: lower case, `_` as `-`.
pub fn fold_name_byte(c: u8) -> u8 {
    if c == b'_' {
        b'-'
    } else {
        c.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_prefix_matching() {
        let n = IdentityNames::new("x-keygate-");
        assert!(n.is_identity_header(&HeaderName::from_static("x-keygate-org")));
        assert!(n.is_identity_header(&HeaderName::from_static("x_keygate_org")));
        assert!(n.is_identity_header(&HeaderName::from_static("x-keygate_actor")));
        assert!(!n.is_identity_header(&HeaderName::from_static("x-keygat")));
        assert!(!n.is_identity_header(&HeaderName::from_static("x-other")));
    }
}
