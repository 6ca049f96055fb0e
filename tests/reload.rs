//! The real binary: SIGHUP swaps routes without a restart, a bad new file is refused and
//! the old config keeps serving, SIGTERM drains and exits 0.
mod support;
use support::*;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn config(upstream: std::net::SocketAddr, db: &std::path::Path, route: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
store: {{ kind: embedded, path: "{db}" }}
log: {{ level: info }}
# One worker: the single-threaded runtime serves, reloads and drains too.
server: {{ workers: 1 }}
upstreams:
  api: {{ targets: ["http://{upstream}"] }}
routes:
  - {{ path: {route}, upstream: api, auth: none }}
"#,
        db = db.display()
    )
}

/// The serving binary, its stderr lines collected as they come.
struct Served {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Served {
    fn start(config: &std::path::Path) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keygate serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
        });
        Served { child, log }
    }

    fn logged(&self, needle: &str) -> Option<String> {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sighup_swaps_routes_and_refuses_a_bad_file() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("k.db");
    let path = dir.path().join("keygate.yaml");
    std::fs::write(&path, config(up.addr, &db, "/old")).expect("write");
    let served = Served::start(&path);

    assert!(
        eventually(Duration::from_secs(10), || {
            let up = served.logged("keygate serving").is_some();
            async move { up }
        })
        .await,
        "gateway did not start"
    );
    let line = served.logged("keygate serving").expect("serving line");
    let addr = line
        .split("listen=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("listen address in the log")
        .to_owned();
    let url = |p: &str| format!("http://{addr}{p}");

    assert_eq!(get(&url("/old"), &[]).await.status, 200);
    assert_eq!(get(&url("/new"), &[]).await.status, 404);

    std::fs::write(&path, config(up.addr, &db, "/new")).expect("rewrite");
    served.signal("-HUP");
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&url("/new"), &[]).await.status == 200
        })
        .await,
        "reload did not take effect"
    );
    assert_eq!(get(&url("/old"), &[]).await.status, 404);

    // A bad file: refused, logged, and the running routes stay.
    std::fs::write(
        &path,
        "routes: [ { path: /x, upstream: nowhere } ]\nbogus: 1\n",
    )
    .expect("rewrite");
    served.signal("-HUP");
    assert!(
        eventually(Duration::from_secs(5), || {
            let seen = served.logged("reload refused").is_some();
            async move { seen }
        })
        .await,
        "bad reload was not reported"
    );
    assert_eq!(get(&url("/new"), &[]).await.status, 200);

    // SIGTERM drains and exits cleanly.
    served.signal("-TERM");
    let status = tokio::task::spawn_blocking(move || {
        let mut served = served;
        served.child.wait().expect("wait")
    })
    .await
    .expect("join");
    assert!(status.success(), "exit status {status:?}");
}

/// The same reload in-process (`RunningApp::reload`, what SIGHUP calls): routes and roles
/// swap, a file that changes what needs a restart or does not validate is refused whole,
/// and the running config stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_reload_swaps_routes_and_refuses_what_needs_a_restart() {
    let mut gw = TestGateway::start().await;
    let db = gw.dir.path().join("keygate.db");
    let base = base_yaml(gw.upstream.addr, &db);
    assert_eq!(get(&gw.url("/extra/x"), &[]).await.code(), "no_route");

    let with_extra = base.replacen(
        "routes:\n",
        "routes:\n  - { path: /extra, upstream: api, auth: none }\n",
        1,
    );
    gw.reload(&with_extra).expect("reload");
    assert_eq!(get(&gw.url("/extra/x"), &[]).await.status, 200);
    assert_eq!(
        gw.config.routes.len(),
        11,
        "the config in force is the new one"
    );

    // What needs a restart: refused whole, nothing of the file taken.
    let moved = with_extra
        .replacen("listen: 127.0.0.1:0", "listen: 127.0.0.1:1", 1)
        .replacen("  - { path: /extra, upstream: api, auth: none }\n", "", 1);
    let err = gw.reload(&moved).expect_err("listen needs a restart");
    assert!(err.to_string().contains("listen"), "{err}");
    assert_eq!(get(&gw.url("/extra/x"), &[]).await.status, 200);

    // A file that does not validate: refused, naming the field.
    let bad = with_extra.replacen("upstream: api, auth: none }", "upstream: nowhere }", 1);
    let err = gw.reload(&bad).expect_err("unknown upstream");
    assert!(err.to_string().contains("nowhere"), "{err}");
    assert_eq!(get(&gw.url("/extra/x"), &[]).await.status, 200);
    gw.stop().await;
}
