//! What every `KeyStore` must do, written once and run against each store by its own
//! tests (`embedded/tests.rs`, `redis/tests.rs`), which add what only that store has.

use crate::key::KeyHash;
use crate::store::fixtures::{all_events, event, ids, key, personal, save, stored, user};
use crate::store::{
    AuditQuery, KeyFilter, KeyRecord, KeyState, KeyStore, OrgRecord, StoreError, UserRecord,
};
use std::collections::BTreeMap;

pub(crate) async fn key_record_round_trips_with_every_field(store: &impl KeyStore) {
    let full = KeyRecord {
        name: "deploy bot".to_owned(),
        workspaces: vec!["ws1".to_owned()],
        roles: vec!["editor".to_owned(), "viewer".to_owned()],
        permissions: vec!["models:read".to_owned(), "models:write".to_owned()],
        expires_at: Some(1_800_000_000_000),
        metadata: BTreeMap::from([
            ("team".to_owned(), "ml".to_owned()),
            ("ticket".to_owned(), "OPS-1 \"quoted\" ✓".to_owned()),
        ]),
        rate_limit: Some("100/s".to_owned()),
        quota: Some("10000/month".to_owned()),
        usage_epoch: 3,
        state: KeyState::Revoked,
        last_used_at: Some(1_700_000_500_000),
        revoked_at: Some(1_700_000_600_000),
        rotated_to: Some("key_next".to_owned()),
        hint: Some("kg_…a1B2".to_owned()),
        sealed_secret: Some(crate::key::SealedSecret::from_stored("v1:00ff".to_owned())),
        ..personal("key_full", "acme", "alice", 1_700_000_000_000)
    };
    let inherit = KeyRecord {
        inherit: true,
        roles: vec![],
        permissions: vec![],
        ..personal("key_inherit", "acme", "bob", 1_700_000_000_001)
    };
    save(store, &[full.clone(), inherit.clone()]).await;

    assert_eq!(
        store.get_key("key_full").await.expect("get"),
        Some(stored(&full))
    );
    assert_eq!(
        store.get_key("key_inherit").await.expect("get"),
        Some(stored(&inherit))
    );
    assert_eq!(store.get_key("key_missing").await.expect("get"), None);
    let found = store
        .lookup(&full.hash)
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found.key, stored(&full));
    assert_eq!(found.owner, None, "no user record for alice yet");
    assert!(store
        .lookup(&KeyHash::of(b"nope"))
        .await
        .expect("lookup")
        .is_none());
    store.ping().await.expect("ping");
}

pub(crate) async fn list_filters_by_org_and_workspace_oldest_first(store: &impl KeyStore) {
    save(
        store,
        &[
            key("key_b", "acme", &["ws2"], 20),
            key("key_a", "acme", &["*"], 10),
            // Oldest of acme although last by id: the order is by age, not id.
            key("key_c", "acme", &["ws1"], 5),
            key("key_g", "globex", &["ws1"], 1),
            // Same created_at as key_a: ties go by id.
            key("key_0", "acme", &["ws1"], 10),
        ],
    )
    .await;
    let list = |org: Option<&str>, ws: Option<&str>| {
        let filter = KeyFilter {
            org: org.map(str::to_owned),
            workspace: ws.map(str::to_owned),
        };
        async move { store.list_keys(&filter).await.expect("list") }
    };
    assert_eq!(
        ids(&list(None, None).await),
        ["key_g", "key_c", "key_0", "key_a", "key_b"]
    );
    assert_eq!(
        ids(&list(Some("acme"), None).await),
        ["key_c", "key_0", "key_a", "key_b"]
    );
    // Workspace keys of ws1, and the org key.
    assert_eq!(
        ids(&list(Some("acme"), Some("ws1")).await),
        ["key_c", "key_0", "key_a"]
    );
    assert_eq!(
        ids(&list(Some("acme"), Some("ws2")).await),
        ["key_a", "key_b"]
    );
    assert_eq!(ids(&list(Some("acme"), Some("ws9")).await), ["key_a"]);
    assert_eq!(
        ids(&list(None, Some("ws1")).await),
        ["key_g", "key_c", "key_0", "key_a"]
    );
    assert!(list(Some("initech"), None).await.is_empty());
}

