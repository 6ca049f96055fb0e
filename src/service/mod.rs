//! Key lifecycle rules (SPEC §1, §5), written once and used by the CLI and the admin API:
//! validation, role resolution at creation, rotation with grace, state transitions and
//! the audit event of every change.

pub mod transfer;
pub mod view;

use crate::config::format_duration;
use crate::key::{new_key_id, ApiKey, KeyFormat, SealedSecret, VaultError, VaultKey};
use crate::store::{
    now_ms, AuditEvent, AuditQuery, KeyFilter, KeyRecord, KeyState, KeyStore, KeyType, StoreError,
    UserRecord, ALL_WORKSPACES,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("unknown role `{0}` (roles are defined in the config's `roles:`)")]
    UnknownRole(String),
    #[error("no key with id `{0}`")]
    NotFound(String),
    #[error("key {id} is {state}: {hint}")]
    KeyNotActive {
        id: String,
        state: &'static str,
        hint: &'static str,
    },
    #[error("no user `{user}` in org `{org}`")]
    UnknownUser { org: String, user: String },
    /// The reported secret is not a key of this deployment's format. The secret itself
    /// is never part of the message.
    #[error("the reported key is malformed (wrong prefix, length, characters or checksum)")]
    MalformedKey,
    /// `keys reveal` of a key whose secret is not kept: recoverable keys are off, or the
    /// key was made while they were.
    #[error("the secret of key {id} cannot be shown again: {why}")]
    NotRecoverable { id: String, why: &'static str },
    /// A secret could not be sealed or opened (most likely a `KEYGATE_VAULT_KEY` other
    /// than the one that sealed it). Names the key, never the secret.
    #[error("key {id}: {source}")]
    Vault {
        id: String,
        #[source]
        source: VaultError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid {
        field,
        message: message.into(),
    }
}

/// When a new key ends.
#[derive(Debug, Clone, Copy)]
pub enum Expiry {
    At(i64),
    In(Duration),
}

/// A request to create a key, as the CLI and the admin API receive it.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub org: String,
    /// Empty = org key (`["*"]`).
    pub workspaces: Vec<String>,
    pub name: Option<String>,
    pub key_type: Option<KeyType>,
    pub owner: Option<String>,
    pub roles: Vec<String>,
    pub inherit: bool,
    pub expires: Option<Expiry>,
    pub metadata: BTreeMap<String, String>,
    pub rate_limit: Option<String>,
    /// `10000/month`, `500/day` or `1000` (SPEC §7).
    pub quota: Option<String>,
}

/// `name`-like identifiers: orgs, workspaces, users, metadata keys.
fn check_ident(field: &'static str, s: &str) -> Result<(), ServiceError> {
    if !crate::store::is_ident(s) {
        return Err(invalid(
            field,
            format!("`{s}` must be 1-128 characters of [A-Za-z0-9-_.:@]"),
        ));
    }
    Ok(())
}

/// Most workspaces one key may list.
const MAX_WORKSPACES: usize = 64;

/// A key's workspaces: `["*"]` (every workspace of the org) or a list of distinct
/// workspace names, `*` not among them.
fn check_workspaces(ws: &[String]) -> Result<(), ServiceError> {
    if let [w] = ws {
        if w == ALL_WORKSPACES {
            return Ok(());
        }
    }
    if ws.is_empty() || ws.len() > MAX_WORKSPACES {
        return Err(invalid(
            "workspaces",
            format!("give 1-{MAX_WORKSPACES} workspaces, or `*` (or none) for an org key"),
        ));
    }
    for (i, w) in ws.iter().enumerate() {
        if w == ALL_WORKSPACES {
            return Err(invalid(
                "workspaces",
                "`*` means every workspace and cannot be listed with others",
            ));
        }
        check_ident("workspaces", w)?;
        if ws[..i].contains(w) {
            return Err(invalid("workspaces", format!("`{w}` is listed twice")));
        }
    }
    Ok(())
}

