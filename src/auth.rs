//! Authentication and authorization: credential -> format check -> hash -> cached
//! lookup -> verdict (SPEC §2's table, in its order) -> `Identity` for the headers.
//!
//! The format check comes before any hashing or lookup so that garbage, typos and
//! oversized values cost nothing and never reach the store.

use crate::cache::{CachedKey, KeyCache, LookupError};
use crate::config::{Config, RouteConfig, WorkspaceRule};
use crate::identity::fold_name_byte;
use crate::key::{KeyFormat, KeyFormatError, KeyHash};
use crate::store::{KeyState, KeyType};
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::HeaderMap;
use std::borrow::Cow;
use std::sync::Arc;

/// Every way a request can be refused by the auth step. Mapped to status and code in
/// `error.rs` only.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no API key was presented")]
    MissingKey,
    #[error("more than one credential was presented")]
    MultipleKeys,
    #[error("the API key is malformed: {0}")]
    MalformedKey(#[source] KeyFormatError),
    #[error("the API key is not known")]
    UnknownKey,
    #[error("the API key has been revoked")]
    RevokedKey,
    #[error("the API key is disabled")]
    DisabledKey,
    #[error("the API key has expired")]
    ExpiredKey,
    #[error("the owner of this personal key has been removed")]
    OwnerRemoved,
    #[error("the API key lacks a permission this route requires")]
    InsufficientPermissions,
    #[error("this route needs a workspace and the request names none")]
    WorkspaceRequired,
    #[error("the API key may not use this workspace")]
    WorkspaceNotAllowed,
    #[error("the organization of this API key is suspended")]
    OrgSuspended,
    #[error("the key store is unavailable")]
    StoreUnavailable(#[source] LookupError),
}

/// Where credentials are read from (SPEC §2 step 1).
#[derive(Debug, Clone)]
pub struct CredentialSources {
    pub header: Option<HeaderName>,
    pub query_param: Option<String>,
}

/// Whether two header names are one once `_` is read as `-` (as some servers and CGI-style
/// frameworks read them: `X_Api_Key` reaches them as `x-api-key`). Names are lower case.
pub fn same_header_name(a: &HeaderName, b: &HeaderName) -> bool {
    let (a, b) = (a.as_str().as_bytes(), b.as_str().as_bytes());
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(&x, &y)| fold_name_byte(x) == fold_name_byte(y))
}

/// Every value of the key header `name`, under that name or a spelling of it with `_` for
/// `-` (see `same_header_name`): each is a copy of the credential to count and remove.
pub fn key_header_values<'h, 'n>(
    headers: &'h HeaderMap,
    name: &'n HeaderName,
) -> impl Iterator<Item = &'h HeaderValue> + use<'h, 'n> {
    headers
        .iter()
        .filter(move |(n, _)| same_header_name(n, name))
        .map(|(_, v)| v)
}

/// Whether an Authorization value uses the Bearer scheme, and the key after it.
/// `Some("")` for a bare `Bearer`. Another scheme is no key: `None`.
pub fn bearer(v: &HeaderValue) -> Option<&[u8]> {
    let b = v.as_bytes();
    let b = b.trim_ascii_start();
    if b.len() < 6 || !b[..6].eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let rest = &b[6..];
    if !rest.is_empty() && rest[0] != b' ' && rest[0] != b'\t' {
        return None; // e.g. `Bearerx`
    }
    Some(rest.trim_ascii())
}

