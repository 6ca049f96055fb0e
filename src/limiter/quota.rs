//! One key's quota as this gateway holds it: units leased from the store (`Meters`), spent
//! one per admitted request, and reported back in batches.
//!
//! The store never leases past the quota, so the fleet admits at most the quota plus
//! nothing: what a gateway holds it has taken from the others. A gateway that dies loses
//! what it held (at most one batch); one that stops gives it back.

use crate::limits::Quota;
use crate::store::{QuotaGrant, QuotaSettle, QuotaTag};

/// What a quota tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaVerdict {
    /// Admitted; this many remain (`X-Quota-Remaining`).
    Admit(u64),
    /// Used up; the quota refills in this many whole seconds (`None`: never by itself).
    Exhausted(Option<u64>),
    /// This gateway holds nothing: lease from the store.
    Lease(QuotaTag),
}

/// How long a used-up quota is not asked for again (ms): a raised limit or units given
/// back by a stopped gateway are seen within this.
const EXHAUSTED_RECHECK_MS: i64 = 1_000;

#[derive(Debug, Default)]
pub(super) struct QuotaState {
    tag: QuotaTag,
    /// The quota the state was leased under; a change clears `exhausted_until`.
    limit: u64,
    tokens: u64,
    /// Admitted in `tag` and not yet reported.
    spent: u64,
    /// What the store had left after the last lease, beyond what is held here.
    store_remaining: u64,
    /// The store granted nothing: used up until then (monotonic ms).
    exhausted_until: Option<i64>,
    /// Reports of earlier tags not yet made (a period ended, a reset came).
    pending: Vec<(QuotaTag, u64, u64)>,
    /// A lease ahead of need is under way (`ahead`).
    prefetching: bool,
}

impl QuotaState {
    /// Moves to `tag` if it is newer: what was spent and held under the old one is
    /// reported under it.
    fn advance(&mut self, tag: QuotaTag) {
        if tag > self.tag {
            if self.spent > 0 || self.tokens > 0 {
                self.pending.push((self.tag, self.spent, self.tokens));
            }
            *self = QuotaState {
                tag,
                limit: self.limit,
                pending: std::mem::take(&mut self.pending),
                ..QuotaState::default()
            };
        }
    }

    /// Spends one unit, or says why not. `now_wall` picks the period (a wall clock behind
    /// the state's never moves it back); `now_mono` times the recheck.
    pub fn spend(
        &mut self,
        quota: Quota,
        epoch: u64,
        now_wall: i64,
        now_mono: i64,
    ) -> QuotaVerdict {
        self.advance(QuotaTag {
            epoch,
            period: quota.period_of(now_wall),
        });
        if quota.limit != self.limit {
            self.limit = quota.limit;
            self.exhausted_until = None;
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            self.spent += 1;
            return QuotaVerdict::Admit(self.store_remaining.saturating_add(self.tokens));
        }
        if self.exhausted_until.is_some_and(|t| now_mono < t) {
            return QuotaVerdict::Exhausted(quota.refills_in_s(self.tag.period, now_wall));
        }
        QuotaVerdict::Lease(self.tag)
    }

    /// Takes in a lease.
    pub fn granted(&mut self, grant: QuotaGrant, now_mono: i64) {
        self.advance(grant.tag);
        if grant.tag < self.tag {
            // Leased under a tag this gateway has left meanwhile: give it back.
            self.pending.push((grant.tag, 0, grant.granted));
            return;
        }
        self.tokens += grant.granted;
        self.store_remaining = self.limit.saturating_sub(grant.leased);
        self.exhausted_until = (grant.granted == 0).then_some(now_mono + EXHAUSTED_RECHECK_MS);
    }

    /// Units held and not spent.
    pub fn held(&self) -> u64 {
        self.tokens
    }

    /// After a spend: how much to lease ahead of need, so that requests seldom find the
    /// lease empty and wait for the store. When less than half of `batch` is held and the
    /// store has more, the rest of a batch (so never more than one batch is held), and the
    /// lease is marked under way; else nothing.
    pub fn ahead(&mut self, batch: u64) -> Option<(QuotaTag, u64)> {
        if self.prefetching || self.tokens >= batch / 2 || self.store_remaining == 0 {
            return None;
        }
        self.prefetching = true;
        Some((self.tag, batch - self.tokens))
    }

    /// The lease ahead is over (granted or failed).
    pub fn ahead_done(&mut self) {
        self.prefetching = false;
    }

    /// The reports to make now (`release`: give back what is held too), taken out of the
    /// state; `restore` puts them back if the store could not take them.
    pub fn take_reports(&mut self, key_id: &str, release: bool) -> Vec<QuotaSettle> {
        let mut out: Vec<QuotaSettle> = self
            .pending
            .drain(..)
            .map(|(tag, used, release)| QuotaSettle {
                key_id: key_id.to_owned(),
                tag,
                used,
                release,
            })
            .collect();
        let given_back = if release {
            std::mem::take(&mut self.tokens)
        } else {
            0
        };
        if self.spent > 0 || given_back > 0 {
            out.push(QuotaSettle {
                key_id: key_id.to_owned(),
                tag: self.tag,
                used: std::mem::take(&mut self.spent),
                release: given_back,
            });
        }
        out
    }

