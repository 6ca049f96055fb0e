//! Keep-alive connections to one upstream target, on hyper's HTTP/1 client connections.
//!
//! Idle connections wait on a stack (the last one back is the first one out, so under light
//! load few stay warm). A request takes one, or opens a new one when none is idle; the
//! response body puts it back once the upstream has sent the whole body, so a connection
//! is never shared by two requests at once. A request that a pooled connection could not
//! even start sending (the upstream closed it meanwhile) is sent again on another one.
//!
//! A connection has no task of its own: whoever holds it drives it (`Conn::drive`), the
//! request while it waits for the response head, then the response body while the client
//! reads it. Request, response and body never cross between tasks, so a proxied request
//! wakes no other task. An idle connection is driven by nobody: an upstream that closed it
//! is noticed when it is next taken (it is then dropped and another one tried).
//!
//! Why not hyper-util's pooled client: it keys its pool by scheme and authority, hashed
//! byte by byte with SipHash several times per request, and moves a large future on every
//! request; on our profile that was about a tenth of the instructions of a proxied request
//! (`benches/instructions`). A target knows its own connections, so no lookup is needed.

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::body::{Body, Frame, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
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

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One connection: the handle requests are sent on, and the future that does its reads
/// and writes (hyper's connection, boxed: its type cannot be named), `None` once ended.
struct Conn {
    tx: SendRequest<Incoming>,
    io: Option<Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>>,
    /// The last drive left wake-ups to a task behind (hyper keeps the last waker it was
    /// given in several places: the socket, the request channel, the body channel).
    wakes: bool,
}

impl Conn {
    /// Lets the connection do what it can now (write the request, read the response, hand
    /// body frames over), its wake-ups going to `cx`. False once the connection has ended;
    /// a request still waiting then gets its error.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        self.wakes = true;
        self.poll_io(cx)
    }

    /// `drive` with no task to wake: for when whoever holds the connection will drive it
    /// again before waiting on it. Without this, the wake-ups hyper kept would later wake
    /// the task that drove it last, for nothing (a request sent on the connection wakes
    /// it, and so does the body frame the client takes).
    fn drive_quietly(&mut self) -> bool {
        self.wakes = false;
        self.poll_io(&mut Context::from_waker(Waker::noop()))
    }

    fn poll_io(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(io) = &mut self.io else {
            return false;
        };
        match io.as_mut().poll(cx) {
            Poll::Pending => true,
            Poll::Ready(ended) => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
                self.io = None;
                false
            }
        }
    }

    /// Whether a request can be sent now, asked without leaving a wake-up behind (an idle
    /// connection wakes nobody); `None` when that needs waiting.
    fn ready_now(&mut self) -> Option<bool> {
        if self.wakes || !self.tx.is_ready() {
            self.drive_quietly();
        }
        match self.tx.poll_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => Some(r.is_ok()),
            Poll::Pending => None,
        }
    }

    /// Waits until a request can be sent; false when the connection has ended.
    ///
    /// A connection that was ready when it went idle is taken as ready without driving it:
    /// if the upstream closed it meanwhile, driving it for the send notices that first and
    /// hands the request back unsent, to be sent on another connection.
    async fn ready(&mut self) -> bool {
        if let Some(ready) = self.ready_now() {
            return ready;
        }
        poll_fn(|cx| {
            self.drive(cx);
            self.tx.poll_ready(cx).map(|r| r.is_ok())
        })
        .await
    }

    /// Sends `req` and drives the connection until the response head is in.
    async fn send(
        &mut self,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Incoming>>> {
        let mut response = pin!(self.tx.try_send_request(req));
        let mut written = false;
        poll_fn(|cx| {
            // Only driving the connection answers the request, so the answer is asked
            // without a waker. Once the request is written, the drive that brings the
            // answer is quiet too: the body is read next, and reading it drives the
            // connection itself when it needs more.
            let mut quiet = Context::from_waker(Waker::noop());
            if written {
                self.drive_quietly();
                if let Poll::Ready(head) = response.as_mut().poll(&mut quiet) {
                    return Poll::Ready(head);
                }
            }
            // Write the request, or wait for the upstream: woken by the connection.
            written = true;
            self.drive(cx);
            response.as_mut().poll(&mut quiet)
        })
        .await
    }
}

