//! `[schedule]`: when backups (and verify, test-restore, forget, prune) run.
//!
//! An entry is either a cron expression (`daily = "0 2 * * *"`: a backup of
//! every enabled source tagged `daily`) or a table with more settings:
//!
//! ```toml
//! [schedule.hourly-db]
//! cron = "0 * * * *"          # or: every = "15min"
//! timezone = "Europe/Madrid"
//! sources = ["db"]
//! tags = ["hourly"]
//! prune = true
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use respaldo_core::kit::duration::parse_duration;
use serde::Deserialize;

use crate::config::error::{typed, KeyError};

/// What a schedule entry runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// `respaldo backup` of the entry's sources, tagged, then retention.
    #[default]
    Backup,
    /// `respaldo verify` (with `read_data`: `--read-data`).
    Verify,
    /// `respaldo test-restore` of the entry's sources.
    TestRestore,
    /// `respaldo forget` (with `prune`: `--prune`).
    Forget,
    /// `respaldo prune`.
    Prune,
    /// `respaldo copy --to NAME`: the snapshots the `[repositories.NAME]`
    /// lacks are replicated to it.
    Copy,
}

impl Action {
    /// The command's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Backup => "backup",
            Action::Verify => "verify",
            Action::TestRestore => "test-restore",
            Action::Forget => "forget",
            Action::Prune => "prune",
            Action::Copy => "copy",
        }
    }
}

/// A `[schedule.NAME]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryConfig {
    /// A cron expression: five fields `minute hour day-of-month month
    /// day-of-week` (`"0 2 * * *"`, `"0 3 * * SUN"`), or six with seconds
    /// first (`"*/10 * * * * *"`), or `@daily`, `@weekly`, `@monthly`,
    /// `@yearly`, `@hourly`. Exactly one of `cron` and `every`.
    #[serde(default)]
    cron: Option<String>,
    /// A fixed interval instead of `cron` (`"15min"`, `"6h"`, `"3s"`),
    /// counted from the daemon's start and then from each run.
    #[serde(default)]
    every: Option<String>,
    /// The time zone of `cron` (`"Europe/Madrid"`, `"UTC"`); default
    /// `[daemon] timezone`, else the system's.
    #[serde(default)]
    timezone: Option<String>,
    /// What runs: `backup` (default), `verify`, `test-restore`, `forget`,
    /// `prune`, `copy`.
    #[serde(default)]
    action: Action,
    /// `copy` entries: the `[repositories.NAME]` the snapshots go to.
    #[serde(default)]
    to: Option<String>,
    /// Tags of the snapshots (`backup`); default: the entry's name.
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// Only these sources (`backup`, `test-restore`); default: every enabled one.
    #[serde(default)]
    sources: Vec<String>,
    /// After a backup that wrote a snapshot, apply `[retention]` (`forget`).
    /// Default: true when `[retention]` has a rule.
    #[serde(default)]
    forget: Option<bool>,
    /// Prune after forgetting (`backup` with `forget`, and `forget` entries).
    #[serde(default)]
    prune: bool,
    /// `verify` entries: re-read and re-hash all data.
    #[serde(default)]
    read_data: bool,
    /// `forget`, `prune`, `test-restore` and `verify` entries: whose
    /// snapshots, as `--host` takes it (a host name, or `"*"` for every
    /// host: one maintenance entry for many hosts sharing the
    /// repository). Default: this configuration's host.
    #[serde(default)]
    host: Option<String>,
    /// When the daemon starts and this entry's last recorded run is older
    /// than its last due time, run it at once. Default `[daemon] catch_up`.
    #[serde(default)]
    catch_up: Option<bool>,
    /// How often a failed backup is retried (only the sources that failed).
    /// Default `[daemon] retries`.
    #[serde(default)]
    retries: Option<u32>,
    /// Wait before the first retry, doubled for each next one. Default
    /// `[daemon] retry_delay`.
    #[serde(default)]
    retry_delay: Option<String>,
}