/// How type, owner, inheritance and roles fit together: a personal key has an owner and a
/// service key none; an inheriting key is personal and takes no roles; any other key has
/// at least one role. (Whether the owner has roles to inherit is the store's to say.)
fn check_shape(
    key_type: KeyType,
    owner: Option<&str>,
    inherit: bool,
    roles: &[String],
) -> Result<(), ServiceError> {
    match (key_type, owner) {
        (KeyType::Personal, None) => return Err(invalid("owner", "a personal key needs an owner")),
        (KeyType::Service, Some(_)) => {
            return Err(invalid(
                "owner",
                "a service key has no owner; use type personal",
            ))
        }
        (_, Some(o)) => check_ident("owner", o)?,
        _ => {}
    }
    match (inherit, roles.is_empty()) {
        (true, false) => Err(invalid(
            "roles",
            "an inheriting key takes no roles: it follows its owner's",
        )),
        (true, true) if key_type != KeyType::Personal => Err(invalid(
            "inherit",
            "only a personal key can inherit its owner's permissions",
        )),
        (false, true) => Err(invalid(
            "roles",
            "give at least one role, or inherit for a personal key",
        )),
        _ => Ok(()),
    }
}

/// Key names travel in a header (`key-name`), so no control characters.
fn check_name(name: &str) -> Result<(), ServiceError> {
    if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(invalid(
            "name",
            "must be 1-128 characters without control characters",
        ));
    }
    Ok(())
}

pub fn check_metadata(m: &BTreeMap<String, String>) -> Result<(), ServiceError> {
    if m.len() > 32 {
        return Err(invalid("metadata", "at most 32 entries"));
    }
    for (k, v) in m {
        check_ident("metadata", k)?;
        if v.len() > 1024 || v.chars().any(char::is_control) {
            return Err(invalid(
                "metadata",
                format!("value of `{k}`: at most 1024 characters, no control characters"),
            ));
        }
    }
    Ok(())
}

/// Why `reveal` finds no secret to show.
const RECOVERABLE_OFF: &str =
    "recoverable keys are off (`keys.recoverable: true` and KEYGATE_VAULT_KEY turn them on)";
const NOT_SEALED: &str = "it was created while recoverable keys were off, so its secret was never kept (rotate it to get a new, recoverable one)";

pub struct KeyService {
    store: Arc<dyn KeyStore>,
    roles: BTreeMap<String, BTreeSet<String>>,
    format: KeyFormat,
    /// `keys.recoverable`: new secrets are sealed under it, and `reveal` opens them.
    vault: Option<VaultKey>,
}

impl KeyService {
    /// `vault`: the config's `keys.vault`, set when recoverable keys are on.
    pub fn new(
        store: Arc<dyn KeyStore>,
        roles: BTreeMap<String, BTreeSet<String>>,
        format: KeyFormat,
        vault: Option<VaultKey>,
    ) -> Self {
        KeyService {
            store,
            roles,
            format,
            vault,
        }
    }

    /// The secret sealed for key `id` when recoverable keys are on.
    fn seal(&self, id: &str, secret: &ApiKey) -> Result<Option<SealedSecret>, ServiceError> {
        self.vault
            .as_ref()
            .map(|v| v.seal(id, secret))
            .transpose()
            .map_err(|source| ServiceError::Vault {
                id: id.to_owned(),
                source,
            })
    }

    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    /// Role names -> their permissions, sorted and deduplicated; every role must exist.
    fn resolve_roles(&self, roles: &[String]) -> Result<(Vec<String>, Vec<String>), ServiceError> {
        let mut perms = BTreeSet::new();
        let mut names = BTreeSet::new();
        for r in roles {
            let granted = self
                .roles
                .get(r)
                .ok_or_else(|| ServiceError::UnknownRole(r.clone()))?;
            perms.extend(granted.iter().cloned());
            names.insert(r.clone());
        }
        Ok((names.into_iter().collect(), perms.into_iter().collect()))
    }

    /// The permissions `roles` grant, as configured now (unknown roles grant nothing).
    pub fn permissions_of(&self, roles: &[String]) -> Vec<String> {
        let perms: BTreeSet<&String> = roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flatten()
            .collect();
        perms.into_iter().cloned().collect()
    }

