//! The forwarding side (SPEC §2 step 4, §2's 502/504 rows, §6): upstream failures,
//! streaming both ways, large bodies, head-size limits, HTTP/2 and hostile bytes.

mod support;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use std::time::Duration;
use support::*;

/// Guard against hangs (a failing test must fail, not stall the suite); never a
/// measure of speed.
const HANG: Duration = Duration::from_secs(10);

#[tokio::test]
async fn unreachable_upstream_is_502() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let r = get(&gw.url("/dead/x"), &[("authorization", &bearer(&key))]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.code(), "upstream_unavailable");
    assert!(r.json()["error"]["message"].is_string());
    assert!(r.headers.contains_key("x-request-id"));
    // The message names no internals (the target address).
    assert!(!String::from_utf8_lossy(&r.body).contains("127.0.0.1:1"));
    // Credentials are checked first: no key, no upstream attempt.
    let r = get(&gw.url("/dead/x"), &[]).await;
    assert_eq!(r.code(), "missing_key");
    gw.stop().await;
}

/// Over HTTP/2 a request runs in a task of its own, so its limit cannot share its
/// connection's timer as over HTTP/1 (src/server/timer.rs): it still ends in 504.
#[tokio::test]
async fn slow_upstream_is_504_over_http2_too() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let r = send_h2(
        Method::GET,
        &gw.url("/slow"),
        &[("authorization", &bearer(&key))],
    )
    .await;
    assert_eq!(r.status, 504);
    assert_eq!(r.code(), "upstream_timeout");
    let r = send_h2(
        Method::GET,
        &gw.url("/v1/models"),
        &[("authorization", &bearer(&key))],
    )
    .await;
    assert_eq!(r.status, 200);
    gw.stop().await;
}

/// Sends `req` as it is and returns the answer as text, once the connection closes.
async fn raw_answer(gw: &TestGateway, req: &str) -> String {
    let answer = tokio::time::timeout(HANG, raw_exchange(gw.addr, req.as_bytes()))
        .await
        .expect("an answer, then the connection closed");
    String::from_utf8_lossy(&answer).into_owned()
}

/// A malformed request body is the client's fault: 400 `bad_body`, not a 502 blamed on
/// the upstream. `/slow` answers after 3 s, so the body fails first.
#[tokio::test]
async fn a_malformed_request_body_is_400_not_an_upstream_failure() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let req = format!(
        "POST /slow HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        bearer(&key)
    );
    let answer = raw_answer(&gw, &req).await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains(r#""code":"bad_body""#), "{answer}");
    assert!(!answer.contains(&key), "the key is never echoed");
    gw.stop().await;
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let r = get(&gw.url("/slow"), &[("authorization", &bearer(&key))]).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.code(), "upstream_timeout");
    assert!(r.headers.contains_key("x-request-id"));
    // The gateway still serves after a timed-out request.
    let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
    assert_eq!(r.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn streamed_response_arrives_chunk_by_chunk() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);

    let resp = open_stream(&gw, &key).await;
    assert!(resp.headers().contains_key("x-request-id"));
    let mut body = resp.into_body();

    // Each chunk is released only after the previous one reached the client: a gateway
    // that buffered the body would never hand over chunk-0 and the read would hang.
    for i in 0..3 {
        gw.upstream.release.send(()).await.expect("release");
        let mut got = String::new();
        // One chunk may in principle be split across frames; read until it is whole.
        while !got.ends_with('\n') {
            let frame = tokio::time::timeout(HANG, body.frame())
                .await
                .unwrap_or_else(|_| panic!("chunk-{i} not received after its release"))
                .expect("a frame")
                .expect("frame ok");
            got.push_str(&frame_text(&frame));
        }
        assert_eq!(got, format!("chunk-{i}\n"));
    }
    // After three chunks the upstream ends the body.
    let end = tokio::time::timeout(HANG, async {
        loop {
            match body.frame().await {
                None => return Ok(()),
                Some(Ok(f)) if f.is_data() && frame_text(&f).is_empty() => continue,
                Some(Ok(f)) if !f.is_data() => continue,
                Some(Ok(f)) => return Err(format!("unexpected data {:?}", frame_text(&f))),
                Some(Err(e)) => return Err(e.to_string()),
            }
        }
    })
    .await
    .expect("body ends");
    assert_eq!(end, Ok(()));
    gw.stop().await;
}

