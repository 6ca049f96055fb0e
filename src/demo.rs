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

pub async fn run(args: crate::cli::DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
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
    let (viewer, viewer_secret) = svc
        .create(
            NewKey {
                org: "acme".into(),
                workspaces: vec!["team-a".into()],
                name: Some("demo-viewer".into()),
                roles: vec!["viewer".into()],
                ..NewKey::default()
            },
            "demo",
        )
        .await?;

    let running = app.start().await?;
    let admin_base = format!("http://{}", running.admin_addr());
    let base = format!("http://{}", running.addr());
    let key = viewer_secret.expose();
    let exe = std::env::args().next().unwrap_or_else(|| "keygate".into());
    let cfg = config_path.display();
    println!(
        r#"keygate demo: gateway on {base}, echo upstream on http://{upstream}
config {cfg}, key store {db}

Demo key {id} (org acme, workspace team-a, role viewer = models:read):
  {key}
(The secret is shown once: keygate keeps only its sha256.)

Try, from another terminal:
  curl -s {base}/v1/models -H 'Authorization: Bearer {key}'
      200: the echo shows what the upstream received: x-keygate-key-id, -org, -workspace, -permissions ... and no Authorization
  curl -si {base}/v1/models
      401 missing_key
  curl -si {base}/v1/models -H 'Authorization: Bearer kg_thisisnotarealkey'
      401 malformed_key (checksum; no store lookup)
  curl -si -X POST {base}/v1/models -H 'Authorization: Bearer {key}'
      403 insufficient_permissions (POST needs models:write)
  curl -si {base}/v1/workspaces/team-b/models -H 'Authorization: Bearer {key}'
      403 workspace_not_allowed (team-a works)
  curl -s {base}/health -H 'X-Keygate-Org: spoofed'
      200 auth: none route; the spoofed identity header is gone

Admin API on {admin_base} with the demo admin token (valid for this run):
  curl -s {admin_base}/v1/keys -H 'Authorization: Bearer {token}'
  curl -s -X POST {admin_base}/v1/keys -H 'Authorization: Bearer {token}' -d '{{"org":"acme","roles":["editor"]}}'
  curl -s {admin_base}/metrics

Manage keys while it runs (the gateway sees changes within a second):
  {exe} --config {cfg} keys list
  {exe} --config {cfg} keys revoke {id}     then the first curl says 401 revoked_key
  {exe} --config {cfg} keys create --org acme --role editor

Ctrl-C stops the demo."#,
        db = db.display(),
        id = viewer.id,
    );
    crate::shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}