pub(crate) async fn save_user_publishes_the_hashes_of_the_owners_keys(store: &impl KeyStore) {
    let a1 = personal("key_a1", "acme", "alice", 1);
    let a2 = personal("key_a2", "acme", "alice", 2);
    let b = personal("key_b", "acme", "bob", 3);
    let elsewhere = personal("key_ga", "globex", "alice", 4);
    save(store, &[a1.clone(), a2.clone(), b, elsewhere]).await;
    assert!(store.user_owns_keys("acme", "alice").await.expect("owns"));
    assert!(!store.user_owns_keys("acme", "carol").await.expect("owns"));
    assert!(!store
        .user_owns_keys("initech", "alice")
        .await
        .expect("owns"));

    let cursor = store.change_cursor().await.expect("cursor");
    store
        .save_user(&user("acme", "alice", true), &event("user.remove", None))
        .await
        .expect("save user");
    let batch = store.changes_since(cursor).await.expect("changes");
    let mut want = vec![a1.hash, a2.hash];
    want.sort_unstable();
    assert_eq!(batch.evict, want);
    assert!(!batch.evict_all);
    assert_eq!(batch.cursor, cursor + 2);

    // Restoring updates the row in place.
    store
        .save_user(&user("acme", "alice", false), &event("user.restore", None))
        .await
        .expect("save user");
    let alice = store
        .get_user("acme", "alice")
        .await
        .expect("get")
        .expect("some");
    assert!(!alice.removed);
    assert_eq!(alice.version, 2);

    // A user without keys changes no answer: nothing to publish.
    let cursor = store.change_cursor().await.expect("cursor");
    store
        .save_user(
            &user("acme", "carol", false),
            &event("user.set-roles", None),
        )
        .await
        .expect("save user");
    assert_eq!(store.change_cursor().await.expect("cursor"), cursor);

    // A deleted key no longer counts as owned.
    let mut ev = event("delete", Some("key_a1"));
    store.delete_key("key_a1", &ev).await.expect("delete");
    ev.key_id = Some("key_a2".to_owned());
    store.delete_key("key_a2", &ev).await.expect("delete");
    assert!(!store.user_owns_keys("acme", "alice").await.expect("owns"));
}

pub(crate) async fn lookup_brings_the_owner_record_of_the_same_org(store: &impl KeyStore) {
    let k = personal("key_p", "acme", "alice", 1);
    let service = key("key_s", "acme", &["*"], 2);
    // An org and a user with `:` in them must not meet another pair's keys.
    let tricky = personal("key_t", "acme:x", "bob", 3);
    save(store, &[k.clone(), service.clone(), tricky.clone()]).await;
    // Same user name in another org must not leak into acme's key.
    store
        .save_user(&user("globex", "alice", false), &event("set-roles", None))
        .await
        .expect("save user");
    store
        .save_user(&user("acme", "x:bob", true), &event("remove", None))
        .await
        .expect("save user");
    assert_eq!(
        store
            .lookup(&k.hash)
            .await
            .expect("lookup")
            .expect("found")
            .owner,
        None
    );
    assert_eq!(
        store
            .lookup(&tricky.hash)
            .await
            .expect("lookup")
            .expect("found")
            .owner,
        None
    );

    let alice = user("acme", "alice", true);
    store
        .save_user(&alice, &event("remove", None))
        .await
        .expect("save user");
    let found = store.lookup(&k.hash).await.expect("lookup").expect("found");
    let alice = UserRecord {
        version: 1,
        ..alice
    };
    assert_eq!(found.owner, Some(alice.clone()));
    assert_eq!(
        store.get_user("acme", "alice").await.expect("get"),
        Some(alice)
    );
    assert_eq!(store.get_user("acme", "zed").await.expect("get"), None);
    let s = store
        .lookup(&service.hash)
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(s.owner, None);
}

