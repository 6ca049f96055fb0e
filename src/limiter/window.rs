//! One key's rate window: a sliding window counted here (every gateway on the embedded
//! store; any gateway while the shared store is down), and the allowance leased from the
//! fleet's shared window (`Meters::lease_rate`) when there is one.
//!
//! The sliding window is the two-counter approximation: the count of the current fixed
//! window plus the previous window's count weighted by the share of it still inside the
//! last `window` ms. One request is admitted while that estimate stays under the limit.
//! Times are ms of a monotonic clock, so a wall-clock step never resets a window.

use crate::limits::RateLimit;
use crate::store::RateGrant;

/// What a rate limit tells the client (SPEC §7 headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: u64,
    pub remaining: u64,
    /// Whole seconds until the window has refilled.
    pub reset_s: u64,
}

/// Why a request was not admitted by its rate window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    Admit(RateInfo),
    /// Over the limit: retry after this many whole seconds (at least 1).
    Refuse(RateInfo, u64),
    /// The fleet's allowance ran out here: ask the store for more.
    Lease,
}

#[derive(Debug, Clone)]
pub(super) struct Window {
    pub window_ms: i64,
    index: i64,
    cur: u64,
    prev: u64,
    /// Requests leased from the fleet's window and not spent, usable until `tokens_until`.
    tokens: u64,
    tokens_until: i64,
    /// What the fleet had left after the last lease (for `RateLimit-Remaining`).
    fleet_remaining: u64,
    /// The fleet's window is full until then: refuse without asking (spending what is
    /// held first).
    blocked_until: i64,
    /// A lease ahead of need is under way (`ahead`).
    prefetching: bool,
}

fn secs_ceil(ms: i64) -> u64 {
    u64::try_from((ms.max(0) + 999) / 1_000).unwrap_or(0)
}

impl Window {
    pub fn new(window_ms: i64) -> Self {
        Window {
            window_ms,
            index: i64::MIN,
            cur: 0,
            prev: 0,
            tokens: 0,
            tokens_until: i64::MIN,
            fleet_remaining: 0,
            blocked_until: i64::MIN,
            prefetching: false,
        }
    }

    /// Moves the counters to `now`'s fixed window.
    fn roll(&mut self, now: i64) {
        let index = now.div_euclid(self.window_ms);
        if index > self.index {
            self.prev = if index == self.index.saturating_add(1) {
                self.cur
            } else {
                0
            };
            self.cur = 0;
            self.index = index;
        }
    }

    /// ms into the current fixed window.
    fn into(&self, now: i64) -> i64 {
        (now - self.index.saturating_mul(self.window_ms)).clamp(0, self.window_ms - 1)
    }

    fn estimate(&self, now: i64) -> u64 {
        let left = u64::try_from(self.window_ms - self.into(now)).unwrap_or(0);
        let w = u64::try_from(self.window_ms).unwrap_or(1).max(1);
        // In u64 while it fits (counts below 2^41 with an hour's window), else in u128.
        let weighted = match self.prev.checked_mul(left) {
            Some(p) => p / w,
            None => u64::try_from(u128::from(self.prev) * u128::from(left) / u128::from(w))
                .unwrap_or(u64::MAX),
        };
        weighted.saturating_add(self.cur)
    }

    /// Seconds until the estimate is back at zero: the previous window's weight is gone
    /// at the end of this one, the current one's at the end of the next.
    fn reset_s(&self, now: i64) -> u64 {
        let to_end = self.window_ms - self.into(now);
        if self.cur > 0 {
            secs_ceil(to_end + self.window_ms)
        } else if self.prev > 0 {
            secs_ceil(to_end)
        } else {
            0
        }
    }

    /// ms until one more request fits under `limit`.
    fn wait_ms(&self, limit: u64, now: i64) -> i64 {
        let w = self.window_ms;
        let into = self.into(now);
        let to_i = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        // Within this window: prev * (w - t) / w + cur <= limit - 1.
        if self.cur < limit && self.prev > 0 {
            let room = to_i(limit - 1 - self.cur);
            let t = w - room.saturating_mul(w) / to_i(self.prev).max(1);
            return (t - into).max(1);
        }
        // In the next one, where this window's count is the previous one's.
        let t = if self.cur > 0 && limit > 0 {
            (w - to_i(limit - 1).saturating_mul(w) / to_i(self.cur)).max(0)
        } else {
            0
        };
        (w - into) + t
    }

