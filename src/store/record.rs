//! The records a store keeps. Times are unix milliseconds (UTC); JSON shows RFC 3339.

use crate::key::{KeyHash, SealedSecret};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Service,
    Personal,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Service => "service",
            KeyType::Personal => "personal",
        }
    }
}

/// The lifecycle state a key was put in. Expiry is not a state: it is checked against
/// `expires_at` on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Active,
    Disabled,
    Revoked,
}

/// The workspace list that means "every workspace of the org".
pub const ALL_WORKSPACES: &str = "*";

#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub hash: KeyHash,
    pub name: String,
    pub org: String,
    /// `["*"]` for an org key, else exactly one workspace.
    pub workspaces: Vec<String>,
    pub key_type: KeyType,
    /// Personal keys only.
    pub owner: Option<String>,
    /// Empty for `inherit` keys.
    pub roles: Vec<String>,
    /// Follows the owner's recorded roles instead of its own.
    pub inherit: bool,
    /// Resolved from `roles` at creation, sorted; empty for `inherit` keys.
    pub permissions: Vec<String>,
    pub expires_at: Option<i64>,
    pub metadata: BTreeMap<String, String>,
    /// As given (`100/s`), checked by `limits::RateLimit::parse` when written.
    pub rate_limit: Option<String>,
    /// As given (`10000/month`), checked by `limits::Quota::parse` when written.
    pub quota: Option<String>,
    /// Bumped by each usage reset: quota counters are kept per epoch, so a reset starts
    /// every gateway from zero without touching their counters (`QuotaTag`).
    pub usage_epoch: u64,
    pub state: KeyState,
    pub created_at: i64,
    pub created_by: String,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Set on the key a rotation replaced: the id of its successor.
    pub rotated_to: Option<String>,
    /// The prefix and the secret's last 4 characters (`kg_…a1B2`), kept at creation so
    /// that people can tell keys apart; `None` for keys made before hints existed.
    pub hint: Option<String>,
    /// The secret sealed under the vault key (`keys.recoverable`), for `keys reveal`;
    /// `None` for keys made while recoverable keys were off. Never in a view.
    pub sealed_secret: Option<SealedSecret>,
    /// The stored revision this record was read at. A save with a version above 0 only
    /// succeeds if the store still holds that revision (`StoreError::Conflict` otherwise),
    /// so two concurrent changes cannot silently undo each other (a rename racing a revoke
    /// must never write the key back as active). 0: not read from the store (new).
    pub version: u64,
}

impl KeyRecord {
    pub fn is_org_key(&self) -> bool {
        self.workspaces.iter().any(|w| w == ALL_WORKSPACES)
    }

    pub fn is_expired_at(&self, now_ms: i64) -> bool {
        expired_at(self.expires_at, now_ms)
    }
}

/// Whether a key with this expiry has expired at `now_ms`: the one rule, for stored
/// records and cached facts alike.
pub fn expired_at(expires_at: Option<i64>, now_ms: i64) -> bool {
    expires_at.is_some_and(|t| now_ms >= t)
}

/// A user of an org as keygate knows it: whether removed, and the roles recorded by
/// `users set-roles` (with their permissions resolved then) for `inherit` keys.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserRecord {
    pub org: String,
    pub user: String,
    pub removed: bool,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    /// As `KeyRecord::version`.
    pub version: u64,
}

/// An org as keygate knows it: only whether it is suspended (SPEC §8). Orgs are not
/// created: a key names its org, and an org nobody suspended is active.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OrgRecord {
    pub org: String,
    pub suspended: bool,
    /// The stored revision this record was read at; 0: none stored (see `save_org`).
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Assigned by the store; 0 before it is written.
    pub id: i64,
    pub at: i64,
    pub action: String,
    pub key_id: Option<String>,
    pub actor: String,
    /// Action-specific facts: `{"new_key_id": …}` for rotate, `{"org", "user"}` for users.
    pub details: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct AuditQuery {
    pub key_id: Option<String>,
    /// Only events with an id below this (the previous page's last id).
    pub before: Option<i64>,
    pub limit: usize,
}

pub use crate::config::is_ident;

/// Now, as unix milliseconds, for the request path (key expiry, cache freshness): on
/// Linux the kernel's coarse clock (`CLOCK_REALTIME_COARSE`), read from the vDSO page
/// without a TSC read (cheaper than `now_ms`: benches/RESULTS.md); it lags the precise
/// clock by at most one tick (1-4 ms), far below any TTL or expiry a key has.
#[cfg(target_os = "linux")]
pub fn coarse_now_ms() -> i64 {
    clock_ms(rustix::time::ClockId::RealtimeCoarse)
}

/// Elsewhere the precise clock.
#[cfg(not(target_os = "linux"))]
pub fn coarse_now_ms() -> i64 {
    now_ms()
}

/// Now, in ms of a monotonic clock, for timers kept as numbers (`proxy::upload`): on Linux
/// the kernel's coarse one (no step when the wall clock is set, a read of the vDSO page).
#[cfg(target_os = "linux")]
pub fn monotonic_coarse_ms() -> i64 {
    clock_ms(rustix::time::ClockId::MonotonicCoarse)
}

/// Elsewhere ms since the first call.
#[cfg(not(target_os = "linux"))]
pub fn monotonic_coarse_ms() -> i64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    duration_ms(START.get_or_init(std::time::Instant::now).elapsed())
}

#[cfg(target_os = "linux")]
#[allow(clippy::useless_conversion)] // `tv_nsec` is narrower than i64 on some targets
fn clock_ms(clock: rustix::time::ClockId) -> i64 {
    let t = rustix::time::clock_gettime(clock);
    t.tv_sec.saturating_mul(1_000) + i64::from(t.tv_nsec / 1_000_000)
}

/// Now, as unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(duration_ms)
        .unwrap_or(0)
}

/// A duration in whole milliseconds, saturating (the unit of every stored time).
pub fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