pub(crate) async fn record_last_used_never_moves_backwards(store: &impl KeyStore) {
    let k = key("key_u", "acme", &["*"], 1);
    save(store, std::slice::from_ref(&k)).await;
    let cursor = store.change_cursor().await.expect("cursor");
    let last_used = || async {
        store
            .get_key("key_u")
            .await
            .expect("get")
            .expect("some")
            .last_used_at
    };

    store
        .record_last_used(&[("key_u".to_owned(), 500), ("key_unknown".to_owned(), 9)])
        .await
        .expect("record");
    assert_eq!(last_used().await, Some(500));
    assert_eq!(
        store.get_key("key_unknown").await.expect("get"),
        None,
        "a use of an unknown key creates nothing"
    );
    store
        .record_last_used(&[("key_u".to_owned(), 400)])
        .await
        .expect("record");
    assert_eq!(last_used().await, Some(500));
    store
        .record_last_used(&[("key_u".to_owned(), 700)])
        .await
        .expect("record");
    assert_eq!(last_used().await, Some(700));
    // Not a verdict change: nothing on the feed.
    assert_eq!(store.change_cursor().await.expect("cursor"), cursor);
    assert_eq!(
        store
            .get_key("key_u")
            .await
            .expect("get")
            .expect("some")
            .version,
        1,
        "a use is no revision"
    );

    // A save of a record read before the last record_last_used keeps the newer time…
    save(
        store,
        &[KeyRecord {
            name: "renamed".to_owned(),
            last_used_at: Some(600),
            ..k.clone()
        }],
    )
    .await;
    let got = store.get_key("key_u").await.expect("get").expect("some");
    assert_eq!(
        (got.name.as_str(), got.last_used_at),
        ("renamed", Some(700))
    );
    // …and one with no time at all does not erase it.
    save(
        store,
        &[KeyRecord {
            last_used_at: None,
            ..k.clone()
        }],
    )
    .await;
    assert_eq!(last_used().await, Some(700));
    save(
        store,
        &[KeyRecord {
            last_used_at: Some(800),
            ..k
        }],
    )
    .await;
    assert_eq!(last_used().await, Some(800));
}

pub(crate) async fn delete_removes_the_key_and_publishes_its_hash(store: &impl KeyStore) {
    let k = personal("key_del", "acme", "alice", 1);
    save(store, std::slice::from_ref(&k)).await;
    let cursor = store.change_cursor().await.expect("cursor");

    assert!(store
        .delete_key("key_del", &event("delete", Some("key_del")))
        .await
        .expect("delete"));
    assert_eq!(store.get_key("key_del").await.expect("get"), None);
    assert!(store.lookup(&k.hash).await.expect("lookup").is_none());
    assert!(store
        .list_keys(&KeyFilter::default())
        .await
        .expect("list")
        .is_empty());
    let batch = store.changes_since(cursor).await.expect("changes");
    assert_eq!((batch.evict, batch.evict_all), (vec![k.hash], false));
    let query = AuditQuery {
        key_id: Some("key_del".to_owned()),
        before: None,
        limit: 10,
    };
    let actions: Vec<String> = store
        .audit(&query)
        .await
        .expect("audit")
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["delete", "create"]);

    // Absent: false, and neither an audit event nor a change is written.
    let cursor = store.change_cursor().await.expect("cursor");
    assert!(!store
        .delete_key("key_del", &event("delete", Some("key_del")))
        .await
        .expect("delete"));
    assert_eq!(store.change_cursor().await.expect("cursor"), cursor);
    assert_eq!(store.audit(&query).await.expect("audit").len(), 2);
}