/// When an entry runs.
#[derive(Debug, Clone)]
pub enum When {
    /// A cron expression in a time zone.
    Cron {
        /// The expression as written.
        expr: String,
        /// Parsed.
        cron: Box<croner::Cron>,
        /// The zone.
        zone: Zone,
    },
    /// A fixed interval.
    Every(Duration),
}

/// A time zone: the system's or a named one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    /// The system's local time.
    Local,
    /// An IANA zone.
    Named(chrono_tz::Tz),
}

impl Zone {
    fn parse(name: Option<&str>) -> Result<Zone, ScheduleError> {
        match name {
            None => Ok(Zone::Local),
            Some(n) => n.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| {
                ScheduleError::Zone(format!(
                    "unknown time zone `{n}` (an IANA name like `Europe/Madrid` or `UTC`)"
                ))
            }),
        }
    }

    /// The zone's name for systemd (`None`: local time).
    pub fn name(&self) -> Option<String> {
        match self {
            Zone::Local => None,
            Zone::Named(tz) => Some(tz.name().to_string()),
        }
    }
}

/// One schedule entry, validated.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its name (`[schedule.NAME]`).
    pub name: String,
    /// When it runs.
    pub when: When,
    /// What it runs.
    pub action: Action,
    /// Snapshot tags.
    pub tags: Vec<String>,
    /// Selected sources (empty: all enabled).
    pub sources: Vec<String>,
    /// Forget after a backup.
    pub forget: bool,
    /// Prune after forget.
    pub prune: bool,
    /// verify --read-data.
    pub read_data: bool,
    /// `copy --to` this repository.
    pub to: Option<String>,
    /// `--host` for the command.
    pub host: Option<String>,
    /// Catch up a missed run at daemon start.
    pub catch_up: bool,
    /// Retries of a failed backup.
    pub retries: u32,
    /// First retry delay.
    pub retry_delay: Duration,
}

impl Entry {
    /// The first due time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.when {
            When::Every(d) => Some(t + chrono::TimeDelta::from_std(*d).ok()?),
            When::Cron { cron, zone, .. } => match zone {
                Zone::Local => cron
                    .find_next_occurrence(&t.with_timezone(&chrono::Local), false)
                    .ok()
                    .map(|x| x.with_timezone(&Utc)),
                Zone::Named(tz) => cron
                    .find_next_occurrence(&t.with_timezone(tz), false)
                    .ok()
                    .map(|x| x.with_timezone(&Utc)),
            },
        }
    }

    /// The longest gap between two consecutive runs over the next few.
    pub fn longest_gap(&self, from: DateTime<Utc>) -> Option<Duration> {
        let mut t = self.next_after(from)?;
        let mut gap = Duration::ZERO;
        for _ in 0..12 {
            let n = self.next_after(t)?;
            gap = gap.max((n - t).to_std().ok()?);
            t = n;
        }
        Some(gap)
    }

    /// Whether a backup entry covers `source`.
    pub fn backs_up(&self, source: &str) -> bool {
        self.action == Action::Backup
            && (self.sources.is_empty() || self.sources.iter().any(|s| s == source))
    }

    /// `0 2 * * * (Europe/Madrid)` / `every 15min`.
    pub fn describe(&self) -> String {
        match &self.when {
            When::Cron { expr, zone, .. } => match zone.name() {
                Some(z) => format!("{expr} ({z})"),
                None => expr.clone(),
            },
            When::Every(d) => format!("every {}", crate::units::duration(d.as_millis() as u64)),
        }
    }
}

/// Scheduling defaults from `[daemon]`.
#[derive(Debug, Clone)]
pub struct Defaults<'a> {
    /// `[daemon] timezone`.
    pub timezone: Option<&'a str>,
    /// `[daemon] catch_up`.
    pub catch_up: bool,
    /// `[daemon] retries`.
    pub retries: u32,
    /// `[daemon] retry_delay`.
    pub retry_delay: Duration,
    /// Whether `[retention]` has a rule.
    pub retention: bool,
    /// The `[repositories.NAME]` names, for `copy` entries.
    pub repositories: &'a [&'a str],
}

