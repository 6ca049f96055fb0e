//! The header-read timeout without a timer per request.
//!
//! hyper arms its HTTP/1 header-read timeout each time it starts reading a request head,
//! and drops it once the head is in: with tokio's timer that is a timer entry registered
//! and removed per request (benches/RESULTS.md, sixth pass). `ConnTimer` is the
//! `hyper::rt::Timer` of one connection. All its sleeps share one tokio timer, which is
//! moved only when it would fire too late for a sleep or has fired. While requests keep
//! coming, the shared timer stays armed at the first head's deadline; when it fires, the
//! connection is woken once, the sleep being polled sees its own deadline still ahead and
//! re-arms the timer to it. So a connection costs a timer registration or two per timeout
//! period instead of one per request, and a head that takes longer than the timeout still
//! ends the connection on time.
//!
//! The shared tokio timer holds one waker, that of its last poll. That is enough because
//! every sleep of one connection is polled from that connection's task (HTTP/1 is one task)
//! with that task's waker, and because the task polls each pending sleep whenever it is
//! woken: hyper polls the header sleep at every poll of a connection waiting for a head, and
//! the request's future at every poll while it runs. Do not wait on these sleeps from
//! combinators that poll with wakers of their own (`FuturesUnordered`, `join_all`,
//! `Shared`) or from another task: a sleep whose waker was overwritten could miss its
//! deadline.
//!
//! The same timer serves the upstream time limit of the connection's requests
//! (`request_deadline`): an HTTP/1 request's future is polled by its connection's task, which
//! runs in the scope (`in_scope`) where the connection's timer is found. An HTTP/2 request
//! runs in a task of its own, outside that scope, and gets no shared deadline: its caller
//! uses tokio's timer (one per request) instead.

use hyper::rt::{Sleep, Timer};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

tokio::task_local! {
    static CONNECTION: ConnTimer;
}

/// Runs `conn` (the future of one connection) with `timer` as the timer its requests find.
pub(super) async fn in_scope<F: Future>(timer: ConnTimer, conn: F) -> F::Output {
    CONNECTION.scope(timer, conn).await
}

/// A sleep of `after` on the timer of the HTTP/1 connection whose task polls this, when
/// there is one (see the module docs); `None` elsewhere (an HTTP/2 stream's task, a test).
/// Call it from the future that awaits the sleep, not before: that is what puts it in the
/// right task. Await it directly or in `select!` in that same future, never from a
/// combinator with wakers of its own (module docs).
pub fn request_deadline(after: Duration) -> Option<ConnSleep> {
    CONNECTION
        .try_with(|timer| ConnSleep {
            shared: timer.shared.clone(),
            deadline: tokio::time::Instant::now() + after,
        })
        .ok()
}

/// One connection's timer: give each connection its own (`ConnTimer::new`).
#[derive(Clone)]
pub struct ConnTimer {
    shared: Arc<Mutex<Pin<Box<tokio::time::Sleep>>>>,
}

impl ConnTimer {
    pub fn new() -> Self {
        // Not registered until polled, and far later than any sleep: the first sleep polled
        // brings it forward to its own deadline (one registration). tokio caps deadlines at
        // about two years; a year is far enough.
        let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let sleep = tokio::time::sleep_until(far);
        ConnTimer {
            shared: Arc::new(Mutex::new(Box::pin(sleep))),
        }
    }
}

impl Default for ConnTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(ConnSleep {
            shared: self.shared.clone(),
            deadline: deadline.into(),
        })
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A sleep until `deadline` on its connection's shared timer.
pub struct ConnSleep {
    shared: Arc<Mutex<Pin<Box<tokio::time::Sleep>>>>,
    deadline: tokio::time::Instant,
}

impl Sleep for ConnSleep {}

