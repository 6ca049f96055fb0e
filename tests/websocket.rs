//! Protocol upgrades pass through: the handshake is authenticated like any request, the
//! 101 comes back with its Upgrade headers, and bytes then flow both ways.
mod support;
use support::*;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that switches to an "echo" protocol and echoes every byte.
async fn start_upgrade_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|mut req: Request<Incoming>| async move {
                    let upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(up) = upgrade.await {
                            let mut io = TokioIo::new(up);
                            let mut buf = [0u8; 1024];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    });
                    let resp = Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header("connection", "upgrade")
                        .header("upgrade", "echo")
                        .body(Empty::<Bytes>::new())
                        .expect("response");
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).await.expect("read head");
        assert!(
            n > 0,
            "connection closed before the response head ended: {head:?}"
        );
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn an_upgrade_is_spliced_after_auth() {
    let up = start_upgrade_upstream().await;
    let gw =
        TestGateway::start_with(|y| y.replace("http://127.0.0.1:1", &format!("http://{up}"))).await;
    let (_, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);

    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    let req = format!(
        "GET /dead/ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: echo\r\nAuthorization: Bearer {key}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let head = read_head(&mut s).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    s.write_all(b"ping through keygate").await.expect("write");
    let mut buf = [0u8; 20];
    s.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"ping through keygate");
    gw.stop().await;
}

#[tokio::test]
async fn an_upgrade_without_a_key_is_refused() {
    let up = start_upgrade_upstream().await;
    let gw =
        TestGateway::start_with(|y| y.replace("http://127.0.0.1:1", &format!("http://{up}"))).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(
        b"GET /dead/ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .expect("write");
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    gw.stop().await;
}
