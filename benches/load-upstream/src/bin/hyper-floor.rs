//! `hyper-floor`, a peer of benches/load: the least proxy that hyper can be.
//!
//! A hyper HTTP/1 server in which every client connection gets its own hyper HTTP/1 client
//! connection to the upstream, opened on accept. Each request is sent on as it came: no
//! routing, no auth, no header rewrite, no pool, no timeout, no metrics. The upstream's
//! response, body included, goes back as it came. One thread and mimalloc, as keygate
//! runs with one worker. What keygate spends above this is keygate's own work; what this
//! spends above nginx is the price of hyper on both sides.
//!
//! Usage: hyper-floor UPSTREAM ADDR   (both ip:port)
use std::net::SocketAddr;

use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn connection(stream: TcpStream, upstream: SocketAddr) {
    let up = match TcpStream::connect(upstream).await {
        Ok(up) => up,
        Err(e) => return eprintln!("upstream connect: {e}"),
    };
    let _ = up.set_nodelay(true);
    let (sender, conn) = match client::handshake(TokioIo::new(up)).await {
        Ok(h) => h,
        Err(e) => return eprintln!("upstream handshake: {e}"),
    };
    tokio::spawn(conn);
    // The server connection hands over one request at a time, so the lock is never
    // contended; it is held while the request is queued, not while it runs.
    let sender = std::sync::Arc::new(std::sync::Mutex::new(sender));
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        match sender.lock() {
            Ok(mut s) => s.send_request(req),
            Err(poisoned) => poisoned.into_inner().send_request(req),
        }
    });
    let _ = server::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addrs: Vec<SocketAddr> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let [upstream, addr] = addrs[..] else {
        eprintln!("usage: hyper-floor UPSTREAM ADDR (both ip:port)");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        eprintln!("hyper-floor on http://{addr} -> http://{upstream}");
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, upstream));
                }
                Err(e) => eprintln!("accept error: {e}"),
            }
        }
    })
}
