//! A tracked backup run: the `start` notification, the `[hooks]` of the run
//! and the free-space check before it; after it, the run history record,
//! the `after`/`failure` and `finally` hooks and the `success`/`failure`
//! notification. Used by `backup`, whoever starts it (a person, cron, a
//! systemd timer or the daemon).

use std::future::Future;

use respaldo_core::ops::backup::BackupOutcome;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::history::{RunRecord, SourceRun};
use crate::hooks::Stage;
use crate::notify::{self, Event, EventKind, SourceEvent};

/// The `[schedule]` entry that started this run (set by the scheduler for
/// the commands it runs).
pub const TRIGGER_ENV: &str = "RESPALDO_TRIGGER";
/// The id the scheduler gives the run, to find its history record.
pub const RUN_ID_ENV: &str = "RESPALDO_RUN_ID";

/// A new record for this process's run of `action`.
pub fn record(action: &str) -> RunRecord {
    let trigger = std::env::var(TRIGGER_ENV).ok().filter(|s| !s.is_empty());
    let mut rec = RunRecord::start(action, trigger);
    if let Some(id) = std::env::var(RUN_ID_ENV).ok().filter(|s| !s.is_empty()) {
        rec.id = id;
    }
    rec
}

/// The notification for `rec`, masked.
pub fn event(config: &Config, kind: EventKind, rec: &RunRecord) -> Event {
    let failed: Vec<&str> = rec
        .sources
        .iter()
        .filter(|(_, s)| !s.ok)
        .map(|(n, _)| n.as_str())
        .collect();
    let names: Vec<&str> = rec.sources.keys().map(String::as_str).collect();
    let what = if names.is_empty() {
        rec.action.clone()
    } else {
        format!("{} of {}", rec.action, names.join(", "))
    };
    let summary = match kind {
        EventKind::Start => format!("{what} started"),
        EventKind::Success => match &rec.snapshot {
            Some(id) => format!(
                "{what} succeeded: snapshot {} ({} added)",
                &id[..id.len().min(12)],
                crate::units::size(rec.bytes_added)
            ),
            None => format!("{what} succeeded"),
        },
        EventKind::Failure | EventKind::Stale => format!(
            "{what} FAILED: {}",
            rec.error.as_deref().unwrap_or("unknown error")
        ),
        EventKind::Warning => format!("{what}: WARNING: {}", rec.warnings.join("; ")),
    };
    Event {
        event: kind,
        action: rec.action.clone(),
        trigger: rec.trigger.clone(),
        host: config.host.clone(),
        config: config.path.display().to_string(),
        repository: config.repository.url.clone(),
        time: chrono::Utc::now(),
        source: failed.join(", "),
        sources: rec
            .sources
            .iter()
            .map(|(n, s)| SourceEvent {
                name: n.clone(),
                ok: s.ok,
                error: s.error.clone(),
            })
            .collect(),
        error: rec.error.clone(),
        snapshot: rec.snapshot.clone(),
        warnings: rec.warnings.clone(),
        summary,
        log_tail: if kind == EventKind::Failure {
            crate::mask::LogTail::global().text()
        } else {
            String::new()
        },
    }
    .masked(&config.masker)
}

/// Writes `rec` to the history (a failure to do so is logged) and sends the
/// `success` or `failure` notification.
pub async fn conclude(config: &Config, rec: &mut RunRecord) {
    save(config, rec);
    notify_outcome(config, rec).await;
}

/// Writes `rec`, finished now and masked, to the history (a failure to do
/// so is logged).
pub fn save(config: &Config, rec: &mut RunRecord) {
    rec.finished = chrono::Utc::now();
    rec.error = rec.error.as_ref().map(|e| config.masker.mask(e));
    for s in rec.sources.values_mut() {
        s.error = s.error.as_ref().map(|e| config.masker.mask(e));
    }
    if let Err(e) = config.status.history.append(rec) {
        tracing::warn!(
            "cannot record the run in {}: {e}",
            config.status.history.path().display()
        );
    }
}

/// Sends the `success` or `failure` notification of `rec`.
pub async fn notify_outcome(config: &Config, rec: &RunRecord) {
    let kind = if rec.ok {
        EventKind::Success
    } else {
        EventKind::Failure
    };
    notify::send(&config.notify, &event(config, kind, rec)).await;
}

