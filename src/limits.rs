//! Rate limits and quotas as people write them (SPEC §7): `100/s`, `10000/month`, and the
//! calendar a quota refills by (UTC days and months). Parsing lives here, once, for the
//! config, the CLI, the admin API and the store's records alike; enforcing lives in
//! `limiter`.

use std::fmt;

/// The largest count a limit or quota may name: 2^53, the largest integer every JSON
/// reader holds exactly.
pub const MAX_COUNT: u64 = 1 << 53;

/// `count` requests per `window_ms`, counted per key over a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub count: u64,
    pub window_ms: i64,
}

/// Why a limit or quota was refused; the text says what it must look like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LimitError(String);

fn count(n: &str, what: &str, example: &str) -> Result<u64, LimitError> {
    let bad = || LimitError(format!("`{what}` must look like {example}"));
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match n.parse::<u64>() {
        Ok(0) => Err(LimitError(format!(
            "`{what}`: the count must be at least 1"
        ))),
        Ok(c) if c <= MAX_COUNT => Ok(c),
        _ => Err(LimitError(format!(
            "`{what}`: the count must be at most 2^53 ({MAX_COUNT})"
        ))),
    }
}

impl RateLimit {
    const EXAMPLE: &'static str = "100/s, 6000/m or 100000/h";

    pub fn parse(s: &str) -> Result<RateLimit, LimitError> {
        let (n, unit) = s
            .split_once('/')
            .ok_or_else(|| LimitError(format!("`{s}` must look like {}", Self::EXAMPLE)))?;
        let window_ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => {
                return Err(LimitError(format!(
                    "`{s}`: the unit must be s, m or h ({})",
                    Self::EXAMPLE
                )))
            }
        };
        Ok(RateLimit {
            count: count(n, s, Self::EXAMPLE)?,
            window_ms,
        })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.window_ms {
            1_000 => "s",
            60_000 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// When a quota refills: at the start of each UTC day or month, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaPeriod {
    Day,
    Month,
    /// A fixed number of requests for the key's life (`keys usage --reset` refills it).
    Total,
}

impl QuotaPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaPeriod::Day => "day",
            QuotaPeriod::Month => "month",
            QuotaPeriod::Total => "total",
        }
    }
}

/// `limit` admitted requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    pub limit: u64,
    pub period: QuotaPeriod,
}

const DAY_MS: i64 = 86_400_000;

impl Quota {
    const EXAMPLE: &'static str = "10000/month, 500/day or 1000 (for the key's life)";

    pub fn parse(s: &str) -> Result<Quota, LimitError> {
        let (n, period) = match s.split_once('/') {
            None => (s, QuotaPeriod::Total),
            Some((n, "day")) => (n, QuotaPeriod::Day),
            Some((n, "month")) => (n, QuotaPeriod::Month),
            Some(_) => {
                return Err(LimitError(format!(
                    "`{s}`: the period must be day or month, or none ({})",
                    Self::EXAMPLE
                )))
            }
        };
        Ok(Quota {
            limit: count(n, s, Self::EXAMPLE)?,
            period,
        })
    }

    /// The period `now_ms` (unix ms, UTC) falls in: days or months since 1970, 0 for a
    /// total quota. Counters are kept per period, so a new period starts from zero.
    pub fn period_of(&self, now_ms: i64) -> i64 {
        match self.period {
            QuotaPeriod::Day => now_ms.div_euclid(DAY_MS),
            QuotaPeriod::Month => {
                let (year, month) = year_month(now_ms);
                i64::from(year) * 12 + i64::from(month) - 1
            }
            QuotaPeriod::Total => 0,
        }
    }

    /// Whole seconds from `now_ms` until period `index` ends (at least 1), for
    /// `Retry-After`; `None` for a total quota, which never refills by itself.
    pub fn refills_in_s(&self, index: i64, now_ms: i64) -> Option<u64> {
        self.resets_at(index)
            .map(|at| u64::try_from((at - now_ms).max(1_000) / 1_000).unwrap_or(1))
    }

    /// When the counters of period `index` may be dropped: a day after it ends (unix ms);
    /// `None` for a total quota.
    pub fn keep_until(&self, index: i64) -> Option<i64> {
        self.resets_at(index).map(|t| t.saturating_add(DAY_MS))
    }

    /// When period `index` ends and the quota refills (unix ms); `None` for a total quota.
    pub fn resets_at(&self, index: i64) -> Option<i64> {
        match self.period {
            QuotaPeriod::Day => Some((index + 1).saturating_mul(DAY_MS)),
            QuotaPeriod::Month => {
                let next = index + 1;
                let year = i32::try_from(next.div_euclid(12)).ok()?;
                let month = u8::try_from(next.rem_euclid(12) + 1).ok()?;
                let month = time::Month::try_from(month).ok()?;
                let date = time::Date::from_calendar_date(year, month, 1).ok()?;
                Some(date.midnight().assume_utc().unix_timestamp() * 1_000)
            }
            QuotaPeriod::Total => None,
        }
    }
}