struct Idle {
    conn: Box<Conn>,
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
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(bare.to_owned()).ok()?;
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

    fn take_idle(&self) -> Option<Box<Conn>> {
        self.lock(Instant::now()).pop_back().map(|c| c.conn)
    }

    fn put_back(&self, conn: Box<Conn>) {
        let now = Instant::now();
        let mut idle = self.lock(now);
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { conn, since: now });
        }
    }

    /// Back to the pool when the connection can take a request; one still sending its
    /// request body (the upstream answered before the upload ended) gets a task that
    /// drives it to the end of the upload and then returns it, so no request ever waits
    /// behind someone else's upload.
    fn give_back(self: Arc<Self>, mut conn: Box<Conn>) {
        match conn.ready_now() {
            Some(true) => self.put_back(conn),
            Some(false) => {}
            None => {
                tokio::spawn(async move {
                    if let Ok(true) = tokio::time::timeout(RETURN_WAIT, conn.ready()).await {
                        self.put_back(conn);
                    }
                });
            }
        }
    }

    async fn connect(&self) -> Result<Box<Conn>, PoolError> {
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
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| connect_err(e.into()))?;
        Ok(Box::new(Conn {
            tx,
            io: Some(Box::pin(conn.with_upgrades())),
            wakes: false,
        }))
    }

    /// Sends `req` (origin-form URI, headers final) and returns the response head; its
    /// body hands the connection back when it ends.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let mut stale = 0;
        loop {
            let pooled = if stale < STALE_TRIES {
                self.take_idle()
            } else {
                None
            };
            let (mut conn, reused) = match pooled {
                Some(conn) => (conn, true),
                // Boxed: connecting is rare, and inline its future would make every
                // request's future (moved several times per request) much larger.
                None => (Box::pin(self.connect()).await?, false),
            };
            // A pooled connection that closed while idle: take another. (A new one that
            // is not ready has failed; its error comes from the send below.)
            if !conn.ready().await && reused {
                stale += 1;
                continue;
            }
            match conn.send(req).await {
                Ok(resp) => {
                    let reusable = resp.status() != StatusCode::SWITCHING_PROTOCOLS;
                    if !reusable {
                        // The connection now belongs to the upgrade: whatever is left of
                        // handing it over runs in a task of its own.
                        if let Some(io) = conn.io.take() {
                            tokio::spawn(io);
                        }
                    }
                    let (parts, incoming) = resp.into_parts();
                    let mut body = PooledBody {
                        body: incoming,
                        back: Some((conn, Arc::clone(self))),
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

/// The upstream's response body; drives its connection while it streams, gives it back
/// to the pool at the end, and ends in an error when the upstream sends nothing more for
/// `idle_timeout`.
pub struct PooledBody {
    body: Incoming,
    /// The connection (driven while the body streams) and where it goes back.
    back: Option<(Box<Conn>, Arc<Target>)>,
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
        let deadline = tokio::time::Instant::now() + self.idle_timeout;
        let moved_on = std::mem::take(&mut self.progress);
        let timer = match &mut self.idle {
            Some(timer) => {
                if moved_on {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .idle
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.back = None;
        Poll::Ready(Some(Err(Box::new(BodyIdle(self.idle_timeout)))))
    }

    fn give_back(&mut self) {
        if let Some((conn, target)) = self.back.take() {
            if self.reusable {
                target.give_back(conn);
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
        // What arrived with the head is already in the body: taken without driving the
        // connection (and without a waker, so that handing more over wakes nobody). Else
        // the connection is driven to hand over what has arrived, and asked again.
        let mut polled =
            Pin::new(&mut this.body).poll_frame(&mut Context::from_waker(Waker::noop()));
        if polled.is_pending() {
            if let Some((conn, _)) = &mut this.back {
                conn.drive(cx);
            }
            polled = Pin::new(&mut this.body).poll_frame(cx);
        }
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
