//! Stage 2, authenticate (SPEC §2 step 1 and the verdict's first rows): the one
//! credential of the request, as the client sent it (missing, multiple), to a known,
//! usable key: malformed (no store lookup), unknown, revoked, disabled, expired, owner
//! removed. The cache answers; the store only on a miss.
//!
//! The credential is read here; the key is found by `Authenticator::authenticate`, whose
//! future `handle_inner` awaits itself rather than through an async fn of this stage:
//! each such level adds to the request's future, which is moved several times per
//! request. (Measured with `benches/instructions`, this one level cost nothing visible;
//! the forward stage's did, see `forward.rs`.)

use crate::auth::{extract_credential, AuthError, Authenticator};
use http::HeaderMap;
use std::borrow::Cow;

pub fn credential<'h>(
    auth: &Authenticator,
    headers: &'h HeaderMap,
    query: Option<&'h str>,
) -> Result<Cow<'h, str>, AuthError> {
    extract_credential(headers, query, &auth.sources)
}
