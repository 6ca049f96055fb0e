//! Test harness: a real upstream, a real gateway and the real CLI binary, each on
//! `127.0.0.1:0` with its own temp dir. Nothing shared between tests.
#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keygate::app::{App, RunningApp};
use keygate::config::Config;
use keygate::gateway::Gateway;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

type UpBody = http_body_util::Either<Full<Bytes>, ChannelBody>;

/// A streaming body fed through a channel: each item is one frame, sent when it comes.
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// The test upstream:
/// - any path: 200 with the request as JSON (keygate's demo echo);
/// - `/stream`: a chunked body whose chunks are released one by one through `release`;
/// - `/slow`: answers after 3 s (for upstream timeouts).
pub struct Upstream {
    pub addr: SocketAddr,
    /// Send one item to let `/stream` emit its next chunk; drop to end it.
    pub release: mpsc::Sender<()>,
}

pub async fn start_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let (release_tx, release_rx) = mpsc::channel::<()>(16);
    let release_rx = Arc::new(tokio::sync::Mutex::new(release_rx));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let release_rx = release_rx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let release_rx = release_rx.clone();
                    async move {
                        let resp: Response<UpBody> = match req.uri().path() {
                            "/stream" => {
                                let (tx, rx) = mpsc::channel::<Bytes>(4);
                                tokio::spawn(async move {
                                    let mut rel = release_rx.lock().await;
                                    for i in 0..3 {
                                        if rel.recv().await.is_none() {
                                            break;
                                        }
                                        if tx
                                            .send(Bytes::from(format!("chunk-{i}\n")))
                                            .await
                                            .is_err()
                                        {
                                            break;
                                        }
                                    }
                                });
                                Response::new(http_body_util::Either::Right(ChannelBody(rx)))
                            }
                            "/slow" => {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                                Response::new(http_body_util::Either::Left(Full::new(
                                    Bytes::from_static(b"slow"),
                                )))
                            }
                            _ => keygate::demo::echo(&req).map(http_body_util::Either::Left),
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        release: release_tx,
    }
}

/// The default test config: routes over the upstream, roles viewer/editor, a key header
/// and a query parameter, workspace rules by header and by path segment.
/// Admin tokens of the test config: the operator's (unlimited), an org owner's
/// (`orgs: [acme]`) and a workspace editor's (`acme` / `team-a`).
pub const OPS_TOKEN: &str = "ops-token-for-tests";
pub const ACME_TOKEN: &str = "acme-owner-token-for-tests";
pub const TEAM_A_TOKEN: &str = "team-a-editor-token-for-tests";

fn token_hash(t: &str) -> String {
    keygate::key::KeyHash::of(t.as_bytes()).to_hex()
}

pub fn base_yaml(upstream: SocketAddr, db: &std::path::Path) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
  tokens:
    - {{ name: ops, sha256: "{ops}" }}
    - {{ name: acme-owner, sha256: "{acme}", orgs: [acme] }}
    - {{ name: team-a-editor, sha256: "{team}", orgs: [acme], workspaces: [team-a], roles: [viewer] }}
store: {{ kind: embedded, path: "{db}", poll_interval: 100ms }}
cache: {{ max_entries: 1000, ttl: 30s, negative_ttl: 5s, stale_if_error: 5m }}
keys: {{ prefix: kg, header: x-api-key, query_param: api_key }}
roles:
  viewer: [models:read]
  editor: [models:read, models:write]
upstreams:
  api: {{ targets: ["http://{upstream}"], connect_timeout: 1s, timeout: 1s }}
  dead: {{ targets: ["http://127.0.0.1:1"], connect_timeout: 1s, timeout: 1s }}
routes:
  - {{ path: /v1/models, methods: [GET], upstream: api, permissions: [models:read] }}
  - {{ path: /v1/models, methods: [POST], upstream: api, permissions: [models:write] }}
  - {{ path: /v1/ws, upstream: api, permissions: [models:read], workspace: {{ header: x-workspace-id }} }}
  - {{ path: /v1/orgs, upstream: api, workspace: {{ path_segment: 3 }} }}
  - {{ path: /v1, upstream: api }}
  - {{ path: /public, upstream: api, auth: none }}
  - {{ path: /dead, upstream: dead }}
  - {{ path: /slow, upstream: api }}
  - {{ path: /stream, upstream: api }}
  - {{ path: /hosted, host: api.example.com, upstream: api }}
"#,
        db = db.display(),
        ops = token_hash(OPS_TOKEN),
        acme = token_hash(ACME_TOKEN),
        team = token_hash(TEAM_A_TOKEN),
    )
}

/// A gateway served in-process, its store file and config file, and the CLI binary
/// pointed at the same config.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub config: Config,
    pub gateway: Arc<Gateway>,
    running: Option<RunningApp>,
    pub upstream: Upstream,
    /// The admin API of this gateway (same store, same metrics).
    pub admin_addr: SocketAddr,
    /// Environment variables of this gateway (`KEYGATE_VAULT_KEY`): read by its config
    /// in-process and given to every CLI child, never set on the test process, whose
    /// threads run other tests.
    pub env: Vec<(String, String)>,
}

