//! Concurrent lifecycle changes from two processes' worth of stores on one file: a
//! revoke racing renames and a user removal racing role changes must never be undone.
use keygate::key::KeyFormat;
use keygate::service::{KeyService, NewKey};
use keygate::store::{KeyState, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

async fn service(path: &std::path::Path) -> Arc<KeyService> {
    let cfg = keygate::config::StoreConfig::Embedded {
        path: path.to_owned(),
        poll_interval: std::time::Duration::from_millis(100),
    };
    let store = keygate::store::open(&cfg).await.expect("open store");
    let roles: BTreeMap<String, BTreeSet<String>> =
        [("viewer".to_owned(), ["models:read".to_owned()].into())].into();
    Arc::new(KeyService::new(store, roles, KeyFormat::new("kg"), None))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoke_racing_renames_stays_revoked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("k.db");
    let (a, b) = (service(&db).await, service(&db).await);
    let (key, _) = a
        .create(
            NewKey {
                org: "acme".into(),
                roles: vec!["viewer".into()],
                ..NewKey::default()
            },
            "t",
        )
        .await
        .expect("create");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
        let id = key.id.clone();
        tasks.spawn(async move { svc.rename(&id, &format!("name-{i}"), "t").await.map(|_| ()) });
    }
    // The revoke itself must get through the contention (it retries on conflicts).
    let revoker = {
        let svc = b.clone();
        let id = key.id.clone();
        tokio::spawn(async move { svc.revoke(&id, "t").await })
    };
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            Ok(()) => {}
            // Under heavy contention a change may give up after its retries: it must
            // say so, never overwrite.
            Err(keygate::service::ServiceError::Store(StoreError::Conflict { .. })) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    revoker.await.expect("task").expect("revoke got through");
    let now = a.show(&key.id).await.expect("show");
    assert_eq!(
        now.state,
        KeyState::Revoked,
        "a rename wrote the key back as active"
    );
    assert!(now.revoked_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_removal_racing_role_changes_stays_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("k.db");
    let (a, b) = (service(&db).await, service(&db).await);
    a.set_user_roles("acme", "bob", &["viewer".into()], "t")
        .await
        .expect("roles");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            svc.set_user_roles("acme", "bob", &["viewer".into()], "t")
                .await
                .map(|_| ())
        });
    }
    b.remove_user("acme", "bob", "t")
        .await
        .expect("removal got through");
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            Ok(()) | Err(keygate::service::ServiceError::Store(StoreError::Conflict { .. })) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    let bob = a
        .store()
        .get_user("acme", "bob")
        .await
        .expect("get")
        .expect("bob");
    assert!(bob.removed, "a role change brought the removed user back");
}
