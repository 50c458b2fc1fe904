//! Retention: which snapshots a keep-policy keeps (restic's semantics).
//!
//! A [`RetentionPolicy`] is the `[retention]` table of the configuration: a set
//! of global [`KeepRules`] that apply to every snapshot, plus optional per-tag
//! rules that apply only to the snapshots carrying that tag. [`RetentionPolicy::apply`]
//! turns a list of [`Candidate`]s into one [`Decision`] per snapshot, each with
//! the reasons it is kept (an empty list means it may be forgotten).
//!
//! The semantics follow restic's `forget`:
//!
//! * snapshots are ordered newest first (equal times: smaller id first);
//! * `keep_last = N` keeps the N newest snapshots;
//! * `keep_hourly`/`keep_daily`/`keep_weekly`/`keep_monthly`/`keep_yearly = N`
//!   walk the snapshots newest to oldest and keep the first (newest) snapshot of
//!   each new hour/day/ISO week/month/year, until N such periods have been used;
//!   the periods are computed in the time zone passed to `apply`;
//! * `keep_within = "D"` keeps every snapshot whose time is at or after the newest
//!   snapshot's time minus D (years, months and days by calendar arithmetic in
//!   that time zone, hours as exact durations);
//! * a snapshot is kept if any rule keeps it;
//! * a policy without any rule keeps everything (reason `"no policy"`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::kit::duration::WrittenDuration;
use chrono::{
    DateTime, Datelike, Days, Months, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike, Utc,
};

/// Errors produced while reading a retention policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// A `keep_within` duration could not be parsed.
    #[error(
        "invalid keep_within duration {value:?}: {problem}; expected a positive duration \
         made of <number><unit> parts, largest unit first, with units y, mo, w, d, h, min, s \
         (years, months, weeks, days, hours, minutes, seconds), e.g. \"90d\", \"2y6mo\", \"36h\""
    )]
    InvalidKeepWithin {
        /// The rejected input, verbatim.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// A `keep_within` duration such as `"90d"`, `"2y6mo"`, `"36h"` or `"1w"`.
///
/// It is written in the configuration's one duration grammar
/// ([`crate::kit::duration`]); years and months are subtracted on the
/// calendar. The old `m` for months is still read as months
/// ([`KeepWithin::uses_m_for_months`] tells the configuration to warn). It is
/// (de)serialized as that string, and [`Display`](fmt::Display) gives back a
/// string that parses to the same value (with `mo`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KeepWithin(WrittenDuration);

impl KeepWithin {
    /// Parses a duration such as `"90d"` or `"2y6mo"` (see the type's documentation).
    pub fn parse(s: &str) -> Result<KeepWithin, RetentionError> {
        WrittenDuration::parse_legacy(s)
            .map(|(d, _)| KeepWithin(d))
            .map_err(|e| RetentionError::InvalidKeepWithin {
                value: s.to_string(),
                problem: e.to_string(),
            })
    }

    /// Whether `s` writes months as the old, ambiguous `m`.
    pub fn uses_m_for_months(s: &str) -> bool {
        WrittenDuration::parse_legacy(s).is_ok_and(|(_, m)| m)
    }

    /// The earliest time still kept when the newest snapshot considered was taken
    /// at `newest`: `newest` minus this duration, with years, months, weeks and
    /// days subtracted on the calendar of `tz` and hours as exact durations.
    ///
    /// Months are clamped to the end of shorter months (31 March minus one month
    /// is 28 or 29 February). Returns `None` when the result falls before the
    /// earliest representable time, i.e. when every snapshot is within range.
    pub fn cutoff<Tz: TimeZone>(&self, newest: DateTime<Utc>, tz: &Tz) -> Option<DateTime<Utc>> {
        let local = newest.with_timezone(tz);
        let months = u32::try_from(self.0.calendar_months()).ok()?;
        let days = self.0.days();
        let naive: NaiveDateTime = local
            .naive_local()
            .checked_sub_months(Months::new(months))?
            .checked_sub_days(Days::new(days))?;
        // Map the local wall-clock time back to an instant. When it is ambiguous
        // (clocks turned back) take the earlier instant, which keeps more; when it
        // does not exist (clocks turned forward) use the newest snapshot's offset.
        let instant = match tz.from_local_datetime(&naive).earliest() {
            Some(t) => t.with_timezone(&Utc),
            None => {
                let offset = TimeDelta::seconds(i64::from(local.offset().fix().local_minus_utc()));
                naive.checked_sub_signed(offset)?.and_utc()
            }
        };
        instant.checked_sub_signed(TimeDelta::try_seconds(
            i64::try_from(self.0.exact_seconds()).ok()?,
        )?)
    }
}

impl fmt::Display for KeepWithin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == WrittenDuration::default() {
            // Only reachable through `Default`; parse rejects zero durations.
            return f.write_str("0h");
        }
        self.0.fmt(f)
    }
}

impl FromStr for KeepWithin {
    type Err = RetentionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeepWithin::parse(s)
    }
}

