//! Tests against real `redis-server` processes, each test with its own on a free port.

use super::feed::{batch_from, FeedEntry};
use super::*;
use crate::key::KeyHash;
use crate::store::conformance;
use crate::store::fixtures::{all_events, event, ids, key, personal, save, stored, user};
use crate::store::KeyState;
use crate::store::{
    AuditLog, ChangeBatch, ChangeFeed, Health, KeyFilter, KeyLookup, KeyRecord, KeyRepo, UsageSink,
};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;
use tempfile::TempDir;

// ---- servers ---------------------------------------------------------------------------

// The integration tests' Redis harness, shared (a unit test cannot link it): one way to
// start, kill and restart `redis-server` and a three-master cluster, on free ports.
#[path = "../../../tests/support/redis.rs"]
#[allow(dead_code)]
mod processes;
use processes::{free_port, RedisCluster, RedisServer};

/// A `redis-server` this test owns; killed when dropped.
struct Server(RedisServer);

impl Server {
    fn start() -> Server {
        Server(RedisServer::start())
    }

    /// With extra `redis-server` arguments.
    fn start_with_args(extra: &[&str]) -> Server {
        Server(RedisServer::start_with_args(extra))
    }

    fn port(&self) -> u16 {
        self.0.port
    }

    fn url(&self) -> String {
        self.0.url()
    }

    fn store(&self) -> RedisStore {
        RedisStore::open(&[self.url()], false).expect("open store")
    }

    /// Killed without a snapshot: from here the port refuses connections.
    fn stop(&mut self) {
        self.0.crash();
    }

    /// A new server on the same port, with an empty data set (none was saved).
    fn restart(&mut self) {
        self.0.restart();
    }

    async fn raw(&self) -> ::redis::aio::MultiplexedConnection {
        Client::open(self.url())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection")
    }
}

async fn raw_cmd<T: ::redis::FromRedisValue>(
    conn: &mut ::redis::aio::MultiplexedConnection,
    args: &[&str],
) -> T {
    let mut cmd = ::redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(conn).await.expect("raw command")
}

// ---- records ---------------------------------------------------------------------------

// ---- the trait, as the embedded store's tests have it ----------------------------------

#[tokio::test]
async fn key_record_round_trips_with_every_field() {
    let server = Server::start();
    conformance::key_record_round_trips_with_every_field(&server.store()).await;
}

#[tokio::test]
async fn lookup_brings_the_owner_record_of_the_same_org() {
    let server = Server::start();
    conformance::lookup_brings_the_owner_record_of_the_same_org(&server.store()).await;
}

#[tokio::test]
async fn list_filters_by_org_and_workspace_oldest_first() {
    let server = Server::start();
    let store = server.store();
    conformance::list_filters_by_org_and_workspace_oldest_first(&store).await;

    // More keys than one round trip reads.
    let many: Vec<KeyRecord> = (0..(CHUNK + 7))
        .map(|i| key(&format!("key_m{i:04}"), "bulk", &["*"], 100 + i as i64))
        .collect();
    save(&store, &many).await;
    let bulk = KeyFilter {
        org: Some("bulk".to_owned()),
        workspace: None,
    };
    assert_eq!(
        ids(&store.list_keys(&bulk).await.expect("list")),
        ids(&many)
    );
}

#[tokio::test]
async fn save_user_publishes_the_hashes_of_the_owners_keys() {
    let server = Server::start();
    conformance::save_user_publishes_the_hashes_of_the_owners_keys(&server.store()).await;
}

#[tokio::test]
async fn delete_removes_the_key_and_publishes_its_hash() {
    let server = Server::start();
    conformance::delete_removes_the_key_and_publishes_its_hash(&server.store()).await;

    // Nothing of the key is left but its audit trail.
    let mut raw = server.raw().await;
    let left: Vec<String> = raw_cmd(&mut raw, &["KEYS", "*"]).await;
    let mut left: Vec<&str> = left.iter().map(String::as_str).collect();
    left.sort_unstable();
    assert_eq!(
        left,
        [
            "{kg}:audit",
            "{kg}:audit:events",
            "{kg}:audit:key:key_del",
            "{kg}:audit:seq",
            "{kg}:events",
            "{kg}:events:epoch",
            "{kg}:events:seq"
        ]
    );
}

