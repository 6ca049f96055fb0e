//! Who is asking: the admin token a request carries. An API key presented anywhere the
//! proxy would read one is refused before any token is compared, so a leaked key can never
//! reach key management; tokens are configured by sha256 and compared by hash, each in
//! constant time.

use super::AdminState;
use crate::config::AdminToken;
use crate::error::AdminError;
use crate::key::{KeyFormat, KeyHash};
use http::header::AUTHORIZATION;
use http::Request;
use hyper::body::Incoming;

/// Which configured token the request carries. An API key is refused with 403 before
/// any token comparison, so a leaked key can never reach key management.
pub(super) fn token<'s>(
    state: &'s AdminState,
    format: &KeyFormat,
    req: &Request<Incoming>,
) -> Result<&'s AdminToken, AdminError> {
    if presents_api_key(state, format, req) {
        return Err(AdminError::ApiKeyNotAllowed);
    }
    let mut values = req.headers().get_all(AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (Some(v), None) => v,
        _ => return Err(AdminError::Unauthorized),
    };
    let presented = crate::auth::bearer(value).ok_or(AdminError::Unauthorized)?;
    let hash = KeyHash::of(presented);
    // Every token is compared, each in constant time: no early exit tells which
    // bytes of which token matched.
    let mut found = None;
    for t in &state.tokens {
        if constant_time_eq(&t.sha256, &hash.0) {
            found = Some(t);
        }
    }
    found.ok_or(AdminError::Unauthorized)
}

/// Whether `s` is a well-formed API key (prefix, length, charset, checksum).
fn is_api_key(format: &KeyFormat, s: &[u8]) -> bool {
    std::str::from_utf8(s).is_ok_and(|s| format.check(s).is_ok())
}

/// Whether the request presents an API key wherever the proxy would read one: as
/// the bearer, in the key header or in the key query parameter.
fn presents_api_key(state: &AdminState, format: &KeyFormat, req: &Request<Incoming>) -> bool {
    let headers = req.headers();
    let sources = &state.key_sources;
    let in_bearer = headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(crate::auth::bearer)
        .any(|k| is_api_key(format, k));
    let in_header = sources.header.as_ref().is_some_and(|h| {
        crate::auth::key_header_values(headers, h)
            .any(|v| is_api_key(format, v.as_bytes().trim_ascii()))
    });
    let in_query = match (&sources.query_param, req.uri().query()) {
        (Some(param), Some(q)) => q.split('&').any(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            crate::auth::param_name_is(k, param)
                && crate::auth::percent_decode(v).is_some_and(|v| is_api_key(format, v.as_bytes()))
        }),
        _ => false,
    };
    in_bearer || in_header || in_query
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
    }
}
