//! Keep-alive connections to one upstream target, on hyper's HTTP/1 client connections.
//!
//! Idle connections wait on a stack (the last one back is the first one out, so under light
//! load few stay warm). A request takes one, or opens a new one when none is idle; the
//! response body puts it back once the upstream has sent the whole body, so a connection
//! is never shared by two requests at once. A request that a pooled connection could not
//! even start sending (the upstream closed it meanwhile) is sent again on another one.
//!
//! Why not hyper-util's pooled client: it keys its pool by scheme and authority, hashed
//! byte by byte with SipHash several times per request, and moves a large future on every
//! request; on our profile that was about a tenth of the instructions of a proxied request
//! (`benches/instructions`). A target knows its own connections, so no lookup is needed.

use super::upload::Upload;
use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::body::{Body, Frame, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// At most this many idle connections per target; more are closed when they come back.
const MAX_IDLE: usize = 1024;

/// A connection whose response ended while its request body was still being sent (the
/// upstream answered early) goes back to the pool once the upload is done, if within this.
const RETURN_WAIT: Duration = Duration::from_secs(30);

/// Pooled connections tried for one request before a new one is opened.
const STALE_TRIES: usize = 3;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: BoxError,
    },
    #[error("connecting to {target} took longer than {timeout:?}")]
    ConnectTimeout { target: String, timeout: Duration },
    #[error("request to {target} failed: {source}")]
    Send {
        target: String,
        #[source]
        source: hyper::Error,
    },
    #[error("the upstream has no usable target")]
    NoTarget,
}

