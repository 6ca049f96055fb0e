//! Path normalization (SPEC §3): what the gateway and the upstream must agree a request
//! path means before any route rule is applied to it.
//!
//! Normalization runs before matching because route rules are only as strong as the
//! agreement between the gateway and the upstream on what a path means: `%2e%2e`,
//! `//admin` or `/a;b` read differently by different frameworks is how rules get
//! bypassed. What cannot be made unambiguous is refused with 400 `bad_path`.
//!
//! A leaf module (it imports nothing of the crate): config validation normalizes route
//! paths with it and the gateway request paths, so `config` need not import `route`.

use std::borrow::Cow;

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
}
