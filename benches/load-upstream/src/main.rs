//! The upstream of `benches/load`: hyper 1.x, HTTP/1.1 keep-alive, and every request
//! answered 200 with the same 100-byte body, so a benchmark measures the proxy in front
//! of it, not the upstream. (Adapted from the shared bench harness's upstream.)
//!
//! Usage: keygate-load-upstream [ADDR] [THREADS]
//!   ADDR defaults to 127.0.0.1:19280, THREADS to 1 (1 = tokio current_thread runtime).
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Exactly 100 bytes (the array type checks the length at compile time).
const BODY: &[u8; 100] =
    b"{\"ok\":true,\"service\":\"keygate-load-upstream\",\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\n";

async fn handle(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(BODY)))
        .expect("static response"))
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!("keygate-load-upstream listening on http://{addr}");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept error: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let io = TokioIo::new(stream);
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(io, service_fn(handle))
                .await;
        });
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:19280".into())
        .parse()
        .expect("ADDR must be ip:port");
    let threads: usize = args
        .next()
        .map(|t| t.parse().expect("THREADS must be a number"))
        .unwrap_or(1);
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(serve(addr))
}
