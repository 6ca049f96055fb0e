//! `AuditLog`: paging the audit indexes (the events are written by the write scripts).

use super::codec::{self, bytes};
use super::{keys, reply_error, scripts, RedisStore};
use crate::store::{AuditEvent, AuditLog, AuditQuery, StoreError};
use ::redis::Value;
use async_trait::async_trait;

#[async_trait]
impl AuditLog for RedisStore {
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let index = query
            .key_id
            .as_deref()
            .map_or_else(keys::audit, keys::audit_of_key);
        let max = query
            .before
            .map_or_else(|| "+inf".to_owned(), |b| format!("({b}"));
        // Redis reads LIMIT as a signed 64-bit count.
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX).to_string();
        let reply: Vec<Value> = self
            .run(|mut c| async move {
                let mut call = scripts::AUDIT_SCRIPT.key(index);
                call.arg(keys::PREFIX).arg(max).arg(limit);
                call.invoke_async(&mut c).await
            })
            .await?;
        let mut events = Vec::with_capacity(reply.len() / 2);
        let mut it = reply.into_iter();
        while let (Some(id), Some(json)) = (it.next(), it.next()) {
            let id = bytes(id).map_err(reply_error("audit"))?;
            let id: i64 = std::str::from_utf8(&id)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    codec::corrupt("audit index".to_owned(), "an event id".to_owned())
                })?;
            let json = bytes(json).map_err(reply_error("audit"))?;
            events.push(codec::event_from_json(id, &json)?);
        }
        Ok(events)
    }
}
