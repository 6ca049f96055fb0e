//! A store that fails on demand: the real store behind a switch, for outage tests.

use async_trait::async_trait;
use keygate::key::KeyHash;
use keygate::store::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct Switchable {
    pub inner: Arc<dyn KeyStore>,
    pub down: AtomicBool,
}

impl Switchable {
    pub fn new(inner: Arc<dyn KeyStore>) -> Self {
        Switchable {
            inner,
            down: AtomicBool::new(false),
        }
    }

    pub fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Open {
                path: "test".into(),
                source: std::io::Error::other("store switched off by the test"),
            })
        } else {
            Ok(())
        }
    }
}

// The switch fails lookups, the usage flush, the meters and ping; everything else passes
// through.
#[async_trait]
impl KeyLookup for Switchable {
    async fn lookup(&self, hash: &KeyHash) -> Result<Option<Lookup>, StoreError> {
        self.check()?;
        self.inner.lookup(hash).await
    }
}

#[async_trait]
impl KeyRepo for Switchable {
    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.get_key(id).await
    }
    async fn list_keys(&self, f: &KeyFilter) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.list_keys(f).await
    }
    async fn save_keys(&self, k: &[KeyRecord], e: &[AuditEvent]) -> Result<(), StoreError> {
        self.inner.save_keys(k, e).await
    }
    async fn delete_key(&self, id: &str, e: &AuditEvent) -> Result<bool, StoreError> {
        self.inner.delete_key(id, e).await
    }
    async fn get_user(&self, org: &str, user: &str) -> Result<Option<UserRecord>, StoreError> {
        self.inner.get_user(org, user).await
    }
    async fn user_owns_keys(&self, org: &str, user: &str) -> Result<bool, StoreError> {
        self.inner.user_owns_keys(org, user).await
    }
    async fn save_user(&self, u: &UserRecord, e: &AuditEvent) -> Result<(), StoreError> {
        self.inner.save_user(u, e).await
    }
    async fn get_org(&self, org: &str) -> Result<Option<OrgRecord>, StoreError> {
        self.inner.get_org(org).await
    }
    async fn save_org(&self, o: &OrgRecord, e: &AuditEvent) -> Result<(), StoreError> {
        self.inner.save_org(o, e).await
    }
}

#[async_trait]
impl AuditLog for Switchable {
    async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.audit(q).await
    }
}

#[async_trait]
impl UsageSink for Switchable {
    async fn record_last_used(&self, b: &[(String, i64)]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.record_last_used(b).await
    }
}

#[async_trait]
impl ChangeFeed for Switchable {
    async fn change_cursor(&self) -> Result<u64, StoreError> {
        self.inner.change_cursor().await
    }
    async fn changes_since(&self, c: u64) -> Result<ChangeBatch, StoreError> {
        self.inner.changes_since(c).await
    }
}

#[async_trait]
impl Health for Switchable {
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ping().await
    }
}

#[async_trait]
impl Meters for Switchable {
    async fn lease_quota(&self, key_id: &str, ask: QuotaAsk) -> Result<QuotaGrant, StoreError> {
        self.check()?;
        self.inner.lease_quota(key_id, ask).await
    }
    async fn settle_quota(&self, batch: &[QuotaSettle]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.settle_quota(batch).await
    }
    async fn quota_counters(&self, key_id: &str) -> Result<Option<QuotaCounters>, StoreError> {
        self.check()?;
        self.inner.quota_counters(key_id).await
    }
    async fn lease_rate(
        &self,
        key_id: &str,
        limit: u64,
        window_ms: i64,
        want: u64,
    ) -> Result<Option<RateGrant>, StoreError> {
        self.check()?;
        self.inner.lease_rate(key_id, limit, window_ms, want).await
    }
    fn shares_rate_windows(&self) -> bool {
        self.inner.shares_rate_windows()
    }
}