/// The UTC year and month (1-12) of a unix-ms time; out-of-range times clamp to the
/// calendar's ends.
fn year_month(now_ms: i64) -> (i32, u8) {
    let t = time::OffsetDateTime::from_unix_timestamp(now_ms.div_euclid(1_000)).unwrap_or(
        if now_ms < 0 {
            time::OffsetDateTime::UNIX_EPOCH
        } else {
            time::PrimitiveDateTime::MAX.assume_utc()
        },
    );
    (t.year(), u8::from(t.month()))
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.period {
            QuotaPeriod::Total => write!(f, "{}", self.limit),
            p => write!(f, "{}/{}", self.limit, p.as_str()),
        }
    }
}

/// A key's own limits, as the cache keeps them: boxed and absent for a key without any,
/// so an unlimited key pays one pointer for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimits {
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
    /// The key's usage epoch: the quota counters to spend from.
    pub usage_epoch: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse_and_print_back() {
        for s in ["100/s", "6000/m", "100000/h", "1/s"] {
            assert_eq!(RateLimit::parse(s).expect("parses").to_string(), s);
        }
        assert_eq!(
            RateLimit::parse("5/m").expect("parses"),
            RateLimit {
                count: 5,
                window_ms: 60_000
            }
        );
    }

    #[test]
    fn bad_rate_limits_say_what_is_wrong() {
        for (s, says) in [
            ("0/s", "at least 1"),
            ("-5/m", "must look like"),
            ("10/fortnight", "unit"),
            ("10", "must look like"),
            ("/s", "must look like"),
            ("1e3/s", "must look like"),
            (" 5/s", "must look like"),
            ("9007199254740993/s", "at most 2^53"),
        ] {
            let e = RateLimit::parse(s).expect_err("refused").to_string();
            assert!(e.contains(says), "{s}: {e}");
        }
    }

    #[test]
    fn quotas_parse_with_or_without_a_period() {
        assert_eq!(
            Quota::parse("10000/month").expect("parses"),
            Quota {
                limit: 10_000,
                period: QuotaPeriod::Month
            }
        );
        for s in ["500/day", "10000/month", "1000", "9007199254740992"] {
            assert_eq!(Quota::parse(s).expect("parses").to_string(), s);
        }
        for s in ["0/day", "9007199254740993", "10/week", "-1", "x/day", ""] {
            assert!(Quota::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn days_and_months_are_utc_and_refill_at_their_boundary() {
        let day = Quota::parse("5/day").expect("parses");
        // 2026-12-07T23:59:59.999Z and one ms later.
        let before = 1_796_687_999_999;
        let after = before + 1;
        assert_eq!(day.period_of(after), day.period_of(before) + 1);
        assert_eq!(day.resets_at(day.period_of(before)), Some(after));

        let month = Quota::parse("5/month").expect("parses");
        // 2026-12-31T23:59:59.999Z -> 2027-01-01.
        let dec = 1_798_761_599_999;
        assert_eq!(month.period_of(dec + 1), month.period_of(dec) + 1);
        assert_eq!(month.resets_at(month.period_of(dec)), Some(dec + 1));
        // February of a leap year ends on the 29th.
        let feb_29_2028 = 1_835_395_200_000;
        assert_eq!(
            month.resets_at(month.period_of(feb_29_2028)),
            Some(1_835_481_600_000)
        );

        let total = Quota::parse("5").expect("parses");
        assert_eq!(total.period_of(before), total.period_of(0));
        assert_eq!(total.resets_at(0), None);
    }
}
