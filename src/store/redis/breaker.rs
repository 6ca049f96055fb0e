//! A circuit breaker in front of Redis.
//!
//! Without it, every cache miss during an outage would wait the full store timeout before
//! its 503. After `FAILURES` outage errors in a row the breaker opens: calls fail at once
//! for `OPEN_FOR`. Then one call at a time goes through as a probe (half-open); its success
//! closes the breaker, its failure opens it again. So a dead Redis costs a miss nothing,
//! and a Redis that is back is noticed within about `OPEN_FOR`, with no one to reset it.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Outage errors in a row that open the breaker. More than one, so a single dropped
/// connection (which the connection manager replaces at once) does not fail other calls.
pub(super) const FAILURES: u32 = 5;

/// How long an open breaker refuses calls before it lets a probe through.
pub(super) const OPEN_FOR: Duration = Duration::from_secs(1);

/// A probe that has not reported after this long (its caller was cancelled) no longer
/// blocks the next one.
const PROBE_STALE: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(super) struct Breaker {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    probe_since: Option<Instant>,
}

impl Breaker {
    /// Whether a call may go to Redis now.
    pub(super) fn admit(&self) -> bool {
        let now = Instant::now();
        let mut s = self.lock();
        match s.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) => {
                if s.probe_since.is_some_and(|t| now < t + PROBE_STALE) {
                    return false;
                }
                s.probe_since = Some(now);
                true
            }
        }
    }

    /// Redis answered (possibly with an error of the request's own making).
    pub(super) fn success(&self) {
        let mut s = self.lock();
        if s.open_until.is_some() {
            tracing::info!("redis store reachable again; circuit breaker closed");
        }
        *s = State::default();
    }

    /// Redis did not answer, or answered that it cannot serve.
    pub(super) fn failure(&self) {
        let now = Instant::now();
        let mut s = self.lock();
        s.failures = s.failures.saturating_add(1);
        s.probe_since = None;
        if s.failures >= FAILURES {
            if s.open_until.is_none() {
                tracing::warn!(
                    failures = s.failures,
                    open_for_ms = OPEN_FOR.as_millis() as u64,
                    "redis store unreachable; circuit breaker open"
                );
            }
            s.open_until = Some(now + OPEN_FOR);
        }
    }

    #[cfg(test)]
    pub(super) fn is_open(&self) -> bool {
        self.lock().open_until.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is three plain fields, valid after any panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_repeated_failures_and_probes_one_at_a_time() {
        let b = Breaker::default();
        for _ in 0..FAILURES - 1 {
            assert!(b.admit());
            b.failure();
        }
        assert!(b.admit(), "still closed below the threshold");
        b.failure();
        assert!(b.is_open());
        assert!(!b.admit(), "open: fails fast");

        // Past OPEN_FOR: one probe, the others still fail fast.
        b.lock().open_until = Some(Instant::now());
        assert!(b.admit());
        assert!(!b.admit());
        b.failure();
        assert!(!b.admit(), "a failed probe opens it again");

        b.lock().open_until = Some(Instant::now());
        assert!(b.admit());
        b.success();
        assert!(!b.is_open());
        assert!(b.admit() && b.admit(), "closed: everything goes through");
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::default();
        for _ in 0..FAILURES - 1 {
            b.failure();
        }
        b.success();
        b.failure();
        assert!(!b.is_open());
    }
}