impl PoolError {
    /// Whether sending failed because the request's own body did (the client's stream
    /// broke off or was malformed), not because of the upstream: hyper reports a body's
    /// error as a user error caused by it, and the body is the client's `Incoming`.
    pub fn is_request_body_error(&self) -> bool {
        match self {
            PoolError::Send { source, .. } => {
                source.is_user()
                    && std::error::Error::source(source).is_some_and(|c| c.is::<hyper::Error>())
            }
            _ => false,
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

struct Idle {
    tx: SendRequest<Upload>,
    since: Instant,
}

/// The connections of one target (`http://host:port` or `https://…`).
pub struct Target {
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` the upstream is sent (its own name; the client's is in X-Forwarded-Host).
    pub host: HeaderValue,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    /// Longest wait for the next piece of a response body.
    idle_timeout: Duration,
    /// Oldest at the front; taken and returned at the back.
    idle: Mutex<VecDeque<Idle>>,
}

impl Target {
    /// `None` when the authority cannot name a host to connect to (config validation
    /// refuses such targets before this).
    pub fn new(
        scheme: &Scheme,
        authority: &Authority,
        tls: &TlsConnector,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Option<Target> {
        let https = scheme == &Scheme::HTTPS;
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = authority.host();
        // Host and port only: never user info, should a URL carry some.
        let host_header = match authority.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let tls = if https {
            let name = crate::config::tls_server_name(host)?;
            Some((tls.clone(), name))
        } else {
            None
        };
        Some(Target {
            addr: format!("{host}:{port}"),
            host: HeaderValue::from_str(&host_header).ok()?,
            tls,
            connect_timeout,
            idle_timeout,
            idle: Mutex::new(VecDeque::new()),
        })
    }

    /// The idle list, its connections past `IDLE_TIMEOUT` (the oldest, at the front)
    /// closed first, so a burst's leftovers do not stay open once traffic resumes.
    fn lock(&self, now: Instant) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        // A plain list: a panic elsewhere cannot leave it half-changed.
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while idle
            .front()
            .is_some_and(|c| now.duration_since(c.since) >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        idle
    }

    fn take_idle(&self) -> Option<SendRequest<Upload>> {
        let mut idle = self.lock(Instant::now());
        while let Some(c) = idle.pop_back() {
            if !c.tx.is_closed() {
                return Some(c.tx);
            }
        }
        None
    }

    fn put_back(&self, tx: SendRequest<Upload>) {
        if tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock(now);
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { tx, since: now });
        }
    }

    /// Back to the pool when the connection can take a request; one still sending its
    /// request body (the upstream answered before the upload ended) is returned by a task
    /// when it is done, so no request ever waits behind someone else's upload.
    fn give_back(self: Arc<Self>, mut tx: SendRequest<Upload>) {
        if tx.is_ready() {
            self.put_back(tx);
            return;
        }
        tokio::spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(RETURN_WAIT, tx.ready()).await {
                self.put_back(tx);
            }
        });
    }

    async fn connect(&self) -> Result<SendRequest<Upload>, PoolError> {
        let connect_err = |source: BoxError| PoolError::Connect {
            target: self.addr.clone(),
            source,
        };
        let timeout = || PoolError::ConnectTimeout {
            target: self.addr.clone(),
            timeout: self.connect_timeout,
        };
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| timeout())?
            .map_err(|e| connect_err(e.into()))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                tokio::time::timeout_at(deadline, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| timeout())?
                    .map_err(|e| connect_err(e.into()))?,
            ),
        };
        let (tx, conn) = http1::Builder::new()
            // Request head and body copied into one buffer and sent with one `write`, not
            // gathered by `writev`: fewer instructions per request. The buffer keeps the
            // size of the largest upload chunk it held (about `server.max_header_bytes`,
            // the client side's read buffer), which is bounded: pooled connections are few.
            .writev(false)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| connect_err(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(tx)
    }

    /// Sends `req` (origin-form URI, headers final) and returns the response head; its
    /// body hands the connection back when it ends.
    /// Not an async fn: that would store `req` twice in the future (argument and local),
    /// and this future is part of the request's, moved several times per request.
    #[allow(clippy::manual_async_fn, reason = "an async fn stores `req` twice")]
    pub fn send(
        self: &Arc<Self>,
        mut req: Request<Upload>,
    ) -> impl Future<Output = Result<Response<PooledBody>, PoolError>> + Send + '_ {
        async move {
            let mut stale = 0;
            loop {
                let pooled = if stale < STALE_TRIES {
                    self.take_idle()
                } else {
                    None
                };
                let (mut tx, reused) = match pooled {
                    Some(tx) => (tx, true),
                    // Boxed: connecting is rare, and inline its future would make every
                    // request's future (moved several times per request) much larger.
                    None => (Box::pin(self.connect()).await?, false),
                };
                // A pooled connection that closed while idle: take another. (A new one that
                // is not ready has failed; its error comes from the send below.)
                if tx.ready().await.is_err() && reused {
                    stale += 1;
                    continue;
                }
                match tx.try_send_request(req).await {
                    Ok(resp) => {
                        let reusable = resp.status() != StatusCode::SWITCHING_PROTOCOLS;
                        let (parts, incoming) = resp.into_parts();
                        let mut body = PooledBody {
                            body: incoming,
                            back: Some((tx, Arc::clone(self))),
                            reusable,
                            idle_timeout: self.idle_timeout,
                            idle: None,
                            progress: false,
                        };
                        if body.body.is_end_stream() {
                            // No body to wait for (HEAD, 204, 304, empty): free at once.
                            body.give_back();
                        }
                        return Ok(Response::from_parts(parts, body));
                    }
                    Err(mut e) => match e.take_message() {
                        // Not sent at all: safe to send on another connection. A new
                        // connection that fails this way is not retried (no loop).
                        Some(r) if reused => {
                            stale += 1;
                            req = r;
                        }
                        _ => {
                            return Err(PoolError::Send {
                                target: self.addr.clone(),
                                source: e.into_error(),
                            })
                        }
                    },
                }
            }
        }
    }
}

/// The upstream's response body; gives its connection back to the pool at the end, and
/// ends in an error when the upstream sends nothing more for `idle_timeout`.
pub struct PooledBody {
    body: Incoming,
    /// The connection (kept alive while the body streams) and where it goes back.
    back: Option<(SendRequest<Upload>, Arc<Target>)>,
    /// False after a protocol switch: the connection belongs to the upgrade.
    reusable: bool,
    idle_timeout: Duration,
    /// Armed the first time the body has to wait (a body that arrives with its head never
    /// needs one); moved on when it waits again after a frame came.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame came since the timer was last set.
    progress: bool,
}

/// The upstream went quiet in the middle of a response body.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing more of the response body for {0:?}")]
pub struct BodyIdle(Duration);

impl PooledBody {
    /// Nothing to read yet: pending, unless the upstream has been quiet for `idle_timeout`
    /// (then the body ends in an error and its connection is dropped).
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // The clock is read only when the deadline is (re)set, not on every wait.
        let deadline = || tokio::time::Instant::now() + self.idle_timeout;
        let moved_on = std::mem::take(&mut self.progress);
        let timer = match &mut self.idle {
            Some(timer) => {
                if moved_on {
                    timer.as_mut().reset(deadline());
                }
                timer
            }
            None => self
                .idle
                .insert(Box::pin(tokio::time::sleep_until(deadline()))),
        };
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.back = None;
        Poll::Ready(Some(Err(Box::new(BodyIdle(self.idle_timeout)))))
    }

    fn give_back(&mut self) {
        if let Some((tx, target)) = self.back.take() {
            if self.reusable {
                target.give_back(tx);
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.give_back(),
            // Trailers are the last frame of a body that has them.
            Poll::Ready(Some(Ok(f))) if f.is_trailers() || this.body.is_end_stream() => {
                this.give_back()
            }
            // A broken body leaves the connection in an unknown state: never reused.
            Poll::Ready(Some(Err(_))) => this.back = None,
            Poll::Pending => return this.wait(cx),
            _ => {}
        }
        this.progress = true;
        polled.map(|frame| frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
