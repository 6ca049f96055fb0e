//! `KeyRepo`: reads of keys, users and orgs here; each write is one transaction of
//! `writes.rs` on the writer connection.

use super::codec::{self, key_columns, user_columns};
use super::writes::{delete_key_tx, save_keys_tx, save_org_tx, save_user_tx};
use super::EmbeddedStore;
use crate::store::{AuditEvent, KeyFilter, KeyRecord, KeyRepo, OrgRecord, StoreError, UserRecord};
use async_trait::async_trait;
use rusqlite::OptionalExtension;

#[async_trait]
impl KeyRepo for EmbeddedStore {
    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                key_columns!(),
                " FROM keys k WHERE k.id = ?1"
            ))?;
            let mut rows = stmt.query([&id])?;
            rows.next()?
                .map(|row| codec::key_from_row(row, 0))
                .transpose()
        })
        .await
    }

    async fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyRecord>, StoreError> {
        let filter = filter.clone();
        self.read(move |conn| {
            let mut stmt;
            let mut rows = match &filter.org {
                Some(org) => {
                    stmt = conn.prepare_cached(concat!(
                        "SELECT ",
                        key_columns!(),
                        " FROM keys k WHERE k.org = ?1 ORDER BY k.created_at, k.id"
                    ))?;
                    stmt.query([org])?
                }
                None => {
                    stmt = conn.prepare_cached(concat!(
                        "SELECT ",
                        key_columns!(),
                        " FROM keys k ORDER BY k.created_at, k.id"
                    ))?;
                    stmt.query([])?
                }
            };
            let mut keys = Vec::new();
            while let Some(row) = rows.next()? {
                let key = codec::key_from_row(row, 0)?;
                // Workspaces live in the JSON record; filtering here keeps a corrupt record
                // an error naming the key rather than a failed SQL function.
                let fits = filter
                    .workspace
                    .as_deref()
                    .is_none_or(|w| key.is_org_key() || key.workspaces.iter().any(|k| k == w));
                if fits {
                    keys.push(key);
                }
            }
            Ok(keys)
        })
        .await
    }

    async fn save_keys(&self, keys: &[KeyRecord], events: &[AuditEvent]) -> Result<(), StoreError> {
        let (keys, events) = (keys.to_vec(), events.to_vec());
        self.write(move |tx| save_keys_tx(tx, &keys, &events)).await
    }

    async fn delete_key(&self, id: &str, event: &AuditEvent) -> Result<bool, StoreError> {
        let (id, event) = (id.to_owned(), event.clone());
        // A missing key returns false before any statement wrote: the commit is empty.
        self.write(move |tx| delete_key_tx(tx, &id, &event)).await
    }

    async fn get_user(&self, org: &str, user: &str) -> Result<Option<UserRecord>, StoreError> {
        let (org, user) = (org.to_owned(), user.to_owned());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users u WHERE u.org = ?1 AND u.user = ?2"
            ))?;
            let mut rows = stmt.query([&org, &user])?;
            rows.next()?
                .map(|row| codec::user_from_row(row, 0))
                .transpose()
        })
        .await
    }

    async fn user_owns_keys(&self, org: &str, user: &str) -> Result<bool, StoreError> {
        let (org, user) = (org.to_owned(), user.to_owned());
        self.read(move |conn| {
            let owns = conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM keys WHERE org = ?1 AND owner = ?2)")?
                .query_row([&org, &user], |row| row.get(0))?;
            Ok(owns)
        })
        .await
    }

    async fn save_user(&self, user: &UserRecord, event: &AuditEvent) -> Result<(), StoreError> {
        let (user, event) = (user.clone(), event.clone());
        self.write(move |tx| save_user_tx(tx, &user, &event)).await
    }

    async fn get_org(&self, org: &str) -> Result<Option<OrgRecord>, StoreError> {
        let org = org.to_owned();
        self.read(move |conn| {
            let row: Option<(bool, i64)> = conn
                .prepare_cached("SELECT suspended, version FROM orgs WHERE org = ?1")?
                .query_row([&org], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            Ok(row.map(|(suspended, version)| OrgRecord {
                org,
                suspended,
                version: u64::try_from(version).unwrap_or(0),
            }))
        })
        .await
    }

    async fn save_org(&self, org: &OrgRecord, event: &AuditEvent) -> Result<(), StoreError> {
        let (org, event) = (org.clone(), event.clone());
        self.write(move |tx| save_org_tx(tx, &org, &event)).await
    }
}