    /// Counts one request against `limit` here, alone.
    pub fn admit_local(&mut self, limit: RateLimit, now: i64) -> RateVerdict {
        self.roll(now);
        let est = self.estimate(now);
        if est < limit.count {
            self.cur += 1;
            RateVerdict::Admit(RateInfo {
                limit: limit.count,
                remaining: limit.count - est - 1,
                reset_s: self.reset_s(now),
            })
        } else {
            let info = RateInfo {
                limit: limit.count,
                remaining: 0,
                reset_s: self.reset_s(now),
            };
            RateVerdict::Refuse(info, secs_ceil(self.wait_ms(limit.count, now)).max(1))
        }
    }

    /// Spends one request of the fleet's allowance leased here, or says to lease more.
    /// The local window counts along, so that an outage starts from what was admitted.
    pub fn admit_fleet(&mut self, limit: RateLimit, now: i64) -> RateVerdict {
        self.roll(now);
        if self.tokens > 0 && now < self.tokens_until {
            self.tokens -= 1;
            self.cur += 1;
            return RateVerdict::Admit(RateInfo {
                limit: limit.count,
                remaining: self.fleet_remaining.saturating_add(self.tokens),
                reset_s: secs_ceil(self.tokens_until - now + self.window_ms),
            });
        }
        if now < self.blocked_until {
            let info = RateInfo {
                limit: limit.count,
                remaining: 0,
                reset_s: secs_ceil(self.blocked_until - now + self.window_ms),
            };
            return RateVerdict::Refuse(info, secs_ceil(self.blocked_until - now).max(1));
        }
        RateVerdict::Lease
    }

    /// How long a full fleet window is not asked again: a tenth of it, at most a second.
    fn pause(&self) -> i64 {
        (self.window_ms / 10).clamp(1, 1_000)
    }

    /// Takes in what the fleet's window granted at `now`.
    ///
    /// A full window (nothing granted, or the grant took the last of it) is not asked
    /// again before `pause`: a tenth of the window, at most a second. So a key whose fleet
    /// is over its limit costs the store at most 10 calls a second per gateway, whatever
    /// the offered load, and refusals are answered here.
    pub fn granted(&mut self, grant: RateGrant, now: i64) {
        let pause = self.pause();
        if grant.granted > 0 {
            self.tokens = grant.granted;
            self.tokens_until = now + grant.window_left_ms;
            self.fleet_remaining = grant.remaining;
            self.blocked_until = if grant.remaining == 0 {
                now + pause
            } else {
                i64::MIN
            };
        } else {
            self.tokens = 0;
            self.fleet_remaining = 0;
            self.blocked_until = now + grant.retry_ms.max(pause);
        }
    }
}

impl Window {
    /// After a request admitted from the fleet's lease: whether to lease ahead of need
    /// (less than half a lease held, the fleet's window not full nor nearly over, none
    /// under way), so that requests seldom wait for Redis. Marks it under way.
    pub fn ahead(&mut self, lease: u64, now: i64) -> bool {
        // Not in the last tenth of the store's window: what is leased there would mostly
        // end with it unspent, and the fleet would admit less than its limit.
        let go = !self.prefetching
            && self.tokens < lease / 2
            && now + self.window_ms / 10 < self.tokens_until
            && now >= self.blocked_until
            && self.fleet_remaining > 0;
        self.prefetching |= go;
        go
    }

    /// Takes in a lease made ahead of need: added to what is held when it is of the same
    /// window of the store's, else in place of it (what was held ends with its window).
    pub fn granted_ahead(&mut self, grant: RateGrant, now: i64) {
        self.prefetching = false;
        let until = now + grant.window_left_ms;
        if grant.granted > 0 && (until - self.tokens_until).abs() <= 5 && now < self.tokens_until {
            self.tokens += grant.granted;
            self.fleet_remaining = grant.remaining;
            if grant.remaining == 0 {
                self.blocked_until = now + self.pause();
            }
        } else if grant.granted > 0 || self.tokens == 0 {
            self.granted(grant, now);
        }
    }

    /// The lease ahead failed.
    pub fn ahead_failed(&mut self) {
        self.prefetching = false;
    }
}

