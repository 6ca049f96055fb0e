//! The endpoints that answer without a token (SPEC §5): `/healthz`, `/readyz`,
//! `/metrics`, and this API's own description, `/openapi.yaml`.

use super::json;
use crate::cache::KeyCache;
use crate::metrics::Metrics;
use crate::store::KeyStore;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;

/// `docs/openapi.yaml`, built into the binary: the document of the API this binary
/// serves (`tests/openapi.rs` holds the two together).
pub(super) fn openapi() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(
        include_str!("../../docs/openapi.yaml").as_bytes(),
    )));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/yaml; charset=utf-8"),
    );
    resp
}

/// The process is up.
pub(super) fn healthz() -> Response<Full<Bytes>> {
    json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

/// The key store answers.
pub(super) async fn readyz(store: &dyn KeyStore, metrics: &Metrics) -> Response<Full<Bytes>> {
    match store.ping().await {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({ "status": "ready" })),
        Err(e) => {
            metrics.store_errors.inc();
            tracing::warn!(error = %e, "store not reachable");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "status": "not ready", "reason": "key store unreachable" }),
            )
        }
    }
}

/// The OpenMetrics text, the cache gauge read fresh.
pub(super) async fn metrics(metrics: &Metrics, cache: Option<&KeyCache>) -> Response<Full<Bytes>> {
    if let Some(c) = cache {
        metrics
            .cache_keys
            .set(i64::try_from(c.entry_count().await).unwrap_or(i64::MAX));
    }
    let mut resp = Response::new(Full::new(Bytes::from(metrics.encode())));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
