//! `status`: per source the last good backup, its age, size and duration,
//! and whether it meets its recovery point objective (`rpo`); a source whose
//! last run failed, or whose last good backup is too old, makes it exit 1.
//!
//! Good backups come from the repository's snapshots (a failed run never
//! counts as one); failed runs also from the run history, which records runs
//! that failed before any snapshot could be written.

use std::time::Duration;

use chrono::{DateTime, Utc};
use respaldo_core::repo::snapshot::{Hosts, SnapshotRef};
use respaldo_core::Repository;

use crate::config::Config;
use crate::history::RunRecord;
use crate::notify::{Event, EventKind, SourceEvent};

/// A source's last good backup.
#[derive(Debug, Clone)]
pub struct Good {
    /// When its backup started.
    pub time: DateTime<Utc>,
    /// The snapshot.
    pub snapshot: String,
    /// Plaintext size.
    pub size: u64,
    /// Bytes it added.
    pub bytes_added: u64,
    /// How long it took.
    pub duration_ms: u64,
}

/// A source's last run, good or not.
#[derive(Debug, Clone)]
pub struct LastRun {
    /// When it started.
    pub time: DateTime<Utc>,
    /// Whether it succeeded.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
    /// The snapshot it is part of, if any.
    pub snapshot: Option<String>,
}

/// A source's last drill (`test-restore`).
#[derive(Debug, Clone)]
pub struct LastDrill {
    /// When it ended.
    pub time: DateTime<Utc>,
    /// Whether the drill succeeded.
    pub ok: bool,
    /// The restore time it estimated.
    pub rto: Duration,
    /// Why it failed.
    pub error: Option<String>,
}

/// One source's state.
#[derive(Debug, Clone)]
pub struct SourceState {
    /// Name.
    pub name: String,
    /// Driver type.
    pub kind: String,
    /// Last good backup.
    pub good: Option<Good>,
    /// Last run.
    pub last_run: Option<LastRun>,
    /// Objective, and where it comes from (`source`, `global`, `schedule`).
    pub rpo: Option<(Duration, &'static str)>,
    /// Age of the last good backup.
    pub age: Option<Duration>,
    /// No good backup, or older than the objective.
    pub stale: bool,
    /// The last run failed.
    pub failed: bool,
    /// Failed backup runs in the history.
    pub failures: u64,
    /// Recovery time objective, and where it comes from (`source`, `global`).
    pub rto: Option<(Duration, &'static str)>,
    /// The last drill.
    pub drill: Option<LastDrill>,
    /// It has an objective and no drill, a failed one, or a longer estimate.
    pub rto_missed: bool,
}

impl SourceState {
    /// The state as JSON (`status --json`): the source, its last good
    /// backup, its age against its objective, its last run.
    pub fn to_json(&self) -> serde_json::Value {
        let s = self;
        serde_json::json!({
            "source": s.name,
            "type": s.kind,
            "ok": s.ok(),
            "stale": s.stale,
            "failed": s.failed,
            "state": s.describe(),
            "last_good": s.good.as_ref().map(|g| serde_json::json!({
                "time": g.time, "snapshot": g.snapshot, "size": g.size,
                "bytes_added": g.bytes_added, "duration_ms": g.duration_ms,
            })),
            "age_seconds": s.age.map(|a| a.as_secs()),
            "rpo_seconds": s.rpo.map(|r| r.0.as_secs()),
            "rpo_from": s.rpo.map(|r| r.1),
            "last_run": s.last_run.as_ref().map(|r| serde_json::json!({
                "time": r.time, "ok": r.ok, "error": r.error,
            })),
            "failures": s.failures,
            "rto_seconds": s.rto.map(|r| r.0.as_secs()),
            "rto_from": s.rto.map(|r| r.1),
            "rto_missed": s.rto_missed,
            "last_drill": s.drill.as_ref().map(|d| serde_json::json!({
                "time": d.time, "ok": d.ok, "rto_seconds": d.rto.as_secs_f64(),
                "error": d.error,
            })),
        })
    }

    /// Neither stale nor failed, and within its recovery time objective.
    pub fn ok(&self) -> bool {
        !self.stale && !self.failed && !self.rto_missed
    }

    /// `ok`, `STALE …`, `FAILED: …`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.failed {
            let err = self
                .last_run
                .as_ref()
                .and_then(|r| r.error.as_deref())
                .unwrap_or("failed");
            parts.push(format!("FAILED: {err}"));
        }
        if self.stale {
            parts.push(match (&self.good, self.rpo) {
                (None, _) => "STALE: never backed up".to_string(),
                (Some(_), Some((rpo, _))) => {
                    format!("STALE: older than its objective ({})", human(rpo))
                }
                (Some(_), None) => "STALE".to_string(),
            });
        }
        if self.rto_missed {
            let rto = self.rto.map(|r| human(r.0)).unwrap_or_default();
            parts.push(match &self.drill {
                None => format!("RTO {rto}: never drilled (run `respaldo test-restore`)"),
                Some(d) if !d.ok => format!(
                    "RTO {rto}: the last drill failed: {}",
                    d.error.as_deref().unwrap_or("failed")
                ),
                Some(d) => format!("RTO {rto}: the last drill estimated {}", human(d.rto)),
            });
        }
        if parts.is_empty() {
            "ok".into()
        } else {
            parts.join("; ")
        }
    }
}