/// How many requests one fleet lease asks for: a twentieth of the limit (so a fleet of
/// several gateways shares a window in small pieces), at least 1, at most 1000.
pub(super) fn lease_size(limit: RateLimit) -> u64 {
    (limit.count / 20).clamp(1, 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_s(n: u64) -> RateLimit {
        RateLimit {
            count: n,
            window_ms: 1_000,
        }
    }

    fn admitted(w: &mut Window, limit: RateLimit, at: i64, n: usize) -> usize {
        (0..n)
            .filter(|_| matches!(w.admit_local(limit, at), RateVerdict::Admit(_)))
            .count()
    }

    #[test]
    fn a_window_admits_its_limit_then_refuses_with_a_retry() {
        let mut w = Window::new(1_000);
        assert_eq!(admitted(&mut w, per_s(5), 10_000, 8), 5);
        match w.admit_local(per_s(5), 10_000) {
            RateVerdict::Refuse(info, retry) => {
                assert_eq!(info.remaining, 0);
                // The 5 still weigh 4 at 200 ms into the next window.
                assert_eq!(retry, 2);
                assert_eq!(info.reset_s, 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_previous_window_weighs_by_what_is_left_of_it() {
        let mut w = Window::new(1_000);
        assert_eq!(admitted(&mut w, per_s(10), 10_000, 10), 10);
        // Half-way through the next window, half of the last one still counts.
        assert_eq!(admitted(&mut w, per_s(10), 11_500, 10), 5);
        // A whole window later only the 5 of the last one count, fully... then none.
        assert_eq!(admitted(&mut w, per_s(10), 12_000, 10), 5);
        assert_eq!(admitted(&mut w, per_s(10), 14_000, 20), 10);
    }

    #[test]
    fn remaining_counts_down_and_reset_says_when_it_is_full_again() {
        let mut w = Window::new(60_000);
        let limit = RateLimit {
            count: 3,
            window_ms: 60_000,
        };
        let RateVerdict::Admit(a) = w.admit_local(limit, 600_000) else {
            panic!()
        };
        assert_eq!((a.limit, a.remaining, a.reset_s), (3, 2, 120));
        let RateVerdict::Admit(b) = w.admit_local(limit, 630_000) else {
            panic!()
        };
        assert_eq!((b.remaining, b.reset_s), (1, 90));
    }

    #[test]
    fn the_monotonic_clock_going_nowhere_never_resets_a_window() {
        let mut w = Window::new(1_000);
        assert_eq!(admitted(&mut w, per_s(3), 5_000, 3), 3);
        // An earlier time (it cannot happen on a monotonic clock, but must not free room).
        assert_eq!(admitted(&mut w, per_s(3), 4_000, 3), 0);
    }

    #[test]
    fn a_fleet_lease_is_spent_then_asked_again_and_an_empty_one_blocks() {
        let mut w = Window::new(1_000);
        assert_eq!(w.admit_fleet(per_s(100), 0), RateVerdict::Lease);
        w.granted(
            RateGrant {
                granted: 2,
                remaining: 50,
                window_left_ms: 400,
                retry_ms: 0,
            },
            0,
        );
        assert!(matches!(w.admit_fleet(per_s(100), 1), RateVerdict::Admit(i) if i.remaining == 51));
        assert!(matches!(w.admit_fleet(per_s(100), 2), RateVerdict::Admit(i) if i.remaining == 50));
        assert_eq!(w.admit_fleet(per_s(100), 3), RateVerdict::Lease);
        w.granted(
            RateGrant {
                granted: 0,
                remaining: 0,
                window_left_ms: 300,
                retry_ms: 10,
            },
            3,
        );
        // Blocked for a tenth of the window, not the 10 ms the store said.
        assert!(matches!(
            w.admit_fleet(per_s(100), 60),
            RateVerdict::Refuse(_, 1)
        ));
        assert_eq!(w.admit_fleet(per_s(100), 103), RateVerdict::Lease);
        // A grant that took the last of the window is spent, then not asked again at once.
        w.granted(
            RateGrant {
                granted: 1,
                remaining: 0,
                window_left_ms: 800,
                retry_ms: 0,
            },
            103,
        );
        assert!(matches!(
            w.admit_fleet(per_s(100), 104),
            RateVerdict::Admit(_)
        ));
        assert!(matches!(
            w.admit_fleet(per_s(100), 105),
            RateVerdict::Refuse(_, 1)
        ));
        assert_eq!(w.admit_fleet(per_s(100), 203), RateVerdict::Lease);
        // Tokens of a window that ended are void.
        w.granted(
            RateGrant {
                granted: 5,
                remaining: 10,
                window_left_ms: 10,
                retry_ms: 0,
            },
            300,
        );
        assert_eq!(w.admit_fleet(per_s(100), 311), RateVerdict::Lease);
        // Ahead of need: below half a lease, not twice, not in the window's last tenth.
        w.granted(
            RateGrant {
                granted: 10,
                remaining: 50,
                window_left_ms: 500,
                retry_ms: 0,
            },
            400,
        );
        for _ in 0..6 {
            assert!(matches!(
                w.admit_fleet(per_s(100), 401),
                RateVerdict::Admit(_)
            ));
        }
        assert!(w.ahead(10, 401));
        assert!(!w.ahead(10, 401), "one under way");
        w.ahead_failed();
        assert!(!w.ahead(10, 850), "the window ends at 900");
    }
}