/// A schedule that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// A cron expression that does not parse; names the field and its range.
    #[error("{0}")]
    Cron(String),
    /// A cron expression systemd's `OnCalendar=` cannot express.
    #[error("{0}")]
    Calendar(String),
    /// A time zone that is not an IANA name.
    #[error("{0}")]
    Zone(String),
}

/// Parses a cron expression (5 or 6 fields, or a macro).
pub fn parse_cron(expr: &str) -> Result<croner::Cron, ScheduleError> {
    let fields = expr.split_whitespace().count();
    if !expr.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(ScheduleError::Cron(format!(
            "`{expr}`: a cron expression has 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first"
        )));
    }
    if !expr.trim_start().starts_with('@') {
        check_cron_fields(expr)?;
    }
    use croner::parser::{CronParser, Seconds, Year};
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| ScheduleError::Cron(format!("`{expr}`: {e}")))
}

/// A cron field's name, its range and the names it accepts.
struct CronField {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The five fields of a cron expression, in order (a sixth, seconds, may
/// come first).
const CRON_FIELDS: [CronField; 5] = [
    CronField {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    CronField {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    CronField {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    CronField {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTH_NAMES,
    },
    CronField {
        name: "day of week",
        min: 0,
        max: 7,
        names: &DAY_NAMES,
    },
];
const SECOND_FIELD: CronField = CronField {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};

/// Checks every number of every field against the field's range, so that an
/// error names the field (`minute `61` is out of range (0–59)`). What is
/// not a plain number or name (`L`, `W`, `#`) is left to the parser.
fn check_cron_fields(expr: &str) -> Result<(), ScheduleError> {
    let values: Vec<&str> = expr.split_whitespace().collect();
    let fields: Vec<&CronField> = if values.len() == 6 {
        std::iter::once(&SECOND_FIELD)
            .chain(CRON_FIELDS.iter())
            .collect()
    } else {
        CRON_FIELDS.iter().collect()
    };
    for (value, field) in values.iter().zip(fields) {
        let range = format!("{}–{}", field.min, field.max);
        let names = if field.names.is_empty() {
            String::new()
        } else {
            format!(
                " or {}–{}",
                field.names[0],
                field.names[field.names.len() - 1]
            )
        };
        for part in value.split(',') {
            let (span, step) = match part.split_once('/') {
                Some((span, step)) => (span, Some(step)),
                None => (part, None),
            };
            if let Some(step) = step {
                match step.parse::<u32>() {
                    Ok(n) if n >= 1 && n <= field.max.max(1) => {}
                    _ => {
                        return Err(ScheduleError::Cron(format!(
                            "`{expr}`: {} step `{step}` must be a number from 1 to {}",
                            field.name,
                            field.max.max(1)
                        )))
                    }
                }
            }
            if matches!(span, "*" | "?") {
                continue;
            }
            for bound in span.split('-') {
                if bound.contains(['L', 'W', '#', 'l', 'w']) {
                    continue;
                }
                if field.names.iter().any(|n| n.eq_ignore_ascii_case(bound)) {
                    continue;
                }
                match bound.parse::<u32>() {
                    Ok(n) if (field.min..=field.max).contains(&n) => {}
                    Ok(_) => {
                        return Err(ScheduleError::Cron(format!(
                            "`{expr}`: {} `{bound}` is out of range ({range}{names})",
                            field.name
                        )))
                    }
                    Err(_) => {
                        return Err(ScheduleError::Cron(format!(
                            "`{expr}`: {} `{bound}` is not a number ({range}{names})",
                            field.name
                        )))
                    }
                }
            }
        }
    }
    Ok(())
}

/// Parses and validates the `[schedule]` table. `sources` are the configured
/// source names.
pub fn parse(
    raw: BTreeMap<String, toml::Value>,
    defaults: &Defaults<'_>,
    sources: &[&str],
) -> Result<Vec<Entry>, KeyError> {
    let mut out = Vec::new();
    for (name, value) in raw {
        let keys = vec!["schedule".to_string(), name.clone()];
        let at = |k: &str, msg: String| {
            let mut p = keys.clone();
            if !k.is_empty() {
                p.push(k.to_string());
            }
            (p, msg)
        };
        // `NAME = "0 2 * * *"` is the cron key itself.
        let cron_key = if value.is_str() { "" } else { "cron" };
        let c: EntryConfig = match value {
            toml::Value::String(expr) => EntryConfig {
                cron: Some(expr),
                ..EntryConfig::default()
            },
            v @ toml::Value::Table(_) => typed(v, &keys)?,
            _ => {
                return Err(at(
                    "",
                    "must be a cron expression (\"0 2 * * *\") or a table".into(),
                ))
            }
        };
        let when = match (&c.cron, &c.every) {
            (Some(expr), None) => {
                let cron = parse_cron(expr).map_err(|m| at(cron_key, m.to_string()))?;
                let zone = Zone::parse(c.timezone.as_deref().or(defaults.timezone))
                    .map_err(|m| at("timezone", m.to_string()))?;
                When::Cron {
                    expr: expr.clone(),
                    cron: Box::new(cron),
                    zone,
                }
            }
            (None, Some(every)) => {
                if c.timezone.is_some() {
                    return Err(at("timezone", "applies to `cron`, not `every`".into()));
                }
                When::Every(
                    parse_duration(every)
                        .map_err(|respaldo_core::kit::duration::DurationError(m)| at("every", m))?,
                )
            }
            _ => return Err(at("", "needs exactly one of `cron` and `every`".into())),
        };
        for s in &c.sources {
            if !sources.contains(&s.as_str()) {
                return Err(at(
                    "sources",
                    format!("no source named `{s}` (sources: {})", sources.join(", ")),
                ));
            }
        }
        let tags = c.tags.unwrap_or_else(|| vec![name.clone()]);
        for t in &tags {
            if t.is_empty() || t.contains(char::is_whitespace) || t.contains(',') {
                return Err(at(
                    "tags",
                    format!("invalid tag `{t}`: no spaces or commas"),
                ));
            }
        }
        let applies = |key: &str, ok: bool| -> Result<(), KeyError> {
            if ok {
                Ok(())
            } else {
                Err(at(
                    key,
                    format!("does not apply to `action = \"{}\"`", c.action.as_str()),
                ))
            }
        };
        let a = c.action;
        applies("forget", c.forget.is_none() || a == Action::Backup)?;
        applies(
            "prune",
            !c.prune || matches!(a, Action::Backup | Action::Forget),
        )?;
        applies("read_data", !c.read_data || a == Action::Verify)?;
        applies(
            "host",
            c.host.is_none()
                || matches!(
                    a,
                    Action::Forget | Action::Prune | Action::TestRestore | Action::Verify
                ),
        )?;
        applies("to", c.to.is_none() || a == Action::Copy)?;
        if a == Action::Copy {
            match &c.to {
                None => {
                    return Err(at(
                        "",
                        "a `copy` entry needs `to = \"NAME\"` (a [repositories.NAME])".into(),
                    ))
                }
                Some(to) if !defaults.repositories.contains(&to.as_str()) => {
                    return Err(at(
                        "to",
                        format!(
                            "no [repositories.{to}] (repositories: {})",
                            if defaults.repositories.is_empty() {
                                "none".to_string()
                            } else {
                                defaults.repositories.join(", ")
                            }
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        applies(
            "sources",
            c.sources.is_empty() || matches!(a, Action::Backup | Action::TestRestore),
        )?;
        applies("tags", a == Action::Backup || tags == [name.clone()])?;
        let forget = c.forget.unwrap_or(defaults.retention) && a == Action::Backup;
        if forget && !defaults.retention {
            return Err(at(
                "forget",
                "there is no rule in [retention] to apply".into(),
            ));
        }
        if c.prune && a == Action::Backup && !forget {
            return Err(at("prune", "needs `forget` (prune follows forget)".into()));
        }
        let retry_delay = match &c.retry_delay {
            Some(d) => parse_duration(d)
                .map_err(|respaldo_core::kit::duration::DurationError(m)| at("retry_delay", m))?,
            None => defaults.retry_delay,
        };
        out.push(Entry {
            name,
            when,
            action: a,
            tags,
            sources: c.sources,
            forget,
            prune: c.prune,
            read_data: c.read_data,
            to: c.to,
            host: c.host,
            catch_up: c.catch_up.unwrap_or(defaults.catch_up),
            retries: c.retries.unwrap_or(defaults.retries),
            retry_delay,
        });
    }
    Ok(out)
}

/// Converts a cron expression to systemd `OnCalendar=` values (two when
/// both day-of-month and day-of-week are restricted: cron runs on either).
pub fn to_on_calendar(expr: &str, zone: Option<&str>) -> Result<Vec<String>, ScheduleError> {
    let expanded = match expr.trim() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        e if e.starts_with('@') => {
            return Err(ScheduleError::Calendar(format!(
                "`{e}` is not a known macro"
            )))
        }
        e => e,
    };
    let f: Vec<&str> = expanded.split_whitespace().collect();
    let (sec, f) = match f.len() {
        6 => (f[0], &f[1..]),
        5 => ("0", &f[..]),
        _ => {
            return Err(ScheduleError::Calendar(format!(
                "`{expr}` does not have 5 or 6 fields"
            )))
        }
    };
    let sec = field(sec, 0, &[])?;
    let min = field(f[0], 0, &[])?;
    let hour = field(f[1], 0, &[])?;
    let dom = field(f[2], 1, &[])?;
    let month = field(f[3], 1, &MONTH_NAMES)?;
    let dow = weekdays(f[4])?;
    let suffix = zone.map(|z| format!(" {z}")).unwrap_or_default();
    let time = format!("{hour}:{min}:{sec}");
    let mut out = Vec::new();
    match (dom.as_str(), dow) {
        (_, None) => out.push(format!("*-{month}-{dom} {time}{suffix}")),
        ("*", Some(d)) => out.push(format!("{d} *-{month}-* {time}{suffix}")),
        (_, Some(d)) => {
            out.push(format!("{d} *-{month}-* {time}{suffix}"));
            out.push(format!("*-{month}-{dom} {time}{suffix}"));
        }
    }
    Ok(out)
}

/// One numeric cron field in systemd syntax: lists, `a-b` → `a..b`, steps.
fn field(f: &str, first: u32, names: &[&str]) -> Result<String, ScheduleError> {
    let num = |s: &str| -> Result<String, ScheduleError> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(format!("{:02}", i as u32 + first));
        }
        s.parse::<u32>().map(|n| format!("{n:02}")).map_err(|_| {
            ScheduleError::Calendar(format!(
                "`{f}` cannot be expressed as a systemd calendar time"
            ))
        })
    };
    if f == "*" {
        return Ok("*".into());
    }
    let mut parts = Vec::new();
    for p in f.split(',') {
        let (range, step) = match p.split_once('/') {
            Some((r, s)) => (
                r,
                Some(
                    s.parse::<u32>()
                        .map_err(|_| ScheduleError::Calendar(format!("bad step in `{f}`")))?,
                ),
            ),
            None => (p, None),
        };
        let range = match range {
            "*" => format!("{first:02}"),
            r => match r.split_once('-') {
                Some((a, b)) => format!("{}..{}", num(a)?, num(b)?),
                None => num(r)?,
            },
        };
        parts.push(match step {
            Some(s) => format!("{range}/{s}"),
            None => range,
        });
    }
    Ok(parts.join(","))
}

/// The day-of-week field as systemd weekdays (`None` for `*`).
fn weekdays(f: &str) -> Result<Option<String>, ScheduleError> {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    if f == "*" || f == "?" {
        return Ok(None);
    }
    let day = |s: &str| -> Result<usize, ScheduleError> {
        if let Some(i) = DAYS.iter().position(|d| d.eq_ignore_ascii_case(s)) {
            return Ok(i);
        }
        match s.parse::<usize>() {
            Ok(n) if n <= 7 => Ok(n % 7),
            _ => Err(ScheduleError::Calendar(format!(
                "day of week `{f}` cannot be expressed as a systemd calendar time"
            ))),
        }
    };
    let mut parts = Vec::new();
    for p in f.split(',') {
        match p.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                // systemd weeks start on Monday: a range ending on Sunday (0/7)
                // is written up to Sat plus Sun.
                if b == 0 && a != 0 {
                    parts.push(format!("{}..Sat", DAYS[a]));
                    parts.push("Sun".to_string());
                } else if a <= b {
                    parts.push(format!("{}..{}", DAYS[a], DAYS[b]));
                } else {
                    return Err(ScheduleError::Calendar(format!(
                        "day-of-week range `{p}` runs backwards"
                    )));
                }
            }
            None => parts.push(DAYS[day(p)?].to_string()),
        }
    }
    Ok(Some(parts.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_errors_name_the_field_and_its_range() {
        for (expr, says) in [
            ("61 2 * * *", "minute `61` is out of range (0–59)"),
            ("0 24 * * *", "hour `24` is out of range (0–23)"),
            ("0 2 0 * *", "day of month `0` is out of range (1–31)"),
            ("0 2 * 13 *", "month `13` is out of range (1–12 or JAN–DEC)"),
            (
                "0 2 * * 8",
                "day of week `8` is out of range (0–7 or SUN–SAT)",
            ),
            ("0 2 * * MON-FRY", "day of week `FRY` is not a number"),
            (
                "*/0 * * * *",
                "minute step `0` must be a number from 1 to 59",
            ),
            ("60 0 2 * * *", "second `60` is out of range (0–59)"),
            ("0 1-30 * * *", "hour `30` is out of range"),
        ] {
            let e = parse_cron(expr).unwrap_err();
            assert!(matches!(e, ScheduleError::Cron(_)), "{expr}: {e:?}");
            assert!(e.to_string().contains(says), "{expr}: {e}");
        }
        for good in [
            "0 2 * * *",
            "*/15 * * * MON-FRI",
            "0 0 L * *",
            "0 0 * JAN,jul 1#2",
            "@daily",
            "30 0 2 * * *",
        ] {
            parse_cron(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    fn defaults() -> Defaults<'static> {
        Defaults {
            timezone: None,
            catch_up: true,
            retries: 2,
            retry_delay: Duration::from_secs(60),
            retention: true,
            repositories: &["offsite"],
        }
    }

    fn entries(text: &str) -> Result<Vec<Entry>, KeyError> {
        let v: toml::Table = toml::from_str(text).unwrap();
        let raw = v.into_iter().collect();
        parse(raw, &defaults(), &["db", "files"])
    }

    #[test]
    fn a_copy_entry_runs_copy_to_its_repository() {
        let e = entries("[offsite]\ncron = \"0 3 * * *\"\naction = \"copy\"\nto = \"offsite\"\n")
            .unwrap();
        assert_eq!(e[0].action, Action::Copy);
        assert_eq!(
            crate::runner::describe(&e[0]),
            ["respaldo copy --to offsite"]
        );
        assert!(!e[0].backs_up("db"));
    }

    #[test]
    fn a_maintenance_entry_acts_on_the_hosts_it_names() {
        let e = entries(
            "[maintenance]\ncron = \"0 4 * * *\"\naction = \"forget\"\nprune = true\nhost = \"*\"\n",
        )
        .unwrap();
        assert_eq!(
            crate::runner::describe(&e[0]),
            ["respaldo --host * forget --prune"]
        );
        let err = entries("[nightly]\ncron = \"0 2 * * *\"\nhost = \"*\"\n").unwrap_err();
        assert!(err.1.contains("does not apply"), "{err:?}");
    }

    #[test]
    fn short_and_long_forms() {
        let e = entries(
            "daily = \"0 2 * * *\"\n[fast]\nevery = \"3s\"\nsources = [\"db\"]\ntags = [\"t\"]\nprune = true\n",
        )
        .unwrap();
        assert_eq!(e[0].name, "daily");
        assert_eq!(e[0].tags, ["daily"]);
        assert!(e[0].forget && !e[0].prune);
        assert!(matches!(e[1].when, When::Every(d) if d == Duration::from_secs(3)));
        assert!(e[1].backs_up("db") && !e[1].backs_up("files"));
        let t = Utc::now();
        assert_eq!(e[1].next_after(t), Some(t + chrono::TimeDelta::seconds(3)));
    }

    #[test]
    fn cron_in_a_zone() {
        let e = entries("[d]\ncron = \"0 2 * * *\"\ntimezone = \"Asia/Tokyo\"\n").unwrap();
        let from: DateTime<Utc> = "2026-01-10T00:00:00Z".parse().unwrap();
        // 02:00 in Tokyo is 17:00 UTC the day before.
        assert_eq!(
            e[0].next_after(from).unwrap(),
            "2026-01-10T17:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(e[0].longest_gap(from), Some(Duration::from_secs(86400)));
        let s = entries("[s]\ncron = \"*/5 * * * * *\"\ntimezone = \"UTC\"\n").unwrap();
        assert_eq!(s[0].longest_gap(from), Some(Duration::from_secs(5)));
    }

    #[test]
    fn errors_name_the_key() {
        let bad = |t: &str| entries(t).unwrap_err();
        // The string form is the cron key itself.
        assert_eq!(bad("x = \"0 2 * *\"\n").0, ["schedule", "x"]);
        assert_eq!(bad("x = 3\n").0, ["schedule", "x"]);
        assert_eq!(
            bad("[x]\ncron = \"0 2 * * *\"\ntimezone = \"Mars/Base\"\n").0,
            ["schedule", "x", "timezone"]
        );
        assert_eq!(
            bad("[x]\nevery = \"1h\"\nsources = [\"nope\"]\n").0,
            ["schedule", "x", "sources"]
        );
        assert_eq!(
            bad("[x]\nevery = \"1h\"\naction = \"verify\"\nprune = true\n").0,
            ["schedule", "x", "prune"]
        );
        assert_eq!(
            bad("[x]\nevery = \"1h\"\naction = \"copy\"\n").0,
            ["schedule", "x"]
        );
        let (keys, msg) = bad("[x]\nevery = \"1h\"\naction = \"copy\"\nto = \"nope\"\n");
        assert_eq!(keys, ["schedule", "x", "to"]);
        assert!(msg.contains("offsite"), "{msg}");
        assert_eq!(
            bad("[x]\nevery = \"1h\"\nto = \"offsite\"\n").0,
            ["schedule", "x", "to"]
        );
        assert_eq!(
            bad("[x]\nevery = \"1h\"\ncron = \"@daily\"\n").0,
            ["schedule", "x"]
        );
        assert_eq!(
            bad("[x]\nevery = \"1h\"\nbogus = 1\n").0,
            ["schedule", "x", "bogus"]
        );
    }

    #[test]
    fn systemd_calendar() {
        let c = |e: &str| to_on_calendar(e, None).unwrap();
        assert_eq!(c("0 2 * * *"), ["*-*-* 02:00:00"]);
        assert_eq!(c("0 3 * * SUN"), ["Sun *-*-* 03:00:00"]);
        assert_eq!(c("0 4 1 * *"), ["*-*-01 04:00:00"]);
        assert_eq!(c("*/15 * * * *"), ["*-*-* *:00/15:00"]);
        assert_eq!(c("30 9 * * 1-5"), ["Mon..Fri *-*-* 09:30:00"]);
        assert_eq!(
            c("0 0 1 JAN,JUL 5-7"),
            ["Fri..Sat,Sun *-01,07-* 00:00:00", "*-01,07-01 00:00:00"]
        );
        assert_eq!(c("*/5 * * * * *"), ["*-*-* *:*:00/5"]);
        assert_eq!(c("@weekly"), ["Sun *-*-* 00:00:00"]);
        assert_eq!(
            to_on_calendar("0 2 * * *", Some("Europe/Madrid")).unwrap(),
            ["*-*-* 02:00:00 Europe/Madrid"]
        );
        assert!(to_on_calendar("0 0 L * *", None).is_err());
    }
}