#[tokio::test]
async fn large_request_body_is_forwarded_intact() {
    let sink = start_sink().await;
    let gw = TestGateway::start_with(|y| {
        y.replace(
            "upstreams:\n",
            &format!(
                "upstreams:\n  sink: {{ targets: [\"http://{sink}\"], connect_timeout: 1s, timeout: 30s }}\n"
            ),
        )
        .replace(
            "routes:\n",
            "routes:\n  - { path: /upload, upstream: sink }\n",
        )
    })
    .await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let body: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let want = sha256_hex(&body);
    let r = send_body(
        Method::POST,
        &gw.url("/upload"),
        &[("authorization", &bearer(&key))],
        Bytes::from(body),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["len"], 8_388_608);
    assert_eq!(v["content_length"], "8388608");
    assert_eq!(v["sha256"], want.as_str());
    gw.stop().await;
}

/// A gateway whose `/upload` goes to an upstream that reads the whole body before it
/// answers, with a 1 s limit on the wait for its response head.
async fn upload_gateway() -> TestGateway {
    let sink = start_sink().await;
    TestGateway::start_with(|y| {
        y.replace(
            "upstreams:\n",
            &format!(
                "upstreams:\n  sink: {{ targets: [\"http://{sink}\"], connect_timeout: 1s, timeout: 1s }}\n"
            ),
        )
        .replace(
            "routes:\n",
            "routes:\n  - { path: /upload, upstream: sink }\n",
        )
    })
    .await
}

/// Sends a POST head with `Content-Length: len`, then `pieces` pieces of 1,000 bytes of
/// the body, one every 300 ms, and returns what comes back until the connection closes.
async fn slow_upload(gw: &TestGateway, key: &str, len: usize, pieces: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
        bearer(key)
    );
    tcp.write_all(head.as_bytes()).await.expect("head");
    for _ in 0..pieces {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tcp.write_all(&[7u8; 1000]).await.expect("piece");
    }
    let mut out = Vec::new();
    tokio::time::timeout(HANG, tcp.read_to_end(&mut out))
        .await
        .expect("an answer, then the connection closed")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// The upstream's limit (1 s here) bounds the wait for its answer after the body, not the
