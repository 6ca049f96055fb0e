//! Forwarding to upstreams: keep-alive connections pooled per target (`pool.rs`; plain
//! HTTP or HTTPS with rustls), round-robin over the targets, a deadline on the response
//! head.
//! Bodies are never buffered: the client's body streams up, the upstream's streams back.

pub mod headers;
pub mod pool;
pub mod upgrade;
pub mod upload;

use crate::config::UpstreamConfig;
use http::uri::PathAndQuery;
use http::{Request, Uri, Version};
use hyper::body::Body as _;
use pool::{PoolError, Target};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::TlsConnector;
use upload::Upload;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream {upstream} is unavailable")]
    Unavailable {
        upstream: String,
        #[source]
        source: PoolError,
    },
    #[error("upstream {upstream} did not answer within {timeout:?}")]
    Timeout { upstream: String, timeout: Duration },
}

impl ProxyError {
    pub fn upstream(&self) -> &str {
        match self {
            ProxyError::Unavailable { upstream, .. } | ProxyError::Timeout { upstream, .. } => {
                upstream
            }
        }
    }
}

/// TLS to upstreams: rustls with the ring provider, HTTP/1.1, checked against the webpki
/// roots (made once per process) or, for an upstream with `ca`, against those CAs only.
fn tls_connector(ca: Option<&RootCertStore>) -> TlsConnector {
    use hyper_rustls::ConfigBuilderExt;
    static PUBLIC: OnceLock<TlsConnector> = OnceLock::new();
    let builder = || {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
    };
    let connector = |mut cfg: tokio_rustls::rustls::ClientConfig| {
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(cfg))
    };
    match ca {
        Some(roots) => connector(
            builder()
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
        ),
        None => PUBLIC
            .get_or_init(|| connector(builder().with_webpki_roots().with_no_client_auth()))
            .clone(),
    }
}

pub struct Upstream {
    pub name: String,
    targets: Vec<Arc<Target>>,
    next: AtomicUsize,
    timeout: Duration,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Self {
        let tls = tls_connector(cfg.ca.as_deref());
        let targets = cfg
            .targets
            .iter()
            .filter_map(|u| {
                let t = Target::new(
                    u.scheme()?,
                    u.authority()?,
                    &tls,
                    cfg.connect_timeout,
                    cfg.idle_timeout,
                );
                if t.is_none() {
                    // Config validation refuses such targets; this only guards the request
                    // path from a target it could never reach.
                    tracing::error!(upstream = %cfg.name, target = %u, "unusable upstream target left out");
                }
                t
            })
            .map(Arc::new)
            .collect();
        Upstream {
            name: cfg.name.clone(),
            targets,
            next: AtomicUsize::new(0),
            timeout: cfg.timeout,
        }
    }

    fn pick(&self) -> Option<&Arc<Target>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.targets.get(i.checked_rem(self.targets.len())?)
    }

    /// Readies `req` (headers already rewritten) for the next target: origin-form `path`,
    /// HTTP/1.1, the target's own `Host`. Send it with `Target::send` under `timeout()`
    /// and map the outcome with `unavailable` / `timed_out`. Not one async fn: each
    /// nesting level would store the request again in the request's future, which is
    /// moved several times per request.
    pub fn prepare(
        &self,
        mut req: Request<Upload>,
        path: PathAndQuery,
    ) -> Result<(&Arc<Target>, Request<Upload>), ProxyError> {
        let Some(t) = self.pick() else {
            return Err(self.unavailable(PoolError::NoTarget));
        };
        // Origin form (`/path?query`), as HTTP/1.1 sends to an origin server.
        *req.uri_mut() = Uri::from(path);
        // Upstreams are spoken to in HTTP/1.1 whatever the client used.
        *req.version_mut() = Version::HTTP_11;
        // Upstreams see their own name; the client's is in X-Forwarded-Host.
        req.headers_mut().insert(http::header::HOST, t.host.clone());
        // A body of unknown length is sent chunked. hyper's client would otherwise send
        // none for GET, HEAD and CONNECT (it assumes they have no body), and the client's
        // `Transfer-Encoding` is gone with the hop-by-hop headers.
        let body = req.body();
        if !body.is_end_stream() && body.size_hint().exact().is_none() {
            req.headers_mut().insert(
                http::header::TRANSFER_ENCODING,
                http::HeaderValue::from_static("chunked"),
            );
        }
        Ok((t, req))
    }

    /// How long the response head may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn unavailable(&self, source: PoolError) -> ProxyError {
        ProxyError::Unavailable {
            upstream: self.name.clone(),
            source,
        }
    }

    pub fn timed_out(&self) -> ProxyError {
        ProxyError::Timeout {
            upstream: self.name.clone(),
            timeout: self.timeout,
        }
    }
}
