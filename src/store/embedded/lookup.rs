//! `KeyLookup`: the hot path's one query.

use super::codec::{self, key_columns, user_columns};
use super::EmbeddedStore;
use crate::key::KeyHash;
use crate::store::{KeyLookup, Lookup, StoreError};
use async_trait::async_trait;

#[async_trait]
impl KeyLookup for EmbeddedStore {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<Lookup>, StoreError> {
        let hash = *hash;
        self.read(move |conn| {
            // One query: the owner's row and the org's state come with the key, so a
            // verdict never mixes two snapshots.
            let mut stmt = conn.prepare_cached(concat!(
                "SELECT ",
                key_columns!(),
                ", ",
                user_columns!(),
                ", coalesce(o.suspended, 0)
                 FROM keys k LEFT JOIN users u ON u.org = k.org AND u.user = k.owner
                 LEFT JOIN orgs o ON o.org = k.org
                 WHERE k.hash = ?1"
            ))?;
            let mut rows = stmt.query([&hash.0[..]])?;
            let Some(row) = rows.next()? else {
                return Ok(None);
            };
            let key = codec::key_from_row(row, 0)?;
            let owner = match row.get::<_, Option<String>>(codec::KEY_COLUMNS)? {
                Some(_) => Some(codec::user_from_row(row, codec::KEY_COLUMNS)?),
                None => None,
            };
            let org_suspended = row.get(codec::KEY_COLUMNS + codec::USER_COLUMNS)?;
            Ok(Some(Lookup {
                key,
                owner,
                org_suspended,
            }))
        })
        .await
    }
}
