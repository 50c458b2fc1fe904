//! `test-restore`: every selected source's latest good backup goes through
//! its driver's throwaway restore and checks. A source whose driver has no
//! throwaway target is reported as not testable, with the reason — not as a
//! failure. The RTO per source adds to the drill what a real restore of it
//! also takes on this host: the safety snapshot (its last backup's time),
//! stopping and starting its containers and its health check (as measured
//! by its last real restore); the total is their sum, as a whole-stack
//! restore runs its sources one after the other.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use respaldo_core::kit::progress::Progress;
use respaldo_core::repo::lock::LockMode;
use respaldo_core::source::{RestoreContext, Selection};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::history::{RunRecord, SourceRun};
use crate::stack::Stack;
use crate::units::duration;

/// How one source's drill went.
enum Outcome {
    Ok(Vec<String>),
    NotTestable(String),
    Failed(String),
}

/// One source's drill.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Drill {
    /// The source.
    pub source: String,
    /// The snapshot drilled (hex id), when there was one.
    pub snapshot: Option<String>,
    /// False only when the drill failed.
    pub ok: bool,
    /// False when the driver has no throwaway target.
    pub testable: bool,
    /// Why it is not testable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long the drill took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The time a real restore of it takes on this host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto_ms: Option<u64>,
    /// The RTO's parts (drill, safety, stop, start, health).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto_parts_ms: Option<BTreeMap<String, u64>>,
    /// Whether its containers and health check are not measured yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto_unmeasured_steps: Option<bool>,
    /// What the drill checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<String>>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every selected source's drill, and the whole stack's RTO.
#[derive(Debug, Clone, Serialize)]
pub struct TestRestoreReport {
    /// Per source.
    pub sources: Vec<Drill>,
    /// How long the drills took.
    pub duration_ms: u64,
    /// The sum of the sources' RTOs: a whole-stack restore, one after the other.
    pub rto_ms: u64,
    /// No drill failed.
    pub ok: bool,
    /// How many sources are not testable.
    pub not_testable: usize,
}

impl TestRestoreReport {
    /// The drills that failed, of those tested.
    pub fn failures(&self) -> (usize, usize) {
        let tested = self.sources.iter().filter(|d| d.testable).count();
        (self.sources.iter().filter(|d| !d.ok).count(), tested)
    }
}

fn drill(source: &str, snapshot: Option<String>) -> Drill {
    Drill {
        source: source.to_string(),
        snapshot,
        ok: true,
        testable: true,
        ..Default::default()
    }
}

