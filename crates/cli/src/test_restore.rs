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

use anyhow::Result;
use respaldo_core::kit::progress::Progress;
use respaldo_core::source::{RestoreContext, Selection};
use respaldo_core::Error;
use serde_json::json;

use crate::ctx::{load_snapshots, resolve, usage, Ctx};
use crate::exit::describe;
use crate::output;

/// How one source's drill went.
enum Outcome {
    Ok(Vec<String>),
    NotTestable(String),
    Failed(String),
}

/// `test-restore [--source N]...`.
pub async fn command(ctx: &Ctx<'_>, names: &[String]) -> Result<u8> {
    for n in names {
        if ctx.config.source(n).is_none() {
            return Err(usage(format!("no source named `{n}`")));
        }
    }
    let selected: Vec<_> = ctx
        .config
        .sources
        .iter()
        .filter(|s| s.enabled && (names.is_empty() || names.contains(&s.name)))
        .collect();
    if selected.is_empty() {
        return Err(usage(
            "no source selected: nothing to test-restore (check --source and `enabled`)",
        ));
    }
    let total = Instant::now();
    let repo = ctx.repo().await?;
    repo.require_readable("test-restore")?;
    let list = load_snapshots(ctx, &repo).await?;
    let lock = repo.lock(false, "test-restore", ctx.lock_wait()).await?;
    let history = ctx.config.status.history.read_or_warn();
    let progress = Arc::new(Progress::default());
    let mut results = Vec::new();
    let (mut failures, mut untestable) = (0, 0);
    let mut rto_total = 0u64;
    for spec in selected {
        let started = Instant::now();
        let mut snapshot_id = None;
        let mut last_backup_ms = 0;
        let outcome = match resolve(ctx, &list, "latest", Some(&spec.name)) {
            Err(e) => Outcome::Failed(describe(&e)),
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
                    Err(e) => match e.downcast_ref::<Error>() {
                        Some(Error::NotTestable(why)) => Outcome::NotTestable(why.clone()),
                        _ => Outcome::Failed(
                            Error::Source {
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
        let id = snapshot_id.map(|i| i.to_hex());
        match outcome {
            Outcome::Ok(lines) => {
                rto_total += rto_ms;
                for l in &lines {
                    ctx.say(format!("{}: {l}", spec.name));
                }
                ctx.say(format!(
                    "{}: test restore ok in {}; RTO {} ({}{})",
                    spec.name,
                    output::duration(drill_ms),
                    output::duration(rto_ms),
                    parts
                        .iter()
                        .map(|(k, v)| format!("{k} {}", output::duration(*v)))
                        .collect::<Vec<_>>()
                        .join(" + "),
                    if unmeasured {
                        "; its containers and health check are not measured until its first real restore"
                    } else {
                        ""
                    }
                ));
                results.push(
                    json!({"source": spec.name, "snapshot": id, "ok": true, "testable": true,
                    "duration_ms": drill_ms, "rto_ms": rto_ms, "rto_parts_ms": parts,
                    "rto_unmeasured_steps": unmeasured, "lines": lines}),
                );
            }
            Outcome::NotTestable(why) => {
                untestable += 1;
                ctx.say(format!("{}: not testable: {why}", spec.name));
                results.push(
                    json!({"source": spec.name, "snapshot": id, "ok": true, "testable": false,
                    "reason": why}),
                );
            }
            Outcome::Failed(msg) => {
                failures += 1;
                eprintln!(
                    "{}: TEST RESTORE FAILED after {}: {msg}",
                    spec.name,
                    output::duration(drill_ms)
                );
                results.push(
                    json!({"source": spec.name, "snapshot": id, "ok": false, "testable": true,
                    "duration_ms": drill_ms, "error": msg}),
                );
            }
        }
    }
    lock.release().await?;
    let total_ms = total.elapsed().as_millis() as u64;
    let tested = results.len() - untestable;
    if ctx.cli.json {
        println!(
            "{}",
            json!({"sources": results, "duration_ms": total_ms, "rto_ms": rto_total,
                   "ok": failures == 0, "not_testable": untestable})
        );
    } else {
        println!(
            "test restore: {} of {} sources ok{}, total time {} (RTO) for a whole-stack restore on this host; the drills took {}",
            tested - failures,
            tested,
            if untestable > 0 {
                format!(" ({untestable} more not testable)")
            } else {
                String::new()
            },
            output::duration(rto_total),
            output::duration(total_ms)
        );
    }
    Ok(crate::exit::for_sources(failures, tested))
}