impl TestGateway {
    pub async fn start() -> TestGateway {
        Self::start_with(|y| y).await
    }

    /// `edit` may rewrite the default YAML before it is loaded.
    pub async fn start_with(edit: impl FnOnce(String) -> String) -> TestGateway {
        Self::start_with_env(edit, &[]).await
    }

    /// As `start_with`, with `env` as this gateway's own environment variables (over the
    /// process's; `KEYGATE_VAULT_KEY` only from `env`).
    pub async fn start_with_env(
        edit: impl FnOnce(String) -> String,
        env: &[(&str, &str)],
    ) -> TestGateway {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let upstream = start_upstream().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("keygate.db");
        let yaml = edit(base_yaml(upstream.addr, &db));
        let config_path = dir.path().join("keygate.yaml");
        std::fs::write(&config_path, &yaml).expect("write config");
        let config =
            Config::load_with_env(&config_path, &env_lookup(&env)).expect("test config is valid");
        let running = App::build(config.clone())
            .await
            .expect("open store")
            .start()
            .await
            .expect("start gateway and admin API");
        TestGateway {
            admin_addr: running.admin_addr(),
            addr: running.addr(),
            gateway: running.app().gateway.clone(),
            dir,
            config_path,
            config,
            running: Some(running),
            upstream,
            env,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    /// Runs the real `keygate` binary with `--config <this config> --json`.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        cli_env(&self.config_path, args, &env)
    }

    /// Creates a key with the CLI and returns (id, secret).
    pub fn create_key(&self, args: &[&str]) -> (String, String) {
        let mut all = vec!["keys", "create"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert!(out.ok, "create failed: {}", out.stderr);
        let id = out.json["id"].as_str().expect("id").to_owned();
        let key = out.json["key"].as_str().expect("key").to_owned();
        (id, key)
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown_draining(Duration::from_secs(2)).await;
        }
    }

    /// Reloads this gateway in-process from `yaml` (as SIGHUP does from its file).
    pub fn reload(&mut self, yaml: &str) -> Result<(), keygate::gateway::ReloadError> {
        let running = self.running.as_mut().expect("a running gateway");
        let new = Config::from_yaml(yaml, &env_lookup(&self.env))
            .map_err(keygate::gateway::ReloadError::from)?;
        running.reload(new)?;
        self.config = running.config().clone();
        Ok(())
    }
}

pub struct CliOutput {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub json: serde_json::Value,
}

/// The environment a config is loaded with in-process: `env` first, then the process's,
/// except the vault key, which comes from `env` only.
pub fn env_lookup(env: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
    move |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| {
                (name != keygate::key::VAULT_KEY_ENV)
                    .then(|| std::env::var(name).ok())
                    .flatten()
            })
    }
}

pub fn cli(config: &std::path::Path, args: &[&str]) -> CliOutput {
    run_cli(config, args, &[], None, true)
}

/// The CLI with `env` set for this child only (`KEYGATE_VAULT_KEY` only from `env`).
pub fn cli_env(config: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    run_cli(config, args, env, None, true)
}

/// `cli`, with `input` written to the command's standard input (closed after it).
pub fn cli_with_stdin(config: &std::path::Path, args: &[&str], input: Option<&str>) -> CliOutput {
    run_cli(config, args, &[], input, true)
}

/// What a successful command prints for a person (no `--json`).
pub fn cli_text(config: &std::path::Path, args: &[&str]) -> String {
    let out = run_cli(config, args, &[], None, false);
    assert!(out.ok, "{args:?} failed: {}", out.stderr);
    out.stdout
}