pub(crate) async fn audit_pages_newest_first(store: &impl KeyStore) {
    save(
        store,
        &[
            key("key_x", "acme", &["*"], 1),
            key("key_y", "acme", &["*"], 1),
        ],
    )
    .await;
    for i in 0..5 {
        let (id, action) = if i % 2 == 0 {
            ("key_x", "rename")
        } else {
            ("key_y", "disable")
        };
        store
            .save_keys(&[], &[event(&format!("{action}{i}"), Some(id))])
            .await
            .expect("save");
    }
    let all = store.audit(&all_events()).await.expect("audit");
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["rename4", "disable3", "rename2", "disable1", "rename0", "create"]
    );
    assert!(
        all.windows(2).all(|w| w[0].id > w[1].id),
        "ids descend and are assigned"
    );
    assert_eq!(all[0].details, serde_json::json!({ "note": "rename4" }));
    assert_eq!(all[0].actor, "cli");
    assert_eq!(all[0].at, 1_700_000_000_000);
    assert_eq!(all[0].key_id.as_deref(), Some("key_x"));
    assert_eq!(all[1].key_id.as_deref(), Some("key_y"));

    let page = |key_id: Option<&str>, before: Option<i64>, limit: usize| {
        let q = AuditQuery {
            key_id: key_id.map(str::to_owned),
            before,
            limit,
        };
        async move { store.audit(&q).await.expect("audit") }
    };
    let page1 = page(None, None, 2).await;
    assert_eq!(page1, all[..2]);
    assert_eq!(page(None, Some(page1[1].id), 2).await, all[2..4]);
    assert!(page(None, None, 0).await.is_empty());
    assert_eq!(page(None, None, usize::MAX).await, all);

    let x = page(Some("key_x"), None, 100).await;
    let x_actions: Vec<&str> = x.iter().map(|e| e.action.as_str()).collect();
    // The "create" event names key_x (the first key of the batch).
    assert_eq!(x_actions, ["rename4", "rename2", "rename0", "create"]);
    assert_eq!(page(Some("key_x"), Some(x[0].id), 1).await, x[1..2]);
    assert!(page(Some("key_none"), None, 10).await.is_empty());

    // An event without a key id stays out of every key's trail.
    store
        .save_user(&user("acme", "u", false), &event("user.set-roles", None))
        .await
        .expect("save user");
    let newest = page(None, None, 1).await;
    assert_eq!(newest[0].key_id, None);
    assert_eq!(page(Some("key_x"), None, 100).await, x);
}

pub(crate) async fn a_save_from_a_stale_read_is_a_conflict_and_writes_nothing(
    store: &impl KeyStore,
) {
    save(store, &[key("key_race", "acme", &["*"], 1)]).await;
    let read_a = store
        .get_key("key_race")
        .await
        .expect("get")
        .expect("found");
    let read_b = read_a.clone();
    // A revokes first.
    store
        .save_keys(
            &[KeyRecord {
                state: KeyState::Revoked,
                ..read_a
            }],
            &[event("revoke", Some("key_race"))],
        )
        .await
        .expect("revoke");
    let cursor = store.change_cursor().await.expect("cursor");
    // B renames from its older read, in a batch with a new key: all refused.
    let err = store
        .save_keys(
            &[
                key("key_new", "acme", &["*"], 2),
                KeyRecord {
                    name: "new".into(),
                    ..read_b
                },
            ],
            &[event("rename", Some("key_race"))],
        )
        .await;
    assert!(
        matches!(&err, Err(StoreError::Conflict { record }) if record == "key_race"),
        "{err:?}"
    );
    let now = store
        .get_key("key_race")
        .await
        .expect("get")
        .expect("found");
    assert_eq!(now.state, KeyState::Revoked);
    assert_eq!(now.name, "key_race");
    assert_eq!(now.version, 2);
    assert_eq!(store.get_key("key_new").await.expect("get"), None);
    assert_eq!(store.change_cursor().await.expect("cursor"), cursor);
    let events = store
        .audit(&AuditQuery {
            key_id: Some("key_race".into()),
            before: None,
            limit: 10,
        })
        .await
        .expect("audit");
    assert_eq!(events.len(), 2, "the refused rename wrote no audit event");

    // The same for users.
    store
        .save_user(&user("acme", "al", false), &event("set-roles", None))
        .await
        .expect("save user");
    let read = store
        .get_user("acme", "al")
        .await
        .expect("get")
        .expect("found");
    store
        .save_user(
            &UserRecord {
                removed: true,
                ..read.clone()
            },
            &event("remove", None),
        )
        .await
        .expect("remove");
    let err = store
        .save_user(
            &UserRecord {
                roles: vec![],
                ..read
            },
            &event("set-roles", None),
        )
        .await;
    assert!(
        matches!(&err, Err(StoreError::Conflict { record }) if record == "user acme/al"),
        "{err:?}"
    );
    let al = store
        .get_user("acme", "al")
        .await
        .expect("get")
        .expect("found");
    assert!(al.removed);
    assert_eq!(al.version, 2);
}

