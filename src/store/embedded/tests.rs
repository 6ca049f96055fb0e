use super::*;
use crate::store::conformance;
use crate::store::fixtures::{event, key, save, stored, user};
use crate::store::KeyState;
use crate::store::{
    now_ms, AuditLog, AuditQuery, ChangeBatch, ChangeFeed, Health, KeyFilter, KeyLookup, KeyRecord,
    KeyRepo, UsageSink,
};
use tempfile::TempDir;

fn open(dir: &TempDir) -> EmbeddedStore {
    EmbeddedStore::open(&dir.path().join("data/keygate.db")).expect("open store")
}

/// Runs raw SQL on the store's writer, to set up states the API cannot produce.
fn raw(store: &EmbeddedStore, sql: &str) {
    lock(&store.inner.writer)
        .execute_batch(sql)
        .expect("raw sql");
}

#[tokio::test]
async fn key_record_round_trips_with_every_field() {
    let dir = TempDir::new().expect("tempdir");
    conformance::key_record_round_trips_with_every_field(&open(&dir)).await;
}

#[tokio::test]
async fn lookup_brings_the_owner_record_of_the_same_org() {
    let dir = TempDir::new().expect("tempdir");
    conformance::lookup_brings_the_owner_record_of_the_same_org(&open(&dir)).await;
}

#[tokio::test]
async fn list_filters_by_org_and_workspace_oldest_first() {
    let dir = TempDir::new().expect("tempdir");
    conformance::list_filters_by_org_and_workspace_oldest_first(&open(&dir)).await;
}

#[tokio::test]
async fn save_user_publishes_the_hashes_of_the_owners_keys() {
    let dir = TempDir::new().expect("tempdir");
    conformance::save_user_publishes_the_hashes_of_the_owners_keys(&open(&dir)).await;
}

#[tokio::test]
async fn delete_removes_the_key_and_publishes_its_hash() {
    let dir = TempDir::new().expect("tempdir");
    conformance::delete_removes_the_key_and_publishes_its_hash(&open(&dir)).await;
}

#[tokio::test]
async fn audit_pages_newest_first() {
    let dir = TempDir::new().expect("tempdir");
    conformance::audit_pages_newest_first(&open(&dir)).await;
}

#[tokio::test]
async fn record_last_used_never_moves_backwards() {
    let dir = TempDir::new().expect("tempdir");
    conformance::record_last_used_never_moves_backwards(&open(&dir)).await;
}

#[tokio::test]
async fn save_org_publishes_every_key_of_the_org_and_lookup_sees_it() {
    let dir = TempDir::new().expect("tempdir");
    conformance::save_org_publishes_every_key_of_the_org_and_lookup_sees_it(&open(&dir)).await;
}

#[tokio::test]
async fn a_version_2_file_gains_org_states_and_keeps_its_keys_active() {
    let dir = TempDir::new().expect("tempdir");
    let k = key("key_old", "acme", &["*"], 1);
    {
        // A file as keygate built it before org suspension (and quotas): version 2.
        let store = open(&dir);
        save(&store, std::slice::from_ref(&k)).await;
        raw(
            &store,
            "DROP TABLE orgs; DROP TABLE quota_usage; PRAGMA user_version = 2;",
        );
    }
    let store = open(&dir);
    let found = store.lookup(&k.hash).await.expect("lookup").expect("found");
    assert_eq!(found.key, stored(&k));
    assert!(!found.org_suspended);
    assert_eq!(store.get_org("acme").await.expect("get org"), None);
}

