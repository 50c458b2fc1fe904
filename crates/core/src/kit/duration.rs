//! Human durations in configuration, one grammar everywhere: `"7d"`,
//! `"1d12h"`, `"90min"`, `"6mo"`, `"1y"`.
//!
//! A duration is one or more `<number><unit>` parts, largest unit first,
//! each unit at most once, optionally separated by spaces. The units are
//! `y` (years), `mo` (months), `w` (weeks), `d` (days), `h` (hours), `min`
//! (minutes) and `s` (seconds). `m` alone is refused as ambiguous; only
//! retention's `keep_within`, where it always meant months, still reads it
//! so, and the configuration warns about it ([`WrittenDuration::parse_legacy`]).
//!
//! Where a duration has a fixed length ([`parse_duration`]: objectives,
//! timeouts, intervals) a month counts 30 days and a year 365; retention's
//! `keep_within` subtracts years and months on the calendar instead.

use std::fmt;
use std::time::Duration;

/// A text that is not a duration, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(pub String);

/// The units, largest first, with their length in seconds where fixed
/// (months and years: 30 and 365 days).
const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 86_400),
    ("mo", 30 * 86_400),
    ("w", 7 * 86_400),
    ("d", 86_400),
    ("h", 3_600),
    ("min", 60),
    ("s", 1),
];

/// The units, for messages.
pub const UNIT_LIST: &str = "y, mo, w, d, h, min or s";

/// A duration as written: a number for each unit (see the module's grammar).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct WrittenDuration {
    /// `y`, `mo`, `w`, `d`, `h`, `min`, `s`, in that order.
    parts: [u32; 7],
}

impl WrittenDuration {
    /// Parses a duration; `m` is refused as ambiguous.
    pub fn parse(text: &str) -> Result<WrittenDuration, DurationError> {
        Self::read(text, false).map(|(d, _)| d)
    }

    /// Parses a duration where `m` is the old spelling of `mo` (months);
    /// the flag says whether it was used, so that the caller can warn.
    pub fn parse_legacy(text: &str) -> Result<(WrittenDuration, bool), DurationError> {
        Self::read(text, true)
    }

    fn read(text: &str, m_is_month: bool) -> Result<(WrittenDuration, bool), DurationError> {
        let fail = |why: String| DurationError(format!("`{text}`: {why}"));
        let mut out = WrittenDuration::default();
        let mut used_m = false;
        let mut last: Option<usize> = None;
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(DurationError("empty duration".into()));
        }
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(fail(format!("expected a number before `{rest}`")));
            }
            let n: u32 = rest[..digits]
                .parse()
                .map_err(|_| fail("a number is too large".into()))?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..unit_len];
            rest = rest[unit_len..].trim_start();
            let unit = match unit {
                "" => return Err(fail(format!("missing unit (use {UNIT_LIST})"))),
                "m" if m_is_month => {
                    used_m = true;
                    "mo"
                }
                "m" => {
                    return Err(fail(format!(
                        "`{n}m` is ambiguous: write `{n}min` for minutes or `{n}mo` for months"
                    )))
                }
                u => u,
            };
            let Some(rank) = UNITS.iter().position(|(name, _)| *name == unit) else {
                return Err(fail(format!("unknown unit `{unit}` (use {UNIT_LIST})")));
            };
            if last.is_some_and(|l| rank <= l) {
                return Err(fail(
                    "each unit at most once, largest first (e.g. `1d12h`)".into(),
                ));
            }
            last = Some(rank);
            out.parts[rank] = n;
        }
        if out.parts.iter().all(|&n| n == 0) {
            return Err(fail("must be longer than zero".into()));
        }
        Ok((out, used_m))
    }

    /// Years and months, the calendar part.
    pub fn calendar_months(&self) -> u64 {
        u64::from(self.parts[0]) * 12 + u64::from(self.parts[1])
    }

    /// Weeks and days, in days (a calendar day in local time).
    pub fn days(&self) -> u64 {
        u64::from(self.parts[2]) * 7 + u64::from(self.parts[3])
    }

    /// Hours, minutes and seconds, in seconds (exact).
    pub fn exact_seconds(&self) -> u64 {
        UNITS[4..]
            .iter()
            .zip(&self.parts[4..])
            .map(|((_, len), &n)| len * u64::from(n))
            .sum()
    }

    /// The fixed length: a month is 30 days and a year 365.
    pub fn fixed(&self) -> Result<Duration, DurationError> {
        let mut total: u64 = 0;
        for ((_, len), &n) in UNITS.iter().zip(&self.parts) {
            total = len
                .checked_mul(u64::from(n))
                .and_then(|s| total.checked_add(s))
                .ok_or_else(|| DurationError(format!("`{self}`: too large")))?;
        }
        Ok(Duration::from_secs(total))
    }
}

impl fmt::Display for WrittenDuration {
    /// The duration in the grammar (`m` always written `mo`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for ((unit, _), &n) in UNITS.iter().zip(&self.parts) {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// Parses a duration of fixed length (see the module's grammar), e.g.
/// `"7d"`, `"1d12h"`, `"90min"`. `m` is refused as ambiguous.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    WrittenDuration::parse(text)?.fixed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let secs = |s: &str| parse_duration(s).unwrap().as_secs();
        assert_eq!(secs("7d"), 7 * 86400);
        assert_eq!(secs("1d12h"), 36 * 3600);
        assert_eq!(secs("1d 12h"), 36 * 3600);
        assert_eq!(secs("90min"), 5400);
        assert_eq!(secs("1h30min15s"), 5415);
        assert_eq!(secs("1mo"), 30 * 86400);
        assert_eq!(secs("1y"), 365 * 86400);
        for bad in ["", "7", "d", "7x", "0d", "-1d", "1h1d", "1d1d", "7 d", "7D"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let m = parse_duration("7m").unwrap_err().to_string();
        assert!(m.contains("`7min` for minutes or `7mo` for months"), "{m}");
    }

    #[test]
    fn m_is_a_month_only_where_it_always_was() {
        let (d, legacy) = WrittenDuration::parse_legacy("2y6m").unwrap();
        assert!(legacy);
        assert_eq!(d.calendar_months(), 30);
        assert_eq!(d.to_string(), "2y6mo");
        let (d, legacy) = WrittenDuration::parse_legacy("6mo1w2d3h").unwrap();
        assert!(!legacy);
        assert_eq!(
            (d.calendar_months(), d.days(), d.exact_seconds()),
            (6, 9, 3 * 3600)
        );
        assert_eq!(WrittenDuration::parse(&d.to_string()).unwrap(), d);
    }
}