pub(crate) async fn save_org_publishes_every_key_of_the_org_and_lookup_sees_it(
    store: &impl KeyStore,
) {
    let a = key("key_a", "acme", &["*"], 1);
    let p = personal("key_p", "acme", "alice", 2);
    let g = key("key_g", "globex", &["*"], 3);
    // An org whose name starts with another's must not share its state.
    let x = key("key_x", "acme:x", &["*"], 4);
    save(store, &[a.clone(), p.clone(), g.clone(), x.clone()]).await;
    let suspended = |k: &KeyRecord| {
        let hash = k.hash;
        async move {
            store
                .lookup(&hash)
                .await
                .expect("lookup")
                .expect("found")
                .org_suspended
        }
    };
    assert_eq!(store.get_org("acme").await.expect("get org"), None);
    assert!(!suspended(&a).await);

    let cursor = store.change_cursor().await.expect("cursor");
    let acme = OrgRecord {
        org: "acme".to_owned(),
        suspended: true,
        version: 0,
    };
    store
        .save_org(&acme, &event("org_suspend", None))
        .await
        .expect("suspend");
    let batch = store.changes_since(cursor).await.expect("changes");
    let mut want = vec![a.hash, p.hash];
    want.sort_unstable();
    assert_eq!((batch.evict, batch.evict_all), (want, false));
    assert_eq!(batch.cursor, cursor + 2);
    assert!(suspended(&a).await && suspended(&p).await);
    assert!(!suspended(&g).await && !suspended(&x).await);
    // The owner's record still comes with a personal key of a suspended org.
    store
        .save_user(&user("acme", "alice", true), &event("user_remove", None))
        .await
        .expect("save user");
    let found = store.lookup(&p.hash).await.expect("lookup").expect("found");
    assert!(found.org_suspended && found.owner.is_some_and(|u| u.removed));
    assert_eq!(
        store.get_org("acme").await.expect("get org"),
        Some(OrgRecord {
            version: 1,
            ..acme.clone()
        })
    );
    // A key created while its org is suspended is suspended too.
    let late = key("key_late", "acme", &["ws1"], 5);
    save(store, std::slice::from_ref(&late)).await;
    assert!(suspended(&late).await);

    // A save from a stale read (here: a second first suspension) writes nothing.
    let cursor = store.change_cursor().await.expect("cursor");
    let events = store.audit(&all_events()).await.expect("audit").len();
    let err = store.save_org(&acme, &event("org_suspend", None)).await;
    assert!(
        matches!(&err, Err(StoreError::Conflict { record }) if record == "org acme"),
        "{err:?}"
    );
    assert_eq!(store.change_cursor().await.expect("cursor"), cursor);
    assert_eq!(
        store.audit(&all_events()).await.expect("audit").len(),
        events
    );

    // Restoring: every key of the org again, and the lookup says active.
    store
        .save_org(
            &OrgRecord {
                suspended: false,
                version: 1,
                ..acme
            },
            &event("org_restore", None),
        )
        .await
        .expect("restore");
    let batch = store.changes_since(cursor).await.expect("changes");
    let mut want = vec![a.hash, p.hash, late.hash];
    want.sort_unstable();
    assert_eq!(batch.evict, want);
    assert!(!suspended(&a).await && !suspended(&late).await);
    let acme = store.get_org("acme").await.expect("get").expect("some");
    assert_eq!((acme.suspended, acme.version), (false, 2));
    let newest = store.audit(&all_events()).await.expect("audit");
    assert_eq!(newest[0].action, "org_restore");
    assert_eq!(newest[0].key_id, None);

    // An org without keys: its state is written, no change event is.
    let cursor = store.change_cursor().await.expect("cursor");
    let empty = OrgRecord {
        org: "initech".to_owned(),
        suspended: true,
        version: 0,
    };
    store
        .save_org(&empty, &event("org_suspend", None))
        .await
        .expect("suspend");
    assert_eq!(store.change_cursor().await.expect("cursor"), cursor);
    assert!(store
        .get_org("initech")
        .await
        .expect("get")
        .is_some_and(|o| o.suspended));
}