#[tokio::test]
async fn changes_since_follows_the_cursor() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    assert_eq!(store.change_cursor().await.expect("cursor"), 0);
    let empty = store.changes_since(0).await.expect("changes");
    assert_eq!(
        empty,
        ChangeBatch {
            cursor: 0,
            evict: vec![],
            evict_all: false,
            written_at_ms: None,
        }
    );

    let a = key("key_a", "acme", &["*"], 1);
    let b = key("key_b", "acme", &["*"], 2);
    save(&store, &[a.clone(), b.clone()]).await;
    assert_eq!(store.change_cursor().await.expect("cursor"), 2);
    let batch = store.changes_since(0).await.expect("changes");
    let written = batch.written_at_ms.expect("changes carry their write time");
    let now = crate::store::now_ms();
    assert!((now - 60_000..=now).contains(&written), "{written}");
    let mut both = vec![a.hash, b.hash];
    both.sort_unstable();
    assert_eq!(
        batch,
        ChangeBatch {
            cursor: 2,
            evict: both,
            evict_all: false,
            written_at_ms: None,
        }
    );

    let batch = store.changes_since(1).await.expect("changes");
    assert_eq!(
        batch,
        ChangeBatch {
            cursor: 2,
            evict: vec![b.hash],
            evict_all: false,
            written_at_ms: None,
        }
    );
    // Nothing new: the cursor stays.
    let batch = store.changes_since(2).await.expect("changes");
    assert_eq!(
        batch,
        ChangeBatch {
            cursor: 2,
            evict: vec![],
            evict_all: false,
            written_at_ms: None,
        }
    );

    // The same key twice is evicted once.
    save(&store, std::slice::from_ref(&a)).await;
    save(&store, std::slice::from_ref(&a)).await;
    let batch = store.changes_since(2).await.expect("changes");
    assert_eq!(
        batch,
        ChangeBatch {
            cursor: 4,
            evict: vec![a.hash],
            evict_all: false,
            written_at_ms: None,
        }
    );
}

#[tokio::test]
async fn a_pruned_gap_evicts_everything() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    let keys: Vec<KeyRecord> = (0..3)
        .map(|i| key(&format!("key_{i}"), "acme", &["*"], i))
        .collect();
    for k in &keys {
        save(&store, std::slice::from_ref(k)).await;
    }
    // Rows 1 and 2 age past retention; the next write prunes them.
    raw(&store, "UPDATE changes SET at = 0 WHERE seq <= 2");
    let late = key("key_late", "acme", &["*"], 9);
    save(&store, std::slice::from_ref(&late)).await;
    let seqs: Vec<i64> = lock(&store.inner.writer)
        .prepare("SELECT seq FROM changes ORDER BY seq")
        .expect("prepare")
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(seqs, [3, 4]);

    // A reader at 1 missed seq 2: it cannot know which key that was.
    let batch = store.changes_since(1).await.expect("changes");
    assert!(batch.evict_all);
    assert_eq!(batch.cursor, 4);
    // A reader at 2 missed nothing.
    let batch = store.changes_since(2).await.expect("changes");
    assert!(!batch.evict_all);
    assert_eq!(batch.evict.len(), 2);
    assert_eq!(batch.cursor, 4);
}

#[tokio::test]
async fn pruning_keeps_the_newest_change() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    save(
        &store,
        &[
            key("key_a", "acme", &["*"], 1),
            key("key_b", "acme", &["*"], 2),
        ],
    )
    .await;
    raw(&store, "UPDATE changes SET at = 0");
    // A write that appends no change row still prunes, but leaves the newest row.
    store
        .save_user(
            &user("acme", "nobody", false),
            &event("user.set-roles", None),
        )
        .await
        .expect("save user");
    let rows: i64 = lock(&store.inner.writer)
        .query_row("SELECT count(*) FROM changes", [], |row| row.get(0))
        .expect("count");
    assert_eq!(rows, 1);
    assert_eq!(store.change_cursor().await.expect("cursor"), 2);
    let batch = store.changes_since(2).await.expect("changes");
    assert_eq!(
        batch,
        ChangeBatch {
            cursor: 2,
            evict: vec![],
            evict_all: false,
            written_at_ms: None,
        }
    );
}

