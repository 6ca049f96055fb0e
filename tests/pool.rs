//! Keep-alive to upstreams (`src/proxy/pool.rs`): one connection serves request after
//! request (bodies read whole or in pieces), an upstream that drops its idle connections
//! costs no failed request, and one that breaks off a body is neither reused nor believed.
//! The upstream here is a raw TCP server that counts the connections it accepts.

mod support;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers every request with `200 ok` (content-length 2); with `close_each`, closes the
/// connection after each answer without saying so (as an upstream dropping idle
/// keep-alive connections does). Returns its address and its count of connections.
async fn raw_upstream(close_each: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request head (GETs: no body).
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .expect("a head");
                    let head: Vec<u8> = buf.drain(..end + 4).collect();
                    let path = |p: &[u8]| head.windows(p.len()).any(|w| w == p);
                    // `/v1/chunked`: `ok!!!` in two chunks, written apart, so the gateway
                    // reads the body in pieces.
                    if path(b"/v1/chunked") {
                        let first =
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n";
                        if tcp.write_all(first).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        if tcp.write_all(b"3\r\n!!!\r\n0\r\n\r\n").await.is_err() {
                            return;
                        }
                        continue;
                    }
                    // `/v1/cut`: promises 100 bytes, sends 10 and closes the connection.
                    if path(b"/v1/cut") {
                        let _ = tcp
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                            .await;
                        return;
                    }
                    // HEAD: the length, no body; `/v1/empty`: 204; else 200 `ok`.
                    let answer: &[u8] = if head.starts_with(b"HEAD ") {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
                    } else if path(b"/v1/empty") {
                        b"HTTP/1.1 204 No Content\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                    };
                    if tcp.write_all(answer).await.is_err() {
                        return;
                    }
                    if close_each {
                        let _ = tcp.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

async fn gateway_in_front_of(upstream: std::net::SocketAddr) -> TestGateway {
    TestGateway::start_with(move |yaml| {
        yaml.lines()
            .map(|l| {
                if l.trim_start().starts_with("api:") {
                    format!("  api: {{ targets: [\"http://{upstream}\"], connect_timeout: 1s, timeout: 2s }}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upstream_connection_serves_request_after_request() {
    let (upstream, accepted) = raw_upstream(false).await;
    let gw = gateway_in_front_of(upstream).await;
    let (_, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    for i in 0..20 {
        let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(&r.body[..], b"ok");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "sequential requests reuse the pooled connection"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_read_in_pieces_gives_its_connection_back_at_its_end() {
    let (upstream, accepted) = raw_upstream(false).await;
    let gw = gateway_in_front_of(upstream).await;
    let (_, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    for i in 0..5 {
        let r = get(&gw.url("/v1/chunked"), &[("authorization", &bearer(&key))]).await;
        assert_eq!(
            (r.status.as_u16(), &r.body[..]),
            (200, &b"ok!!!"[..]),
            "{i}"
        );
        let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
        assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"ok"[..]), "{i}");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "a chunked body that ends after its head gives the connection back for the next"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_cut_off_mid_body_is_not_passed_off_as_complete() {
    use http_body_util::{BodyExt, Empty};
    let (upstream, accepted) = raw_upstream(false).await;
    let gw = gateway_in_front_of(upstream).await;
    let (_, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);

    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let mut sender = h1_client(tcp).await;
    let req = http::Request::builder()
        .uri("/v1/cut")
        .header("host", gw.addr.to_string())
        .header("authorization", bearer(&key))
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    // The client gets an error: its connection is closed, before the head or in the body
    // (here the head is still in keygate's write buffer when the body breaks). Never a
    // complete answer, and never a wait for the 90 bytes that will not come. The timeout
    // is a guard against a hang, not a timing check.
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let resp = sender.send_request(req).await?;
        resp.into_body().collect().await.map(|b| b.to_bytes())
    })
    .await
    .expect("the gateway ends the client's connection when the upstream's body breaks");
    assert!(
        outcome.is_err(),
        "a cut body must not arrive as a complete one: {outcome:?}"
    );

    // The broken connection is not reused: the next request gets a new one and its answer.
    let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"ok"[..]));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_without_a_body_free_their_connection_too() {
    let (upstream, accepted) = raw_upstream(false).await;
    let gw = gateway_in_front_of(upstream).await;
    let (_, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    for i in 0..5 {
        let head = key_verdict(&gw, http::Method::HEAD, "/v1/models", &key).await;
        assert_eq!(head.0, 200, "HEAD {i}");
        let empty = key_verdict(&gw, http::Method::GET, "/v1/empty", &key).await;
        assert_eq!(empty.0, 204, "204 {i}");
        let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
        assert_eq!(
            (r.status.as_u16(), &r.body[..]),
            (200, &b"ok"[..]),
            "GET {i}"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "HEAD and 204 answers give their connection back at once"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_drops_idle_connections_costs_no_failed_request() {
    let (upstream, accepted) = raw_upstream(true).await;
    let gw = gateway_in_front_of(upstream).await;
    let (_, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    for i in 0..20 {
        let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
        assert_eq!(
            r.status,
            200,
            "request {i}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        20,
        "one connection per request"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_a_connection_and_all_come_back() {
    let (upstream, accepted) = raw_upstream(false).await;
    let gw = Arc::new(gateway_in_front_of(upstream).await);
    let (_, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    for _round in 0..3 {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (gw, key) = (gw.clone(), key.clone());
            tasks.spawn(async move {
                get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))])
                    .await
                    .status
            });
        }
        while let Some(status) = tasks.join_next().await {
            assert_eq!(status.expect("task"), 200);
        }
    }
    // Never more connections than requests in flight at once, so later rounds reused
    // what earlier rounds opened.
    let n = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=8).contains(&n),
        "{n} connections for 8 concurrent requests"
    );
    match Arc::try_unwrap(gw) {
        Ok(gw) => gw.stop().await,
        Err(_) => panic!("every task has finished"),
    }
}

/// An upstream that answers `200 ok` as soon as it has a request head and then reads
/// (and drops) whatever else comes on that connection: it answers an upload before the
/// upload is over, as many servers do for errors.
async fn early_answering_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if tcp.write_all(answer).await.is_err() {
                    return;
                }
                while let Ok(n) = tcp.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_waits_behind_an_upload_the_upstream_already_answered() {
    use http_body_util::BodyExt;
    let upstream = early_answering_upstream().await;
    let gw = gateway_in_front_of(upstream).await;
    let (_, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);

    // An upload that sends one chunk and then stalls (its sender stays alive).
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let mut client = h1_client(tcp).await;
    let (body_tx, body_rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
    body_tx
        .send(bytes::Bytes::from_static(b"first part"))
        .await
        .expect("first chunk");
    let req = http::Request::post("/v1/upload")
        .header("host", "gateway")
        .header("authorization", bearer(&key))
        .body(ChannelBody(body_rx))
        .expect("request");
    let resp = client.send_request(req).await.expect("upload answered");
    assert_eq!(resp.status(), 200);
    let got = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&got[..], b"ok");

    // The upstream connection still carries the stalled upload: the next request must
    // not wait behind it (it would get a 504 after the upstream timeout of 2 s).
    let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    drop(body_tx);
    gw.stop().await;
}