    /// Writes an audit event for a refused request (`denied`): who tried what, and why
    /// not. Nothing else is written.
    pub async fn record_refusal(
        &self,
        actor: &str,
        key_id: Option<&str>,
        details: serde_json::Value,
    ) -> Result<(), ServiceError> {
        let event = Self::event("denied", key_id, actor, details);
        Ok(self.store.save_keys(&[], &[event]).await?)
    }

    async fn must_get(&self, id: &str) -> Result<KeyRecord, ServiceError> {
        if !crate::key::is_key_id(id) {
            return Err(ServiceError::NotFound(id.to_owned()));
        }
        self.store
            .get_key(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(id.to_owned()))
    }

    fn event(
        action: &str,
        key_id: Option<&str>,
        actor: &str,
        details: serde_json::Value,
    ) -> AuditEvent {
        AuditEvent {
            id: 0,
            at: now_ms(),
            action: action.to_owned(),
            key_id: key_id.map(str::to_owned),
            actor: actor.to_owned(),
            details,
        }
    }

    /// Creates a key; the secret is returned here and nowhere else, ever.
    pub async fn create(
        &self,
        req: NewKey,
        actor: &str,
    ) -> Result<(KeyRecord, ApiKey), ServiceError> {
        check_ident("org", &req.org)?;
        let workspaces = if req.workspaces.is_empty() {
            vec![ALL_WORKSPACES.to_owned()]
        } else {
            check_workspaces(&req.workspaces)?;
            req.workspaces.clone()
        };
        let key_type = req.key_type.unwrap_or(if req.owner.is_some() {
            KeyType::Personal
        } else {
            KeyType::Service
        });
        check_shape(key_type, req.owner.as_deref(), req.inherit, &req.roles)?;
        let (roles, permissions) = if req.inherit {
            let owner = req.owner.as_deref().unwrap_or_default();
            match self.store.get_user(&req.org, owner).await? {
                Some(u) if !u.roles.is_empty() => {}
                _ => {
                    return Err(invalid(
                        "inherit",
                        format!("user `{owner}` of org `{}` has no roles recorded; run `keygate users set-roles` first", req.org),
                    ))
                }
            }
            (Vec::new(), Vec::new())
        } else {
            self.resolve_roles(&req.roles)?
        };
        let now = now_ms();
        let expires_at = match req.expires {
            None => None,
            Some(Expiry::At(t)) if t > now => Some(t),
            Some(Expiry::At(_)) => return Err(invalid("expires_at", "is in the past")),
            Some(Expiry::In(d)) if !d.is_zero() => {
                Some(now.saturating_add(crate::store::duration_ms(d)))
            }
            Some(Expiry::In(_)) => return Err(invalid("expires_in", "must be longer than 0s")),
        };
        check_metadata(&req.metadata)?;
        if let Some(r) = &req.rate_limit {
            check_rate_limit(r)?;
        }
        if let Some(q) = &req.quota {
            check_quota(q)?;
        }
        let id = new_key_id();
        let name = match req.name {
            Some(n) => {
                check_name(&n)?;
                n
            }
            None => id.clone(),
        };
        let secret = self.format.generate();
        let sealed_secret = self.seal(&id, &secret)?;
        let record = KeyRecord {
            hash: secret.hash(),
            id,
            name,
            org: req.org,
            workspaces,
            key_type,
            owner: req.owner,
            roles,
            inherit: req.inherit,
            permissions,
            expires_at,
            metadata: req.metadata,
            rate_limit: req.rate_limit,
            quota: req.quota,
            usage_epoch: 0,
            state: KeyState::Active,
            created_at: now,
            created_by: actor.to_owned(),
            last_used_at: None,
            revoked_at: None,
            rotated_to: None,
            hint: Some(secret.hint()),
            sealed_secret,
            version: 0,
        };
        let event = Self::event(
            "create",
            Some(&record.id),
            actor,
            json!({ "org": record.org, "roles": record.roles }),
        );
        self.store
            .save_keys(std::slice::from_ref(&record), &[event])
            .await?;
        Ok((record, secret))
    }

