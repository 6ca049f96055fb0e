//! Accepting connections: TCP (optionally TLS with rustls), HTTP/1.1 and HTTP/2 (h2c or
//! ALPN) through hyper-util's auto builder, header-read timeout for slow clients, a cap
//! on request head size (431 beyond it), and a graceful drain on shutdown.

use crate::config::{ServerConfig, TlsConfig};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
pub use timer::request_deadline;
use timer::ConnTimer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

mod timer;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// A listening gateway. Dropping it does not stop it; call `shutdown`.
pub struct Running {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish for up to `drain`, then returns.
    pub async fn shutdown(self, drain: Duration) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(drain + Duration::from_secs(1), self.task).await;
    }
}

/// Ends a connection on which no request has started within `limit` of its accept.
///
/// hyper times out a slow HTTP/1 head, but nothing times out what comes before hyper knows
/// the protocol: hyper-util's auto builder reads the first bytes to tell an HTTP/2 preface
/// from an HTTP/1 request, without a timer. A client that sends `PRI * HT` and then nothing
/// would hold its connection (and a file descriptor) for good. So would an HTTP/2 client
/// that never sends a request. This runs beside the connection's task, one timer per
/// connection and nothing per request (the service only sets `started`). It ends when the
/// connection does, or at `limit`.
async fn first_request(
    mut conn: JoinHandle<()>,
    started: Arc<AtomicBool>,
    limit: Duration,
    peer: SocketAddr,
) {
    tokio::select! {
        _ = &mut conn => {}
        () = tokio::time::sleep(limit) => {
            if !started.load(Ordering::Relaxed) {
                conn.abort();
                tracing::debug!(%peer, "no request started in time; closed");
            }
        }
    }
}

pub fn tls_acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, ServeError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| ServeError::TlsFile {
            path: p.display().to_string(),
            source,
        })
    };
    let cert_pem = read(&tls.cert)?;
    let key_pem = read(&tls.key)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServeError::Tls(format!("{}: {e}", tls.cert.display())))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| ServeError::Tls(format!("{}: {e}", tls.key.display())))?
        .ok_or_else(|| ServeError::Tls(format!("{}: no private key found", tls.key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

pub fn http_builder(s: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        // `serve` gives each connection a timer of its own instead (`timer::ConnTimer`).
        .timer(TokioTimer::new())
        .header_read_timeout(s.header_read_timeout)
        .max_buf_size(s.max_header_bytes)
        // Answers are gathered with `writev` (hyper's default), not copied into one buffer:
        // a flattened buffer keeps the size of the largest chunk it ever held, and a client
        // connection that once downloaded something large would keep that much for good.
        // (The upstream side flattens: src/proxy/pool.rs.)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX))
        // Pings find dead HTTP/2 peers; an idle HTTP/1 connection is bounded by the
        // header-read timeout of its next request.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Binds `addr` and serves `handler` on every connection (HTTP/1.1 and h2, TLS when
/// given), until `Running::shutdown`.
pub async fn serve<H, F, B>(
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    server: &ServerConfig,
    handler: H,
) -> Result<Running, ServeError>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bind_err = |source| ServeError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    let builder = Arc::new(http_builder(server));
    let drain = server.drain_timeout;
    // A connection must say something (or finish its TLS handshake) within the
    // header-read timeout: silent sockets must not pile up.
    let first_bytes = server.header_read_timeout;
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(c) => c,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, don't spin.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let handler = handler.clone();
                    // Whether a request has started on this connection (see `first_request`).
                    let started = Arc::new(AtomicBool::new(false));
                    let svc = service_fn({
                        let started = started.clone();
                        move |req| {
                            started.store(true, Ordering::Relaxed);
                            handler(req, peer)
                        }
                    });
                    // Each connection its own timer: see `timer`.
                    let conn_timer = ConnTimer::new();
                    let mut builder = (*builder).clone();
                    builder.http1().timer(conn_timer.clone());
                    let watcher = graceful.watcher();
                    let tls = tls.clone();
                    // TLS has a handshake to finish first, within the same limit.
                    let first_request_within = if tls.is_some() { 2 * first_bytes } else { first_bytes };
                    let conn = tokio::spawn(async move {
                        let result = match tls {
                            None => {
                                if !matches!(tokio::time::timeout(first_bytes, tcp.readable()).await, Ok(Ok(()))) {
                                    tracing::debug!(%peer, "connection sent nothing in time; closed");
                                    return;
                                }
                                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
                                timer::in_scope(conn_timer, watcher.watch(conn.into_owned())).await
                            }
                            Some(acceptor) => match tokio::time::timeout(first_bytes, acceptor.accept(tcp)).await {
                                Ok(Ok(stream)) => {
                                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                                    timer::in_scope(conn_timer, watcher.watch(conn.into_owned())).await
                                }
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, %peer, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake not finished in time; closed");
                                    return;
                                }
                            },
                        };
                        if let Err(e) = result {
                            tracing::debug!(error = %e, %peer, "connection ended with an error");
                        }
                    });
                    tokio::spawn(first_request(conn, started, first_request_within, peer));
                }
                _ = stopped.changed() => break,
            }
        }
        drop(listener);
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(?drain, "drain timeout; closing the remaining connections");
        }
    });
    Ok(Running { addr, stop, task })
}
