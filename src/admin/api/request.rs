//! Reading a request: its JSON body, bounded, and its query parameters.

use super::super::MAX_BODY;
use crate::auth::percent_decode;
use crate::error::AdminError;
use http::Request;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// The body, read up to `MAX_BODY` (413 beyond), as JSON of `T` (400 otherwise). An
/// empty body reads as `{}` where `T` allows it.
pub(super) async fn body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, AdminError> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(AdminError::BodyTooLarge);
    }
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                AdminError::BodyTooLarge
            } else {
                AdminError::BodyRead
            }
        })?
        .to_bytes();
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes).map_err(AdminError::BadJson)
}

/// Query parameters, percent-decoded; only `allowed` names (400 for others).
pub(super) fn query(
    req: &Request<Incoming>,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, AdminError> {
    let mut out = BTreeMap::new();
    for pair in req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k)
            .ok_or_else(|| AdminError::BadQuery(format!("cannot decode `{k}`")))?;
        let v = percent_decode(v)
            .ok_or_else(|| AdminError::BadQuery(format!("cannot decode the value of `{k}`")))?;
        if !allowed.contains(&k.as_ref()) {
            return Err(AdminError::BadQuery(format!(
                "unknown parameter `{k}` (known: {})",
                allowed.join(", ")
            )));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(AdminError::BadQuery(format!("`{k}` given twice")));
        }
    }
    Ok(out)
}