    /// The key as `keys show` and `GET /v1/keys/{id}` show it: an `inherit` key with the
    /// permissions it carries now (its owner's recorded ones; stored, it has none of its
    /// own). For display only: rules read the stored record.
    pub async fn show_now(&self, id: &str) -> Result<KeyRecord, ServiceError> {
        let key = self.show(id).await?;
        self.with_permissions_now(key).await
    }

    /// `key` with an `inherit` key's current permissions filled in (see `show_now`).
    pub async fn with_permissions_now(
        &self,
        mut key: KeyRecord,
    ) -> Result<KeyRecord, ServiceError> {
        if let (true, Some(owner)) = (key.inherit, key.owner.as_deref()) {
            if let Some(u) = self.store.get_user(&key.org, owner).await? {
                key.permissions = u.permissions;
            }
        }
        Ok(key)
    }

    pub async fn show(&self, id: &str) -> Result<KeyRecord, ServiceError> {
        self.must_get(id).await
    }

    /// The secret of a recoverable key, shown again; writes an audit event `reveal`
    /// first, so no secret is shown unrecorded. Recoverable keys off hides every stored
    /// secret; a key made while they were off has none. Any state may be revealed
    /// (revoked and expired keys too: their secret admits nothing any more, and seeing
    /// it helps match a leaked secret to its key).
    pub async fn reveal(&self, id: &str, actor: &str) -> Result<ApiKey, ServiceError> {
        let key = self.must_get(id).await?;
        let not_recoverable = |why| ServiceError::NotRecoverable {
            id: key.id.clone(),
            why,
        };
        let vault = self
            .vault
            .as_ref()
            .ok_or_else(|| not_recoverable(RECOVERABLE_OFF))?;
        let sealed = key
            .sealed_secret
            .as_ref()
            .ok_or_else(|| not_recoverable(NOT_SEALED))?;
        let secret = vault
            .open(&key.id, sealed)
            .map_err(|source| ServiceError::Vault {
                id: key.id.clone(),
                source,
            })?;
        // What opened must be this key's secret: a record whose sealed secret was copied
        // from another key of the same id (an edited import) shows nothing.
        if secret.hash() != key.hash {
            return Err(ServiceError::Vault {
                id: key.id.clone(),
                source: crate::key::VaultError::Malformed,
            });
        }
        let event = Self::event("reveal", Some(&key.id), actor, json!({ "org": key.org }));
        self.store.save_keys(&[], &[event]).await?;
        Ok(secret)
    }

    /// Keys by org / workspace; `unused_for` keeps keys not used (or, never used, not
    /// created) within that long.
    pub async fn list(
        &self,
        filter: &KeyFilter,
        unused_for: Option<Duration>,
    ) -> Result<Vec<KeyRecord>, ServiceError> {
        let mut keys = self.store.list_keys(filter).await?;
        if let Some(d) = unused_for {
            let cutoff = now_ms().saturating_sub(crate::store::duration_ms(d));
            keys.retain(|k| k.last_used_at.unwrap_or(k.created_at) < cutoff);
        }
        Ok(keys)
    }

    async fn update(
        &self,
        mut key: KeyRecord,
        action: &str,
        actor: &str,
        details: serde_json::Value,
        f: impl FnOnce(&mut KeyRecord),
    ) -> Result<KeyRecord, ServiceError> {
        f(&mut key);
        let event = Self::event(action, Some(&key.id), actor, details);
        self.store
            .save_keys(std::slice::from_ref(&key), &[event])
            .await?;
        Ok(key)
    }

    async fn rename_once(
        &self,
        id: &str,
        name: &str,
        actor: &str,
    ) -> Result<KeyRecord, ServiceError> {
        check_name(name)?;
        let key = self.must_get(id).await?;
        let details = json!({ "from": key.name, "to": name });
        self.update(key, "rename", actor, details, |k| k.name = name.to_owned())
            .await
    }