#[tokio::test]
async fn save_org_publishes_every_key_of_the_org_and_lookup_sees_it() {
    let server = Server::start();
    conformance::save_org_publishes_every_key_of_the_org_and_lookup_sees_it(&server.store()).await;

    let mut raw = server.raw().await;
    let state: Vec<String> = raw_cmd(&mut raw, &["HGETALL", "{kg}:org-state:acme"]).await;
    assert_eq!(state, ["suspended", "0", "version", "2"]);
}

#[tokio::test]
async fn suspending_an_org_larger_than_a_feed_batch_publishes_one_drop_everything() {
    let server = Server::start();
    let store = server.store();
    conformance::suspending_an_org_larger_than_a_feed_batch_publishes_one_drop_everything(
        &store,
        MAX_CHANGE_BATCH,
    )
    .await;
}

#[tokio::test]
async fn audit_pages_newest_first() {
    let server = Server::start();
    conformance::audit_pages_newest_first(&server.store()).await;
}

#[tokio::test]
async fn record_last_used_never_moves_backwards() {
    let server = Server::start();
    let store = server.store();
    conformance::record_last_used_never_moves_backwards(&store).await;

    // A batch bigger than one script.
    let batch: Vec<(String, i64)> = (0..(CHUNK * 2 + 3))
        .map(|i| (format!("key_none{i}"), 1))
        .chain([("key_u".to_owned(), 900)])
        .collect();
    store.record_last_used(&batch).await.expect("record");
    let k = store.get_key("key_u").await.expect("get").expect("some");
    assert_eq!(k.last_used_at, Some(900));
}

#[tokio::test]
async fn a_save_from_a_stale_read_is_a_conflict_and_writes_nothing() {
    let server = Server::start();
    conformance::a_save_from_a_stale_read_is_a_conflict_and_writes_nothing(&server.store()).await;
}

#[tokio::test]
async fn a_hash_held_by_another_key_is_refused_and_writes_nothing() {
    let server = Server::start();
    let store = server.store();
    let a = key("key_a", "acme", &["*"], 1);
    save(&store, std::slice::from_ref(&a)).await;
    let cursor = store.change_cursor().await.expect("cursor");
    let clash = KeyRecord {
        id: "key_clash".to_owned(),
        ..a.clone()
    };
    let err = store
        .save_keys(
            &[key("key_ok", "acme", &["*"], 2), clash],
            &[event("create", None)],
        )
        .await;
    assert!(
        matches!(
            &err,
            Err(StoreError::Redis(RedisStoreError::HashTaken { id, holder }))
                if id == "key_clash" && holder == "key_a"
        ),
        "{err:?}"
    );
    assert_eq!(store.get_key("key_ok").await.expect("get"), None);
    assert_eq!(store.change_cursor().await.expect("cursor"), cursor);
    assert_eq!(store.audit(&all_events()).await.expect("audit").len(), 1);
    assert_eq!(
        store
            .lookup(&a.hash)
            .await
            .expect("lookup")
            .expect("found")
            .key
            .id,
        "key_a"
    );
}

#[tokio::test]
async fn a_corrupt_record_is_an_error_naming_the_key() {
    let server = Server::start();
    let store = server.store();
    let bad = key("key_bad", "acme", &["*"], 1);
    let good = key("key_good", "acme", &["*"], 2);
    let owned = personal("key_owned", "acme", "alice", 3);
    save(&store, &[bad.clone(), good.clone(), owned.clone()]).await;
    let mut raw = server.raw().await;
    let _: i64 = raw_cmd(
        &mut raw,
        &["HSET", "{kg}:key:key_bad", "record", "{\"name\": 3"],
    )
    .await;

    let is_corrupt = |r: Result<(), StoreError>, id: &str| match r {
        Err(StoreError::Corrupt { key_id, reason }) => key_id == id && !reason.is_empty(),
        _ => false,
    };
    assert!(is_corrupt(
        store.lookup(&bad.hash).await.map(|_| ()),
        "key_bad"
    ));
    assert!(is_corrupt(
        store.get_key("key_bad").await.map(|_| ()),
        "key_bad"
    ));
    assert!(is_corrupt(
        store.list_keys(&KeyFilter::default()).await.map(|_| ()),
        "key_bad"
    ));
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
        2
    );

    let _: i64 = raw_cmd(&mut raw, &["HSET", "{kg}:key:key_good", "hash", "0102"]).await;
    assert!(is_corrupt(
        store.get_key("key_good").await.map(|_| ()),
        "key_good"
    ));
    let _: i64 = raw_cmd(&mut raw, &["HDEL", "{kg}:key:key_good", "version"]).await;
    assert!(is_corrupt(
        store.get_key("key_good").await.map(|_| ()),
        "key_good"
    ));

    // A bad owner record fails its key's lookup, naming the user.
    store
        .save_user(&user("acme", "alice", false), &event("set-roles", None))
        .await
        .expect("save user");
    let _: i64 = raw_cmd(
        &mut raw,
        &["HSET", "{kg}:user:4:acme:alice", "roles", "nope"],
    )
    .await;
    assert!(is_corrupt(
        store.lookup(&owned.hash).await.map(|_| ()),
        "user acme/alice"
    ));

    // A key stored as another type: an error for that key, not a crash.
    let _: () = raw_cmd(&mut raw, &["SET", "{kg}:key:key_str", "x"]).await;
    assert!(store.get_key("key_str").await.is_err());
    store.ping().await.expect("still serving");
}

