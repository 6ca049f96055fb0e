//! The JSON face of records, shared by the CLI's `--json` and the admin API. Never holds
//! a hash or a secret.

use crate::store::{AuditEvent, KeyRecord, KeyState};
use serde::Serialize;
use std::collections::BTreeMap;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// RFC 3339 (UTC, millisecond precision when it has any) of unix ms.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Parses an RFC 3339 time (any offset) into unix ms.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The status a user sees: the lifecycle state, or `expired` once `expires_at` passed.
pub fn status(key: &KeyRecord, now_ms: i64) -> &'static str {
    match key.state {
        KeyState::Revoked => "revoked",
        KeyState::Disabled => "disabled",
        KeyState::Active if key.is_expired_at(now_ms) => "expired",
        KeyState::Active => "active",
    }
}

#[derive(Debug, Serialize)]
pub struct KeyView<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub org: &'a str,
    pub workspaces: &'a [String],
    #[serde(rename = "type")]
    pub key_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<&'a str>,
    pub roles: &'a [String],
    pub inherit: bool,
    pub permissions: &'a [String],
    pub status: &'static str,
    pub expires_at: Option<String>,
    pub metadata: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<&'a str>,
    pub created_at: String,
    pub created_by: &'a str,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotated_to: Option<&'a str>,
    /// `null` for keys made before hints existed.
    pub hint: Option<&'a str>,
}

impl<'a> KeyView<'a> {
    pub fn new(k: &'a KeyRecord, now_ms: i64) -> Self {
        KeyView {
            id: &k.id,
            name: &k.name,
            org: &k.org,
            workspaces: &k.workspaces,
            key_type: k.key_type.as_str(),
            owner: k.owner.as_deref(),
            roles: &k.roles,
            inherit: k.inherit,
            permissions: &k.permissions,
            status: status(k, now_ms),
            expires_at: k.expires_at.map(rfc3339),
            metadata: &k.metadata,
            rate_limit: k.rate_limit.as_deref(),
            quota: k.quota.as_deref(),
            created_at: rfc3339(k.created_at),
            created_by: &k.created_by,
            last_used_at: k.last_used_at.map(rfc3339),
            revoked_at: k.revoked_at.map(rfc3339),
            rotated_to: k.rotated_to.as_deref(),
            hint: k.hint.as_deref(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AuditView<'a> {
    pub id: i64,
    pub at: String,
    pub action: &'a str,
    pub key_id: Option<&'a str>,
    pub actor: &'a str,
    pub details: &'a serde_json::Value,
}

impl<'a> AuditView<'a> {
    pub fn new(e: &'a AuditEvent) -> Self {
        AuditView {
            id: e.id,
            at: rfc3339(e.at),
            action: &e.action,
            key_id: e.key_id.as_deref(),
            actor: &e.actor,
            details: &e.details,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let ms = 1_767_225_600_123;
        let s = rfc3339(ms);
        assert_eq!(s, "2026-01-01T00:00:00.123Z");
        assert_eq!(parse_rfc3339(&s), Some(ms));
        assert_eq!(
            parse_rfc3339("2026-01-01T02:00:00+02:00"),
            Some(1_767_225_600_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
