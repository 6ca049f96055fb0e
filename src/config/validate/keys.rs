//! `keys`: the key prefix, where credentials are read from (header, query parameter),
//! recoverable keys and their vault key, and the `last_used` flush.

use super::Errors;
use crate::config::raw::*;
use crate::config::KeysConfig;
use crate::key::{VaultKey, VAULT_KEY_ENV};
use std::time::Duration;

pub(super) fn keys(
    raw: RawKeys,
    env: &dyn Fn(&str) -> Option<String>,
    e: &mut Errors,
) -> KeysConfig {
    let prefix = raw.prefix.unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
    if prefix.is_empty() || prefix.len() > 16 || !prefix.bytes().all(|c| c.is_ascii_alphanumeric())
    {
        e.push(
            "keys.prefix",
            format!("`{prefix}` must be 1-16 characters of [A-Za-z0-9]"),
        );
    }
    let key_header = raw
        .header
        .as_deref()
        .and_then(|h| e.header_name("keys.header", h));
    if key_header.as_ref() == Some(&http::header::AUTHORIZATION) {
        e.push(
            "keys.header",
            "Authorization is always read; name another header",
        );
    }
    if let Some(q) = &raw.query_param {
        if q.is_empty()
            || !q
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        {
            e.push("keys.query_param", format!("`{q}` must be [A-Za-z0-9-_.]+"));
        }
    }
    // The vault key is read only when recoverable keys are on, and never repeated in an
    // error: it is the one secret that opens every stored secret.
    let vault = if raw.recoverable == Some(true) {
        match env(VAULT_KEY_ENV) {
            None => {
                e.push(
                    "keys.recoverable",
                    format!("needs the vault key in the environment: {VAULT_KEY_ENV} is not set (32 bytes as 64 hex characters; make one with `openssl rand -hex 32`)"),
                );
                None
            }
            Some(v) => VaultKey::from_hex(v.trim())
                .map_err(|_| {
                    e.push(
                        "keys.recoverable",
                        format!("{VAULT_KEY_ENV} must be 64 hex characters (32 bytes); the value in the environment is not (it is not shown)"),
                    )
                })
                .ok(),
        }
    } else {
        None
    };
    KeysConfig {
        prefix,
        header: key_header,
        query_param: raw.query_param,
        forward_credential: raw.forward_credential.unwrap_or(false),
        vault,
        last_used_flush: e.bounded(
            "keys.last_used_flush",
            raw.last_used_flush.as_deref(),
            DEFAULT_LAST_USED_FLUSH,
            Duration::from_secs(60),
        ),
    }
}
