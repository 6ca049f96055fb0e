//! Fleets on the Redis store (SPEC §4 "redis", issue 3): several gateways on one Redis
//! (single node or a three-master cluster) see a change made by the CLI of any of them; a
//! Redis outage keeps confirmed keys working and others get 503, then heals by itself;
//! events a gateway could not read are replayed, and a gap it cannot fill empties its
//! cache; keys move from an embedded store into Redis with `keys export` / `keys import`.
//!
//! Every gateway first answers 200 with the key, so its answer is cached (`ttl: 30s` unless
//! said otherwise): a change must then reach it through the change feed, not a cache miss.
//! Redis servers are real `redis-server` processes on free ports (`support::redis`).

mod support;

use http::Method;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::redis::{RedisCluster, RedisServer};
use support::*;

const SEEN_WITHIN: Duration = Duration::from_secs(1);
/// For effects that wait on a reconnect (the store's breaker, the connection manager):
/// a bound for `eventually`, not a timing requirement.
const RECOVERS_WITHIN: Duration = Duration::from_secs(15);
/// A request during an outage must come back; this only keeps a hang from hanging the run.
const HANG_GUARD: Duration = Duration::from_secs(30);
const OK: (u16, &str) = (200, "");

/// Replaces the top-level line of `yaml` that starts with `prefix`.
fn set_line(yaml: String, prefix: &str, line: &str) -> String {
    assert!(
        yaml.lines().any(|l| l.starts_with(prefix)),
        "no `{prefix}` line"
    );
    yaml.lines()
        .map(|l| if l.starts_with(prefix) { line } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

fn redis_store(url: &str) -> String {
    format!("store: {{ kind: redis, url: \"{url}\" }}")
}

fn cluster_store(urls: &[String]) -> String {
    let list: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!("store: {{ kind: redis, cluster: [{}] }}", list.join(", "))
}

async fn gateway_on(store: &str) -> TestGateway {
    let store = store.to_owned();
    TestGateway::start_with(move |y| set_line(y, "store:", &store)).await
}

fn create_with(config: &Path, args: &[&str]) -> (String, String) {
    let mut all = vec!["keys", "create"];
    all.extend_from_slice(args);
    let out = cli(config, &all);
    assert!(out.ok, "create failed: {}", out.stderr);
    (
        out.json["id"].as_str().expect("id").to_owned(),
        out.json["key"].as_str().expect("key").to_owned(),
    )
}

async fn get_models(gw: &TestGateway, key: &str) -> (u16, String) {
    let r = tokio::time::timeout(HANG_GUARD, key_verdict(gw, Method::GET, "/v1/models", key)).await;
    r.expect("the gateway answered (no hang)")
}

async fn becomes(gw: &TestGateway, key: &str, want: (u16, &str), within: Duration) -> bool {
    verdict_becomes(gw, Method::GET, "/v1/models", key, want, within).await
}

fn answer(want: (u16, &str)) -> (u16, String) {
    (want.0, want.1.to_owned())
}

async fn readyz(gw: &TestGateway) -> u16 {
    let r = tokio::time::timeout(HANG_GUARD, get(&gw.admin_url("/readyz"), &[])).await;
    r.expect("/readyz answered (no hang)").status.as_u16()
}

/// Asserts every gateway admits `key` now (and so has its answer cached).
async fn warm(gws: &[&TestGateway], key: &str) {
    for (i, gw) in gws.iter().enumerate() {
        assert_eq!(get_models(gw, key).await, answer(OK), "gateway {i}");
    }
}

/// Asserts every gateway answers `want` for `key` within a second.
async fn all_become(gws: &[&TestGateway], key: &str, want: (u16, &str)) {
    for (i, gw) in gws.iter().enumerate() {
        assert!(
            becomes(gw, key, want, SEEN_WITHIN).await,
            "gateway {i} still answers {:?}, want {want:?}",
            get_models(gw, key).await
        );
    }
}

// ---- (a) Two gateways on one Redis ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_parse_is_an_unknown_key_and_nothing_else_breaks() {
    let redis = RedisServer::start();
    let gw = gateway_on(&redis_store(&redis.url())).await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let (_, other) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    // Someone (a bad migration, a hand edit) breaks the record behind the gateway's back.
    let reply = redis.cli(&["HSET", &format!("{{kg}}:key:{id}"), "record", "{not json"]);
    assert_eq!(reply.trim(), "0", "the record field existed: {reply}");
    assert_eq!(
        get_models(&gw, &key).await,
        answer((401, "unknown_key")),
        "a corrupt record is an unknown key"
    );
    assert_eq!(get_models(&gw, &other).await, answer(OK));
    assert_eq!(readyz(&gw).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_by_one_cli_is_seen_by_every_gateway() {
    let redis = RedisServer::start();
    let gw1 = gateway_on(&redis_store(&redis.url())).await;
    let gw2 = gateway_on(&redis_store(&redis.url())).await;
    let (id, key) = gw1.create_key(&["--org", "acme", "--role", "viewer"]);
    let (_, other) = gw1.create_key(&["--org", "acme", "--role", "viewer"]);
    warm(&[&gw1, &gw2], &key).await;
    warm(&[&gw1, &gw2], &other).await;

    let out = gw1.cli(&["keys", "revoke", &id]);
    assert!(out.ok, "revoke failed: {}", out.stderr);
    assert_eq!(out.json["status"], "revoked");
    all_become(&[&gw1, &gw2], &key, (401, "revoked_key")).await;
    // gw2's CLI (its own config, the same Redis) sees the same record.
    let shown = gw2.cli(&["keys", "show", &id]);
    assert!(shown.ok, "{}", shown.stderr);
    assert_eq!(shown.json["status"], "revoked", "{}", shown.stdout);
    warm(&[&gw1, &gw2], &other).await;
    gw1.stop().await;
    gw2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_by_one_cli_is_seen_by_every_gateway() {
    let redis = RedisServer::start();
    let gw1 = gateway_on(&redis_store(&redis.url())).await;
    let gw2 = gateway_on(&redis_store(&redis.url())).await;
    let (id, key) = gw1.create_key(&["--org", "acme", "--role", "viewer"]);
    warm(&[&gw1, &gw2], &key).await;

    let out = gw1.cli(&["keys", "delete", &id]);
    assert!(out.ok, "delete failed: {}", out.stderr);
    assert_eq!(out.json["deleted"], id.as_str());
    all_become(&[&gw1, &gw2], &key, (401, "unknown_key")).await;
    assert!(
        !gw2.cli(&["keys", "show", &id]).ok,
        "the record is gone from Redis"
    );
    gw1.stop().await;
    gw2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_owner_is_seen_by_every_gateway() {
    let redis = RedisServer::start();
    let gw1 = gateway_on(&redis_store(&redis.url())).await;
    let gw2 = gateway_on(&redis_store(&redis.url())).await;
    let (_, personal) = gw1.create_key(&[
        "--org", "acme", "--type", "personal", "--owner", "alice", "--role", "viewer",
    ]);
    let (_, service) = gw1.create_key(&["--org", "acme", "--name", "ci", "--role", "viewer"]);
    warm(&[&gw1, &gw2], &personal).await;
    warm(&[&gw1, &gw2], &service).await;

    let out = gw1.cli(&["users", "remove", "--org", "acme", "alice"]);
    assert!(out.ok, "users remove failed: {}", out.stderr);
    assert_eq!(out.json["removed"], true);
    all_become(&[&gw1, &gw2], &personal, (401, "owner_removed")).await;
    warm(&[&gw1, &gw2], &service).await;

    let out = gw2.cli(&["users", "restore", "--org", "acme", "alice"]);
    assert!(out.ok, "users restore failed: {}", out.stderr);
    all_become(&[&gw1, &gw2], &personal, OK).await;
    gw1.stop().await;
    gw2.stop().await;
}

// ---- (b) Redis outage ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_serves_confirmed_keys_refuses_others_and_heals_by_itself() {
    let mut redis = RedisServer::start();
    let store = redis_store(&redis.url());
    let gw = TestGateway::start_with(move |y| {
        let y = set_line(y, "store:", &store);
        set_line(
            y,
            "cache:",
            "cache: { max_entries: 1000, ttl: 300ms, negative_ttl: 300ms, stale_if_error: 1m }",
        )
    })
    .await;
    let (_, warm_key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let (_, cold_key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    warm(&[&gw], &warm_key).await;
    assert_eq!(readyz(&gw).await, 200);

    redis.stop();
    // Past the TTL, so the warm key's next request has to ask the (dead) store.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = gw.gateway.cache().lookups();
    assert_eq!(
        get_models(&gw, &warm_key).await,
        answer(OK),
        "a key the store confirmed within stale_if_error keeps working"
    );
    assert!(
        gw.gateway.cache().lookups() > before,
        "the stale answer came after a failed store lookup, not from a fresh entry"
    );
    // Many requests, so the store's circuit breaker opens on the way: same answers.
    for _ in 0..8 {
        assert_eq!(
            get_models(&gw, &cold_key).await,
            answer((503, "store_unavailable")),
            "a key never confirmed cannot be decided without the store"
        );
        assert_eq!(
            get_models(&gw, &well_formed_unknown_key()).await,
            answer((503, "store_unavailable")),
            "an unknown key cannot be told from a valid one without the store"
        );
        assert_eq!(get_models(&gw, &warm_key).await, answer(OK));
    }
    assert_eq!(readyz(&gw).await, 503, "/readyz reports the store down");

    redis.restart();
    assert!(
        becomes(&gw, &cold_key, OK, RECOVERS_WITHIN).await,
        "after Redis is back the unwarmed key answers {:?}",
        get_models(&gw, &cold_key).await
    );
    assert!(
        eventually(RECOVERS_WITHIN, || async { readyz(&gw).await == 200 }).await,
        "/readyz stays {}",
        readyz(&gw).await
    );
    assert_eq!(get_models(&gw, &warm_key).await, answer(OK));
    assert_eq!(
        get_models(&gw, &well_formed_unknown_key()).await,
        answer((401, "unknown_key"))
    );
    // The change feed works again too: a revoke reaches the gateway.
    let (fresh_id, fresh) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    warm(&[&gw], &fresh).await;
    assert!(gw.cli(&["keys", "revoke", &fresh_id]).ok);
    assert!(
        becomes(&gw, &fresh, (401, "revoked_key"), SEEN_WITHIN).await,
        "after the outage a revoke answers {:?}",
        get_models(&gw, &fresh).await
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_before_redis_answers_503_then_serves_once_it_is_there() {
    // A Redis that is down when the gateway starts (stopped before it, same port later).
    let mut redis = RedisServer::start();
    redis.stop();
    let gw = gateway_on(&redis_store(&redis.url())).await;
    assert_eq!(readyz(&gw).await, 503, "/readyz says not ready");
    assert_eq!(
        get_models(&gw, &well_formed_unknown_key()).await,
        answer((503, "store_unavailable"))
    );
    // Malformed and missing keys need no store: their answers do not change.
    assert_eq!(
        get_models(&gw, "kg_nope").await,
        answer((401, "malformed_key"))
    );

    redis.restart();
    assert!(
        eventually(RECOVERS_WITHIN, || async { readyz(&gw).await == 200 }).await,
        "/readyz stays {}",
        readyz(&gw).await
    );
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    assert!(
        becomes(&gw, &key, OK, RECOVERS_WITHIN).await,
        "a key created once Redis is up answers {:?}",
        get_models(&gw, &key).await
    );
    // And the change feed, which had no position at start, follows Redis now.
    assert!(gw.cli(&["keys", "revoke", &id]).ok);
    assert!(
        becomes(&gw, &key, (401, "revoked_key"), RECOVERS_WITHIN).await,
        "after a late start a revoke answers {:?}",
        get_models(&gw, &key).await
    );
    gw.stop().await;
}

// ---- (c) Events a gateway could not read ----
//
// gw1 talks to Redis as the ACL user `gw`; the CLI as the default user. Taking `@stream`
// away from `gw` (and killing its connections, so no stream read already blocked in Redis
// survives) makes gw1's change follower blind while the CLI keeps writing, exactly like a
// gateway cut off from the feed: deterministic, no timing.

const GW_USER: &str = "gw";
const GW_PASS: &str = "gw-secret-for-tests";

struct Blind {
    redis: RedisServer,
    gw: TestGateway,
    /// The CLI's config: gw1's, but as Redis's default user.
    admin: PathBuf,
    _admin_dir: tempfile::TempDir,
}

fn create_gw_user(redis: &RedisServer) {
    let acl = format!(">{GW_PASS}");
    assert_eq!(
        redis.cli(&["ACL", "SETUSER", GW_USER, "on", &acl, "~*", "&*", "+@all"]),
        "OK"
    );
}

async fn blindable_gateway() -> Blind {
    blindable_gateway_after(|_| {}).await
}

/// `before` runs the CLI (as the default user) before the gateway starts.
async fn blindable_gateway_after(before: impl FnOnce(&Path)) -> Blind {
    let redis = RedisServer::start();
    create_gw_user(&redis);
    let admin_dir = tempfile::tempdir().expect("tempdir");
    let admin = admin_dir.path().join("admin.yaml");
    let unused: std::net::SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let yaml = base_yaml(unused, &admin_dir.path().join("unused.db"));
    std::fs::write(&admin, set_line(yaml, "store:", &redis_store(&redis.url())))
        .expect("write admin config");
    before(&admin);
    let gw = gateway_on(&redis_store(&redis.url_as(GW_USER, GW_PASS))).await;
    Blind {
        redis,
        gw,
        admin,
        _admin_dir: admin_dir,
    }
}

impl Blind {
    fn blind(&self) {
        assert_eq!(
            self.redis.cli(&["ACL", "SETUSER", GW_USER, "-@stream"]),
            "OK"
        );
        let killed: u32 = self
            .redis
            .cli(&["CLIENT", "KILL", "USER", GW_USER])
            .parse()
            .expect("CLIENT KILL answers a count");
        assert!(killed > 0, "gw1 had connections to Redis");
    }

    fn unblind(&self) {
        assert_eq!(self.redis.cli(&["ACL", "SETUSER", GW_USER, "+@all"]), "OK");
    }

    fn cli(&self, args: &[&str]) -> CliOutput {
        cli(&self.admin, args)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_missed_while_cut_off_are_replayed() {
    let b = blindable_gateway().await;
    let (id, key) = create_with(&b.admin, &["--org", "acme", "--role", "viewer"]);
    let (_, other) = create_with(&b.admin, &["--org", "acme", "--role", "viewer"]);
    warm(&[&b.gw], &key).await;
    warm(&[&b.gw], &other).await;

    b.blind();
    let out = b.cli(&["keys", "revoke", &id]);
    assert!(out.ok, "revoke failed: {}", out.stderr);
    // Give the blind follower several rounds (it polls every 250 ms after an error): the
    // revoke must not have arrived, or the test would not be testing a replay.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        get_models(&b.gw, &key).await,
        answer(OK),
        "precondition: the follower cannot read the feed (cached for 30 s)"
    );

    b.unblind();
    assert!(
        becomes(&b.gw, &key, (401, "revoked_key"), RECOVERS_WITHIN).await,
        "the missed revoke was not replayed: {:?}",
        get_models(&b.gw, &key).await
    );
    // A replay evicts what changed, not everything: the other key is still cached.
    let before = b.gw.gateway.cache().lookups();
    assert_eq!(get_models(&b.gw, &other).await, answer(OK));
    assert_eq!(
        b.gw.gateway.cache().lookups(),
        before,
        "an unchanged key stays cached across a replay"
    );
    b.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_after_a_redis_restart_resumes_the_feed() {
    let mut redis = RedisServer::start();
    let gw = gateway_on(&redis_store(&redis.url())).await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    warm(&[&gw], &key).await;
    redis.stop();
    redis.restart();
    let out = gw.cli(&["keys", "revoke", &id]);
    assert!(out.ok, "revoke failed: {}", out.stderr);
    assert!(
        becomes(&gw, &key, (401, "revoked_key"), RECOVERS_WITHIN).await,
        "a revoke after the restart answers {:?}",
        get_models(&gw, &key).await
    );
    gw.stop().await;
}

/// A revoke the follower missed, then the stream trimmed so that only `keep` newer events
/// remain: the follower cannot replay it and must drop its whole cache. With `ttl: 30s`,
/// only that makes the revoked key answer `revoked_key` within the bound below; and an
/// unchanged warmed key then costs a new store lookup.
async fn gap_empties_the_cache(keep: usize) {
    let b = blindable_gateway().await;
    let (id, key) = create_with(&b.admin, &["--org", "acme", "--role", "viewer"]);
    let (_, unchanged) = create_with(&b.admin, &["--org", "acme", "--role", "viewer"]);
    let (later_id, _) = create_with(&b.admin, &["--org", "acme", "--role", "viewer"]);
    warm(&[&b.gw], &key).await;
    warm(&[&b.gw], &unchanged).await;

    b.blind();
    let out = b.cli(&["keys", "revoke", &id]);
    assert!(out.ok, "revoke failed: {}", out.stderr);
    if keep > 0 {
        // Newer events the follower could read, after the lost one.
        assert!(b.cli(&["keys", "disable", &later_id]).ok);
    }
    let trimmed = b
        .redis
        .cli(&["XTRIM", "{kg}:events", "MAXLEN", &keep.to_string()]);
    assert!(
        trimmed.parse::<u64>().is_ok_and(|n| n > 0),
        "XTRIM removed events: {trimmed}"
    );
    assert_eq!(b.redis.cli(&["XLEN", "{kg}:events"]), keep.to_string());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        get_models(&b.gw, &key).await,
        answer(OK),
        "precondition: the follower cannot read the feed (cached for 30 s)"
    );
    let before = b.gw.gateway.cache().lookups();

    b.unblind();
    assert!(
        becomes(&b.gw, &key, (401, "revoked_key"), RECOVERS_WITHIN).await,
        "a revoke lost in a feed gap keeps the key alive (answers {:?}); \
         the gateway must empty its cache",
        get_models(&b.gw, &key).await
    );
    assert_eq!(get_models(&b.gw, &unchanged).await, answer(OK));
    assert!(
        b.gw.gateway.cache().lookups() >= before + 2,
        "after the gap both keys were looked up again (lookups {} -> {})",
        before,
        b.gw.gateway.cache().lookups()
    );
    b.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_trimmed_to_nothing_past_the_cursor_empties_the_cache() {
    gap_empties_the_cache(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_trimmed_past_the_cursor_with_newer_events_empties_the_cache() {
    gap_empties_the_cache(1).await;
}

/// Redis comes back empty (no persistence) and the CLI writes as many changes as gw1 had
/// seen before, so the feed's end is back at gw1's cursor: only the feed's epoch tells the
/// two histories apart. gw1 cannot read anything meanwhile (its ACL user is gone with the
/// data, until the test creates it again). Its cached answer for a key Redis no longer
/// holds must go: with `ttl: 30s`, only emptying the cache makes it `unknown_key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_empties_the_cache() {
    let mut made = Vec::new();
    let mut b = blindable_gateway_after(|admin| {
        for _ in 0..3 {
            made.push(create_with(admin, &["--org", "acme", "--role", "viewer"]).1);
        }
    })
    .await;
    let lost = made[0].clone();
    warm(&[&b.gw], &lost).await;

    let seq_before = b.redis.cli(&["GET", "{kg}:events:seq"]);
    assert_ne!(seq_before, "", "the creates were published on the feed");
    b.redis.crash();
    b.redis.restart();
    assert_eq!(b.redis.cli(&["DBSIZE"]), "0", "Redis came back empty");
    let mut fresh = Vec::new();
    for _ in 0..made.len() {
        fresh.push(create_with(&b.admin, &["--org", "acme", "--role", "viewer"]).1);
    }
    assert_eq!(
        b.redis.cli(&["GET", "{kg}:events:seq"]),
        seq_before,
        "the new feed has counted up to where gw1's cursor is"
    );
    assert_eq!(
        get_models(&b.gw, &lost).await,
        answer(OK),
        "precondition: gw1 cannot reach Redis yet and serves its cached answer"
    );

    create_gw_user(&b.redis);
    assert!(
        becomes(&b.gw, &lost, (401, "unknown_key"), RECOVERS_WITHIN).await,
        "a key Redis lost is still admitted ({:?}): the new feed was taken for the old one",
        get_models(&b.gw, &lost).await
    );
    warm(&[&b.gw], &fresh[0]).await;
    b.gw.stop().await;
}

// ---- (d) Embedded -> Redis ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_exported_from_embedded_work_on_a_redis_gateway() {
    let from = TestGateway::start().await;
    let (_, service_key) = from.create_key(&["--org", "acme", "--role", "viewer"]);
    let (revoked_id, revoked_key) = from.create_key(&["--org", "acme", "--role", "viewer"]);
    assert!(from.cli(&["keys", "revoke", &revoked_id]).ok);
    let (_, personal_key) = from.create_key(&[
        "--org", "acme", "--type", "personal", "--owner", "alice", "--role", "viewer",
    ]);
    assert!(from.cli(&["users", "remove", "--org", "acme", "alice"]).ok);
    let file = from.dir.path().join("export.jsonl");
    let file = file.to_str().expect("utf-8 path");
    let out = from.cli(&["keys", "export", "--out", file]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json["exported_keys"], 3);

    let redis = RedisServer::start();
    let to = gateway_on(&redis_store(&redis.url())).await;
    let out = to.cli(&["keys", "import", "--in", file]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.json["keys_imported"], 3, "{}", out.stdout);
    assert_eq!(out.json["users_imported"], 1, "{}", out.stdout);

    assert_eq!(get_models(&to, &service_key).await, answer(OK));
    assert_eq!(
        get_models(&to, &revoked_key).await,
        answer((401, "revoked_key"))
    );
    assert_eq!(
        get_models(&to, &personal_key).await,
        answer((401, "owner_removed"))
    );
    // A second gateway on that Redis sees the imported keys too.
    let to2 = gateway_on(&redis_store(&redis.url())).await;
    assert_eq!(get_models(&to2, &service_key).await, answer(OK));

    let again = to.cli(&["keys", "import", "--in", file]);
    assert!(again.ok, "{}", again.stderr);
    assert_eq!(again.json["keys_imported"], 0);
    assert_eq!(again.json["keys_present"], 3);
    from.stop().await;
    to.stop().await;
    to2.stop().await;
}

// ---- (e) Redis Cluster ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_is_seen_by_every_gateway_on_a_cluster() {
    let cluster = RedisCluster::start();
    let store = cluster_store(&cluster.urls());
    let gw1 = gateway_on(&store).await;
    let gw2 = gateway_on(&store).await;
    let (id, key) = gw1.create_key(&["--org", "acme", "--role", "viewer"]);
    let (del_id, del_key) = gw2.create_key(&["--org", "acme", "--role", "viewer"]);
    warm(&[&gw1, &gw2], &key).await;
    warm(&[&gw1, &gw2], &del_key).await;

    let out = gw1.cli(&["keys", "revoke", &id]);
    assert!(out.ok, "revoke failed: {}", out.stderr);
    all_become(&[&gw1, &gw2], &key, (401, "revoked_key")).await;
    let out = gw2.cli(&["keys", "delete", &del_id]);
    assert!(out.ok, "delete failed: {}", out.stderr);
    all_become(&[&gw1, &gw2], &del_key, (401, "unknown_key")).await;

    // Everything lives in the `{kg}` slot, on the one master that owns it.
    let master = cluster.master_of("{kg}:events");
    assert_ne!(
        support::redis::redis_cli(master, &["XLEN", "{kg}:events"]),
        "0"
    );
    gw1.stop().await;
    gw2.stop().await;
}
