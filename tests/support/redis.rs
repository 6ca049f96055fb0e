//! Real Redis servers for the fleet tests: `redis-server` processes on free ports of
//! 127.0.0.1 (never 6379), each with its own temp dir, killed on drop.
//!
//! Nothing is persisted on its own (`--save ''`, `--appendonly no`); `stop()` writes one
//! snapshot (`SAVE`) before it kills the process, so `restart()` brings back the same data,
//! as a Redis with persistence would after an outage; `crash()` kills without one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REDIS_SERVER: &str = "/usr/bin/redis-server";
const REDIS_CLI: &str = "/usr/bin/redis-cli";

/// How long a server may take to answer PING, or a cluster to settle. A guard against a
/// broken environment, not a timing check.
const START_GUARD: Duration = Duration::from_secs(20);

/// A free TCP port on 127.0.0.1 (bound, then released), never Redis's default one.
pub fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = l.local_addr().expect("local addr").port();
        drop(l);
        if port != 6379 {
            return port;
        }
    }
}

/// Runs `redis-cli -p <port> <args>` and returns its trimmed stdout (stderr appended when
/// the command failed).
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(REDIS_CLI)
        .arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    let mut s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        s.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    s
}

/// Spawns one `redis-server` on `port` in `dir`, logging to `dir/redis.log`.
fn spawn(port: u16, dir: &Path, extra: &[String]) -> Child {
    let log = std::fs::File::create(dir.join("redis.log")).expect("create redis log");
    Command::new(REDIS_SERVER)
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .expect("spawn /usr/bin/redis-server")
}

/// Waits until the server on `port` answers PONG; panics with its log if it exits or never
/// does.
fn wait_for_pong(port: u16, child: &mut Child, dir: &Path) {
    let deadline = Instant::now() + START_GUARD;
    loop {
        if redis_cli(port, &["PING"]) == "PONG" {
            return;
        }
        let log = || std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            panic!("redis-server on port {port} exited ({status}):\n{}", log());
        }
        if Instant::now() >= deadline {
            panic!(
                "redis-server on port {port} never answered PING:\n{}",
                log()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// One standalone Redis.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with_args(&[])
    }

    /// With extra `redis-server` arguments (kept for `restart()`).
    pub fn start_with_args(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("redis tempdir");
        let mut s = RedisServer {
            port: free_port(),
            dir,
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut child = spawn(self.port, self.dir.path(), &self.extra);
        wait_for_pong(self.port, &mut child, self.dir.path());
        self.child = Some(child);
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis://USER:PASS@127.0.0.1:PORT/0` (for an ACL user).
    pub fn url_as(&self, user: &str, pass: &str) -> String {
        format!("redis://{user}:{pass}@127.0.0.1:{}/0", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `redis-cli` against this server (as the default user).
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id while it runs (to freeze it with SIGSTOP, say).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Snapshots the data (`SAVE`), then kills the process by PID and waits for it: from
    /// here the port refuses connections.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        let saved = self.cli(&["SAVE"]);
        assert_eq!(saved, "OK", "redis SAVE before stop");
        kill(&mut self.child);
    }

    /// Kills the process by PID without a snapshot: a `restart()` then comes back with the
    /// last snapshot `stop()` wrote, or empty if there is none (a Redis that lost its data).
    pub fn crash(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same port and dir (so with the data `stop()` saved).
    pub fn restart(&mut self) {
        kill(&mut self.child);
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A Redis Cluster of three masters, no replicas, each node in its own dir.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    dir: tempfile::TempDir,
    children: Vec<Option<Child>>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("redis cluster tempdir");
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 3 {
            let p = free_port();
            // A cluster node also listens on port + 10000 (the bus).
            if !ports.contains(&p) && p < 55535 {
                ports.push(p);
            }
        }
        let mut cluster = RedisCluster {
            ports: ports.clone(),
            children: Vec::new(),
            dir,
        };
        for &p in &ports {
            let node_dir: PathBuf = cluster.dir.path().join(p.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let conf = cluster.dir.path().join(format!("nodes-{p}.conf"));
            let extra = vec![
                "--cluster-enabled".to_owned(),
                "yes".to_owned(),
                "--cluster-config-file".to_owned(),
                conf.display().to_string(),
                "--cluster-node-timeout".to_owned(),
                "2000".to_owned(),
            ];
            let mut child = spawn(p, &node_dir, &extra);
            wait_for_pong(p, &mut child, &node_dir);
            cluster.children.push(Some(child));
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new(REDIS_CLI)
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + START_GUARD;
        for &p in &ports {
            loop {
                let info = redis_cli(p, &["CLUSTER", "INFO"]);
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster node {p} never reached cluster_state:ok:\n{info}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// `redis://127.0.0.1:P` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The port of the master that holds the slot of `key` (e.g. `{kg}:events`).
    pub fn master_of(&self, key: &str) -> u16 {
        let slot: u16 = redis_cli(self.ports[0], &["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        for &p in &self.ports {
            // The slots a node serves are listed on its own (`myself`) line.
            let nodes = redis_cli(p, &["CLUSTER", "NODES"]);
            let me = nodes
                .lines()
                .find(|l| l.contains("myself"))
                .unwrap_or_default();
            for range in me.split_whitespace().skip(8) {
                let (lo, hi) = match range.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap_or(u16::MAX), b.parse().unwrap_or(0)),
                    None => {
                        let s = range.parse().unwrap_or(u16::MAX);
                        (s, s)
                    }
                };
                if lo <= slot && slot <= hi {
                    return p;
                }
            }
        }
        panic!("no master owns slot {slot} of {key}");
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            kill(c);
        }
    }
}