/// `26h`, `3d4h`, `45s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}min", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// The objective of `source`: its own, the global one, or the schedule's.
fn objective(
    config: &Config,
    name: &str,
    own: Option<Duration>,
    now: DateTime<Utc>,
) -> Option<(Duration, &'static str)> {
    if let Some(r) = own {
        return Some((r, "source"));
    }
    if let Some(r) = config.status.rpo {
        return Some((r, "global"));
    }
    config
        .schedule
        .iter()
        .filter(|e| e.backs_up(name))
        .filter_map(|e| e.longest_gap(now))
        .min()
        .map(|gap| (gap + (gap / 2).min(Duration::from_secs(3600)), "schedule"))
}

/// The state of every enabled source at `now`.
pub fn evaluate(
    config: &Config,
    snapshots: &[SnapshotRef],
    history: &[RunRecord],
    now: DateTime<Utc>,
) -> Vec<SourceState> {
    config
        .sources
        .iter()
        .filter(|s| s.enabled)
        .map(|spec| {
            let name = &spec.name;
            let mut good: Option<Good> = None;
            let mut last_run: Option<LastRun> = None;
            // Safety snapshots and damaged originals are not backups.
            for s in snapshots.iter().filter(|s| s.is_regular()) {
                let Some(e) = s.snapshot.sources.get(name) else {
                    continue;
                };
                if e.is_ok() && good.as_ref().is_none_or(|g| e.started > g.time) {
                    good = Some(Good {
                        time: e.started,
                        snapshot: s.id.to_hex(),
                        size: e.stats.bytes_total,
                        bytes_added: e.stats.bytes_added,
                        duration_ms: e.duration_ms,
                    });
                }
                if last_run.as_ref().is_none_or(|r| e.started > r.time) {
                    last_run = Some(LastRun {
                        time: e.started,
                        ok: e.is_ok(),
                        error: e.error.clone(),
                        snapshot: Some(s.id.to_hex()),
                    });
                }
            }
            let mut failures = 0;
            for r in history.iter().filter(|r| r.action == "backup") {
                let Some(sr) = r.sources.get(name) else {
                    continue;
                };
                if !sr.ok {
                    failures += 1;
                }
                // The snapshot entry of the same run (which starts a little
                // after the run): the history wins, as it has errors even for
                // sealed snapshots and knows what verify-after-backup found.
                let same_run = |l: &LastRun| r.snapshot.is_some() && l.snapshot == r.snapshot;
                if last_run
                    .as_ref()
                    .is_none_or(|l| r.started >= l.time || same_run(l))
                {
                    last_run = Some(LastRun {
                        time: r.started,
                        ok: sr.ok,
                        error: sr.error.clone(),
                        snapshot: r.snapshot.clone(),
                    });
                }
            }
            let drill = history
                .iter()
                .rev()
                .filter(|r| r.action == "test-restore")
                .find_map(|r| {
                    r.sources.get(name).map(|sr| LastDrill {
                        time: r.finished,
                        ok: sr.ok,
                        rto: Duration::from_millis(sr.duration_ms),
                        error: sr.error.clone(),
                    })
                });
            let rto = spec
                .rto
                .map(|r| (r, "source"))
                .or(config.status.rto.map(|r| (r, "global")));
            let rto_missed = rto.is_some_and(|(objective, _)| match &drill {
                None => true,
                Some(d) => !d.ok || d.rto > objective,
            });
            let rpo = objective(config, name, spec.rpo, now);
            let age = good
                .as_ref()
                .map(|g| (now - g.time).to_std().unwrap_or(Duration::ZERO));
            let stale = match (age, rpo) {
                (None, _) => true,
                (Some(a), Some((r, _))) => a > r,
                (Some(_), None) => false,
            };
            SourceState {
                name: name.clone(),
                kind: spec.kind.clone(),
                failed: last_run.as_ref().is_some_and(|r| !r.ok),
                good,
                last_run,
                rpo,
                age,
                stale,
                failures,
                rto,
                drill,
                rto_missed,
            }
        })
        .collect()
}