fn run_cli(
    config: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    input: Option<&str>,
    json: bool,
) -> CliOutput {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("--config")
        .arg(config)
        .args(json.then_some("--json"))
        .args(args)
        .env_remove("KEYGATE_CONFIG")
        .env_remove(keygate::key::VAULT_KEY_ENV)
        .envs(env.iter().copied())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keygate binary");
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for keygate binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    CliOutput {
        ok: out.status.success(),
        code: out.status.code(),
        json: serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A gateway of the test config whose store is the Redis at `url`.
pub async fn gateway_on_redis(url: &str) -> TestGateway {
    let store = format!("store: {{ kind: redis, url: \"{url}\" }}");
    TestGateway::start_with(move |y| {
        y.lines()
            .map(|l| {
                if l.starts_with("store:") {
                    store.as_str()
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
    .await
}

/// A finished response, body collected.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The `error.code` of a refusal.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Headers the upstream received (echo routes), lower-case names.
    pub fn upstream_headers(&self) -> serde_json::Map<String, serde_json::Value> {
        self.json()["headers"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    }
}

/// Sends one HTTP/1.1 request with the given headers (repeated names allowed).
pub async fn send(method: Method, url: &str, headers: &[(&str, &str)]) -> Reply {
    send_body(method, url, headers, Bytes::new()).await
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    send(Method::GET, url, headers).await
}

pub async fn send_body(method: Method, url: &str, headers: &[(&str, &str)], body: Bytes) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).expect("request");
    let resp = client.request(req).await.expect("request sent");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Polls `f` until it returns true or `within` passes; returns whether it did. For
/// eventual effects (a CLI change seen by the gateway), not for timing assertions.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

pub fn frame_text(f: &Frame<Bytes>) -> String {
    f.data_ref()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_default()
}

// --- Lifecycle and CLI helpers (tests/lifecycle.rs, tests/cli.rs) ---

/// Whether `s` has the shape of a secret under the default prefix: `kg_` + 38 base62.
pub fn looks_like_secret(s: &str) -> bool {
    s.strip_prefix("kg_")
        .is_some_and(|r| r.len() == 38 && r.bytes().all(|c| c.is_ascii_alphanumeric()))
}

/// Whether `s` holds anything shaped like a secret: `kg_` and more than a hint's 4
/// characters of one (a hint, `kg_…a1B2`, shows none of the random part).
pub fn contains_secret_shape(s: &str) -> bool {
    s.match_indices("kg_").any(|(i, m)| {
        s.as_bytes()[i + m.len()..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric())
            .count()
            > 4
    })
}

/// Whether `s` holds a run of 64 hex digits (the shape of a sha256 key hash).
pub fn contains_hex64(s: &str) -> bool {
    let mut run = 0;
    for c in s.bytes() {
        run = if c.is_ascii_hexdigit() { run + 1 } else { 0 };
        if run >= 64 {
            return true;
        }
    }
    false
}

/// Status and `error.code` (empty on success) of a request to `path` with `key`.
pub async fn key_verdict(gw: &TestGateway, method: Method, path: &str, key: &str) -> (u16, String) {
    let r = send(method, &gw.url(path), &[("authorization", &bearer(key))]).await;
    (r.status.as_u16(), r.code())
}

/// Polls until a request to `path` with `key` gets `status` and `code`, or `within` passes.
pub async fn verdict_becomes(
    gw: &TestGateway,
    method: Method,
    path: &str,
    key: &str,
    want: (u16, &str),
    within: Duration,
) -> bool {
    eventually(within, || {
        let m = method.clone();
        async move { key_verdict(gw, m, path, key).await == (want.0, want.1.to_owned()) }
    })
    .await
}

// ---- Helpers for the proxy tests (verdicts, headers, routing, upstream). ----

/// Sends one HTTP/1.1 request whose header values are `HeaderValue`s, so a test can
/// send bytes that are not visible ASCII (obs-text).
pub async fn send_values(
    method: Method,
    url: &str,
    headers: &[(&str, http::HeaderValue)],
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, v.clone());
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    let resp = client.request(req).await.expect("request sent");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Sends one request over HTTP/2 with prior knowledge (h2c).
pub async fn send_h2(method: Method, url: &str, headers: &[(&str, &str)]) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    let resp = client.request(req).await.expect("h2 request sent");
    assert_eq!(
        resp.version(),
        http::Version::HTTP_2,
        "answered over HTTP/2"
    );
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Writes `bytes` on a fresh TCP connection to `addr`, half-closes nothing, and reads
/// until the server closes (or 10 s pass: a guard against hangs, not a timing check).
/// Read errors (a reset after the answer) end the read; what was read is returned.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before it has read everything: ignore write errors.
    let _ = tcp.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

/// An upstream that reads the whole request body and answers
/// `{"len": <bytes read>, "sha256": "<hex>", "content_length": "<header or null>"}`.
pub async fn start_sink() -> SocketAddr {
    use sha2::{Digest, Sha256};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let content_length = req
                        .headers()
                        .get(http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let mut body = req.into_body();
                    let mut hasher = Sha256::new();
                    let mut len = 0usize;
                    while let Some(frame) = body.frame().await {
                        let Ok(frame) = frame else { break };
                        if let Some(d) = frame.data_ref() {
                            len += d.len();
                            hasher.update(d);
                        }
                    }
                    let digest: String = hasher
                        .finalize()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    let json = serde_json::json!({
                        "len": len,
                        "sha256": digest,
                        "content_length": content_length,
                    });
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(json.to_string()))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// Lower-case hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A well-formed key (right prefix, length, charset and checksum) that no store holds.
pub fn well_formed_unknown_key() -> String {
    keygate::key::KeyFormat::new("kg")
        .generate()
        .expose()
        .to_owned()
}
pub mod admin;
pub mod certs;
pub mod redis;
pub mod switchable;

/// An HTTP/1.1 client connection over `io` (TCP, or TLS), driven by a task of its own: for
/// tests that watch a response head before its body, a body frame by frame, or an upload.
pub async fn h1_client<T, B>(io: T) -> hyper::client::conn::http1::SendRequest<B>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}
