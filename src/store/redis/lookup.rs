//! `KeyLookup`: the hot path's one script call.

use super::codec::{self, bytes, items, Fields};
use super::{keys, reply_error, scripts, RedisStore};
use crate::key::KeyHash;
use crate::store::{KeyLookup, Lookup, StoreError};
use ::redis::Value;
use async_trait::async_trait;

#[async_trait]
impl KeyLookup for RedisStore {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<Lookup>, StoreError> {
        let index = keys::hash(hash);
        let reply: Value = self
            .run(|mut c| async move {
                let mut call = scripts::LOOKUP_SCRIPT.key(index);
                call.arg(keys::PREFIX);
                call.invoke_async(&mut c).await
            })
            .await?;
        let mut parts = items(reply).map_err(reply_error("lookup"))?.into_iter();
        let Some(id) = parts.next() else {
            return Ok(None);
        };
        let id = bytes(id).map_err(reply_error("lookup"))?;
        let id = String::from_utf8_lossy(&id).into_owned();
        let (Some(key_fields), Some(user_fields)) = (parts.next(), parts.next()) else {
            // The hash index names a key that is gone: the key is unknown.
            tracing::warn!(key_id = %id, "redis store: hash index names a missing key");
            return Ok(None);
        };
        let org_suspended = parts
            .next()
            .ok_or_else(|| "no org state".to_owned())
            .and_then(bytes)
            .and_then(|s| codec::flag(&String::from_utf8_lossy(&s), "org suspended"))
            .map_err(reply_error("lookup"))?;
        let key_fields =
            Fields::from_value(key_fields).map_err(|reason| codec::corrupt(id.clone(), reason))?;
        let key = codec::key_from_fields(&id, &key_fields)?;
        if key.hash != *hash {
            tracing::warn!(key_id = %id, "redis store: hash index names a key with another hash");
            return Ok(None);
        }
        let owner = match &key.owner {
            Some(user) => {
                let fields = Fields::from_value(user_fields)
                    .map_err(|reason| codec::corrupt(format!("user {}/{user}", key.org), reason))?;
                if fields.is_empty() {
                    None
                } else {
                    Some(codec::user_from_fields(&key.org, user, &fields)?)
                }
            }
            None => None,
        };
        Ok(Some(Lookup {
            key,
            owner,
            org_suspended,
        }))
    }
}
