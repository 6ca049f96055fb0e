//! Org suspension (SPEC §8): the operator's switch that makes every key of an org answer
//! 401 `org_suspended` until restored, whatever the keys' own states.
//!
//! The state lives in the store beside the keys, not in them: suspending writes one org
//! record, one audit event and a change event per key of the org (so every gateway drops
//! those cached answers at once), and restoring gives every key back the state it had.

use super::{check_ident, conflict_backoff, KeyService, ServiceError, CONFLICT_RETRIES};
use crate::store::{OrgRecord, StoreError};
use serde_json::json;

impl KeyService {
    /// The org's state: active unless someone suspended it. Any valid org name has one;
    /// orgs are not created (a key names its org).
    pub async fn org_state(&self, org: &str) -> Result<OrgRecord, ServiceError> {
        check_ident("org", org)?;
        Ok(self.store.get_org(org).await?.unwrap_or_else(|| OrgRecord {
            org: org.to_owned(),
            ..OrgRecord::default()
        }))
    }

    /// Every key of the org answers 401 `org_suspended`. Suspending a suspended org
    /// changes nothing and writes nothing. An org without keys may be suspended too: its
    /// keys are suspended from their creation.
    pub async fn suspend_org(&self, org: &str, actor: &str) -> Result<OrgRecord, ServiceError> {
        retrying!(self.set_suspended_once(org, true, actor).await)
    }

    /// The org's keys answer by their own states again. Restoring an active org changes
    /// nothing and writes nothing.
    pub async fn restore_org(&self, org: &str, actor: &str) -> Result<OrgRecord, ServiceError> {
        retrying!(self.set_suspended_once(org, false, actor).await)
    }

    /// One read-check-write; the store refuses the write if another writer changed the
    /// org since the read (the retry then finds it already in the wanted state).
    async fn set_suspended_once(
        &self,
        org: &str,
        suspended: bool,
        actor: &str,
    ) -> Result<OrgRecord, ServiceError> {
        let mut state = self.org_state(org).await?;
        if state.suspended == suspended {
            return Ok(state);
        }
        state.suspended = suspended;
        let action = if suspended {
            "org_suspend"
        } else {
            "org_restore"
        };
        let event = Self::event(action, None, actor, json!({ "org": state.org }));
        self.store.save_org(&state, &event).await?;
        state.version += 1;
        Ok(state)
    }
}

/// The JSON of an org's state, the same from the CLI and the admin API.
pub fn org_json(o: &OrgRecord) -> serde_json::Value {
    json!({ "org": o.org, "suspended": o.suspended })
}