    /// Puts back reports the store did not take (they go with the next flush).
    pub fn restore(&mut self, reports: Vec<QuotaSettle>) {
        for r in reports {
            if r.tag == self.tag {
                self.spent += r.used;
                self.tokens += r.release;
            } else {
                self.pending.push((r.tag, r.used, r.release));
            }
        }
    }

    #[cfg(test)]
    pub fn has_reports(&self) -> bool {
        self.spent > 0 || !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::QuotaPeriod;

    const DAY: i64 = 86_400_000;

    fn day_quota(limit: u64) -> Quota {
        Quota {
            limit,
            period: QuotaPeriod::Day,
        }
    }

    fn grant(granted: u64, leased: u64, tag: QuotaTag) -> QuotaGrant {
        QuotaGrant {
            granted,
            leased,
            tag,
        }
    }

    #[test]
    fn leased_units_are_spent_then_a_lease_is_asked_for() {
        let q = day_quota(10);
        let mut s = QuotaState::default();
        let QuotaVerdict::Lease(tag) = s.spend(q, 0, 5 * DAY, 0) else {
            panic!()
        };
        assert_eq!(
            tag,
            QuotaTag {
                epoch: 0,
                period: 5
            }
        );
        s.granted(grant(3, 3, tag), 0);
        assert_eq!(s.spend(q, 0, 5 * DAY, 0), QuotaVerdict::Admit(9));
        assert_eq!(s.spend(q, 0, 5 * DAY, 0), QuotaVerdict::Admit(8));
        assert_eq!(s.spend(q, 0, 5 * DAY, 0), QuotaVerdict::Admit(7));
        assert_eq!(s.spend(q, 0, 5 * DAY, 0), QuotaVerdict::Lease(tag));
        let reports = s.take_reports("key_a", false);
        assert_eq!(reports.len(), 1);
        assert_eq!((reports[0].used, reports[0].release), (3, 0));
    }

    #[test]
    fn an_empty_lease_means_exhausted_until_the_next_day() {
        let q = day_quota(2);
        let mut s = QuotaState::default();
        let tag = QuotaTag {
            epoch: 0,
            period: 5,
        };
        s.granted(grant(0, 2, tag), 1_000);
        s.limit = 2;
        let noon = 5 * DAY + DAY / 2;
        assert_eq!(
            s.spend(q, 0, noon, 1_500),
            QuotaVerdict::Exhausted(Some(43_200))
        );
        // The next day (an injected wall clock) is a new period: lease again.
        assert_eq!(
            s.spend(q, 0, 6 * DAY, 1_600),
            QuotaVerdict::Lease(QuotaTag {
                epoch: 0,
                period: 6
            })
        );
    }

    #[test]
    fn a_wall_clock_stepping_back_does_not_reopen_a_past_period() {
        let q = day_quota(5);
        let mut s = QuotaState::default();
        s.spend(q, 0, 6 * DAY, 0);
        s.granted(
            grant(
                1,
                5,
                QuotaTag {
                    epoch: 0,
                    period: 6,
                },
            ),
            0,
        );
        assert_eq!(s.spend(q, 0, 6 * DAY - 10, 0), QuotaVerdict::Admit(0));
        assert_eq!(s.tag.period, 6);
    }

    #[test]
    fn a_reset_or_a_new_period_reports_the_old_tag_apart() {
        let q = day_quota(5);
        let mut s = QuotaState::default();
        let old = QuotaTag {
            epoch: 0,
            period: 6,
        };
        s.spend(q, 0, 6 * DAY, 0);
        s.granted(grant(3, 3, old), 0);
        s.spend(q, 0, 6 * DAY, 0);
        // A reset: epoch 1.
        assert_eq!(
            s.spend(q, 1, 6 * DAY, 0),
            QuotaVerdict::Lease(QuotaTag {
                epoch: 1,
                period: 6
            })
        );
        let reports = s.take_reports("key_a", true);
        assert_eq!(
            reports,
            vec![QuotaSettle {
                key_id: "key_a".into(),
                tag: old,
                used: 1,
                release: 2
            }]
        );
    }

    #[test]
    fn a_raised_limit_asks_again_at_once() {
        let mut s = QuotaState::default();
        let tag = QuotaTag {
            epoch: 0,
            period: 0,
        };
        let total = |limit| Quota {
            limit,
            period: QuotaPeriod::Total,
        };
        s.spend(total(1), 0, 0, 0);
        s.granted(grant(0, 1, tag), 0);
        assert_eq!(s.spend(total(1), 0, 0, 10), QuotaVerdict::Exhausted(None));
        assert_eq!(s.spend(total(5), 0, 0, 20), QuotaVerdict::Lease(tag));
    }

    #[test]
    fn reports_the_store_refused_go_with_the_next_flush() {
        let q = day_quota(5);
        let mut s = QuotaState::default();
        let tag = QuotaTag {
            epoch: 0,
            period: 6,
        };
        s.spend(q, 0, 6 * DAY, 0);
        s.granted(grant(2, 2, tag), 0);
        s.spend(q, 0, 6 * DAY, 0);
        let r = s.take_reports("key_a", false);
        assert!(!s.has_reports());
        s.restore(r);
        assert!(s.has_reports());
        assert_eq!(s.take_reports("key_a", false)[0].used, 1);
    }
}