impl Future for ConnSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        // Poisoned only if a poll panicked while holding it; the timer itself is still sound.
        let mut timer = match self.shared.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        loop {
            let armed = timer.deadline();
            if timer.is_elapsed() {
                // Fired (or never armed): at or past our deadline, we are done; else it
                // fired for an earlier sleep, and is moved on to ours.
                if armed >= deadline {
                    return Poll::Ready(());
                }
                timer.as_mut().reset(deadline);
            } else if armed > deadline {
                // Armed too late for us (a shorter timeout, or a reset): brought forward.
                timer.as_mut().reset(deadline);
            }
            match timer.as_mut().poll(cx) {
                // Fired just now: the loop decides whether that was our deadline.
                Poll::Ready(()) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleep(timer: &ConnTimer, after: Duration) -> Pin<Box<dyn Sleep>> {
        timer.sleep(after)
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_ends_at_its_deadline() {
        let timer = ConnTimer::new();
        let start = tokio::time::Instant::now();
        sleep(&timer, Duration::from_secs(5)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn later_sleeps_reuse_the_armed_timer_and_still_end_on_time() {
        let timer = ConnTimer::new();
        let start = tokio::time::Instant::now();
        // The first head's sleep arms the timer at +10 s, then the head arrives (dropped).
        let mut first = sleep(&timer, Duration::from_secs(10));
        assert!(futures_poll(&mut first).is_pending());
        drop(first);
        // A request 4 s later: its deadline (+14 s) is after the armed one. The timer fires
        // at +10 s, the sleep re-arms to +14 s and ends there, not earlier.
        tokio::time::advance(Duration::from_secs(4)).await;
        sleep(&timer, Duration::from_secs(10)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(14));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_sleep_brings_the_timer_forward() {
        let timer = ConnTimer::new();
        let start = tokio::time::Instant::now();
        let mut long = sleep(&timer, Duration::from_secs(30));
        assert!(futures_poll(&mut long).is_pending());
        sleep(&timer, Duration::from_secs(2)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // The long one is still pending, and ends at its own deadline.
        long.await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_deadline_shares_the_connection_timer_only_in_its_scope() {
        assert!(
            request_deadline(Duration::from_secs(1)).is_none(),
            "no connection here"
        );
        let timer = ConnTimer::new();
        let start = tokio::time::Instant::now();
        in_scope(timer.clone(), async {
            // The head's sleep arms the timer at +10 s; the request's limit of 3 s brings it
            // forward and ends on time; the head's sleep still ends at its own deadline.
            let mut head = sleep(&timer, Duration::from_secs(10));
            assert!(futures_poll(&mut head).is_pending());
            let limit = request_deadline(Duration::from_secs(3)).expect("in scope");
            limit.await;
            assert_eq!(start.elapsed(), Duration::from_secs(3));
            head.await;
            assert_eq!(start.elapsed(), Duration::from_secs(10));
        })
        .await;
        // A task spawned from the scope (as HTTP/2 streams are) is outside it.
        let spawned = in_scope(timer, async {
            tokio::spawn(async { request_deadline(Duration::from_secs(1)).is_some() }).await
        })
        .await;
        assert!(
            !spawned.expect("task"),
            "a spawned task has no connection timer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn two_pending_sleeps_of_one_task_both_end_on_time() {
        // As a head's sleep and a request's limit would be: polled together, by one task.
        let timer = ConnTimer::new();
        let start = tokio::time::Instant::now();
        let long = async {
            sleep(&timer, Duration::from_secs(30)).await;
            start.elapsed()
        };
        let short = async {
            sleep(&timer, Duration::from_secs(2)).await;
            start.elapsed()
        };
        let (long, short) = tokio::join!(long, short);
        assert_eq!(short, Duration::from_secs(2));
        assert_eq!(long, Duration::from_secs(30));
    }

    fn futures_poll(s: &mut Pin<Box<dyn Sleep>>) -> Poll<()> {
        let waker = std::task::Waker::noop();
        s.as_mut().poll(&mut Context::from_waker(waker))
    }
}
