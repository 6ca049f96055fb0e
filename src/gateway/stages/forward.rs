//! Stage 6, forward (SPEC §2 step 4, §3): to the route's upstream over its pooled
//! connections, bodies streamed both ways, an upgrade spliced through. The upstream's
//! `timeout` runs from the request body's last move, so a long upload is not cut off and
//! a stalled one still ends in 504.
//!
//! `handle_inner` awaits the send itself, in one `select!` with `deadline`: as an async fn
//! of its own this stage made the request's future a level deeper, which every poll and
//! move of it pays (`benches/instructions`, serial: +0.6 % of the request's instructions).

use crate::error::GatewayError;
use crate::proxy::pool::{PoolError, PooledBody};
use crate::proxy::upload::Progress;
use crate::proxy::{upgrade, Upstream};
use http::Response;

/// Resolves when the upstream has had `timeout` since the request body last moved (or,
/// without a body, since the send began). On an HTTP/1 connection it shares the
/// connection's timer; elsewhere it is a timer of its own (src/server/timer.rs).
pub async fn deadline(upstream: &Upstream, upload: Option<Progress>) {
    let mut wait = upstream.timeout();
    loop {
        match crate::server::request_deadline(wait) {
            Some(limit) => limit.await,
            None => tokio::time::sleep(wait).await,
        }
        match upload
            .as_ref()
            .and_then(|p| p.more_time(upstream.timeout()))
        {
            Some(more) => wait = more,
            None => break,
        }
    }
}

/// The upstream's answer as the client's: `None` (the deadline won) is 504, a broken
/// client body 400 `bad_body`, any other send failure 502; a 101 splices the upgrade. The
/// answer is in keygate's HTTP version, whatever the upstream's was.
pub fn answer(
    sent: Option<Result<Response<PooledBody>, PoolError>>,
    upstream: &Upstream,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response<PooledBody>, GatewayError> {
    let mut resp = sent.ok_or_else(|| upstream.timed_out())?.map_err(|e| {
        if e.is_request_body_error() {
            GatewayError::BadBody(e)
        } else {
            upstream.unavailable(e).into()
        }
    })?;
    if let (Some(client), http::StatusCode::SWITCHING_PROTOCOLS) = (client_upgrade, resp.status()) {
        upgrade::splice(client, hyper::upgrade::on(&mut resp));
    }
    // A proxy answers in its own version (RFC 9110 §6.2), never the upstream's: an
    // HTTP/1.0 upstream must not turn the client's answer into HTTP/1.0 and close its
    // connection. hyper then speaks to the client in the client's version (HTTP/1.0 to an
    // HTTP/1.0 client, HTTP/2 frames on HTTP/2).
    *resp.version_mut() = http::Version::HTTP_11;
    Ok(resp)
}