impl serde::Serialize for KeepWithin {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KeepWithin {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        KeepWithin::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Keep rules. All optional; a rule that is unset (or set to 0) keeps nothing by itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepRules {
    /// Keep the N most recent snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep the most recent snapshot of each of the last N hours that have snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// Keep the most recent snapshot of each of the last N days that have snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// Keep the most recent snapshot of each of the last N ISO weeks (Monday to
    /// Sunday) that have snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// Keep the most recent snapshot of each of the last N calendar months that have snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// Keep the most recent snapshot of each of the last N calendar years that have snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot taken within this duration of the newest snapshot
    /// considered, e.g. `"90d"`, `"2y6mo"`, `"36h"`, `"1w"` (the configuration's
    /// duration grammar; years and months on the calendar; the old `m` for
    /// months is still read, with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<KeepWithin>,
}

/// Which calendar period a bucket rule groups by.
#[derive(Clone, Copy)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    /// The reason label of the bucket `time` falls in, which doubles as the bucket key.
    fn label<Tz: TimeZone>(self, time: DateTime<Utc>, tz: &Tz) -> String {
        let t = time.with_timezone(tz);
        match self {
            Period::Hour => format!(
                "hourly {:04}-{:02}-{:02} {:02}h",
                t.year(),
                t.month(),
                t.day(),
                t.hour()
            ),
            Period::Day => format!("daily {:04}-{:02}-{:02}", t.year(), t.month(), t.day()),
            Period::Week => {
                let w = t.iso_week();
                format!("weekly {:04}-W{:02}", w.year(), w.week())
            }
            Period::Month => format!("monthly {:04}-{:02}", t.year(), t.month()),
            Period::Year => format!("yearly {:04}", t.year()),
        }
    }
}

impl KeepRules {
    /// True when no rule is set (rules set to 0 count as unset, as in restic).
    pub fn is_empty(&self) -> bool {
        let unset = |n: Option<u32>| n.unwrap_or(0) == 0;
        unset(self.keep_last)
            && unset(self.keep_hourly)
            && unset(self.keep_daily)
            && unset(self.keep_weekly)
            && unset(self.keep_monthly)
            && unset(self.keep_yearly)
            && self.keep_within.is_none()
    }

    /// Adds this rule set's reasons to `out[i]` for every `i` in `members`.
    ///
    /// `order` is every candidate sorted newest first; `members` are the indexes
    /// into it (ascending, so also newest first) this rule set applies to.
    fn collect<Tz: TimeZone>(
        &self,
        order: &[&Candidate<'_>],
        members: &[usize],
        tz: &Tz,
        prefix: &str,
        out: &mut [Vec<String>],
    ) {
        if members.is_empty() {
            return;
        }
        if let Some(n) = self.keep_last {
            for &i in members.iter().take(n as usize) {
                out[i].push(format!("{prefix}last"));
            }
        }
        let buckets = [
            (self.keep_hourly, Period::Hour),
            (self.keep_daily, Period::Day),
            (self.keep_weekly, Period::Week),
            (self.keep_monthly, Period::Month),
            (self.keep_yearly, Period::Year),
        ];
        for (count, period) in buckets {
            let mut left = count.unwrap_or(0);
            let mut last: Option<String> = None;
            for &i in members {
                if left == 0 {
                    break;
                }
                let label = period.label(order[i].time, tz);
                if last.as_deref() != Some(label.as_str()) {
                    out[i].push(format!("{prefix}{label}"));
                    last = Some(label);
                    left -= 1;
                }
            }
        }
        if let Some(within) = self.keep_within {
            let newest = order[members[0]].time;
            let cutoff = within.cutoff(newest, tz);
            for &i in members {
                if cutoff.is_none_or(|c| order[i].time >= c) {
                    out[i].push(format!("{prefix}within {within}"));
                }
            }
        }
    }
}

/// The whole `[retention]` table: global rules plus per-tag rules.
///
/// In TOML:
///
/// ```toml
/// [retention]
/// keep_last = 7
/// keep_daily = 7
/// tags.pre-migration = { keep_within = "90d" }
/// ```
///
/// Unknown keys are rejected, at the top level and inside tag tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep the N most recent snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep the most recent snapshot of each of the last N hours that have snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// Keep the most recent snapshot of each of the last N days that have snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// Keep the most recent snapshot of each of the last N ISO weeks (Monday to
    /// Sunday) that have snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// Keep the most recent snapshot of each of the last N calendar months that have snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// Keep the most recent snapshot of each of the last N calendar years that have snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot taken within this duration of the newest snapshot,
    /// e.g. `"90d"`, `"2y6mo"`, `"36h"`, `"1w"` (the configuration's duration
    /// grammar; years and months on the calendar; the old `m` for months is
    /// still read, with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<KeepWithin>,
    /// Extra rules per tag: `tags.NAME = { ... }` applies its rules to the
    /// snapshots tagged NAME only, computed among those snapshots alone (so its
    /// `keep_last` and `keep_within` count from the newest snapshot with that tag).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, KeepRules>,
}

/// One snapshot as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// The snapshot's id.
    pub id: &'a str,
    /// When the snapshot was taken.
    pub time: DateTime<Utc>,
    /// The snapshot's tags.
    pub tags: &'a [String],
}