pub fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains(['%', '+']) {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                // Two hex digits: `from_str_radix` alone would take `%+A` as 0x0A.
                let hex = s
                    .get(i + 1..i + 3)
                    .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Whether a raw query parameter name is `param` once percent-decoded, as upstream
/// frameworks read it (`api%5Fkey` is `api_key`).
pub fn param_name_is(raw: &str, param: &str) -> bool {
    raw == param || percent_decode(raw).is_some_and(|n| n == param)
}

/// A header's bytes as text: borrowed when they are UTF-8 (checked by the fast path of
/// `str::from_utf8`), else with replacement characters, which the format check refuses.
fn utf8(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

/// The one credential of a request, or why there is none usable. Bytes that are not
/// UTF-8 become a value that fails the format check (malformed, never a panic).
pub fn extract_credential<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    sources: &CredentialSources,
) -> Result<Cow<'a, str>, AuthError> {
    let mut found: Option<Cow<'a, str>> = None;
    let mut count = 0usize;
    let mut take = |v: Cow<'a, str>| {
        count += 1;
        found = Some(v);
    };
    let mut auth_headers = 0;
    for v in headers.get_all(AUTHORIZATION) {
        auth_headers += 1;
        if let Some(k) = bearer(v) {
            take(utf8(k));
        }
    }
    // Two Authorization headers are refused whatever their schemes: a gateway must never
    // guess which one an upstream will read.
    if auth_headers > 1 {
        return Err(AuthError::MultipleKeys);
    }
    if let Some(name) = &sources.header {
        for v in key_header_values(headers, name) {
            take(utf8(v.as_bytes().trim_ascii()));
        }
    }
    if let (Some(param), Some(q)) = (&sources.query_param, query) {
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if param_name_is(k, param) {
                // A value that cannot be decoded is kept raw: the format check refuses it.
                take(percent_decode(v).unwrap_or(Cow::Borrowed(v)));
            }
        }
    }
    match count {
        0 => Err(AuthError::MissingKey),
        1 => found.ok_or(AuthError::MissingKey),
        _ => Err(AuthError::MultipleKeys),
    }
}

/// What the auth step hands to the proxy: the key and the workspace the route resolved.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key: Arc<CachedKey>,
    pub workspace: Option<HeaderValue>,
}

pub struct Authenticator {
    format: KeyFormat,
    cache: Arc<KeyCache>,
    pub sources: CredentialSources,
}

impl Authenticator {
    pub fn new(config: &Config, cache: Arc<KeyCache>) -> Self {
        Authenticator {
            format: KeyFormat::new(&config.keys.prefix),
            cache,
            sources: CredentialSources {
                header: config.keys.header.clone(),
                query_param: config.keys.query_param.clone(),
            },
        }
    }

    pub fn cache(&self) -> &Arc<KeyCache> {
        &self.cache
    }

    /// The key behind a presented credential, if it may be used now.
    pub async fn authenticate(
        &self,
        credential: &str,
        now_ms: i64,
    ) -> Result<Arc<CachedKey>, AuthError> {
        let shaped = self
            .format
            .check_shape(credential)
            .map_err(AuthError::MalformedKey)?;
        let hash = KeyHash::of(shaped.as_bytes());
        let known = match self.cache.fresh(&hash, now_ms).await {
            // Only keys with a valid checksum are ever looked up, so a cached answer
            // (known or unknown) stands for one: the CRC is checked on a miss only.
            Some(answer) => answer,
            None => {
                self.format
                    .check_checksum(shaped)
                    .map_err(AuthError::MalformedKey)?;
                self.cache
                    .load(&hash, now_ms)
                    .await
                    .map_err(AuthError::StoreUnavailable)?
            }
        };
        let key = known.ok_or(AuthError::UnknownKey)?;
        let record = &key.facts;
        match record.state {
            KeyState::Revoked => return Err(AuthError::RevokedKey),
            KeyState::Disabled => return Err(AuthError::DisabledKey),
            KeyState::Active => {}
        }
        // Checked on every request, cache hits included: a cached key still expires.
        if record.is_expired_at(now_ms) {
            return Err(AuthError::ExpiredKey);
        }
        if record.key_type == KeyType::Personal && record.owner_removed {
            return Err(AuthError::OwnerRemoved);
        }
        key.touch(now_ms);
        Ok(key)
    }

