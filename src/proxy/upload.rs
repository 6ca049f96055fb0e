//! The client's request body on its way to the upstream, noting when it last moved.
//!
//! An upstream's `timeout` bounds the wait for its response head. A large upload can take
//! longer than that on its own, so the limit runs from the last piece of the body read
//! from the client (or its end), not from the start of the request: while the body keeps
//! coming, the wait goes on. An upload that stops coming for `timeout` ends the wait too.
//! What the client sent may still sit in buffers (hyper's, the kernel's: a few MB) while
//! a slow upstream reads it: that time counts against the upstream.

use crate::store::monotonic_coarse_ms;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// When a request's body last moved (`store::monotonic_coarse_ms`), shared between the
/// body and the wait for the response head.
#[derive(Clone, Debug)]
pub struct Progress(Arc<AtomicI64>);

impl Progress {
    /// How much longer the wait for the response head may go on: `limit` from the body's
    /// last move, if that is still ahead.
    pub fn more_time(&self, limit: Duration) -> Option<Duration> {
        let limit_ms = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX);
        let due = self.0.load(Ordering::Relaxed).saturating_add(limit_ms);
        let left = due.saturating_sub(monotonic_coarse_ms());
        (left > 0).then(|| Duration::from_millis(left.unsigned_abs()))
    }
}

/// The client's body as sent upstream.
pub struct Upload {
    body: Incoming,
    /// Only for a request that has a body: none for the usual GET, which then costs
    /// nothing more.
    progress: Option<Progress>,
}

impl Upload {
    /// The body, and the progress to watch when it has one.
    pub fn new(body: Incoming) -> (Upload, Option<Progress>) {
        let progress = (!body.is_end_stream())
            .then(|| Progress(Arc::new(AtomicI64::new(monotonic_coarse_ms()))));
        let watch = progress.clone();
        (Upload { body, progress }, watch)
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        // A piece, or the end: the wait for the answer runs from the last of them.
        if let (Some(p), Poll::Ready(None | Some(Ok(_)))) = (&self.progress, &polled) {
            p.0.store(monotonic_coarse_ms(), Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_time_runs_from_the_last_move() {
        let now = monotonic_coarse_ms();
        let p = Progress(Arc::new(AtomicI64::new(now)));
        let left = p.more_time(Duration::from_secs(30)).expect("time left");
        assert!(left > Duration::from_secs(20) && left <= Duration::from_secs(30));
        p.0.store(now - 31_000, Ordering::Relaxed);
        assert_eq!(p.more_time(Duration::from_secs(30)), None);
        p.0.store(i64::MIN, Ordering::Relaxed);
        assert_eq!(p.more_time(Duration::from_secs(30)), None, "no overflow");
        p.0.store(i64::MAX, Ordering::Relaxed);
        assert!(p.more_time(Duration::MAX).is_some(), "no overflow");
    }
}