/// An org with more keys than one feed batch (`batch`) is suspended with one "drop
/// everything" change, not a change per key: readers would drop their whole cache for
/// that many anyway, and the feed stays small.
pub(crate) async fn suspending_an_org_larger_than_a_feed_batch_publishes_one_drop_everything(
    store: &impl KeyStore,
    batch: usize,
) {
    let many: Vec<KeyRecord> = (0..=batch)
        .map(|i| key(&format!("key_{i:05}"), "big", &["*"], i as i64))
        .collect();
    for chunk in many.chunks(500) {
        save(store, chunk).await;
    }
    let cursor = store.change_cursor().await.expect("cursor");
    let big = crate::store::OrgRecord {
        org: "big".to_owned(),
        suspended: true,
        version: 0,
    };
    store
        .save_org(&big, &event("org_suspend", None))
        .await
        .expect("suspend");
    assert_eq!(store.change_cursor().await.expect("cursor"), cursor + 1);
    let changes = store.changes_since(cursor).await.expect("changes");
    assert!(changes.evict_all && changes.evict.is_empty(), "{changes:?}");
    let found = store.lookup(&many[batch].hash).await;
    assert!(found.expect("lookup").expect("found").org_suspended);
}

/// Quota leases never add up past the quota within a tag; reports add `used` and give
/// leases back; a newer tag starts from zero and an older one is served the newer.
pub(crate) async fn quota_leases_stop_at_the_quota_and_a_newer_tag_starts_from_zero(
    store: &impl KeyStore,
) {
    use crate::store::{QuotaAsk, QuotaCounters, QuotaSettle, QuotaTag};
    let day5 = QuotaTag {
        epoch: 0,
        period: 5,
    };
    let ask = |tag, want| QuotaAsk {
        tag,
        want,
        limit: 250,
        keep_until_ms: Some(4_000_000_000_000),
    };
    assert_eq!(store.quota_counters("key_q").await.expect("read"), None);
    let mut granted = 0;
    for _ in 0..4 {
        let g = store
            .lease_quota("key_q", ask(day5, 100))
            .await
            .expect("lease");
        assert_eq!(g.tag, day5);
        granted += g.granted;
    }
    assert_eq!(granted, 250, "never past the quota");
    store
        .settle_quota(&[QuotaSettle {
            key_id: "key_q".into(),
            tag: day5,
            used: 180,
            release: 20,
        }])
        .await
        .expect("settle");
    assert_eq!(
        store.quota_counters("key_q").await.expect("read"),
        Some(QuotaCounters {
            tag: day5,
            leased: 230,
            used: 180
        })
    );
    // The 20 given back can be leased again.
    let g = store
        .lease_quota("key_q", ask(day5, 100))
        .await
        .expect("lease");
    assert_eq!((g.granted, g.leased), (20, 250));

    // A report of another tag is dropped.
    store
        .settle_quota(&[QuotaSettle {
            key_id: "key_q".into(),
            tag: QuotaTag {
                epoch: 0,
                period: 4,
            },
            used: 7,
            release: 0,
        }])
        .await
        .expect("settle");
    assert_eq!(
        store
            .quota_counters("key_q")
            .await
            .expect("read")
            .map(|c| c.used),
        Some(180)
    );

    // The next day starts from zero; a gateway still on the old day is served the new one.
    let day6 = QuotaTag {
        epoch: 0,
        period: 6,
    };
    let g = store
        .lease_quota("key_q", ask(day6, 100))
        .await
        .expect("lease");
    assert_eq!((g.granted, g.leased, g.tag), (100, 100, day6));
    let g = store
        .lease_quota("key_q", ask(day5, 100))
        .await
        .expect("lease");
    assert_eq!((g.granted, g.leased, g.tag), (100, 200, day6));
    // A reset (a newer epoch) beats a later period of an older epoch.
    let reset = QuotaTag {
        epoch: 1,
        period: 6,
    };
    let g = store
        .lease_quota("key_q", ask(reset, 100))
        .await
        .expect("lease");
    assert_eq!((g.granted, g.leased, g.tag), (100, 100, reset));
    let g = store
        .lease_quota(
            "key_q",
            ask(
                QuotaTag {
                    epoch: 0,
                    period: 9,
                },
                10,
            ),
        )
        .await
        .expect("lease");
    assert_eq!(g.tag, reset);
}
