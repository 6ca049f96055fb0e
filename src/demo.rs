//! `keygate demo`: the whole idea on a machine with nothing else running. A built-in
//! echo upstream (answers with the request it received, as JSON, so the identity headers
//! are visible), the demo config, a demo key and the curl lines to try.

use crate::config::Config;
use crate::service::{KeyService, NewKey};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use tokio::net::TcpListener;

const DEMO_TEMPLATE: &str = include_str!("../config/demo.yaml");

/// The echo answer: method, path, query and headers of the request as received.
pub fn echo(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut headers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let body = serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "headers": headers.into_iter().map(|(k, v)| (k, v.join(", "))).collect::<BTreeMap<_, _>>(),
    });
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body:#}\n"))));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Starts the echo upstream on `addr` (port 0: any free port).
pub async fn start_echo(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(echo(&req))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

/// What the demo config needs filled in.
pub struct DemoVars<'a> {
    pub listen: &'a str,
    pub admin_listen: &'a str,
    /// sha256 (hex) of the demo admin token.
    pub admin_sha256: &'a str,
    pub db: &'a Path,
    pub upstream: SocketAddr,
}

/// Renders the demo config: the text written for the CLI to use, and the config.
pub fn demo_config(v: &DemoVars<'_>) -> Result<(String, Config), crate::config::ConfigError> {
    let vars: [(&str, String); 5] = [
        ("KEYGATE_DEMO_LISTEN", v.listen.to_owned()),
        ("KEYGATE_DEMO_ADMIN_LISTEN", v.admin_listen.to_owned()),
        ("KEYGATE_DEMO_ADMIN_SHA256", v.admin_sha256.to_owned()),
        ("KEYGATE_DEMO_DB", v.db.display().to_string()),
        ("KEYGATE_DEMO_UPSTREAM", format!("http://{}", v.upstream)),
    ];
    let lookup = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    let rendered = vars.iter().fold(DEMO_TEMPLATE.to_owned(), |t, (k, val)| {
        t.replace(&format!("${{{k}}}"), val)
    });
    let config = Config::from_yaml(DEMO_TEMPLATE, &lookup)?;
    Ok((rendered, config))
}

/// One request the demo suggests, and the answer it gets: printed as a curl line with its
/// answer beneath, and run by `tests/demo.rs` to hold the demo to what it prints.
#[derive(Debug, Clone)]
pub struct Try {
    pub method: &'static str,
    /// Path and query, on the gateway (`admin: true`: on the admin listener).
    pub path: String,
    pub admin: bool,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<&'static str>,
    /// Sent this many times in a row; the answers are `status` for each (or the last one's
    /// for a rate limit, see `then`).
    pub times: usize,
    pub status: u16,
    /// `error.code` of a refusal.
    pub code: Option<&'static str>,
    /// What the answer shows, in words.
    pub says: &'static str,
}

impl Try {
    fn curl(&self, base: &str, admin_base: &str) -> String {
        let url = format!(
            "{}{}",
            if self.admin { admin_base } else { base },
            self.path
        );
        let mut line = String::from("curl -si");
        if self.method != "GET" {
            line.push_str(&format!(" -X {}", self.method));
        }
        line.push_str(&format!(" {url}"));
        for (k, v) in &self.headers {
            line.push_str(&format!(" -H '{k}: {v}'"));
        }
        if let Some(b) = self.body {
            line.push_str(&format!(" -d '{b}'"));
        }
        line
    }

    fn answer(&self) -> String {
        let code = self.code.map(|c| format!(" {c}")).unwrap_or_default();
        let times = if self.times > 1 {
            format!("{} times: ", self.times)
        } else {
            String::new()
        };
        format!("{times}{}{code}: {}", self.status, self.says)
    }
}