// ---- the change feed -------------------------------------------------------------------

#[tokio::test]
async fn changes_since_follows_the_cursor() {
    let server = Server::start();
    let store = server.store();
    assert!(store.feed_blocks());
    assert_eq!(store.change_cursor().await.expect("cursor"), 0);

    // Nothing new: waits about FEED_BLOCK, then an empty batch at the same cursor.
    let t = Instant::now();
    let empty = store.changes_since(0).await.expect("changes");
    assert_eq!(empty, ChangeBatch::default());
    let waited = t.elapsed();
    assert!(
        waited >= FEED_BLOCK - Duration::from_millis(100),
        "{waited:?}"
    );

    let a = key("key_a", "acme", &["*"], 1);
    let b = key("key_b", "acme", &["*"], 2);
    save(&store, &[a.clone(), b.clone()]).await;
    assert_eq!(store.change_cursor().await.expect("cursor"), 2);
    // Behind the end: the backlog, with when it was written.
    let before = crate::store::now_ms();
    let batch = store.changes_since(0).await.expect("changes");
    let written = batch.written_at_ms.expect("events carry their write time");
    assert!(
        (before - 60_000..=before + 60_000).contains(&written),
        "{written}"
    );
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
    assert_eq!(
        store.changes_since(1).await.expect("changes"),
        ChangeBatch {
            cursor: 2,
            evict: vec![b.hash],
            evict_all: false,
            written_at_ms: None,
        }
    );

    save(&store, std::slice::from_ref(&a)).await;
    save(&store, std::slice::from_ref(&a)).await;
    assert_eq!(
        store.changes_since(2).await.expect("changes"),
        ChangeBatch {
            cursor: 4,
            evict: vec![a.hash],
            evict_all: false,
            written_at_ms: None,
        }
    );
}