#[tokio::test]
async fn a_null_change_or_a_cursor_past_the_end_evicts_everything() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    let a = key("key_a", "acme", &["*"], 1);
    save(&store, std::slice::from_ref(&a)).await;
    raw(
        &store,
        &format!("INSERT INTO changes (at, hash) VALUES ({}, NULL)", now_ms()),
    );
    let batch = store.changes_since(1).await.expect("changes");
    assert_eq!(batch.cursor, 2);
    assert!(batch.evict_all);
    let batch = store.changes_since(0).await.expect("changes");
    assert_eq!(
        (batch.cursor, batch.evict_all, batch.evict),
        (2, true, vec![a.hash])
    );

    // A cursor from a file that had more changes (this one was replaced or restored).
    let batch = store.changes_since(50).await.expect("changes");
    assert_eq!(
        batch,
        ChangeBatch {
            cursor: 2,
            evict: vec![],
            evict_all: true,
            written_at_ms: None,
        }
    );
}

#[tokio::test]
async fn a_huge_backlog_evicts_everything_in_one_batch() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    let keys: Vec<KeyRecord> = (0..=feed::MAX_CHANGE_BATCH)
        .map(|i| key(&format!("key_{i}"), "acme", &["*"], 1))
        .collect();
    save(&store, &keys).await;
    let end = store.change_cursor().await.expect("cursor");
    assert_eq!(end, keys.len() as u64);
    let batch = store.changes_since(0).await.expect("changes");
    assert_eq!(
        batch,
        ChangeBatch {
            cursor: end,
            evict: vec![],
            evict_all: true,
            written_at_ms: None,
        }
    );
}

#[tokio::test]
async fn suspending_an_org_larger_than_a_feed_batch_publishes_one_drop_everything() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    conformance::suspending_an_org_larger_than_a_feed_batch_publishes_one_drop_everything(
        &store,
        feed::MAX_CHANGE_BATCH,
    )
    .await;
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let dir = TempDir::new().expect("tempdir");
    let k = key("key_keep", "acme", &["ws1"], 1);
    {
        let store = open(&dir);
        save(&store, std::slice::from_ref(&k)).await;
    }
    let store = open(&dir);
    assert_eq!(
        store.get_key("key_keep").await.expect("get"),
        Some(stored(&k))
    );
    assert_eq!(store.change_cursor().await.expect("cursor"), 1);
    let version: i64 = lock(&store.inner.writer)
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("version");
    assert_eq!(version, schema::SUPPORTED_VERSION);
    let mode: String = lock(&store.inner.writer)
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
    store.ping().await.expect("ping");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("data/keygate.db");
    drop(EmbeddedStore::open(&path).expect("open"));
    Connection::open(&path)
        .expect("raw open")
        .pragma_update(None, "user_version", 99)
        .expect("bump version");
    match EmbeddedStore::open(&path) {
        Err(StoreError::SchemaTooNew {
            found: 99,
            supported,
        }) => {
            assert_eq!(supported, schema::SUPPORTED_VERSION);
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
}

#[tokio::test]
async fn an_unusable_path_is_an_open_error() {
    let dir = TempDir::new().expect("tempdir");
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    match EmbeddedStore::open(&file.join("sub/keygate.db")) {
        Err(StoreError::Open { path, .. }) => assert!(path.ends_with("keygate.db")),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("opened below a file"),
    }
}

#[tokio::test]
async fn a_second_instance_on_the_same_file_sees_the_writes() {
    // The CLI and the running gateway are two stores on one file.
    let dir = TempDir::new().expect("tempdir");
    let gateway = open(&dir);
    let cli = open(&dir);
    let k = key("key_shared", "acme", &["*"], 1);
    let cursor = gateway.change_cursor().await.expect("cursor");
    assert!(gateway.lookup(&k.hash).await.expect("lookup").is_none());

    save(&cli, std::slice::from_ref(&k)).await;
    let batch = gateway.changes_since(cursor).await.expect("changes");
    assert_eq!(batch.evict, vec![k.hash]);
    assert_eq!(
        gateway
            .lookup(&k.hash)
            .await
            .expect("lookup")
            .expect("found")
            .key,
        stored(&k)
    );

    let revoked = KeyRecord {
        state: KeyState::Revoked,
        revoked_at: Some(5),
        ..k.clone()
    };
    save(&cli, std::slice::from_ref(&revoked)).await;
    let batch = gateway.changes_since(batch.cursor).await.expect("changes");
    assert_eq!((batch.evict, batch.evict_all), (vec![k.hash], false));
    assert_eq!(
        gateway
            .lookup(&k.hash)
            .await
            .expect("lookup")
            .expect("found")
            .key,
        KeyRecord {
            version: 2,
            ..revoked
        }
    );

    // And the other way: the gateway's own writes reach the CLI.
    gateway
        .record_last_used(&[("key_shared".to_owned(), 42)])
        .await
        .expect("record");
    let seen = cli.get_key("key_shared").await.expect("get").expect("some");
    assert_eq!(seen.last_used_at, Some(42));
}

#[tokio::test]
async fn a_corrupt_record_is_an_error_naming_the_key() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    let bad = key("key_bad", "acme", &["*"], 1);
    let good = key("key_good", "acme", &["*"], 2);
    save(&store, &[bad.clone(), good.clone()]).await;
    raw(
        &store,
        "UPDATE keys SET record = '{\"name\": 3' WHERE id = 'key_bad'",
    );

    let is_corrupt = |r: Result<(), StoreError>| match r {
        Err(StoreError::Corrupt { key_id, reason }) => key_id == "key_bad" && !reason.is_empty(),
        _ => false,
    };
    assert!(is_corrupt(store.lookup(&bad.hash).await.map(|_| ())));
    assert!(is_corrupt(store.get_key("key_bad").await.map(|_| ())));
    assert!(is_corrupt(
        store.list_keys(&KeyFilter::default()).await.map(|_| ())
    ));
    // Other keys still answer, and the bad one can be deleted.
    assert_eq!(
        store.get_key("key_good").await.expect("get"),
        Some(stored(&good))
    );
    assert!(store
        .delete_key("key_bad", &event("delete", Some("key_bad")))
        .await
        .expect("delete"));
    assert_eq!(
        store
            .list_keys(&KeyFilter::default())
            .await
            .expect("list")
            .len(),
        1
    );

    // A hash of the wrong size is corrupt too.
    raw(
        &store,
        "UPDATE keys SET hash = x'0102' WHERE id = 'key_good'",
    );
    assert!(matches!(
        store.get_key("key_good").await,
        Err(StoreError::Corrupt { ref key_id, .. }) if key_id == "key_good"
    ));
}

