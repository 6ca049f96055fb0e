//! `keys export` / `keys import`: moving keys between stores (one embedded gateway to a
//! Redis fleet, or back). JSON lines of records with their hashes, never secrets: a key
//! keeps working after the move because only `sha256(key)` was ever stored. A recoverable
//! key's sealed secret travels as it is stored (encrypted under the vault key).

use super::{
    check_ident, check_metadata, check_name, check_quota, check_rate_limit, check_shape,
    check_workspaces, invalid,
};
use super::{KeyService, ServiceError};
use crate::key::{KeyHash, SealedSecret};
use crate::store::{
    now_ms, AuditEvent, KeyFilter, KeyRecord, KeyState, KeyType, OrgRecord, UserRecord,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};

/// One line of an export.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Line {
    Key(Box<ExportedKey>),
    User(ExportedUser),
    /// A suspended org (SPEC §8): its keys must not come back active in the new store.
    Org(ExportedOrg),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedOrg {
    pub org: String,
    pub suspended: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedKey {
    pub id: String,
    /// Hex sha256 of the secret.
    pub sha256: String,
    pub name: String,
    pub org: String,
    pub workspaces: Vec<String>,
    #[serde(rename = "type")]
    pub key_type: KeyType,
    pub owner: Option<String>,
    pub roles: Vec<String>,
    pub inherit: bool,
    pub permissions: Vec<String>,
    pub expires_at: Option<i64>,
    pub metadata: BTreeMap<String, String>,
    pub rate_limit: Option<String>,
    /// Absent in exports of older keygates. The counters stay in the store they were
    /// counted in: an imported key starts its quota from zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
    pub state: KeyState,
    pub created_at: i64,
    pub created_by: String,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub rotated_to: Option<String>,
    /// Absent in exports of keys made before hints existed (and of older keygates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// A recoverable key's sealed secret (`v1:<hex>`): encrypted, so it travels; with the
    /// same `KEYGATE_VAULT_KEY` the key stays recoverable after an import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_secret: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedUser {
    pub org: String,
    pub user: String,
    pub removed: bool,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
}

impl From<&KeyRecord> for ExportedKey {
    fn from(k: &KeyRecord) -> Self {
        ExportedKey {
            id: k.id.clone(),
            sha256: k.hash.to_hex(),
            name: k.name.clone(),
            org: k.org.clone(),
            workspaces: k.workspaces.clone(),
            key_type: k.key_type,
            owner: k.owner.clone(),
            roles: k.roles.clone(),
            inherit: k.inherit,
            permissions: k.permissions.clone(),
            expires_at: k.expires_at,
            metadata: k.metadata.clone(),
            rate_limit: k.rate_limit.clone(),
            quota: k.quota.clone(),
            state: k.state,
            created_at: k.created_at,
            created_by: k.created_by.clone(),
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
            rotated_to: k.rotated_to.clone(),
            hint: k.hint.clone(),
            sealed_secret: k.sealed_secret.as_ref().map(|s| s.as_str().to_owned()),
        }
    }
}

/// Role and permission names as the config's `roles:` defines them.
fn check_names(field: &'static str, names: &[String]) -> Result<(), ServiceError> {
    match names.iter().find(|n| !crate::config::is_name(n)) {
        Some(n) => Err(invalid(
            field,
            format!("`{n}` is not a role or permission name ([A-Za-z0-9-_.:]+)"),
        )),
        None => Ok(()),
    }
}

/// What `create` would refuse, refused in an export too: an import must not bring in a
/// record the service could not have made. (A permission holding a comma, say, would
/// pass for two in the joined `permissions` identity header.)
fn check_key(k: &ExportedKey) -> Result<(), ServiceError> {
    check_ident("org", &k.org)?;
    check_workspaces(&k.workspaces)?;
    check_shape(k.key_type, k.owner.as_deref(), k.inherit, &k.roles)?;
    check_name(&k.name)?;
    check_names("roles", &k.roles)?;
    check_names("permissions", &k.permissions)?;
    check_metadata(&k.metadata)?;
    if let Some(r) = &k.rate_limit {
        check_rate_limit(r)?;
    }
    if let Some(q) = &k.quota {
        check_quota(q)?;
    }
    if let Some(h) = k.hint.as_deref().filter(|h| !crate::key::is_hint(h)) {
        return Err(invalid(
            "hint",
            format!("`{h}` is not a hint (`<prefix>_…` and 4 letters or digits)"),
        ));
    }
    match &k.rotated_to {
        Some(id) if !crate::key::is_key_id(id) => {
            Err(invalid("rotated_to", format!("`{id}` is not a key id")))
        }
        _ => Ok(()),
    }
}

impl ExportedKey {
    fn into_record(self) -> Result<KeyRecord, String> {
        let hash = KeyHash::from_hex(&self.sha256).ok_or("sha256 must be 64 hex characters")?;
        if !crate::key::is_key_id(&self.id) {
            return Err(format!("`{}` is not a key id", self.id));
        }
        check_key(&self).map_err(|e| e.to_string())?;
        let sealed_secret = self
            .sealed_secret
            .as_deref()
            .map(SealedSecret::parse)
            .transpose()
            .map_err(|e| format!("sealed_secret: {e}"))?;
        Ok(KeyRecord {
            id: self.id,
            hash,
            name: self.name,
            org: self.org,
            workspaces: self.workspaces,
            key_type: self.key_type,
            owner: self.owner,
            roles: self.roles,
            inherit: self.inherit,
            permissions: self.permissions,
            expires_at: self.expires_at,
            metadata: self.metadata,
            rate_limit: self.rate_limit,
            quota: self.quota,
            usage_epoch: 0,
            state: self.state,
            created_at: self.created_at,
            created_by: self.created_by,
            last_used_at: self.last_used_at,
            revoked_at: self.revoked_at,
            rotated_to: self.rotated_to,
            hint: self.hint,
            sealed_secret,
            version: 0,
        })
    }
}

#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    pub keys_imported: usize,
    pub keys_present: usize,
    pub users_imported: usize,
    pub users_present: usize,
    pub orgs_imported: usize,
    pub orgs_present: usize,
}