#[tokio::test]
async fn a_waiting_reader_wakes_on_a_change_and_lookups_do_not_wait_for_it() {
    let server = Server::start();
    let store = Arc::new(server.store());
    let a = key("key_a", "acme", &["*"], 1);
    save(&*store, std::slice::from_ref(&a)).await;
    let cursor = store.change_cursor().await.expect("cursor");

    let reader = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let t = Instant::now();
            let batch = store.changes_since(cursor).await.expect("changes");
            (batch, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The reader is blocked in XREAD now; lookups share no connection with it, so one
    // is answered while the reader still waits (behind it, it would wait for the block).
    assert!(store.lookup(&a.hash).await.expect("lookup").is_some());
    assert!(
        !reader.is_finished(),
        "the lookup waited for the blocked read"
    );

    let revoked = KeyRecord {
        state: KeyState::Revoked,
        ..stored(&a)
    };
    store
        .save_keys(&[revoked], &[event("revoke", Some("key_a"))])
        .await
        .expect("revoke");
    // It wakes with the event (a read that ran out its block would be empty).
    let (batch, _) = reader.await.expect("reader");
    assert_eq!(batch.evict, vec![a.hash]);
    assert_eq!(batch.cursor, cursor + 1);
}

#[tokio::test]
async fn a_trimmed_gap_evicts_everything() {
    let server = Server::start();
    let store = server.store();
    for i in 0..3 {
        save(&store, &[key(&format!("key_{i}"), "acme", &["*"], i)]).await;
    }
    let late = key("key_late", "acme", &["*"], 9);
    save(&store, std::slice::from_ref(&late)).await;
    let mut raw = server.raw().await;
    // Exact trimming: keep seqs 3 and 4.
    let _: i64 = raw_cmd(&mut raw, &["XTRIM", "{kg}:events", "MAXLEN", "2"]).await;

    // A reader at 1 missed seq 2: it cannot know which key that was.
    let batch = store.changes_since(1).await.expect("changes");
    assert!(batch.evict_all);
    assert_eq!(batch.cursor, 4);
    // A reader at 2 missed nothing.
    let batch = store.changes_since(2).await.expect("changes");
    assert!(!batch.evict_all);
    assert_eq!(batch.evict.len(), 2);
    assert_eq!(batch.cursor, 4);

    // Everything after the cursor trimmed away.
    let _: i64 = raw_cmd(&mut raw, &["XTRIM", "{kg}:events", "MAXLEN", "0"]).await;
    let batch = store.changes_since(2).await.expect("changes");
    assert_eq!(
        batch,
        ChangeBatch {
            cursor: 4,
            evict: vec![],
            evict_all: true,
            written_at_ms: None,
        }
    );
    // Writes go on after the stream was emptied, with seqs that keep counting.
    save(&store, std::slice::from_ref(&late)).await;
    assert_eq!(
        store.changes_since(4).await.expect("changes"),
        ChangeBatch {
            cursor: 5,
            evict: vec![late.hash],
            evict_all: false,
            written_at_ms: None,
        }
    );
}

#[tokio::test]
async fn a_star_event_a_flushed_redis_or_a_lost_counter_evict_everything() {
    let server = Server::start();
    let store = server.store();
    let a = key("key_a", "acme", &["*"], 1);
    save(&store, std::slice::from_ref(&a)).await;
    let mut raw = server.raw().await;
    let _: String = raw_cmd(&mut raw, &["XADD", "{kg}:events", "2-1", "hash", "*"]).await;
    let _: () = raw_cmd(&mut raw, &["SET", "{kg}:events:seq", "2"]).await;
    let batch = store.changes_since(1).await.expect("changes");
    assert_eq!((batch.cursor, batch.evict_all), (2, true));
    let batch = store.changes_since(0).await.expect("changes");
    assert_eq!(
        (batch.cursor, batch.evict_all, batch.evict),
        (2, true, vec![a.hash])
    );

    // The counter lost (a partial restore): writes still get seqs above the stream's.
    let _: i64 = raw_cmd(&mut raw, &["DEL", "{kg}:events:seq"]).await;
    save(&store, std::slice::from_ref(&a)).await;
    assert_eq!(store.change_cursor().await.expect("cursor"), 3);
    assert_eq!(
        store.changes_since(2).await.expect("changes"),
        ChangeBatch {
            cursor: 3,
            evict: vec![a.hash],
            evict_all: false,
            written_at_ms: None,
        }
    );

    // Flushed: the caller's cursor is past the end.
    let _: () = raw_cmd(&mut raw, &["FLUSHALL"]).await;
    assert_eq!(
        store.changes_since(3).await.expect("changes"),
        ChangeBatch {
            cursor: 0,
            evict: vec![],
            evict_all: true,
            written_at_ms: None,
        }
    );

    // Flushed and written again past the cursor before this reader looked: the new epoch
    // gives it away (another store instance, as another gateway would be).
    let other = server.store();
    assert_eq!(other.change_cursor().await.expect("cursor"), 0);
    for i in 0..3 {
        save(&store, &[key(&format!("key_{i}"), "acme", &["*"], i)]).await;
    }
    assert_eq!(other.changes_since(0).await.expect("changes").cursor, 3);
    let _: () = raw_cmd(&mut raw, &["FLUSHALL"]).await;
    for i in 0..5 {
        save(&store, &[key(&format!("key_{i}"), "acme", &["*"], i)]).await;
    }
    assert_eq!(
        other.changes_since(3).await.expect("changes"),
        ChangeBatch {
            cursor: 5,
            evict: vec![],
            evict_all: true,
            written_at_ms: None,
        }
    );
    assert_eq!(
        other.changes_since(5).await.expect("changes").cursor,
        5,
        "then it follows the new epoch"
    );
}

#[tokio::test]
async fn a_huge_backlog_evicts_everything_in_one_batch() {
    let server = Server::start();
    let store = server.store();
    let keys: Vec<KeyRecord> = (0..=MAX_CHANGE_BATCH)
        .map(|i| key(&format!("key_{i}"), "acme", &["*"], 1))
        .collect();
    // In writes of a few hundred, as the service's own writes are small: one script with
    // thousands of keys could outlast the store timeout on a busy machine.
    for chunk in keys.chunks(256) {
        save(&store, chunk).await;
    }
    let end = store.change_cursor().await.expect("cursor");
    assert_eq!(end, keys.len() as u64);
    assert_eq!(
        store.changes_since(0).await.expect("changes"),
        ChangeBatch {
            cursor: end,
            evict: vec![],
            evict_all: true,
            written_at_ms: None,
        }
    );
}

#[test]
fn batches_from_entries() {
    let h = |b: u8| KeyHash([b; 32]);
    let e = |seq: u64, hash: Option<KeyHash>| FeedEntry {
        seq: Some(seq),
        hash,
        at: Some(1_000 + seq as i64),
    };
    assert_eq!(
        batch_from(3, 3, vec![]),
        ChangeBatch {
            cursor: 3,
            ..ChangeBatch::default()
        }
    );
    let b = batch_from(3, 5, vec![e(4, Some(h(2))), e(5, Some(h(1)))]);
    assert_eq!(
        (b.cursor, b.evict, b.evict_all, b.written_at_ms),
        (5, vec![h(1), h(2)], false, Some(1_004))
    );
    // An entry id that does not parse: evict everything, keep the cursor moving.
    let b = batch_from(
        3,
        5,
        vec![
            FeedEntry {
                seq: None,
                hash: Some(h(1)),
                at: None,
            },
            e(5, Some(h(1))),
        ],
    );
    assert_eq!((b.cursor, b.evict_all), (5, true));
}

// ---- outages ---------------------------------------------------------------------------

#[tokio::test]
async fn a_dead_redis_fails_fast_and_a_restarted_one_is_used_again() {
    let mut server = Server::start();
    let store = server.store();
    let a = key("key_a", "acme", &["*"], 1);
    save(&store, std::slice::from_ref(&a)).await;
    let cursor = store.change_cursor().await.expect("cursor");

    server.stop();
    // Every call errs (none hangs: each is bounded by the timeout).
    for _ in 0..breaker::FAILURES + 2 {
        assert!(store.lookup(&a.hash).await.is_err());
    }
    // By now the breaker is open: calls fail at once, and the feed too.
    assert!(store.breaker.is_open());
    let open = |r: &Result<(), StoreError>| {
        matches!(r, Err(StoreError::Redis(RedisStoreError::CircuitOpen)))
    };
    let err = store.lookup(&a.hash).await.map(|_| ());
    assert!(open(&err), "{err:?}");
    assert!(open(&store.changes_since(cursor).await.map(|_| ())));
    assert!(open(&store.ping().await));

    // Back on the same port (empty: no persistence). The store finds it by itself.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "the store did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!store.breaker.is_open());
    save(&store, std::slice::from_ref(&a)).await;
    assert!(store.lookup(&a.hash).await.expect("lookup").is_some());
    // The restarted Redis started empty and has counted past the old cursor (1) again: its
    // seqs are not the ones the reader missed, and what it cached is gone. Everything goes.
    let b = key("key_b", "acme", &["*"], 2);
    save(&store, std::slice::from_ref(&b)).await;
    let batch = store.changes_since(cursor).await.expect("changes");
    assert_eq!((batch.cursor, batch.evict_all), (2, true));
    // Then it follows the new Redis as usual, on a new connection of its own.
    save(&store, std::slice::from_ref(&a)).await;
    assert_eq!(
        store.changes_since(2).await.expect("changes"),
        ChangeBatch {
            cursor: 3,
            evict: vec![a.hash],
            evict_all: false,
            written_at_ms: None,
        }
    );
}

#[tokio::test]
async fn a_frozen_redis_costs_at_most_the_timeout_and_then_nothing() {
    // SIGSTOP: connections stay open but nothing answers, the case only a timeout ends.
    let server = Server::start();
    let store = server.store();
    let a = key("key_a", "acme", &["*"], 1);
    save(&store, std::slice::from_ref(&a)).await;
    let pid = server.0.pid().expect("running").to_string();
    let signal = |sig: &str| {
        let status = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    signal("-STOP");
    for _ in 0..breaker::FAILURES {
        let t = Instant::now();
        let err = store.lookup(&a.hash).await;
        let took = t.elapsed();
        assert!(err.is_err());
        // It waited for the timeout: nothing else ends a call to a frozen server.
        assert!(
            took >= STORE_TIMEOUT - Duration::from_millis(100),
            "{took:?}"
        );
    }
    // Then the breaker answers at once, without asking the frozen server.
    let err = store.lookup(&a.hash).await;
    assert!(
        matches!(err, Err(StoreError::Redis(RedisStoreError::CircuitOpen))),
        "{err:?}"
    );
    signal("-CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.lookup(&a.hash).await.is_err() {
        assert!(Instant::now() < deadline, "the store did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(store.lookup(&a.hash).await.expect("lookup").is_some());
}

#[tokio::test]
async fn a_reader_replays_what_it_missed_while_its_connection_was_down() {
    let server = Server::start();
    let store = server.store();
    let a = key("key_a", "acme", &["*"], 1);
    save(&store, std::slice::from_ref(&a)).await;
    let cursor = store.change_cursor().await.expect("cursor");
    assert_eq!(
        store.changes_since(0).await.expect("changes").cursor,
        cursor
    );
    // Kill every client connection (the feed's too), then write.
    let mut raw = server.raw().await;
    let _: i64 = raw_cmd(
        &mut raw,
        &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
    )
    .await;
    let b = key("key_b", "acme", &["*"], 2);
    let c = key("key_c", "acme", &["*"], 3);
    let writer = server.store();
    save(&writer, &[b.clone(), c.clone()]).await;

    // The next reads may fail once on the dead connection; then they replay from cursor.
    let mut got = None;
    for _ in 0..10 {
        match store.changes_since(cursor).await {
            Ok(batch) => {
                got = Some(batch);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let batch = got.expect("the reader reconnects");
    let mut want = vec![b.hash, c.hash];
    want.sort_unstable();
    assert_eq!(
        batch,
        ChangeBatch {
            cursor: cursor + 2,
            evict: want,
            evict_all: false,
            written_at_ms: None,
        }
    );
}

#[tokio::test]
async fn opening_needs_no_redis_but_a_valid_url() {
    // Nothing listens there: open succeeds, calls fail within the timeout.
    let port = free_port();
    let store = RedisStore::open(&[format!("redis://127.0.0.1:{port}/")], false).expect("open");
    assert!(store.ping().await.is_err());
    assert!(matches!(
        RedisStore::open(&["http://nope".to_owned()], false),
        Err(StoreError::Redis(RedisStoreError::Url { .. }))
    ));
    assert!(matches!(
        RedisStore::open(&[], false),
        Err(StoreError::Redis(RedisStoreError::NoUrl))
    ));
}

// The same test certificates as the integration tests' (a unit test cannot link them).
#[path = "../../../tests/support/certs.rs"]
mod certs;

#[tokio::test]
async fn a_rediss_url_talks_tls() {
    // A test CA and a server certificate for 127.0.0.1.
    let dir = TempDir::new().expect("tempdir");
    let p = dir.path();
    certs::make_certificates(p);
    let tls_port = free_port();
    let file = |name: &str| p.join(name).to_str().expect("utf-8 temp path").to_owned();
    let (cert, cert_key, ca) = (file("srv.crt"), file("srv.key"), file("ca.crt"));
    let tls_port_s = tls_port.to_string();
    let server = Server::start_with_args(&[
        "--tls-port",
        &tls_port_s,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &cert_key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ]);
    // The client trusts the system's roots, which rustls-native-certs takes from here.
    std::env::set_var("SSL_CERT_FILE", &ca);
    let store =
        RedisStore::open(&[format!("rediss://127.0.0.1:{tls_port}/")], false).expect("open rediss");
    let mut ok = store.ping().await;
    if ok.is_err() {
        // The first TLS handshake of a debug build can be slow on a loaded machine.
        tokio::time::sleep(Duration::from_millis(200)).await;
        ok = store.ping().await;
    }
    ok.expect("ping over TLS");
    let k = key("key_tls", "acme", &["*"], 1);
    save(&store, std::slice::from_ref(&k)).await;
    assert!(store.lookup(&k.hash).await.expect("lookup").is_some());
    assert_eq!(
        store.changes_since(0).await.expect("changes").evict,
        vec![k.hash]
    );

    // A plain-text server on a rediss URL: an error, never a panic or a hang.
    let plain = RedisStore::open(&[format!("rediss://127.0.0.1:{}/", server.port())], false)
        .expect("open rediss");
    assert!(plain.ping().await.is_err());
}

#[tokio::test]
async fn store_open_builds_a_redis_store_from_config() {
    let server = Server::start();
    let store = crate::store::open(&crate::config::StoreConfig::Redis {
        urls: vec![server.url()],
        cluster: false,
    })
    .await
    .expect("open");
    assert!(store.feed_blocks());
    store.ping().await.expect("ping");
}

// ---- cluster ---------------------------------------------------------------------------

#[tokio::test]
async fn a_cluster_round_trip() {
    let cluster = RedisCluster::start();
    let store = RedisStore::open(&cluster.urls(), true).expect("open cluster");
    let cursor = store.change_cursor().await.expect("cursor");
    let k = personal("key_c", "acme", "alice", 1);
    save(&store, std::slice::from_ref(&k)).await;
    store
        .save_user(&user("acme", "alice", false), &event("set-roles", None))
        .await
        .expect("save user");
    let found = store.lookup(&k.hash).await.expect("lookup").expect("found");
    assert_eq!(found.key, stored(&k));
    assert!(found.owner.is_some());
    assert_eq!(
        ids(&store
            .list_keys(&KeyFilter {
                org: Some("acme".into()),
                workspace: None
            })
            .await
            .expect("list")),
        ["key_c"]
    );
    let batch = store.changes_since(cursor).await.expect("changes");
    assert_eq!(
        (batch.cursor, batch.evict, batch.evict_all),
        (2, vec![k.hash], false)
    );
    // And the blocking read: nothing new, an empty batch after about FEED_BLOCK.
    let batch = store.changes_since(2).await.expect("changes");
    assert_eq!((batch.cursor, batch.evict_all), (2, false));
    store
        .record_last_used(&[("key_c".to_owned(), 77)])
        .await
        .expect("record");
    assert!(store
        .delete_key("key_c", &event("delete", Some("key_c")))
        .await
        .expect("delete"));
    assert_eq!(store.audit(&all_events()).await.expect("audit").len(), 3);
    store.ping().await.expect("ping");
}

#[tokio::test]
async fn quota_leases_stop_at_the_quota_and_a_newer_tag_starts_from_zero() {
    let server = Server::start();
    conformance::quota_leases_stop_at_the_quota_and_a_newer_tag_starts_from_zero(&server.store())
        .await;
}

/// The shared window grants at most the limit, to any number of callers, and says how
/// long until it frees room once it is full.
#[tokio::test]
async fn a_shared_rate_window_grants_at_most_its_limit() {
    use crate::store::Meters;
    let server = Server::start();
    let a = server.store();
    let b = server.store();
    assert!(a.shares_rate_windows());
    // An hour's window: the test cannot cross into the next one.
    let hour = 3_600_000;
    let mut granted = 0;
    for i in 0..20 {
        let store = if i % 2 == 0 { &a } else { &b };
        let g = store
            .lease_rate("key_r", 50, hour, 7)
            .await
            .expect("lease")
            .expect("shared");
        granted += g.granted;
        assert!(g.window_left_ms > 0 && g.window_left_ms <= hour);
        if g.granted == 0 {
            assert!(g.retry_ms > 0, "{g:?}");
            assert_eq!(g.remaining, 0);
        }
    }
    // A fresh Redis: no previous window weighs.
    assert_eq!(granted, 50);
    // Another key's window is its own.
    let g = a
        .lease_rate("key_s", 50, hour, 7)
        .await
        .expect("lease")
        .expect("shared");
    assert_eq!(g.granted, 7);
}

/// Quota leases and the shared rate windows on a cluster: every meter key carries the
/// `{kg}` hash tag, so the scripts run on one slot like the others.
#[tokio::test]
async fn meters_work_on_a_cluster() {
    use crate::store::Meters;
    let cluster = RedisCluster::start();
    let store = RedisStore::open(&cluster.urls(), true).expect("open cluster");
    conformance::quota_leases_stop_at_the_quota_and_a_newer_tag_starts_from_zero(&store).await;
    let g = store
        .lease_rate("key_r", 3, 3_600_000, 2)
        .await
        .expect("lease")
        .expect("shared");
    assert_eq!((g.granted, g.remaining), (2, 1));
}
