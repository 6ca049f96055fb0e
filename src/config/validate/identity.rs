//! `identity_headers`: the prefix of the identity headers sent upstream.

use super::Errors;
use crate::config::raw::*;
use crate::config::IdentityConfig;
use http::header::HeaderName;

pub(super) fn identity(raw: RawIdentity, e: &mut Errors) -> IdentityConfig {
    let id_prefix = raw
        .prefix
        .unwrap_or_else(|| DEFAULT_IDENTITY_PREFIX.to_owned())
        .to_ascii_lowercase()
        .replace('_', "-");
    if id_prefix.len() < 2
        || HeaderName::from_bytes(format!("{id_prefix}key-id").as_bytes()).is_err()
    {
        e.push(
            "identity_headers.prefix",
            format!("`{id_prefix}` is not a usable header-name prefix"),
        );
    }
    if raw.sign_secret.is_some() {
        e.push(
            "identity_headers.sign_secret",
            "signed identity headers are not supported by this version",
        );
    }
    IdentityConfig { prefix: id_prefix }
}
