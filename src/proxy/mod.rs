//! Forwarding to upstreams: one pooled keep-alive client per upstream (plain HTTP or
//! HTTPS with rustls), round-robin over its targets, a deadline on the response head.
//! Bodies are never buffered: the client's body streams up, the upstream's streams back.

pub mod headers;
pub mod upgrade;

use crate::config::UpstreamConfig;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream {upstream} is unavailable")]
    Unavailable {
        upstream: String,
        #[source]
        source: hyper_util::client::legacy::Error,
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

#[derive(Debug, Clone)]
struct Target {
    scheme: Scheme,
    authority: Authority,
}

pub struct Upstream {
    pub name: String,
    targets: Vec<Target>,
    next: AtomicUsize,
    timeout: Duration,
    client: Client<Connector, Incoming>,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https);
        let targets = cfg
            .targets
            .iter()
            .filter_map(|u| {
                Some(Target {
                    scheme: u.scheme()?.clone(),
                    authority: u.authority()?.clone(),
                })
            })
            .collect();
        Upstream {
            name: cfg.name.clone(),
            targets,
            next: AtomicUsize::new(0),
            timeout: cfg.timeout,
            client,
        }
    }

    fn pick(&self) -> &Target {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.targets[i % self.targets.len()]
    }

    /// Sends `req` (headers already rewritten) to the next target with `path`.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        path: PathAndQuery,
    ) -> Result<Response<Incoming>, ProxyError> {
        let t = self.pick();
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(t.scheme.clone());
        parts.authority = Some(t.authority.clone());
        parts.path_and_query = Some(path);
        *req.uri_mut() = Uri::from_parts(parts).expect("scheme, authority and path are all set");
        // Upstreams are spoken to in HTTP/1.1 whatever the client used.
        *req.version_mut() = Version::HTTP_11;
        // The client sets Host from the target: upstreams see their own name, the
        // original is in X-Forwarded-Host.
        req.headers_mut().remove(http::header::HOST);
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(source)) => Err(ProxyError::Unavailable {
                upstream: self.name.clone(),
                source,
            }),
            Err(_) => Err(ProxyError::Timeout {
                upstream: self.name.clone(),
                timeout: self.timeout,
            }),
        }
    }
}