#[tokio::test]
async fn a_failed_save_writes_nothing() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    let a = key("key_a", "acme", &["*"], 1);
    save(&store, std::slice::from_ref(&a)).await;
    let cursor = store.change_cursor().await.expect("cursor");
    // A second id with the same hash violates UNIQUE(hash): the whole batch rolls back.
    let ok = key("key_ok", "acme", &["*"], 2);
    let clash = KeyRecord {
        id: "key_clash".to_owned(),
        ..a
    };
    let err = store
        .save_keys(&[ok, clash], &[event("create", None)])
        .await;
    assert!(matches!(err, Err(StoreError::Sqlite(_))), "{err:?}");
    assert_eq!(store.get_key("key_ok").await.expect("get"), None);
    assert_eq!(store.change_cursor().await.expect("cursor"), cursor);
    let events = store
        .audit(&AuditQuery {
            key_id: None,
            before: None,
            limit: 10,
        })
        .await
        .expect("audit");
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn a_save_from_a_stale_read_is_a_conflict_and_writes_nothing() {
    let dir = TempDir::new().expect("tempdir");
    conformance::a_save_from_a_stale_read_is_a_conflict_and_writes_nothing(&open(&dir)).await;
}

#[tokio::test]
async fn quota_leases_stop_at_the_quota_and_a_newer_tag_starts_from_zero() {
    let dir = TempDir::new().expect("tempdir");
    conformance::quota_leases_stop_at_the_quota_and_a_newer_tag_starts_from_zero(&open(&dir)).await;
}

#[tokio::test]
async fn the_embedded_store_shares_no_rate_windows() {
    use crate::store::Meters;
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir);
    assert!(!store.shares_rate_windows());
    assert_eq!(
        store
            .lease_rate("key_a", 10, 1_000, 1)
            .await
            .expect("lease"),
        None
    );
}
