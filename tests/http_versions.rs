//! HTTP versions across the proxy (RFC 9110 §6.2; issue 17 item 1): keygate answers in its
//! own version, whatever the upstream's. An HTTP/1.0 upstream (Python's `http.server`, as
//! people put keygate in front of it) must not make the client's answer HTTP/1.0 nor close
//! the client's keep-alive connection.

mod support;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

/// `python3 -m http.server` on a free port of 127.0.0.1, serving `dir`; killed on drop.
struct PythonServer {
    child: Child,
    port: u16,
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn python_http_server(dir: &std::path::Path) -> PythonServer {
    for _ in 0..5 {
        let port = support::redis::free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let mut server = PythonServer { child, port };
        let up = eventually(Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        if up && server.child.try_wait().ok().flatten().is_none() {
            return server;
        }
        drop(server);
    }
    panic!("python3 -m http.server did not start");
}

#[tokio::test]
async fn an_http_1_0_upstream_gets_an_http_1_1_answer_on_a_kept_connection() {
    let files = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(files.path().join("files")).expect("mkdir");
    std::fs::write(files.path().join("files/hello.txt"), "hello from 1.0\n").expect("write");
    let py = python_http_server(files.path()).await;
    let port = py.port;
    let gw = TestGateway::start_with(move |y| {
        y.replace(
            "upstreams:\n",
            &format!("upstreams:\n  py: {{ targets: [\"http://127.0.0.1:{port}\"] }}\n"),
        )
        .replace("routes:\n", "routes:\n  - { path: /files, upstream: py }\n")
    })
    .await;
    let (_, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);

    // The upstream really answers HTTP/1.0 (and closes): what keygate turns around.
    let raw = raw_exchange(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        b"GET /files/hello.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(
        raw.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );

    // Three requests on one client connection: each answered HTTP/1.1, none closing it.
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let mut client = h1_client::<_, Empty<Bytes>>(tcp).await;
    for i in 0..3 {
        let req = Request::get("/files/hello.txt")
            .header("host", "keygate")
            .header("authorization", bearer(&key))
            .body(Empty::new())
            .expect("request");
        client
            .ready()
            .await
            .unwrap_or_else(|e| panic!("request {i}: connection closed: {e}"));
        let resp = client.send_request(req).await.expect("answer");
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.version(), Version::HTTP_11, "request {i}");
        let connection = resp
            .headers()
            .get("connection")
            .map(|v| v.to_str().unwrap_or("").to_ascii_lowercase());
        assert_ne!(connection.as_deref(), Some("close"), "request {i}");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"hello from 1.0\n", "request {i}");
    }
    gw.stop().await;
}

/// An HTTP/1.0 client is still answered in HTTP/1.0 (hyper's part), its body delimited.
#[tokio::test]
async fn an_http_1_0_client_is_answered_in_http_1_0() {
    let gw = TestGateway::start().await;
    let (_, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let req =
        format!("GET /v1/models HTTP/1.0\r\nHost: keygate\r\nAuthorization: Bearer {key}\r\n\r\n");
    let raw = tokio::time::timeout(
        Duration::from_secs(10),
        raw_exchange(gw.addr, req.as_bytes()),
    )
    .await
    .expect("the answer, and the connection closed");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(text.contains("\"path\": \"/v1/models\""), "{text}");
    gw.stop().await;
}