/// What an export wrote.
#[derive(Debug, Default, Serialize)]
pub struct ExportReport {
    pub exported_keys: usize,
    pub exported_users: usize,
    pub exported_orgs: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("cannot read or write the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {message}")]
    BadLine { line: usize, message: String },
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl KeyService {
    /// Writes every key, the user records their owners have and the suspended orgs among
    /// theirs, as JSON lines.
    pub async fn export(&self, out: &mut dyn Write) -> Result<ExportReport, TransferError> {
        let keys = self
            .store()
            .list_keys(&KeyFilter::default())
            .await
            .map_err(ServiceError::from)?;
        let mut owners = BTreeSet::new();
        let mut orgs = BTreeSet::new();
        for k in &keys {
            orgs.insert(k.org.clone());
            serde_json::to_writer(&mut *out, &Line::Key(Box::new(k.into())))
                .map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
            if let Some(o) = &k.owner {
                owners.insert((k.org.clone(), o.clone()));
            }
        }
        let mut users = 0;
        for (org, user) in owners {
            if let Some(u) = self
                .store()
                .get_user(&org, &user)
                .await
                .map_err(ServiceError::from)?
            {
                let line = Line::User(ExportedUser {
                    org: u.org,
                    user: u.user,
                    removed: u.removed,
                    roles: u.roles,
                    permissions: u.permissions,
                });
                serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
                users += 1;
            }
        }
        let mut suspended = 0;
        for org in orgs {
            let state = self
                .store()
                .get_org(&org)
                .await
                .map_err(ServiceError::from)?;
            if state.is_some_and(|o| o.suspended) {
                let line = Line::Org(ExportedOrg {
                    org,
                    suspended: true,
                });
                serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
                suspended += 1;
            }
        }
        out.flush()?;
        Ok(ExportReport {
            exported_keys: keys.len(),
            exported_users: users,
            exported_orgs: suspended,
        })
    }

    /// Reads an export. Every line is checked before anything is written; records already
    /// in this store (same key id, same user) are left as they are.
    pub async fn import(
        &self,
        input: &mut dyn BufRead,
        actor: &str,
    ) -> Result<ImportReport, TransferError> {
        let mut keys = Vec::new();
        let mut users = Vec::new();
        let mut orgs = Vec::new();
        for (i, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = |message: String| TransferError::BadLine {
                line: i + 1,
                message,
            };
            match serde_json::from_str::<Line>(&line).map_err(|e| bad(e.to_string()))? {
                Line::Key(k) => keys.push(k.into_record().map_err(bad)?),
                Line::Org(o) => {
                    check_ident("org", &o.org).map_err(|e| bad(e.to_string()))?;
                    orgs.push(OrgRecord {
                        org: o.org,
                        suspended: o.suspended,
                        version: 0,
                    });
                }
                Line::User(u) => {
                    check_ident("org", &u.org)
                        .and_then(|()| check_ident("user", &u.user))
                        .and_then(|()| check_names("roles", &u.roles))
                        .and_then(|()| check_names("permissions", &u.permissions))
                        .map_err(|e| bad(e.to_string()))?;
                    users.push(UserRecord {
                        org: u.org,
                        user: u.user,
                        removed: u.removed,
                        roles: u.roles,
                        permissions: u.permissions,
                        version: 0,
                    });
                }
            }
        }
        let mut report = ImportReport::default();
        // Orgs first: a key of a suspended org must never be seen active in this store.
        for o in orgs {
            if self
                .store()
                .get_org(&o.org)
                .await
                .map_err(ServiceError::from)?
                .is_some()
            {
                report.orgs_present += 1;
                continue;
            }
            let event = import_event(
                None,
                actor,
                json!({ "org": o.org, "suspended": o.suspended }),
            );
            self.store()
                .save_org(&o, &event)
                .await
                .map_err(ServiceError::from)?;
            report.orgs_imported += 1;
        }
        // Users first: a personal key must never be seen without its owner's state.
        for u in users {
            if self
                .store()
                .get_user(&u.org, &u.user)
                .await
                .map_err(ServiceError::from)?
                .is_some()
            {
                report.users_present += 1;
                continue;
            }
            let event = import_event(None, actor, json!({ "org": u.org, "user": u.user }));
            self.store()
                .save_user(&u, &event)
                .await
                .map_err(ServiceError::from)?;
            report.users_imported += 1;
        }
        for k in keys {
            if self
                .store()
                .get_key(&k.id)
                .await
                .map_err(ServiceError::from)?
                .is_some()
            {
                report.keys_present += 1;
                continue;
            }
            let event = import_event(Some(&k.id), actor, json!({ "org": k.org }));
            self.store()
                .save_keys(std::slice::from_ref(&k), &[event])
                .await
                .map_err(ServiceError::from)?;
            report.keys_imported += 1;
        }
        Ok(report)
    }
}

fn import_event(key_id: Option<&str>, actor: &str, details: serde_json::Value) -> AuditEvent {
    AuditEvent {
        id: 0,
        at: now_ms(),
        action: "import".to_owned(),
        key_id: key_id.map(str::to_owned),
        actor: actor.to_owned(),
        details,
    }
}