    async fn set_metadata_once(
        &self,
        id: &str,
        metadata: BTreeMap<String, String>,
        actor: &str,
    ) -> Result<KeyRecord, ServiceError> {
        check_metadata(&metadata)?;
        let key = self.must_get(id).await?;
        self.update(
            key,
            "metadata",
            actor,
            json!({ "metadata": metadata }),
            |k| k.metadata = metadata.clone(),
        )
        .await
    }

    /// Permanent. Revoking a revoked key changes nothing and writes nothing.
    async fn revoke_once(&self, id: &str, actor: &str) -> Result<KeyRecord, ServiceError> {
        let key = self.must_get(id).await?;
        if key.state == KeyState::Revoked {
            return Ok(key);
        }
        self.update(key, "revoke", actor, json!({}), |k| {
            k.state = KeyState::Revoked;
            k.revoked_at = Some(now_ms());
        })
        .await
    }

    async fn disable_once(&self, id: &str, actor: &str) -> Result<KeyRecord, ServiceError> {
        let key = self.must_get(id).await?;
        match key.state {
            KeyState::Revoked => Err(not_active(&key, "revoked", "a revoked key stays revoked")),
            KeyState::Disabled => Ok(key),
            KeyState::Active => {
                self.update(key, "disable", actor, json!({}), |k| {
                    k.state = KeyState::Disabled
                })
                .await
            }
        }
    }

    async fn enable_once(&self, id: &str, actor: &str) -> Result<KeyRecord, ServiceError> {
        let key = self.must_get(id).await?;
        match key.state {
            KeyState::Revoked => Err(not_active(&key, "revoked", "a revoked key stays revoked")),
            KeyState::Active => Ok(key),
            KeyState::Disabled => {
                self.update(key, "enable", actor, json!({}), |k| {
                    k.state = KeyState::Active
                })
                .await
            }
        }
    }

    /// A new key with the same attributes; the old one ends after `grace` (at once for
    /// 0s). Both are written, with one audit event naming both ids, in one transaction.
    async fn rotate_once(
        &self,
        id: &str,
        grace: Duration,
        actor: &str,
    ) -> Result<(KeyRecord, KeyRecord, ApiKey), ServiceError> {
        let mut old = self.must_get(id).await?;
        let now = now_ms();
        match old.state {
            KeyState::Revoked => {
                return Err(not_active(
                    &old,
                    "revoked",
                    "a revoked key cannot be rotated",
                ))
            }
            KeyState::Disabled => {
                return Err(not_active(&old, "disabled", "enable it before rotating"))
            }
            KeyState::Active if old.is_expired_at(now) => {
                return Err(not_active(
                    &old,
                    "expired",
                    "an expired key cannot be rotated; create a new one",
                ))
            }
            KeyState::Active => {}
        }
        let secret = self.format.generate();
        let new_id = new_key_id();
        // Sealed for the new id (the old key's sealed secret is bound to the old id).
        let sealed_secret = self.seal(&new_id, &secret)?;
        let new = KeyRecord {
            id: new_id,
            hash: secret.hash(),
            sealed_secret,
            created_at: now,
            created_by: actor.to_owned(),
            last_used_at: None,
            revoked_at: None,
            rotated_to: None,
            hint: Some(secret.hint()),
            version: 0,
            ..old.clone()
        };
        let grace_ms = crate::store::duration_ms(grace);
        let end = now.saturating_add(grace_ms);
        old.expires_at = Some(old.expires_at.map_or(end, |t| t.min(end)));
        old.rotated_to = Some(new.id.clone());
        // Both ids name the rotation: the old key's history ends with it, the new key's
        // begins with it.
        let events = [
            Self::event(
                "rotate",
                Some(&old.id),
                actor,
                json!({ "new_key_id": new.id, "grace": format_duration(grace) }),
            ),
            Self::event(
                "create",
                Some(&new.id),
                actor,
                json!({ "rotated_from": old.id, "org": new.org, "roles": new.roles }),
            ),
        ];
        self.store
            .save_keys(&[old.clone(), new.clone()], &events)
            .await?;
        Ok((old, new, secret))
    }

