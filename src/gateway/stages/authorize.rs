//! Stage 3, authorize (SPEC §2, the verdict's later rows): the route's permissions, its
//! workspace (required, allowed), the key's org (suspended). Hands the proxy a
//! `Principal`: the key and the workspace the route resolved.

use crate::auth::{AuthError, Authenticator, Principal};
use crate::cache::CachedKey;
use crate::config::RouteConfig;
use http::HeaderMap;
use std::sync::Arc;

pub fn authorize(
    auth: &Authenticator,
    key: Arc<CachedKey>,
    route: &RouteConfig,
    headers: &HeaderMap,
    path: &str,
) -> Result<Principal, AuthError> {
    auth.authorize(key, route, headers, path)
}