/// Drills the latest good backup of every selected source (`names`; empty:
/// every enabled source) under a shared lock.
pub async fn test_restore(ctx: &Stack, names: &[String]) -> Result<TestRestoreReport> {
    for n in names {
        if ctx.config.source(n).is_none() {
            return Err(Error::usage(format!("no source named `{n}`")));
        }
    }
    let selected: Vec<_> = ctx
        .config
        .sources
        .iter()
        .filter(|s| s.enabled && (names.is_empty() || names.contains(&s.name)))
        .collect();
    if selected.is_empty() {
        return Err(Error::usage(
            "no source selected: nothing to test-restore (check --source and `enabled`)",
        ));
    }
    let total = Instant::now();
    let mut rec = super::tracked::record("test-restore");
    let repo = ctx.repo().await?;
    repo.require_readable("test-restore")?;
    let list = ctx.snapshots(&repo).await?;
    ctx.with_lock(&repo, LockMode::Shared, "test-restore", async {
    let history = ctx.config.status.history.read_or_warn();
    let progress = Arc::new(Progress::default());
    let mut results = Vec::new();
    let mut untestable = 0;
    let mut rto_total = 0u64;
    for spec in selected {
        let started = Instant::now();
        let mut snapshot_id = None;
        let mut last_backup_ms = 0;
        let outcome = match ctx.resolve(&list, "latest", Some(&spec.name)) {
            Err(e) => Outcome::Failed(e.describe()),
            Ok(s) => {
                snapshot_id = Some(s.id);
                let entry = s.snapshot.sources[&spec.name].clone();
                last_backup_ms = entry.duration_ms;
                let rctx = RestoreContext {
                    repo: repo.clone(),
                    snapshot_id: s.id,
                    source_name: spec.name.clone(),
                    entry,
                    force: false,
                    paths: Vec::new(),
                    selection: Selection::default(),
                    progress: progress.clone(),
                };
                match spec.source.test_restore(&rctx).await {
                    Ok(r) => Outcome::Ok(r.lines),
                    Err(e) => match e.downcast_ref::<respaldo_core::Error>() {
                        Some(respaldo_core::Error::NotTestable(why)) => {
                            Outcome::NotTestable(why.clone())
                        }
                        _ => Outcome::Failed(
                            respaldo_core::Error::Source {
                                name: spec.name.clone(),
                                kind: spec.kind.clone(),
                                source: e,
                            }
                            .to_string(),
                        ),
                    },
                }
            }
        };
        let drill_ms = started.elapsed().as_millis() as u64;
        // What a real restore adds: the safety snapshot, and the steps its
        // last real restore measured around the data.
        let last_restore: BTreeMap<String, u64> = history
            .iter()
            .rev()
            .filter(|r| r.action == "restore")
            .find_map(|r| r.sources.get(&spec.name).map(|s| s.phases.clone()))
            .unwrap_or_default();
        let mut parts = BTreeMap::from([
            ("drill".to_string(), drill_ms),
            ("safety".to_string(), last_backup_ms),
        ]);
        for step in ["stop", "start", "health"] {
            if let Some(ms) = last_restore.get(step) {
                parts.insert(step.to_string(), *ms);
            }
        }
        let unmeasured = (!spec.restore.containers().is_empty()
            && !last_restore.contains_key("stop"))
            || (spec.restore.has_health_check() && !last_restore.contains_key("health"));
        let rto_ms: u64 = parts.values().sum();
        let mut d = drill(&spec.name, snapshot_id.map(|i| i.to_hex()));
        match outcome {
            Outcome::Ok(lines) => {
                rto_total += rto_ms;
                for l in &lines {
                    ctx.say(format!("{}: {l}", spec.name));
                }
                ctx.say(format!(
                    "{}: test restore ok in {}; RTO {} ({}{})",
                    spec.name,
                    duration(drill_ms),
                    duration(rto_ms),
                    parts
                        .iter()
                        .map(|(k, v)| format!("{k} {}", duration(*v)))
                        .collect::<Vec<_>>()
                        .join(" + "),
                    if unmeasured {
                        "; its containers and health check are not measured until its first real restore"
                    } else {
                        ""
                    }
                ));
                d.duration_ms = Some(drill_ms);
                d.rto_ms = Some(rto_ms);
                d.rto_parts_ms = Some(parts);
                d.rto_unmeasured_steps = Some(unmeasured);
                d.lines = Some(lines);
            }
            Outcome::NotTestable(why) => {
                untestable += 1;
                ctx.say(format!("{}: not testable: {why}", spec.name));
                d.testable = false;
                d.reason = Some(why);
            }
            Outcome::Failed(msg) => {
                d.ok = false;
                d.duration_ms = Some(drill_ms);
                d.error = Some(msg);
            }
        }
        results.push(d);
    }
    let failures = results.iter().filter(|d| !d.ok).count();
    record_drills(ctx, &mut rec, &results);
    Ok(TestRestoreReport {
        sources: results,
        duration_ms: total.elapsed().as_millis() as u64,
        rto_ms: rto_total,
        ok: failures == 0,
        not_testable: untestable,
    })
    })
    .await
}

/// The drills in the run history, each with the restore time it estimated
/// (what `status` checks against `rto`).
fn record_drills(ctx: &Stack, rec: &mut RunRecord, drills: &[Drill]) {
    for d in drills.iter().filter(|d| d.testable) {
        rec.sources.insert(
            d.source.clone(),
            SourceRun {
                ok: d.ok,
                error: d.error.clone(),
                duration_ms: d.rto_ms.unwrap_or(0),
                phases: d.rto_parts_ms.clone().unwrap_or_default(),
                ..SourceRun::default()
            },
        );
    }
    let failed: Vec<String> = drills
        .iter()
        .filter(|d| !d.ok)
        .map(|d| format!("{}: {}", d.source, d.error.as_deref().unwrap_or("failed")))
        .collect();
    rec.ok = failed.is_empty();
    rec.error = (!rec.ok).then(|| failed.join("; "));
    super::tracked::save(&ctx.config, rec);
}