    /// The key whose secret this is (by its hash), for a leak report (SPEC §8).
    pub async fn find_by_secret(&self, presented: &str) -> Result<Option<KeyRecord>, ServiceError> {
        let hash = self
            .format
            .check_and_hash(presented.trim())
            .map_err(|_| ServiceError::MalformedKey)?;
        Ok(self.store.lookup(&hash).await?.map(|l| l.key))
    }

    /// Revokes a key whose secret was reported leaked, audited as `leaked`. A key already
    /// revoked stays as it is; the report is still recorded.
    async fn revoke_leaked_once(&self, id: &str, actor: &str) -> Result<KeyRecord, ServiceError> {
        let key = self.must_get(id).await?;
        if key.state == KeyState::Revoked {
            let event = Self::event(
                "leaked",
                Some(&key.id),
                actor,
                json!({ "already_revoked": true }),
            );
            self.store.save_keys(&[], &[event]).await?;
            return Ok(key);
        }
        self.update(key, "leaked", actor, json!({}), |k| {
            k.state = KeyState::Revoked;
            k.revoked_at = Some(now_ms());
        })
        .await
    }

    pub async fn delete(&self, id: &str, actor: &str) -> Result<(), ServiceError> {
        let key = self.must_get(id).await?;
        let event = Self::event("delete", Some(&key.id), actor, json!({ "org": key.org }));
        if self.store.delete_key(&key.id, &event).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound(id.to_owned()))
        }
    }

    async fn known_user(&self, org: &str, user: &str) -> Result<UserRecord, ServiceError> {
        check_ident("org", org)?;
        check_ident("user", user)?;
        if let Some(u) = self.store.get_user(org, user).await? {
            return Ok(u);
        }
        if self.store.user_owns_keys(org, user).await? {
            return Ok(UserRecord {
                org: org.to_owned(),
                user: user.to_owned(),
                ..UserRecord::default()
            });
        }
        Err(ServiceError::UnknownUser {
            org: org.to_owned(),
            user: user.to_owned(),
        })
    }

    async fn save_user(
        &self,
        user: UserRecord,
        action: &str,
        actor: &str,
    ) -> Result<UserRecord, ServiceError> {
        let event = Self::event(
            action,
            None,
            actor,
            json!({ "org": user.org, "user": user.user, "roles": user.roles }),
        );
        self.store.save_user(&user, &event).await?;
        Ok(user)
    }

    /// The user's personal keys stop working (401 `owner_removed`) until restored.
    async fn remove_user_once(
        &self,
        org: &str,
        user: &str,
        actor: &str,
    ) -> Result<UserRecord, ServiceError> {
        let mut u = self.known_user(org, user).await?;
        u.removed = true;
        self.save_user(u, "user_remove", actor).await
    }

    async fn restore_user_once(
        &self,
        org: &str,
        user: &str,
        actor: &str,
    ) -> Result<UserRecord, ServiceError> {
        let mut u = self.known_user(org, user).await?;
        u.removed = false;
        self.save_user(u, "user_restore", actor).await
    }

    /// Records a user's roles; `inherit` keys of the user follow them.
    async fn set_user_roles_once(
        &self,
        org: &str,
        user: &str,
        roles: &[String],
        actor: &str,
    ) -> Result<UserRecord, ServiceError> {
        check_ident("org", org)?;
        check_ident("user", user)?;
        if roles.is_empty() {
            return Err(invalid("roles", "give at least one role"));
        }
        let (roles, permissions) = self.resolve_roles(roles)?;
        let mut u = self
            .store
            .get_user(org, user)
            .await?
            .unwrap_or_else(|| UserRecord {
                org: org.to_owned(),
                user: user.to_owned(),
                ..UserRecord::default()
            });
        u.roles = roles;
        u.permissions = permissions;
        self.save_user(u, "user_set_roles", actor).await
    }

    pub async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, ServiceError> {
        Ok(self.store.audit(query).await?)
    }
}

