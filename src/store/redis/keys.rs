//! Names of the Redis keys the store uses (the layout is documented in `store::redis`).
//!
//! The Lua scripts build some of these names themselves (`user_key`, `owner_key` in
//! `scripts.rs`, from fields they read); the two must stay in step, and the tests read back
//! through Rust what the scripts wrote.

use crate::key::KeyHash;

/// Every key starts with this hash tag, so all of them live in one cluster slot and every
/// script may touch any of them.
pub(super) const PREFIX: &str = "{kg}:";

pub(super) fn key(id: &str) -> String {
    format!("{PREFIX}key:{id}")
}

pub(super) fn hash(hash: &KeyHash) -> String {
    format!("{PREFIX}hash:{}", hash.to_hex())
}

pub(super) fn org(org: &str) -> String {
    format!("{PREFIX}org:{org}")
}

pub(super) fn all() -> String {
    format!("{PREFIX}all")
}

/// `org` is length-prefixed: orgs and users may both contain `:`, and `a:b` + `c` must not
/// name the same key as `a` + `b:c`.
pub(super) fn owner(org: &str, user: &str) -> String {
    format!("{PREFIX}owner:{}:{org}:{user}", org.len())
}

pub(super) fn user(org: &str, user: &str) -> String {
    format!("{PREFIX}user:{}:{org}:{user}", org.len())
}

/// An org's state (suspended or not). `org-state:` and `org:` part at their fourth
/// character (`-` / `:`), so no org name makes this the name of an org's key index.
pub(super) fn org_state(org: &str) -> String {
    format!("{PREFIX}org-state:{org}")
}

pub(super) fn audit() -> String {
    format!("{PREFIX}audit")
}

pub(super) fn audit_of_key(id: &str) -> String {
    format!("{PREFIX}audit:key:{id}")
}

pub(super) fn events() -> String {
    format!("{PREFIX}events")
}

pub(super) fn events_seq() -> String {
    format!("{PREFIX}events:seq")
}

pub(super) fn events_epoch() -> String {
    format!("{PREFIX}events:epoch")
}

/// A key's quota counters (`Meters`).
pub(super) fn quota(id: &str) -> String {
    format!("{PREFIX}quota:{id}")
}

/// The base name of a key's shared rate windows of `window_ms`; the script appends the
/// window index.
pub(super) fn rate(id: &str, window_ms: i64) -> String {
    format!("{PREFIX}rate:{id}:{window_ms}")
}
