//! TLS on both sides. The listener (`tls: { cert, key }`): a client that trusts the
//! certificate's CA gets its answer over HTTPS, the upstream is told
//! `X-Forwarded-Proto: https`, and plain HTTP (or garbage) on the TLS port ends that
//! connection only. An https upstream with a private CA (`ca:`): reached, its connection
//! kept alive; without `ca` (the public roots) its certificate is refused: 502.
//! The certificates are made per test with `openssl` (installed by `scripts/test`).

mod support;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::certs::make_certificates;
use support::*;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A client config that trusts only the test CA, speaking HTTP/1.1.
fn client_config(dir: &Path) -> Arc<ClientConfig> {
    let pem = std::fs::read(dir.join("ca.crt")).expect("read ca.crt");
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.expect("ca.crt parses")).expect("add the CA");
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// GET `path` with `key` over HTTPS; the status and the body.
async fn https_get(
    gw: &TestGateway,
    tls: &Arc<ClientConfig>,
    path: &str,
    key: &str,
) -> (u16, Bytes) {
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let stream = TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .expect("the TLS handshake succeeds with a client that trusts the CA");
    let mut sender = h1_client(stream).await;
    let req = http::Request::builder()
        .uri(path)
        .header("host", format!("127.0.0.1:{}", gw.addr.port()))
        .header("authorization", bearer(key))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

async fn tls_gateway(dir: &Path) -> TestGateway {
    let (cert, key) = (dir.join("srv.crt"), dir.join("srv.key"));
    TestGateway::start_with(move |yaml| {
        format!(
            "{yaml}tls: {{ cert: \"{}\", key: \"{}\" }}\n",
            cert.display(),
            key.display()
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_answers_and_the_upstream_hears_https() {
    let certs = tempfile::tempdir().expect("tempdir");
    make_certificates(certs.path());
    let gw = tls_gateway(certs.path()).await;
    let (_, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let tls = client_config(certs.path());

    let (status, body) = https_get(&gw, &tls, "/v1/models", &key).await;
    assert_eq!(status, 200, "{body:?}");
    let echoed: serde_json::Value = serde_json::from_slice(&body).expect("the echo's JSON");
    let h = &echoed["headers"];
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-keygate-org"], "acme");
    assert!(h.get("authorization").is_none(), "the key is not forwarded");

    // Refusals come over TLS too.
    let (status, body) = https_get(&gw, &tls, "/v1/models", "kg_notarealkey").await;
    assert_eq!(status, 401, "{body:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_or_garbage_on_the_tls_port_ends_only_that_connection() {
    let certs = tempfile::tempdir().expect("tempdir");
    make_certificates(certs.path());
    let gw = tls_gateway(certs.path()).await;
    let (_, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);

    // Plain HTTP: not a TLS ClientHello, so the handshake fails and the connection is
    // closed without an HTTP answer (nothing in clear text comes back).
    let plain = raw_exchange(
        gw.addr,
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .await;
    assert!(
        !plain.starts_with(b"HTTP/"),
        "no clear-text answer on the TLS port: {:?}",
        String::from_utf8_lossy(&plain)
    );
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 37 % 251) as u8).collect();
    let _ = raw_exchange(gw.addr, &garbage).await;

    // A client that does not trust the CA is refused at the handshake.
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let untrusting = {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("default versions")
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth()
    };
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    assert!(TlsConnector::from(Arc::new(untrusting))
        .connect(name, tcp)
        .await
        .is_err());

    // The listener still serves.
    let (status, _) = https_get(&gw, &client_config(certs.path()), "/v1/models", &key).await;
    assert_eq!(status, 200);
    gw.stop().await;
}

/// An https upstream on 127.0.0.1 with the test CA's certificate, answering `tls ok` to
/// every request; its address and its count of accepted TLS connections.
async fn https_upstream(dir: &Path) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let cert_pem = std::fs::read(dir.join("srv.crt")).expect("srv.crt");
    let key_pem = std::fs::read(dir.join("srv.key")).expect("srv.key");
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .expect("srv.crt parses");
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .expect("srv.key parses")
        .expect("a key");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("default versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let count = count.clone();
            tokio::spawn(async move {
                // A refused handshake (the gateway without `ca`) ends here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(Bytes::from_static(b"tls ok")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_with_a_private_ca_is_reached_and_kept_alive() {
    let certs = tempfile::tempdir().expect("tempdir");
    make_certificates(certs.path());
    let (upstream, accepted) = https_upstream(certs.path()).await;
    let ca = certs.path().join("ca.crt");
    let gw = TestGateway::start_with(move |yaml| {
        yaml.lines()
            .map(|l| {
                if l.trim_start().starts_with("api:") {
                    format!(
                        "  api: {{ targets: [\"https://{upstream}\"], ca: \"{}\", connect_timeout: 1s, timeout: 2s }}\n  \
                         public: {{ targets: [\"https://{upstream}\"], connect_timeout: 1s, timeout: 2s }}",
                        ca.display()
                    )
                } else if l.trim_start().starts_with("- { path: /dead") {
                    format!("{l}\n  - {{ path: /public-roots, upstream: public }}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
    .await;
    let (_, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    for i in 0..5 {
        let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
        assert_eq!(
            (r.status.as_u16(), &r.body[..]),
            (200, &b"tls ok"[..]),
            "{i}"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one TLS connection serves request after request"
    );

    // The same upstream checked against the public roots: its certificate is not trusted.
    let r = get(
        &gw.url("/public-roots"),
        &[("authorization", &bearer(&key))],
    )
    .await;
    assert_eq!(r.status, 502);
    assert_eq!(r.code(), "upstream_unavailable");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    gw.stop().await;
}