/// The demo's suggestions for `key` (viewer of team-a), `limited` (3 requests a minute)
/// and the admin `token`.
pub fn tries(key: &str, limited: &str, token: &str) -> Vec<Try> {
    let bearer = |k: &str| vec![("Authorization", format!("Bearer {k}"))];
    let t = |method, path: &str, headers, status, code, says| Try {
        method,
        path: path.to_owned(),
        admin: false,
        headers,
        body: None,
        times: 1,
        status,
        code,
        says,
    };
    vec![
        t("GET", "/v1/models", bearer(key), 200, None,
          "the echo shows what the upstream received: x-keygate-key-id, -org, -workspace, -permissions ... and no Authorization"),
        t("GET", "/v1/models", vec![], 401, Some("missing_key"), "no key"),
        t("GET", "/v1/models", bearer("kg_thisisnotarealkey"), 401, Some("malformed_key"),
          "wrong length and checksum: refused before any store lookup"),
        t("POST", "/v1/models", bearer(key), 403, Some("insufficient_permissions"),
          "POST needs models:write; the key's role viewer has models:read"),
        t("GET", "/v1/workspaces/team-b/models", bearer(key), 403, Some("workspace_not_allowed"),
          "the key is for workspace team-a (/v1/workspaces/team-a/models answers 200)"),
        t("GET", "/health", vec![("X-Keygate-Org", "spoofed".to_owned())], 200, None,
          "an `auth: none` route: no key needed, and the spoofed identity header is gone"),
        Try {
            times: 3,
            ..t("GET", "/v1/models", bearer(limited), 200, None,
                "the demo's limited key (3 a minute): RateLimit-Limit 3, RateLimit-Remaining 2, 1, 0")
        },
        t("GET", "/v1/models", bearer(limited), 429, Some("rate_limited"),
          "the fourth within the minute, with Retry-After"),
        Try {
            admin: true,
            ..t("GET", "/v1/keys", bearer(token), 200, None, "{\"keys\": [...]}: the demo's keys, never a secret")
        },
        Try {
            admin: true,
            body: Some(r#"{"org":"acme","roles":["editor"]}"#),
            ..t("POST", "/v1/keys", bearer(token), 201, None,
                "a new editor key of acme, its secret in `key` (shown once)")
        },
        Try {
            admin: true,
            ..t("GET", "/metrics", vec![], 200, None,
                "keygate_requests_total by route and code, cache and store counters, latencies")
        },
    ]
}

/// A running demo: the gateway and its admin API, the echo upstream, the demo keys, and
/// what to print.
pub struct Demo {
    pub running: crate::app::RunningApp,
    pub tries: Vec<Try>,
    pub text: String,
}

/// Starts the demo (echo upstream, config written under `args.dir`, demo keys) without
/// printing or waiting.
pub async fn start(args: &crate::cli::DemoArgs) -> Result<Demo, Box<dyn std::error::Error>> {
    let upstream = start_echo(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    std::fs::create_dir_all(&args.dir)?;
    let db = args.dir.join("keygate.db");
    // A fresh admin token per run; only its sha256 goes into the config.
    let mut token = String::from("kgadmin_");
    crate::key::push_random_base62(&mut token, 32);
    let admin_sha256 = crate::key::KeyHash::of(token.as_bytes()).to_hex();
    let (rendered, config) = demo_config(&DemoVars {
        listen: &args.listen,
        admin_listen: &args.admin_listen,
        admin_sha256: &admin_sha256,
        db: &db,
        upstream,
    })?;
    let config_path = args.dir.join("keygate.yaml");
    std::fs::write(&config_path, rendered)?;

    let app = crate::app::App::build(config).await?;
    let config = app.config().clone();
    let svc = KeyService::new(
        app.store.clone(),
        config.roles.clone(),
        crate::key::KeyFormat::new(&config.keys.prefix),
        config.keys.vault.clone(),
    );
    let viewer_key = |name: &str, rate_limit: Option<&str>| NewKey {
        org: "acme".into(),
        workspaces: vec!["team-a".into()],
        name: Some(name.into()),
        roles: vec!["viewer".into()],
        rate_limit: rate_limit.map(str::to_owned),
        ..NewKey::default()
    };
    let (viewer, viewer_secret) = svc.create(viewer_key("demo-viewer", None), "demo").await?;
    let (_, limited_secret) = svc
        .create(viewer_key("demo-limited", Some("3/m")), "demo")
        .await?;

    let running = app.start().await?;
    let admin_base = format!("http://{}", running.admin_addr());
    let base = format!("http://{}", running.addr());
    let key = viewer_secret.expose();
    let tries = tries(key, limited_secret.expose(), &token);
    let exe = std::env::args().next().unwrap_or_else(|| "keygate".into());
    let cfg = config_path.display();
    let lines: String = tries
        .iter()
        .map(|t| {
            format!(
                "  {}\n      -> {}\n",
                t.curl(&base, &admin_base),
                t.answer()
            )
        })
        .collect();
    let text = format!(
        r#"keygate demo: gateway on {base}, admin API on {admin_base}, echo upstream on http://{upstream}
config {cfg}, key store {db}

Demo key {id} (org acme, workspace team-a, role viewer = models:read):
  {key}
(The secret is shown once: keygate keeps only its sha256.) The admin token of this run
is in the lines below.

Try, from another terminal (each line's answer beneath it):
{lines}
Manage keys while it runs (the gateway sees changes within a second):
  {exe} --config {cfg} keys list
  {exe} --config {cfg} keys revoke {id}     then the first curl answers 401 revoked_key
  {exe} --config {cfg} keys create --org acme --role editor

Ctrl-C stops the demo."#,
        db = db.display(),
        id = viewer.id,
    );
    Ok(Demo {
        running,
        tries,
        text,
    })
}

pub async fn run(args: crate::cli::DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let demo = start(&args).await?;
    println!("{}", demo.text);
    crate::shutdown_signal().await;
    demo.running.shutdown().await;
    Ok(())
}
