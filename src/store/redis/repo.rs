//! `KeyRepo`: reads of keys, users and orgs through their indexes; each write is one Lua
//! script (`scripts.rs`) that writes the records, their indexes, the audit events and the
//! change events together.

use super::codec::{self, Fields};
use super::{keys, scripts, writer_args, RedisStore, RedisStoreError, CHUNK, MAX_CHANGE_BATCH};
use crate::store::{AuditEvent, KeyFilter, KeyRecord, KeyRepo, OrgRecord, StoreError, UserRecord};
use ::redis::Value;
use async_trait::async_trait;

#[async_trait]
impl KeyRepo for RedisStore {
    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let mut cmd = ::redis::cmd("HGETALL");
        cmd.arg(keys::key(id));
        let reply: Value = self.query(cmd).await?;
        let fields =
            Fields::from_value(reply).map_err(|reason| codec::corrupt(id.to_owned(), reason))?;
        if fields.is_empty() {
            return Ok(None);
        }
        codec::key_from_fields(id, &fields).map(Some)
    }

    async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyRecord>, StoreError> {
        let index = filter.org.as_deref().map_or_else(keys::all, keys::org);
        let mut cmd = ::redis::cmd("ZRANGE");
        cmd.arg(index).arg(0).arg(-1);
        let ids: Vec<String> = self.query(cmd).await?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let mut pipe = ::redis::pipe();
            for id in chunk {
                pipe.cmd("HGETALL").arg(keys::key(id));
            }
            let replies: Vec<Value> = self
                .run(|mut c| async move { pipe.query_async(&mut c).await })
                .await?;
            for (id, reply) in chunk.iter().zip(replies) {
                let fields = Fields::from_value(reply)
                    .map_err(|reason| codec::corrupt(id.clone(), reason))?;
                if fields.is_empty() {
                    // Deleted between the index read and this one.
                    continue;
                }
                let key = codec::key_from_fields(id, &fields)?;
                let fits = filter
                    .workspace
                    .as_deref()
                    .is_none_or(|w| key.is_org_key() || key.workspaces.iter().any(|k| k == w));
                if fits {
                    out.push(key);
                }
            }
        }
        Ok(out)
    }

    async fn save_keys(&self, keys: &[KeyRecord], events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut args = writer_args();
        args.reserve(2 + keys.len() * scripts::KEY_ARGS + events.len() * 3);
        args.push(keys.len().to_string());
        for key in keys {
            let owner = key.owner.clone();
            args.extend([
                key.id.clone(),
                key.version.to_string(),
                key.hash.to_hex(),
                key.org.clone(),
                if owner.is_some() { "1" } else { "0" }.to_owned(),
                owner.unwrap_or_default(),
                key.created_at.to_string(),
                key.last_used_at.map(|t| t.to_string()).unwrap_or_default(),
                codec::key_json(key),
            ]);
        }
        args.push(events.len().to_string());
        for event in events {
            event_args(event, &mut args);
        }
        let reply: Vec<String> = self
            .run(|mut c| async move {
                let mut call = scripts::SAVE_KEYS_SCRIPT.key(self::keys::events());
                call.arg(args);
                call.invoke_async(&mut c).await
            })
            .await?;
        write_outcome(reply, String::new)
    }

    async fn delete_key(&self, id: &str, event: &AuditEvent) -> Result<bool, StoreError> {
        let mut args = writer_args();
        args.push(id.to_owned());
        event_args(event, &mut args);
        let deleted: i64 = self
            .run(|mut c| async move {
                let mut call = scripts::DELETE_KEY_SCRIPT.key(keys::events());
                call.arg(args);
                call.invoke_async(&mut c).await
            })
            .await?;
        Ok(deleted == 1)
    }

    async fn get_user(&self, org: &str, user: &str) -> Result<Option<UserRecord>, StoreError> {
        let mut cmd = ::redis::cmd("HGETALL");
        cmd.arg(keys::user(org, user));
        let reply: Value = self.query(cmd).await?;
        let fields = Fields::from_value(reply)
            .map_err(|reason| codec::corrupt(format!("user {org}/{user}"), reason))?;
        if fields.is_empty() {
            return Ok(None);
        }
        codec::user_from_fields(org, user, &fields).map(Some)
    }

    async fn user_owns_keys(&self, org: &str, user: &str) -> Result<bool, StoreError> {
        let mut cmd = ::redis::cmd("SCARD");
        cmd.arg(keys::owner(org, user));
        let owned: u64 = self.query(cmd).await?;
        Ok(owned > 0)
    }

    async fn save_user(&self, user: &UserRecord, event: &AuditEvent) -> Result<(), StoreError> {
        let mut args = writer_args();
        args.extend([
            user.org.clone(),
            user.user.clone(),
            user.version.to_string(),
            if user.removed { "1" } else { "0" }.to_owned(),
            codec::names_json(&user.roles),
            codec::names_json(&user.permissions),
        ]);
        event_args(event, &mut args);
        let reply: Vec<String> = self
            .run(|mut c| async move {
                let mut call = scripts::SAVE_USER_SCRIPT.key(keys::events());
                call.arg(args);
                call.invoke_async(&mut c).await
            })
            .await?;
        write_outcome(reply, || format!("user {}/{}", user.org, user.user))
    }

    async fn get_org(&self, org: &str) -> Result<Option<OrgRecord>, StoreError> {
        let mut cmd = ::redis::cmd("HGETALL");
        cmd.arg(keys::org_state(org));
        let reply: Value = self.query(cmd).await?;
        let fields = Fields::from_value(reply)
            .map_err(|reason| codec::corrupt(format!("org {org}"), reason))?;
        if fields.is_empty() {
            return Ok(None);
        }
        codec::org_from_fields(org, &fields).map(Some)
    }

    async fn save_org(&self, org: &OrgRecord, event: &AuditEvent) -> Result<(), StoreError> {
        let mut args = writer_args();
        args.extend([
            org.org.clone(),
            org.version.to_string(),
            if org.suspended { "1" } else { "0" }.to_owned(),
        ]);
        event_args(event, &mut args);
        args.push(MAX_CHANGE_BATCH.to_string());
        let reply: Vec<String> = self
            .run(|mut c| async move {
                let mut call = scripts::SAVE_ORG_SCRIPT.key(keys::events());
                call.arg(args);
                call.invoke_async(&mut c).await
            })
            .await?;
        write_outcome(reply, || format!("org {}", org.org))
    }
}

/// The audit event's three script arguments: JSON, whether it names a key, the key id.
fn event_args(event: &AuditEvent, args: &mut Vec<String>) {
    args.push(codec::event_json(event));
    match &event.key_id {
        Some(id) => args.extend(["1".to_owned(), id.clone()]),
        None => args.extend(["0".to_owned(), String::new()]),
    }
}

/// A write script's `{'ok'}` / `{'conflict', …}` / `{'hash_taken', …}` answer.
fn write_outcome(reply: Vec<String>, conflict: impl FnOnce() -> String) -> Result<(), StoreError> {
    match reply.first().map(String::as_str) {
        Some("ok") => Ok(()),
        Some("conflict") => Err(StoreError::Conflict {
            record: reply.get(1).cloned().unwrap_or_else(conflict),
        }),
        Some("hash_taken") if reply.len() == 3 => Err(RedisStoreError::HashTaken {
            id: reply[1].clone(),
            holder: reply[2].clone(),
        }
        .into()),
        _ => Err(RedisStoreError::Reply {
            what: "a write",
            detail: format!("{} items", reply.len()),
        }
        .into()),
    }
}
