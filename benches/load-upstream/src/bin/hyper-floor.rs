//! `hyper-floor`, a peer of benches/load: the least proxy that hyper can be.
//!
//! A hyper HTTP/1 server in which every client connection gets its own hyper HTTP/1 client
//! connection to the upstream, opened on accept. Each request is sent on as it came: no
//! routing, no auth, no header rewrite, no pool, no timeout, no metrics. The upstream's
//! response, body included, goes back as it came. One thread and mimalloc, as keygate
//! runs with one worker. What keygate spends above this is keygate's own work; what this
//! spends above nginx is the price of hyper on both sides.
//!
//! Usage: hyper-floor UPSTREAM ADDR [pool]   (both ip:port)
//!
//! With `pool`, client connections share upstream connections instead: a request takes the
//! last one put back (a stack, as keygate's pool) or opens one, and puts it back when its
//! answer's body has been sent. Only the pairing changes; what that costs is the price of
//! a shared pool.
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

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

type Pool = Arc<Mutex<Vec<client::SendRequest<hyper::body::Incoming>>>>;

/// The answer's body; puts its connection back on the stack when dropped (hyper drops it
/// once it has sent the body).
struct Back {
    body: hyper::body::Incoming,
    conn: Option<client::SendRequest<hyper::body::Incoming>>,
    pool: Pool,
}

impl Drop for Back {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            if let Ok(mut p) = self.pool.lock() {
                p.push(c);
            }
        }
    }
}

impl hyper::body::Body for Back {
    type Data = bytes::Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

async fn pooled(
    req: Request<hyper::body::Incoming>,
    pool: Pool,
    upstream: SocketAddr,
) -> Result<hyper::Response<Back>, Box<dyn std::error::Error + Send + Sync>> {
    let taken = pool.lock().ok().and_then(|mut p| p.pop());
    let mut conn = match taken {
        Some(c) => c,
        None => {
            let up = TcpStream::connect(upstream).await?;
            let _ = up.set_nodelay(true);
            let (sender, conn) = client::handshake(TokioIo::new(up)).await?;
            tokio::spawn(conn);
            sender
        }
    };
    let resp = conn.send_request(req).await?;
    Ok(resp.map(|body| Back {
        body,
        conn: Some(conn),
        pool,
    }))
}

async fn pooled_connection(stream: TcpStream, upstream: SocketAddr, pool: Pool) {
    let svc = service_fn(move |req| pooled(req, pool.clone(), upstream));
    let _ = server::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pool: Option<Pool> = (args.get(2).map(String::as_str) == Some("pool")).then(Pool::default);
    let addrs: Vec<SocketAddr> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let [upstream, addr] = addrs[..] else {
        eprintln!("usage: hyper-floor UPSTREAM ADDR [pool] (both ip:port)");
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
                    match &pool {
                        Some(p) => tokio::spawn(pooled_connection(stream, upstream, p.clone())),
                        None => tokio::spawn(connection(stream, upstream)),
                    };
                }
                Err(e) => eprintln!("accept error: {e}"),
            }
        }
    })
}