/// Loads the snapshots of `hosts` and the run history and evaluates every
/// source; errors have their secrets masked.
pub async fn collect(
    config: &Config,
    repo: &Repository,
    hosts: &Hosts,
) -> respaldo_core::Result<Vec<SourceState>> {
    let (mut snapshots, _) = repo.snapshots().await?;
    snapshots.retain(|s| hosts.matches(&s.snapshot.host));
    let history = config.status.history.read_or_warn();
    let mut states = evaluate(config, &snapshots, &history, Utc::now());
    // Errors in snapshots were written by the backup unmasked.
    for s in &mut states {
        if let Some(r) = &mut s.last_run {
            r.error = r.error.as_deref().map(|e| config.masker.mask(e));
        }
    }
    Ok(states)
}

/// Bytes stored in the repository (`None` when they cannot be listed).
pub async fn repository_size(repo: &Repository) -> Option<u64> {
    repo.sink()
        .list("")
        .await
        .ok()
        .map(|l| l.iter().map(|o| o.size).sum())
}

/// The `stale` notification for these sources, masked.
pub fn stale_event(config: &Config, stale: &[&SourceState]) -> Event {
    let names: Vec<&str> = stale.iter().map(|s| s.name.as_str()).collect();
    let details: Vec<String> = stale
        .iter()
        .map(|s| format!("{}: {}", s.name, s.describe()))
        .collect();
    Event {
        event: EventKind::Stale,
        action: "status".into(),
        trigger: None,
        host: config.host.clone(),
        config: config.path.display().to_string(),
        repository: config.repository.url.clone(),
        time: Utc::now(),
        source: names.join(", "),
        sources: stale
            .iter()
            .map(|s| SourceEvent {
                name: s.name.clone(),
                ok: false,
                error: Some(s.describe()),
            })
            .collect(),
        error: Some(details.join("; ")),
        snapshot: None,
        warnings: Vec::new(),
        summary: format!("stale backups: {}", details.join("; ")),
        log_tail: String::new(),
    }
    .masked(&config.masker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::SourceRun;
    use respaldo_core::repo::id::ObjectId;
    use respaldo_core::repo::snapshot::{Snapshot, SourceStats};
    use serde_json::json;

    #[test]
    fn a_runs_history_record_wins_over_its_own_snapshot_entry() {
        let base = std::env::temp_dir();
        let config = Config::parse(
            "[repository]\nurl = \"repo\"\n[status]\nstate_dir = \"unused\"\n\
             [sources.docs]\ntype = \"command\"\ncommand = [\"echo\", \"x\"]\n",
            &base.join("backup.toml"),
            &base,
            None,
        )
        .unwrap();
        let now = Utc::now();
        // The run starts, then its source does (a little later) and is
        // written as good; verify-after-backup then finds a problem.
        let mut rec = RunRecord::start("backup", None);
        rec.started = now - chrono::Duration::seconds(10);
        let id = ObjectId::sha256(b"snapshot");
        rec.snapshot = Some(id.to_hex());
        rec.sources.insert(
            "docs".into(),
            SourceRun {
                ok: false,
                error: Some("verify: pack 1 is missing".into()),
                ..SourceRun::default()
            },
        );
        let snapshot: Snapshot = serde_json::from_value(json!({
            "time": rec.started, "finished": now, "host": "h", "tags": [],
            "program_version": "0",
            "sources": {"docs": {
                "type": "command", "status": "ok",
                "started": now - chrono::Duration::seconds(9), "duration_ms": 1,
                "artifacts": [], "metadata": {}, "stats": SourceStats::default(),
            }},
            "stats": {"bytes_added": 0, "blobs_added": 0, "packs_added": 0, "duration_ms": 0},
        }))
        .unwrap();
        let snaps = [SnapshotRef { id, snapshot }];
        let states = evaluate(&config, &snaps, std::slice::from_ref(&rec), now);
        assert!(states[0].failed, "{:?}", states[0]);
        assert_eq!(states[0].describe(), "FAILED: verify: pack 1 is missing");
        // Without the record, the snapshot's good entry is the last run.
        let states = evaluate(&config, &snaps, &[], now);
        assert!(!states[0].failed);
    }
}