/// The decision for one candidate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// The snapshot's id.
    pub id: String,
    /// Whether any rule keeps the snapshot (false: it may be forgotten).
    pub keep: bool,
    /// Why it is kept, e.g. `"last"`, `"daily 2026-11-20"`, `"weekly 2026-W47"`,
    /// `"monthly 2026-11"`, `"yearly 2026"`, `"hourly 2026-11-20 14h"`,
    /// `"within 90d"`, `"tag pre-migration: within 90d"` or `"no policy"`.
    /// Empty exactly when `keep` is false.
    pub reasons: Vec<String>,
}

impl RetentionPolicy {
    /// The global rules (everything but `tags`) as a [`KeepRules`].
    pub fn global(&self) -> KeepRules {
        KeepRules {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within,
        }
    }

    /// True when no rule at all is set, globally or for any tag (rules set to 0
    /// count as unset). [`apply`](Self::apply) then keeps everything; callers
    /// that delete should refuse to run with an empty policy.
    pub fn is_empty(&self) -> bool {
        self.global().is_empty() && self.tags.values().all(KeepRules::is_empty)
    }

    /// Decides for every candidate (in any order) whether the policy keeps it.
    ///
    /// The result has one decision per candidate, sorted newest first; candidates
    /// with equal times are ordered by id (smaller id first, and treated as the
    /// newer one by the rules). Hour/day/ISO-week/month/year buckets and
    /// `keep_within`'s calendar arithmetic use the time zone `tz`.
    pub fn apply<Tz: TimeZone>(&self, candidates: &[Candidate<'_>], tz: &Tz) -> Vec<Decision> {
        let mut order: Vec<&Candidate<'_>> = candidates.iter().collect();
        order.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.id.cmp(b.id)));
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); order.len()];
        if self.is_empty() {
            for r in &mut reasons {
                r.push("no policy".to_string());
            }
        } else {
            let all: Vec<usize> = (0..order.len()).collect();
            self.global().collect(&order, &all, tz, "", &mut reasons);
            for (tag, rules) in &self.tags {
                let members: Vec<usize> = (0..order.len())
                    .filter(|&i| order[i].tags.iter().any(|t| t == tag))
                    .collect();
                rules.collect(&order, &members, tz, &format!("tag {tag}: "), &mut reasons);
            }
        }
        order
            .iter()
            .zip(reasons)
            .map(|(c, reasons)| Decision {
                id: c.id.to_string(),
                keep: !reasons.is_empty(),
                reasons,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, NaiveDate, Weekday};
    use std::collections::BTreeSet;

    /// An owned snapshot of the synthetic history.
    struct Snap {
        id: String,
        time: DateTime<Utc>,
        tags: Vec<String>,
    }

    fn at(s: &str) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
            .unwrap()
            .and_utc()
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn snap(time: DateTime<Utc>, suffix: &str, tags: &[&str]) -> Snap {
        Snap {
            id: format!("{}{suffix}", time.format("%Y-%m-%dT%H:%M")),
            time,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    /// 400 daily snapshots at 02:00 UTC from 2025-06-01 (a Sunday) to 2026-07-05
    /// (a Sunday), the August 2025 ones tagged "pre-migration" and the Sunday ones
    /// tagged "weekly", plus untagged extras on the last three days (including two
    /// with the very same time) and one late on New Year's Eve.
    fn history() -> Vec<Snap> {
        let mut out = Vec::new();
        let start = date("2025-06-01");
        for d in 0..400u64 {
            let day = start + Days::new(d);
            let mut tags = Vec::new();
            if day.year() == 2025 && day.month() == 8 {
                tags.push("pre-migration");
            }
            if day.weekday() == Weekday::Sun {
                tags.push("weekly");
            }
            let time = day.and_hms_opt(2, 0, 0).unwrap().and_utc();
            out.push(snap(time, "", &tags));
        }
        assert_eq!(out.last().unwrap().id, "2026-07-05T02:00");
        for (time, suffix) in [
            ("2026-07-05T14:00", ""),
            ("2026-07-05T20:00", ""),
            ("2026-07-04T14:00", ""),
            ("2026-07-04T20:00", "-a"),
            ("2026-07-04T20:00", "-b"),
            ("2026-07-03T14:00", ""),
            ("2025-12-31T23:00", ""),
        ] {
            out.push(snap(at(time), suffix, &[]));
        }
        out
    }

    fn candidates(snaps: &[Snap]) -> Vec<Candidate<'_>> {
        snaps
            .iter()
            .map(|s| Candidate {
                id: &s.id,
                time: s.time,
                tags: &s.tags,
            })
            .collect()
    }

    fn policy(json: &str) -> RetentionPolicy {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn ids(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn all(snaps: &[Snap]) -> BTreeSet<String> {
        snaps.iter().map(|s| s.id.clone()).collect()
    }

    /// Every snapshot taken at or after `cutoff`.
    fn since(snaps: &[Snap], cutoff: &str) -> BTreeSet<String> {
        let cutoff = at(cutoff);
        snaps
            .iter()
            .filter(|s| s.time >= cutoff)
            .map(|s| s.id.clone())
            .collect()
    }

    /// The newest snapshot of each given UTC date (equal times: smallest id).
    fn last_on(snaps: &[Snap], dates: impl IntoIterator<Item = NaiveDate>) -> BTreeSet<String> {
        dates
            .into_iter()
            .map(|d| {
                snaps
                    .iter()
                    .filter(|s| s.time.date_naive() == d)
                    .max_by(|a, b| a.time.cmp(&b.time).then_with(|| b.id.cmp(&a.id)))
                    .unwrap_or_else(|| panic!("no snapshot on {d}"))
                    .id
                    .clone()
            })
            .collect()
    }

    /// Every date from `from` to `to`, both included, stepping `step` days.
    fn dates(from: &str, to: &str, step: u64) -> Vec<NaiveDate> {
        let (mut d, to) = (date(from), date(to));
        let mut out = Vec::new();
        while d <= to {
            out.push(d);
            d = d + Days::new(step);
        }
        out
    }

    fn union(sets: &[BTreeSet<String>]) -> BTreeSet<String> {
        sets.iter().flatten().cloned().collect()
    }

    fn kept<Tz: TimeZone>(p: &RetentionPolicy, snaps: &[Snap], tz: &Tz) -> BTreeSet<String> {
        let decisions = p.apply(&candidates(snaps), tz);
        assert_eq!(decisions.len(), snaps.len());
        for d in &decisions {
            assert_eq!(d.keep, !d.reasons.is_empty(), "{d:?}");
        }
        decisions
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.id)
            .collect()
    }

    fn reasons_of(decisions: &[Decision], id: &str) -> Vec<String> {
        decisions
            .iter()
            .find(|d| d.id == id)
            .unwrap_or_else(|| panic!("no decision for {id}"))
            .reasons
            .clone()
    }

    #[test]
    fn history_shape() {
        let h = history();
        assert_eq!(h.len(), 407);
        assert_eq!(
            h.iter()
                .filter(|s| s.tags.iter().any(|t| t == "weekly"))
                .count(),
            58
        );
        assert_eq!(
            h.iter()
                .filter(|s| s.tags.iter().any(|t| t == "pre-migration"))
                .count(),
            31
        );
        // 2025-12-29..31 belong to ISO week 2026-W01.
        assert_eq!(date("2025-12-29").iso_week().year(), 2026);
    }

    #[test]
    fn policy_table() {
        let h = history();
        let h = &h[..];
        let utc = 0;
        let sundays = dates("2025-06-01", "2026-07-05", 7);
        let month_ends = ids(&[
            "2025-06-30T02:00",
            "2025-07-31T02:00",
            "2025-08-31T02:00",
            "2025-09-30T02:00",
            "2025-10-31T02:00",
            "2025-11-30T02:00",
            "2025-12-31T23:00",
            "2026-01-31T02:00",
            "2026-02-28T02:00",
            "2026-03-31T02:00",
            "2026-04-30T02:00",
            "2026-05-31T02:00",
            "2026-06-30T02:00",
            "2026-07-05T20:00",
        ]);
        // (name, policy, UTC offset in hours, expected kept set)
        let table: Vec<(&str, &str, i32, BTreeSet<String>)> = vec![
            ("empty policy keeps all", "{}", utc, all(h)),
            (
                "zero counts are no policy",
                r#"{"keep_daily":0}"#,
                utc,
                all(h),
            ),
            (
                "last 3",
                r#"{"keep_last":3}"#,
                utc,
                ids(&["2026-07-05T20:00", "2026-07-05T14:00", "2026-07-05T02:00"]),
            ),
            (
                "last 4 splits a tie by id",
                r#"{"keep_last":4}"#,
                utc,
                ids(&[
                    "2026-07-05T20:00",
                    "2026-07-05T14:00",
                    "2026-07-05T02:00",
                    "2026-07-04T20:00-a",
                ]),
            ),
            (
                "last 5 takes both tied",
                r#"{"keep_last":5}"#,
                utc,
                ids(&[
                    "2026-07-05T20:00",
                    "2026-07-05T14:00",
                    "2026-07-05T02:00",
                    "2026-07-04T20:00-a",
                    "2026-07-04T20:00-b",
                ]),
            ),
            ("last more than exist", r#"{"keep_last":1000}"#, utc, all(h)),
            (
                "hourly 5",
                r#"{"keep_hourly":5}"#,
                utc,
                ids(&[
                    "2026-07-05T20:00",
                    "2026-07-05T14:00",
                    "2026-07-05T02:00",
                    "2026-07-04T20:00-a",
                    "2026-07-04T14:00",
                ]),
            ),
            (
                "daily 3",
                r#"{"keep_daily":3}"#,
                utc,
                ids(&["2026-07-05T20:00", "2026-07-04T20:00-a", "2026-07-03T14:00"]),
            ),
            (
                "daily 30",
                r#"{"keep_daily":30}"#,
                utc,
                last_on(h, dates("2026-06-06", "2026-07-05", 1)),
            ),
            (
                "daily more than exist",
                r#"{"keep_daily":1000}"#,
                utc,
                last_on(h, dates("2025-06-01", "2026-07-05", 1)),
            ),
            (
                "weekly 4",
                r#"{"keep_weekly":4}"#,
                utc,
                ids(&[
                    "2026-07-05T20:00",
                    "2026-06-28T02:00",
                    "2026-06-21T02:00",
                    "2026-06-14T02:00",
                ]),
            ),
            (
                // 2025-12-29..31 are in 2026-W01: 2025-12-31T23:00 is not the
                // newest of its week, 2026-01-04 is.
                "weekly 27 stops at 2026-W01 across the year change",
                r#"{"keep_weekly":27}"#,
                utc,
                last_on(h, dates("2026-01-04", "2026-07-05", 7)),
            ),
            (
                "weekly 28 reaches 2025-W52",
                r#"{"keep_weekly":28}"#,
                utc,
                last_on(h, dates("2025-12-28", "2026-07-05", 7)),
            ),
            (
                "weekly more than exist",
                r#"{"keep_weekly":60}"#,
                utc,
                last_on(h, sundays.clone()),
            ),
            (
                "monthly 3",
                r#"{"keep_monthly":3}"#,
                utc,
                ids(&["2026-07-05T20:00", "2026-06-30T02:00", "2026-05-31T02:00"]),
            ),
            (
                "monthly more than exist",
                r#"{"keep_monthly":100}"#,
                utc,
                month_ends.clone(),
            ),
            (
                "yearly 3 (only 2 years exist)",
                r#"{"keep_yearly":3}"#,
                utc,
                ids(&["2026-07-05T20:00", "2025-12-31T23:00"]),
            ),
            (
                "yearly 1",
                r#"{"keep_yearly":1}"#,
                utc,
                ids(&["2026-07-05T20:00"]),
            ),
            (
                "yearly 2 at UTC+2: 2025-12-31T23:00Z is in 2026",
                r#"{"keep_yearly":2}"#,
                2,
                ids(&["2026-07-05T20:00", "2025-12-31T02:00"]),
            ),
            (
                "yearly 2 at UTC-5: 2026-01-01T02:00Z is in 2025",
                r#"{"keep_yearly":2}"#,
                -5,
                ids(&["2026-07-05T20:00", "2026-01-01T02:00"]),
            ),
            (
                "daily 2 at UTC-5: 02:00Z is the evening before",
                r#"{"keep_daily":2}"#,
                -5,
                ids(&["2026-07-05T20:00", "2026-07-05T02:00"]),
            ),
            (
                "within 3d",
                r#"{"keep_within":"3d"}"#,
                utc,
                ids(&[
                    "2026-07-03T02:00",
                    "2026-07-03T14:00",
                    "2026-07-04T02:00",
                    "2026-07-04T14:00",
                    "2026-07-04T20:00-a",
                    "2026-07-04T20:00-b",
                    "2026-07-05T02:00",
                    "2026-07-05T14:00",
                    "2026-07-05T20:00",
                ]),
            ),
            (
                "within 36h",
                r#"{"keep_within":"36h"}"#,
                utc,
                ids(&[
                    "2026-07-04T14:00",
                    "2026-07-04T20:00-a",
                    "2026-07-04T20:00-b",
                    "2026-07-05T02:00",
                    "2026-07-05T14:00",
                    "2026-07-05T20:00",
                ]),
            ),
            (
                "within 18h is inclusive",
                r#"{"keep_within":"18h"}"#,
                -5,
                ids(&["2026-07-05T02:00", "2026-07-05T14:00", "2026-07-05T20:00"]),
            ),
            (
                "within 1w",
                r#"{"keep_within":"1w"}"#,
                utc,
                since(h, "2026-06-28T20:00"),
            ),
            (
                "within 1m",
                r#"{"keep_within":"1m"}"#,
                utc,
                since(h, "2026-06-05T20:00"),
            ),
            (
                "within 1m3d",
                r#"{"keep_within":"1m3d"}"#,
                utc,
                since(h, "2026-06-02T20:00"),
            ),
            (
                "within 1y",
                r#"{"keep_within":"1y"}"#,
                utc,
                since(h, "2025-07-05T20:00"),
            ),
            (
                "within 2y keeps all",
                r#"{"keep_within":"2y"}"#,
                utc,
                all(h),
            ),
            (
                "last 2 + daily 3 + monthly 2",
                r#"{"keep_last":2,"keep_daily":3,"keep_monthly":2}"#,
                utc,
                ids(&[
                    "2026-07-05T20:00",
                    "2026-07-05T14:00",
                    "2026-07-04T20:00-a",
                    "2026-07-03T14:00",
                    "2026-06-30T02:00",
                ]),
            ),
            (
                "daily 7 + weekly 4 + monthly 12 + yearly 5",
                r#"{"keep_daily":7,"keep_weekly":4,"keep_monthly":12,"keep_yearly":5}"#,
                utc,
                union(&[
                    last_on(h, dates("2026-06-29", "2026-07-05", 1)),
                    ids(&["2026-06-28T02:00", "2026-06-21T02:00", "2026-06-14T02:00"]),
                    month_ends
                        .iter()
                        .filter(|id| id.as_str() >= "2025-08")
                        .cloned()
                        .collect(),
                ]),
            ),
            (
                "global daily 2 + tag rules",
                r#"{"keep_daily":2,"tags":{
                    "pre-migration":{"keep_within":"10d"},
                    "weekly":{"keep_last":3}}}"#,
                utc,
                union(&[
                    ids(&["2026-07-05T20:00", "2026-07-04T20:00-a"]),
                    last_on(h, dates("2025-08-21", "2025-08-31", 1)),
                    ids(&["2026-07-05T02:00", "2026-06-28T02:00", "2026-06-21T02:00"]),
                ]),
            ),
            (
                "tag rule alone",
                r#"{"tags":{"pre-migration":{"keep_last":1}}}"#,
                utc,
                ids(&["2025-08-31T02:00"]),
            ),
            (
                "tag monthly counts tagged snapshots only",
                r#"{"tags":{"weekly":{"keep_monthly":2}}}"#,
                utc,
                ids(&["2026-07-05T02:00", "2026-06-28T02:00"]),
            ),
            (
                "rule for an absent tag keeps nothing",
                r#"{"tags":{"nope":{"keep_last":5}}}"#,
                utc,
                ids(&[]),
            ),
        ];
        for (name, json, offset, expected) in table {
            let p = policy(json);
            let tz = FixedOffset::east_opt(offset * 3600).unwrap();
            let got = kept(&p, h, &tz);
            let missing: Vec<_> = expected.difference(&got).collect();
            let extra: Vec<_> = got.difference(&expected).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{name}: missing {missing:?}, extra {extra:?}"
            );
            if offset == 0 {
                assert_eq!(kept(&p, h, &Utc), expected, "{name} with Utc");
            }
        }
    }

    #[test]
    fn reasons() {
        let h = history();
        let p = policy(
            r#"{"keep_last":1,"keep_hourly":1,"keep_daily":1,"keep_weekly":2,
                "keep_monthly":1,"keep_yearly":1,"keep_within":"1h",
                "tags":{"weekly":{"keep_within":"90d"},"pre-migration":{"keep_daily":1}}}"#,
        );
        let d = p.apply(&candidates(&h), &Utc);
        assert_eq!(
            reasons_of(&d, "2026-07-05T20:00"),
            [
                "last",
                "hourly 2026-07-05 20h",
                "daily 2026-07-05",
                "weekly 2026-W27",
                "monthly 2026-07",
                "yearly 2026",
                "within 1h",
            ]
        );
        assert_eq!(
            reasons_of(&d, "2026-06-28T02:00"),
            ["weekly 2026-W26", "tag weekly: within 90d"]
        );
        assert_eq!(
            reasons_of(&d, "2025-08-31T02:00"),
            ["tag pre-migration: daily 2025-08-31"]
        );
        assert!(reasons_of(&d, "2026-07-05T14:00").is_empty());

        let p = policy(r#"{"keep_weekly":28}"#);
        let d = p.apply(&candidates(&h), &Utc);
        assert_eq!(reasons_of(&d, "2026-01-04T02:00"), ["weekly 2026-W01"]);
        assert_eq!(reasons_of(&d, "2025-12-28T02:00"), ["weekly 2025-W52"]);
        assert!(reasons_of(&d, "2025-12-31T23:00").is_empty());

        let d = RetentionPolicy::default().apply(&candidates(&h), &Utc);
        assert!(d.iter().all(|d| d.keep && d.reasons == ["no policy"]));
    }

    #[test]
    fn output_is_newest_first_whatever_the_input_order() {
        let h = history();
        let p = policy(r#"{"keep_daily":10,"keep_monthly":3,"tags":{"weekly":{"keep_last":2}}}"#);
        let mut c = candidates(&h);
        let first = p.apply(&c, &Utc);
        c.reverse();
        assert_eq!(p.apply(&c, &Utc), first);
        c.rotate_left(123);
        assert_eq!(p.apply(&c, &Utc), first);

        let time_of = |id: &str| h.iter().find(|s| s.id == id).unwrap().time;
        for pair in first.windows(2) {
            let (a, b) = (time_of(&pair[0].id), time_of(&pair[1].id));
            assert!(a > b || (a == b && pair[0].id < pair[1].id), "{pair:?}");
        }
        assert_eq!(first[0].id, "2026-07-05T20:00");
        assert_eq!(first[3].id, "2026-07-04T20:00-a");
        assert_eq!(first[4].id, "2026-07-04T20:00-b");
        assert!(p.apply(&[], &Utc).is_empty());
    }

    #[test]
    fn is_empty() {
        assert!(RetentionPolicy::default().is_empty());
        assert!(policy(r#"{"keep_last":0,"keep_yearly":0}"#).is_empty());
        assert!(policy(r#"{"tags":{"x":{}}}"#).is_empty());
        assert!(policy(r#"{"tags":{"x":{"keep_daily":0}}}"#).is_empty());
        assert!(!policy(r#"{"keep_last":1}"#).is_empty());
        assert!(!policy(r#"{"keep_within":"1h"}"#).is_empty());
        assert!(!policy(r#"{"tags":{"x":{"keep_within":"1d"}}}"#).is_empty());
        assert!(KeepRules::default().is_empty());
        // A zero rule next to a real one keeps nothing by itself.
        let h = history();
        let p = policy(r#"{"keep_last":1,"keep_daily":0}"#);
        assert_eq!(kept(&p, &h, &Utc), ids(&["2026-07-05T20:00"]));
    }

    #[test]
    fn keep_within_parse() {
        for (s, display) in [
            ("90d", "90d"),
            ("2y6m", "2y6mo"),
            ("2y6mo", "2y6mo"),
            ("1d12h30min", "1d12h30min"),
            ("36h", "36h"),
            ("1w", "1w"),
            ("1y2m3w4d5h", "1y2mo3w4d5h"),
            ("0y5d", "5d"),
            ("007d", "7d"),
            ("4294967295h", "4294967295h"),
        ] {
            let w = KeepWithin::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(w.to_string(), display);
            assert_eq!(KeepWithin::parse(&w.to_string()).unwrap(), w);
            assert_eq!(s.parse::<KeepWithin>().unwrap(), w);
        }
        for bad in [
            "",
            "0d",
            "0y0h",
            "5x",
            "d5",
            "5",
            "d",
            "5d5d",
            "6m2y",
            "1h1d",
            "-5d",
            "+5d",
            "5m2mo",
            "5min5min",
            "5 d",
            "5D",
            "1.5d",
            "4294967296d",
            "5dd",
            "٣d",
        ] {
            let err = KeepWithin::parse(bad).expect_err(bad);
            let msg = err.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains("y, mo, w, d, h, min, s"), "{msg}");
            assert!(
                matches!(&err, RetentionError::InvalidKeepWithin { value, .. } if value == bad)
            );
        }
    }

    /// Property: for random durations in the one grammar (months sometimes
    /// written as the old `m`), `keep_within` keeps exactly the snapshots at
    /// or after the newest minus the duration, computed independently here
    /// (calendar months and days, then exact seconds, in UTC), and the
    /// duration's display parses back to itself. `RESPALDO_SEED` replays a
    /// failure; the seed is in every failure message.
    #[test]
    fn keep_within_keeps_exactly_what_is_since_its_cutoff() {
        let seed: u64 = std::env::var("RESPALDO_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| Utc::now().timestamp_nanos_opt().unwrap_or(1) as u64);
        let mut state = seed;
        let mut next = |n: u64| {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d1_049b_b133_111b);
            (z ^ (z >> 31)) % n
        };
        for round in 0..300 {
            let values = [
                next(3),
                next(14),
                next(5),
                next(40),
                next(50),
                next(90),
                next(90),
            ];
            if values.iter().all(|&v| v == 0) {
                continue;
            }
            let months_unit = if next(2) == 0 { "mo" } else { "m" };
            let units = ["y", months_unit, "w", "d", "h", "min", "s"];
            let text: String = values
                .iter()
                .zip(units)
                .filter(|(v, _)| **v != 0)
                .map(|(v, u)| format!("{v}{u}"))
                .collect();
            let why = format!("seed {seed}, round {round}, keep_within = {text:?}");
            let within = KeepWithin::parse(&text).unwrap_or_else(|e| panic!("{why}: {e}"));
            assert_eq!(
                KeepWithin::parse(&within.to_string()).unwrap(),
                within,
                "{why}"
            );
            let newest = at("2026-03-31T12:00") + TimeDelta::minutes(next(600_000) as i64);
            let cutoff = newest
                .naive_utc()
                .checked_sub_months(Months::new((values[0] * 12 + values[1]) as u32))
                .and_then(|t| t.checked_sub_days(Days::new(values[2] * 7 + values[3])))
                .unwrap()
                .and_utc()
                - TimeDelta::seconds((values[4] * 3600 + values[5] * 60 + values[6]) as i64);
            let span = (newest - cutoff).num_seconds().max(1) as u64;
            let mut snaps: Vec<Snap> = (0..12)
                .map(|i| Snap {
                    id: format!("s{i}"),
                    time: newest - TimeDelta::seconds(next(2 * span + 2) as i64),
                    tags: Vec::new(),
                })
                .collect();
            snaps.push(Snap {
                id: "newest".into(),
                time: newest,
                tags: Vec::new(),
            });
            // One exactly at the cutoff: kept (the window is inclusive).
            snaps.push(Snap {
                id: "edge".into(),
                time: cutoff,
                tags: Vec::new(),
            });
            let policy = RetentionPolicy {
                keep_within: Some(within),
                ..Default::default()
            };
            let expected: BTreeSet<String> = snaps
                .iter()
                .filter(|s| s.time >= cutoff)
                .map(|s| s.id.clone())
                .collect();
            assert_eq!(kept(&policy, &snaps, &Utc), expected, "{why}");
        }
    }

    #[test]
    fn keep_within_calendar_arithmetic() {
        let w = |s: &str| KeepWithin::parse(s).unwrap();
        // Months clamp to the end of shorter months.
        assert_eq!(
            w("1m").cutoff(at("2024-03-31T12:00"), &Utc),
            Some(at("2024-02-29T12:00"))
        );
        assert_eq!(
            w("1y").cutoff(at("2024-02-29T12:00"), &Utc),
            Some(at("2023-02-28T12:00"))
        );
        assert_eq!(
            w("2y6m").cutoff(at("2026-11-20T08:00"), &Utc),
            Some(at("2024-05-20T08:00"))
        );
        assert_eq!(
            w("1w2d3h").cutoff(at("2026-03-01T02:00"), &Utc),
            Some(at("2026-02-19T23:00"))
        );
        // The calendar is the given zone's: 2026-03-30T20:00Z is 03-31 06:00 at
        // UTC+10, one month before which is 02-28 06:00 there.
        let plus10 = FixedOffset::east_opt(10 * 3600).unwrap();
        assert_eq!(
            w("1m").cutoff(at("2026-03-30T20:00"), &Utc),
            Some(at("2026-02-28T20:00"))
        );
        assert_eq!(
            w("1m").cutoff(at("2026-03-30T20:00"), &plus10),
            Some(at("2026-02-27T20:00"))
        );
        // Out of range: no cutoff, everything is within.
        assert_eq!(w("4000000000y").cutoff(at("2026-01-01T00:00"), &Utc), None);
        assert_eq!(w("300000y").cutoff(at("2026-01-01T00:00"), &Utc), None);

        let tags: Vec<String> = Vec::new();
        let c = |id: &'static str| Candidate {
            id,
            time: at(id),
            tags: &tags,
        };
        let list = [
            c("2026-03-31T12:00"),
            c("2026-02-28T12:00"),
            c("2026-02-28T11:59"),
        ];
        let p = policy(r#"{"keep_within":"1m"}"#);
        let keep: Vec<bool> = p.apply(&list, &Utc).iter().map(|d| d.keep).collect();
        assert_eq!(keep, [true, true, false]);
        let p = policy(r#"{"keep_within":"4000000000y"}"#);
        assert!(p.apply(&list, &Utc).iter().all(|d| d.keep));
    }

    #[test]
    fn serde_json_round_trip() {
        let json =
            r#"{"keep_last":7,"keep_daily":7,"tags":{"pre-migration":{"keep_within":"90d"}}}"#;
        let p = policy(json);
        let mut tags = BTreeMap::new();
        tags.insert(
            "pre-migration".to_string(),
            KeepRules {
                keep_within: Some(KeepWithin::parse("90d").unwrap()),
                ..KeepRules::default()
            },
        );
        let expected = RetentionPolicy {
            keep_last: Some(7),
            keep_daily: Some(7),
            tags,
            ..RetentionPolicy::default()
        };
        assert_eq!(p, expected);
        assert_eq!(serde_json::to_string(&p).unwrap(), json);

        let full = RetentionPolicy {
            keep_last: Some(1),
            keep_hourly: Some(2),
            keep_daily: Some(3),
            keep_weekly: Some(4),
            keep_monthly: Some(5),
            keep_yearly: Some(6),
            keep_within: Some(KeepWithin::parse("2y6m").unwrap()),
            tags: expected.tags.clone(),
        };
        let text = serde_json::to_string(&full).unwrap();
        assert!(text.contains(r#""keep_within":"2y6mo""#), "{text}");
        assert_eq!(
            serde_json::from_str::<RetentionPolicy>(&text).unwrap(),
            full
        );
        assert_eq!(
            serde_json::to_string(&RetentionPolicy::default()).unwrap(),
            "{}"
        );
        assert_eq!(policy("{}"), RetentionPolicy::default());
        assert_eq!(
            policy(r#"{"keep_last":null,"tags":{}}"#),
            RetentionPolicy::default()
        );
    }

    #[test]
    fn serde_json_rejects_bad_input() {
        for (json, needle) in [
            (r#"{"keep_dayly":7}"#, "keep_dayly"),
            (r#"{"tags":{"x":{"keep_dayly":7}}}"#, "keep_dayly"),
            (r#"{"tags":{"x":{"tags":{}}}}"#, "tags"),
            (r#"{"keep_within":"5x"}"#, "5x"),
            (r#"{"tags":{"x":{"keep_within":"0d"}}}"#, "0d"),
            (r#"{"keep_within":90}"#, "string"),
            (r#"{"keep_last":-1}"#, "-1"),
            (r#"{"keep_last":"7"}"#, "u32"),
        ] {
            let err = serde_json::from_str::<RetentionPolicy>(json).expect_err(json);
            assert!(err.to_string().contains(needle), "{json}: {err}");
        }
    }
}