/// Runs a backup (`run`, which takes the lock, backs up and verifies, and
/// gives the repository's size when `[backup] max_repository_size` asks for
/// it) with everything around it. `sources` are the selected sources.
pub async fn tracked<F>(
    config: &Config,
    sources: &[String],
    tags: &[String],
    run: F,
) -> Result<BackupOutcome>
where
    F: Future<Output = Result<(BackupOutcome, Option<u64>)>>,
{
    let mut rec = record("backup");
    rec.tags = tags.to_vec();
    for s in sources {
        rec.sources.insert(s.clone(), SourceRun::default());
    }
    if notify::wants(&config.notify, EventKind::Start) {
        notify::send(&config.notify, &event(config, EventKind::Start, &rec)).await;
    }
    let prepared = async {
        config
            .hooks
            .run(Stage::Before, None, None)
            .await
            .map_err(|e| Error::failed(format!("{e}; nothing was backed up")))?;
        crate::precheck::check_free_space(
            &config.repository.url,
            config.backup.min_free_space.as_deref(),
        )
        .map_err(|e| Error::failed(e.to_string()))
    }
    .await;
    let (result, repository_size) = match prepared {
        Ok(()) => match run.await {
            Ok((outcome, size)) => (Ok(outcome), size),
            Err(e) => (Err(e), None),
        },
        Err(e) => (Err(e), None),
    };
    fill(&mut rec, &result);
    rec.warnings = size_warnings(config, &rec, repository_size);
    for w in &rec.warnings {
        tracing::warn!("{w}");
    }
    // The hooks mask the error they are given.
    if let Some(w) = config.hooks.conclude(None, rec.error.as_deref()).await {
        tracing::warn!("{w}");
    }
    conclude(config, &mut rec).await;
    if !rec.warnings.is_empty() {
        notify::send(&config.notify, &event(config, EventKind::Warning, &rec)).await;
    }
    result
}

/// The sources whose backup is larger than their `max_backup_size`, and the
/// repository when it stores more than `max_repository_size`.
fn size_warnings(config: &Config, rec: &RunRecord, repository_size: Option<u64>) -> Vec<String> {
    let size = crate::units::size;
    let mut out: Vec<String> = rec
        .sources
        .iter()
        .filter(|(_, run)| run.ok)
        .filter_map(|(name, run)| {
            let max = config.source(name)?.max_backup_size?;
            (run.bytes_total > max).then(|| {
                format!(
                    "the backup of `{name}` is {}, over its max_backup_size of {}",
                    size(run.bytes_total),
                    size(max)
                )
            })
        })
        .collect();
    if let (Some(max), Some(stored)) = (config.max_repository_size, repository_size) {
        if stored > max {
            out.push(format!(
                "the repository stores {}, over max_repository_size of {}",
                size(stored),
                size(max)
            ));
        }
    }
    out
}

/// Records a backup's result in `rec`: per source its outcome (a source
/// whose verification after backup failed is failed in the snapshot itself,
/// with what was damaged as its error, so `status` agrees with `backup`).
fn fill(rec: &mut RunRecord, result: &Result<BackupOutcome>) {
    match result {
        Ok(outcome) => {
            let s = &outcome.snapshot;
            rec.snapshot = outcome.snapshot_id.map(|i| i.to_hex());
            rec.bytes_added = s.stats.bytes_added;
            for (n, e) in &s.sources {
                rec.sources.insert(
                    n.clone(),
                    SourceRun {
                        ok: e.is_ok(),
                        error: e.error.clone(),
                        bytes_total: e.stats.bytes_total,
                        bytes_added: e.stats.bytes_added,
                        duration_ms: e.duration_ms,
                        phases: Default::default(),
                    },
                );
            }
            let errors: Vec<String> = outcome
                .failures()
                .iter()
                .map(|(n, e)| format!("{n}: {e}"))
                .collect();
            rec.ok = errors.is_empty();
            if !rec.ok {
                rec.error = Some(errors.join("; "));
            }
        }
        Err(e) => {
            let msg = e.describe();
            for s in rec.sources.values_mut() {
                s.ok = false;
                s.error = Some(msg.clone());
            }
            rec.error = Some(msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot of `files` (ok) and `db` (failed), as the engine reports it.
    fn outcome() -> BackupOutcome {
        let entry = |status: &str, error: Option<&str>| {
            serde_json::json!({
                "type": "files", "status": status, "error": error,
                "started": "2026-01-01T00:00:00Z", "duration_ms": 5,
                "artifacts": [], "metadata": {},
                "stats": respaldo_core::repo::snapshot::SourceStats::default(),
            })
        };
        let snapshot = serde_json::from_value(serde_json::json!({
            "time": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:00:01Z",
            "host": "h", "tags": [], "program_version": "0",
            "sources": {
                "files": entry("ok", None),
                "db": entry("failed", Some("connection refused")),
            },
            "stats": {"bytes_added": 1, "blobs_added": 1, "packs_added": 1, "duration_ms": 1},
        }))
        .unwrap();
        BackupOutcome {
            snapshot_id: Some(respaldo_core::repo::id::ObjectId::sha256(b"x")),
            snapshot,
        }
    }

    #[test]
    fn failed_sources_fail_the_run_and_good_ones_stay_ok() {
        let mut rec = RunRecord::start("backup", None);
        fill(&mut rec, &Ok(outcome()));
        assert!(!rec.ok);
        assert!(rec.sources["files"].ok);
        assert!(!rec.sources["db"].ok);
        assert_eq!(rec.error.as_deref(), Some("db: connection refused"));
    }
}