/// upload: a body that takes 2.4 s to arrive, a piece at a time, still gets through.
#[tokio::test]
async fn an_upload_longer_than_the_upstream_limit_gets_through() {
    let gw = upload_gateway().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let answer = slow_upload(&gw, &key, 8000, 8).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.contains(r#""len":8000"#), "{answer}");
    gw.stop().await;
}

/// A chunked body on a GET reaches the upstream (hyper's client sends none for GET unless
/// told to): nothing the client sent is dropped on the way.
#[tokio::test]
async fn a_chunked_body_on_a_get_is_forwarded() {
    let gw = upload_gateway().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let req = format!(
        "GET /upload HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        bearer(&key)
    );
    let answer = raw_answer(&gw, &req).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.contains(r#""len":5"#), "{answer}");
    assert!(answer.contains(&sha256_hex(b"hello")), "{answer}");
    gw.stop().await;
}

/// An upload that stops coming ends the wait as well: 504 after the limit, not a hang.
#[tokio::test]
async fn a_stalled_upload_ends_in_504() {
    let gw = upload_gateway().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let answer = slow_upload(&gw, &key, 8000, 1).await;
    assert!(answer.starts_with("HTTP/1.1 504 "), "{answer}");
    assert!(answer.contains(r#""code":"upstream_timeout""#), "{answer}");
    gw.stop().await;
}

fn status_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.lines().next().unwrap_or("").to_owned()
}

#[tokio::test]
async fn oversized_request_head_is_431() {
    let gw = TestGateway::start().await;
    let big = "a".repeat(40 * 1024);
    let req = format!(
        "GET /public HTTP/1.1\r\nHost: {}\r\nX-Big: {big}\r\nConnection: close\r\n\r\n",
        gw.addr
    );
    let raw = raw_exchange(gw.addr, req.as_bytes()).await;
    let line = status_line(&raw);
    assert!(line.starts_with("HTTP/1.1 431"), "got {line:?}");

    // A head just under the cap is served.
    let fits = "a".repeat(20 * 1024);
    let r = get(&gw.url("/public"), &[("x-big", &fits)]).await;
    assert_eq!(r.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn ten_kb_key_is_malformed_not_431() {
    let gw = TestGateway::start().await;
    let key = format!("kg_{}", "A".repeat(10 * 1024));
    let before = gw.gateway.cache().lookups();
    let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "malformed_key");
    let r = get(&gw.url("/v1/models"), &[("x-api-key", &key)]).await;
    assert_eq!(r.code(), "malformed_key");
    assert_eq!(gw.gateway.cache().lookups(), before);
    gw.stop().await;
}

#[tokio::test]
async fn http2_prior_knowledge() {
    let gw = TestGateway::start().await;
    let (id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let r = send_h2(
        Method::GET,
        &gw.url("//v1/models/./7?a=1"),
        &[("authorization", &bearer(&key)), ("x-keygate-org", "evil")],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let h = r.upstream_headers();
    assert_eq!(h["x-keygate-key-id"], id.as_str());
    assert_eq!(h["x-keygate-org"], "acme");
    assert!(!h.contains_key("authorization"));
    assert_eq!(h["x-forwarded-host"], gw.addr.to_string().as_str());
    assert_eq!(r.json()["path"], "/v1/models/7");
    assert_eq!(r.json()["query"], "a=1");
    assert!(r.headers.contains_key("x-request-id"));

    let r = send_h2(Method::GET, &gw.url("/v1/models"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "missing_key");
    gw.stop().await;
}

#[tokio::test]
async fn garbage_on_the_socket_does_not_hurt() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);

    let mut noise = vec![0u8; 64 * 1024];
    getrandom::getrandom(&mut noise).expect("random bytes");
    let garbage: Vec<Vec<u8>> = vec![
        noise.clone(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), // a TLS ClientHello start
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        b"\r\n\r\n\r\n\0\0\0".to_vec(),
    ];
    for g in &garbage {
        let answer = raw_exchange(gw.addr, g).await;
        // Whatever came back, it is no success.
        assert!(
            !status_line(&answer).contains(" 200 "),
            "{:?}",
            status_line(&answer)
        );
    }
    // Several at once, left open.
    let mut open = Vec::new();
    for _ in 0..8 {
        let mut tcp = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        use tokio::io::AsyncWriteExt;
        let _ = tcp.write_all(&noise[..1024]).await;
        open.push(tcp);
    }
    let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
    assert_eq!(r.status, 200);
    drop(open);
    let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
    assert_eq!(r.status, 200);
    gw.stop().await;
}

/// A gateway whose `api` upstream gives up on a response body after `idle` of silence.
async fn gateway_with_idle_timeout(idle: &str) -> TestGateway {
    let idle = idle.to_owned();
    TestGateway::start_with(move |yaml| {
        yaml.replace(
            "  api: { targets: [",
            &format!("  api: {{ idle_timeout: {idle}, targets: ["),
        )
    })
    .await
}

/// Sends GET /stream and returns the response: its head comes before any chunk is
/// released (a gateway that buffered the body would not hand it over).
async fn open_stream(gw: &TestGateway, key: &str) -> hyper::Response<Incoming> {
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let mut sender = h1_client(tcp).await;
    let req = Request::builder()
        .uri("/stream")
        .header("host", gw.addr.to_string())
        .header("authorization", bearer(key))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = tokio::time::timeout(HANG, sender.send_request(req))
        .await
        .expect("response head before any chunk is released")
        .expect("response");
    assert_eq!(resp.status(), 200);
    resp
}

/// The next data frame's text (a guard against a hang, not a timing check).
async fn next_text(body: &mut Incoming) -> Result<String, String> {
    loop {
        match tokio::time::timeout(HANG, body.frame()).await {
            Err(_) => return Err("no frame and no end".into()),
            Ok(None) => return Err("end of body".into()),
            Ok(Some(Err(e))) => return Err(format!("body error: {e}")),
            Ok(Some(Ok(f))) if f.is_data() && !frame_text(&f).is_empty() => {
                return Ok(frame_text(&f))
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

#[tokio::test]
async fn a_body_the_upstream_stops_sending_ends_after_idle_timeout() {
    let gw = gateway_with_idle_timeout("300ms").await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let mut body = open_stream(&gw, &key).await.into_body();
    gw.upstream.release.send(()).await.expect("release");
    assert_eq!(next_text(&mut body).await, Ok("chunk-0\n".to_owned()));
    // No more releases: the upstream goes quiet. The client's body breaks off (its
    // connection is closed) instead of hanging on for ever.
    let rest = next_text(&mut body).await;
    assert!(
        rest.as_ref().is_err_and(|e| e.starts_with("body error")),
        "{rest:?}"
    );
    // The gateway still serves.
    let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
    assert_eq!(r.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn a_body_that_keeps_coming_outlives_idle_timeout() {
    // Chunks 500 ms apart against an idle timeout of 800 ms: the whole stream (1 s) is
    // longer than the timeout, each silence shorter. Each chunk moves the deadline on.
    let gw = gateway_with_idle_timeout("800ms").await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let mut body = open_stream(&gw, &key).await.into_body();
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        gw.upstream.release.send(()).await.expect("release");
        assert_eq!(next_text(&mut body).await, Ok(format!("chunk-{i}\n")));
    }
    gw.stop().await;
}