    /// Permissions, then workspace, as the SPEC orders them.
    pub fn authorize(
        &self,
        key: Arc<CachedKey>,
        route: &RouteConfig,
        headers: &HeaderMap,
        path: &str,
    ) -> Result<Principal, AuthError> {
        if !route
            .permissions
            .iter()
            .all(|p| key.identity.has_permission(p))
        {
            return Err(AuthError::InsufficientPermissions);
        }
        let workspace = match &route.workspace {
            None => key.identity.default_workspace.clone(),
            Some(rule) => {
                let named: Option<&str> = match rule {
                    WorkspaceRule::Header(h) => {
                        let mut vals = headers.get_all(h).iter();
                        match (vals.next(), vals.next()) {
                            // Two workspace headers: refuse rather than guess.
                            (Some(_), Some(_)) => return Err(AuthError::WorkspaceNotAllowed),
                            (Some(v), None) => Some(
                                v.to_str()
                                    .map_err(|_| AuthError::WorkspaceNotAllowed)?
                                    .trim(),
                            ),
                            _ => None,
                        }
                    }
                    WorkspaceRule::PathSegment(n) => crate::route::path_segment(path, *n),
                };
                let ws = named
                    .filter(|w| !w.is_empty())
                    .ok_or(AuthError::WorkspaceRequired)?;
                let facts = &key.facts;
                // An org key may use any workspace of its org, but only a real workspace
                // name reaches the upstream (never `*`, a list or a path).
                if !crate::store::is_ident(ws)
                    || (!facts.org_key && !facts.workspaces.iter().any(|w| &**w == ws))
                {
                    return Err(AuthError::WorkspaceNotAllowed);
                }
                Some(HeaderValue::from_str(ws).map_err(|_| AuthError::WorkspaceNotAllowed)?)
            }
        };
        // The org's state is the limit stage's to check (gateway/stages/limit.rs): SPEC
        // §2 puts it after the rate limit and before the quota.
        Ok(Principal { key, workspace })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).expect("test header")
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(&hv("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&hv("bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&hv("BEARER   abc  ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&hv("Bearer")), Some(&b""[..]));
        assert_eq!(bearer(&hv("Basic abc")), None);
        assert_eq!(bearer(&hv("Bearerabc")), None);
    }

    fn sources() -> CredentialSources {
        CredentialSources {
            header: Some(HeaderName::from_static("x-api-key")),
            query_param: Some("api_key".into()),
        }
    }

    #[test]
    fn percent_decoding_takes_two_hex_digits_only() {
        assert_eq!(percent_decode("a%4ab+c").as_deref(), Some("aJb c"));
        assert_eq!(percent_decode("%+A"), None);
        assert_eq!(percent_decode("%-1"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("%FF"), None, "not UTF-8");
    }

    #[test]
    fn key_header_spelled_with_underscores_is_a_copy_of_the_key() {
        let s = sources();
        let mut h = HeaderMap::new();
        h.insert("x_api_key", hv("k1"));
        assert_eq!(extract_credential(&h, None, &s).ok().as_deref(), Some("k1"));
        // Beside the Bearer key, or beside the header's own spelling: two keys, refused.
        h.insert(AUTHORIZATION, hv("Bearer k2"));
        assert!(matches!(
            extract_credential(&h, None, &s),
            Err(AuthError::MultipleKeys)
        ));
        h.remove(AUTHORIZATION);
        h.insert("x-api_key", hv("k2"));
        assert!(matches!(
            extract_credential(&h, None, &s),
            Err(AuthError::MultipleKeys)
        ));
        let (a, b) = (
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("x_api_key"),
        );
        assert!(same_header_name(&a, &b) && same_header_name(&b, &a));
        assert!(!same_header_name(
            &a,
            &HeaderName::from_static("x-api-keys")
        ));
        assert!(!same_header_name(&a, &HeaderName::from_static("x-api.key")));
    }

    #[test]
    fn credentials() {
        let s = sources();
        let mut h = HeaderMap::new();
        assert!(matches!(
            extract_credential(&h, None, &s),
            Err(AuthError::MissingKey)
        ));
        h.insert(AUTHORIZATION, hv("Basic dXNlcjpwdw=="));
        assert!(matches!(
            extract_credential(&h, None, &s),
            Err(AuthError::MissingKey)
        ));
        h.insert(AUTHORIZATION, hv("Bearer k1"));
        assert_eq!(extract_credential(&h, None, &s).ok().as_deref(), Some("k1"));
        assert!(matches!(
            extract_credential(&h, Some("api_key=k2"), &s),
            Err(AuthError::MultipleKeys)
        ));
        h.append(AUTHORIZATION, hv("Bearer k1"));
        assert!(matches!(
            extract_credential(&h, None, &s),
            Err(AuthError::MultipleKeys)
        ));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", hv(" k3 "));
        assert_eq!(
            extract_credential(&h, Some("a=b"), &s).ok().as_deref(),
            Some("k3")
        );
        let h = HeaderMap::new();
        assert_eq!(
            extract_credential(&h, Some("a=b&api_key=k%34"), &s)
                .ok()
                .as_deref(),
            Some("k4")
        );
        assert!(matches!(
            extract_credential(&h, Some("api_key=a&api_key=b"), &s),
            Err(AuthError::MultipleKeys)
        ));
        assert!(matches!(
            extract_credential(&h, Some("api_key=a&api%5Fkey=b"), &s),
            Err(AuthError::MultipleKeys)
        ));
    }
}
