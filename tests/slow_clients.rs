//! The header-read timeout (`server.header_read_timeout`): a client that sends its request
//! head too slowly (or only part of an HTTP/2 preface, or no request at all), or keeps an
//! idle keep-alive connection open, is closed; a client that keeps sending requests is not,
//! however long it stays.
mod support;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn gateway_with_header_timeout() -> TestGateway {
    TestGateway::start_with(|y| format!("{y}server: {{ header_read_timeout: 1s }}\n")).await
}

/// Reads until the server closes the connection: `Some(bytes read)`, or `None` if it is
/// still open after 10 s (a guard against hangs, far above the 1 s timeout under test).
async fn read_until_closed(tcp: &mut TcpStream) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| out)
}

/// Whether the connection is still open, nothing read, after `wait` (well under the
/// timeout): a timer that fired at once would have closed it.
async fn still_open_after(tcp: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    tokio::time::timeout(wait, tcp.read(&mut buf))
        .await
        .is_err()
}

/// Checks that the server keeps the connection open a while (well under the 1 s timeout),
/// then closes it; returns what it sent before closing.
async fn closed_in_time(tcp: &mut TcpStream) -> Vec<u8> {
    assert!(
        still_open_after(tcp, Duration::from_millis(300)).await,
        "not closed before its time"
    );
    read_until_closed(tcp)
        .await
        .expect("the connection is closed after the header-read timeout")
}

/// Sends one GET on `tcp` and reads its whole answer (the test upstream's answers carry a
/// Content-Length); returns the status line.
async fn exchange(tcp: &mut TcpStream) -> String {
    tcp.write_all(b"GET /public HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "closed mid-answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .expect("content-length")
                .trim()
                .parse()
                .expect("length");
            if body.len() >= len {
                return head.lines().next().unwrap_or_default().to_owned();
            }
        }
    }
}

#[tokio::test]
async fn a_head_sent_too_slowly_ends_the_connection() {
    let gw = gateway_with_header_timeout().await;
    let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
    // Half a head, then nothing.
    tcp.write_all(b"GET /public HTTP/1.1\r\nHost: test\r\n")
        .await
        .expect("write");
    let read = closed_in_time(&mut tcp).await;
    assert!(
        !String::from_utf8_lossy(&read).contains(" 200 "),
        "an unfinished head is never answered 200: {:?}",
        String::from_utf8_lossy(&read)
    );
    gw.stop().await;
}

/// What comes before the protocol is known: hyper-util reads the first bytes to tell an
/// HTTP/2 preface from HTTP/1 and has no timer of its own for that.
#[tokio::test]
async fn a_partial_http2_preface_ends_the_connection() {
    let gw = gateway_with_header_timeout().await;
    let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
    tcp.write_all(b"PRI * HT").await.expect("write");
    assert_eq!(closed_in_time(&mut tcp).await, b"", "nothing answered");
    gw.stop().await;
}

#[tokio::test]
async fn an_http2_connection_that_sends_no_request_is_closed() {
    let gw = gateway_with_header_timeout().await;
    let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
    // The whole preface, then nothing (not even SETTINGS).
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("write");
    assert!(
        read_until_closed(&mut tcp).await.is_some(),
        "the connection is closed when no request starts in time"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let gw = gateway_with_header_timeout().await;
    let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
    assert_eq!(exchange(&mut tcp).await, "HTTP/1.1 200 OK");
    // Then silence: the next head never comes.
    assert_eq!(closed_in_time(&mut tcp).await, b"", "nothing more sent");
    gw.stop().await;
}

#[tokio::test]
async fn a_busy_keep_alive_connection_outlives_the_timeout() {
    let gw = gateway_with_header_timeout().await;
    let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
    // Twelve requests 250 ms apart: three seconds on one connection, three times the
    // timeout, but no head ever waited for longer than a quarter of it.
    for i in 0..12 {
        assert_eq!(exchange(&mut tcp).await, "HTTP/1.1 200 OK", "request {i}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        exchange(&mut tcp).await,
        "HTTP/1.1 200 OK",
        "the last request"
    );
    gw.stop().await;
}