/// Runs a read-check-write step again while the store reports a write conflict.
macro_rules! retrying {
    ($step:expr) => {{
        let mut attempt = 0;
        loop {
            match $step {
                Err(ServiceError::Store(StoreError::Conflict { .. }))
                    if attempt < CONFLICT_RETRIES =>
                {
                    attempt += 1;
                    conflict_backoff(attempt).await;
                }
                other => break other,
            }
        }
    }};
}

/// Lifecycle changes, each retried when another writer changed the same record between
/// our read and our write (the store refuses such a save): the rules are then checked
/// again on what is stored now, so a revoked key stays revoked whatever raced it.
impl KeyService {
    pub async fn rename(
        &self,
        id: &str,
        name: &str,
        actor: &str,
    ) -> Result<KeyRecord, ServiceError> {
        retrying!(self.rename_once(id, name, actor).await)
    }

    pub async fn set_metadata(
        &self,
        id: &str,
        metadata: BTreeMap<String, String>,
        actor: &str,
    ) -> Result<KeyRecord, ServiceError> {
        retrying!(self.set_metadata_once(id, metadata.clone(), actor).await)
    }

    /// Permanent. Revoking a revoked key changes nothing and writes nothing.
    pub async fn revoke(&self, id: &str, actor: &str) -> Result<KeyRecord, ServiceError> {
        retrying!(self.revoke_once(id, actor).await)
    }

    /// Revokes a key whose secret leaked (audit action `leaked`).
    pub async fn revoke_leaked(&self, id: &str, actor: &str) -> Result<KeyRecord, ServiceError> {
        retrying!(self.revoke_leaked_once(id, actor).await)
    }

    pub async fn disable(&self, id: &str, actor: &str) -> Result<KeyRecord, ServiceError> {
        retrying!(self.disable_once(id, actor).await)
    }

    pub async fn enable(&self, id: &str, actor: &str) -> Result<KeyRecord, ServiceError> {
        retrying!(self.enable_once(id, actor).await)
    }

    /// A new key with the same attributes; the old one ends after `grace` (at once for
    /// 0s). Both are written, with one audit event naming both ids, in one transaction.
    pub async fn rotate(
        &self,
        id: &str,
        grace: Duration,
        actor: &str,
    ) -> Result<(KeyRecord, KeyRecord, ApiKey), ServiceError> {
        retrying!(self.rotate_once(id, grace, actor).await)
    }

    /// The user's personal keys stop working (401 `owner_removed`) until restored.
    pub async fn remove_user(
        &self,
        org: &str,
        user: &str,
        actor: &str,
    ) -> Result<UserRecord, ServiceError> {
        retrying!(self.remove_user_once(org, user, actor).await)
    }

    pub async fn restore_user(
        &self,
        org: &str,
        user: &str,
        actor: &str,
    ) -> Result<UserRecord, ServiceError> {
        retrying!(self.restore_user_once(org, user, actor).await)
    }

    /// Records a user's roles; `inherit` keys of the user follow them.
    pub async fn set_user_roles(
        &self,
        org: &str,
        user: &str,
        roles: &[String],
        actor: &str,
    ) -> Result<UserRecord, ServiceError> {
        retrying!(self.set_user_roles_once(org, user, roles, actor).await)
    }
}

/// How often a change is tried again after a write conflict.
const CONFLICT_RETRIES: u32 = 10;

// Declared after `retrying!`, which they use.
pub mod limits;
pub mod orgs;

pub use limits::{check_quota, check_rate_limit};

/// A short, growing, jittered pause, so racing writers stop colliding in lockstep.
async fn conflict_backoff(attempt: u32) {
    let mut jitter = [0u8; 1];
    let _ = getrandom::getrandom(&mut jitter);
    let ms = u64::from(attempt) * 2 + u64::from(jitter[0] % 8);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn not_active(key: &KeyRecord, state: &'static str, hint: &'static str) -> ServiceError {
    ServiceError::KeyNotActive {
        id: key.id.clone(),
        state,
        hint,
    }
}
