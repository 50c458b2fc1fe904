//! `restore SNAPSHOT [--source N] [--target WHERE | --to DIR] [--path P]
//! [--table T …] [--force] [--no-safety-snapshot] [--dry-run]`.

use anyhow::Result;
use respaldo_app::ops::restore::{self, RestoreReport, RestoreRequest, SourceRestore};
use respaldo_core::source::{PlanAction, Selection, TargetState};
use serde_json::json;

use crate::args::Command;
use crate::ctx::Ctx;
use crate::exit;

/// `restore`.
pub async fn command(ctx: &Ctx<'_>, command: &Command) -> Result<u8> {
    let Command::Restore {
        snapshot,
        sources,
        target,
        to,
        paths,
        selection: s,
        force,
        no_safety_snapshot,
        dry_run,
    } = command
    else {
        unreachable!("called for `restore`")
    };
    let req = RestoreRequest {
        spec: snapshot.clone(),
        sources: sources.clone(),
        target: target.clone(),
        to: to.clone(),
        paths: paths.clone(),
        selection: Selection {
            tables: s.tables.clone(),
            schemas: s.schemas.clone(),
            schema_only: s.schema_only,
            keys: s.keys.clone(),
            databases: s.databases.clone(),
            volumes: s.volumes.clone(),
        },
        force: *force,
        safety_snapshot: !*no_safety_snapshot,
        dry_run: *dry_run,
    };
    let report = restore::restore(ctx, &req).await?;
    let (failures, total) = report.failures();
    match &report {
        RestoreReport::Exported(done) => {
            if ctx.json() && !req.dry_run {
                let arr: Vec<_> = done
                    .iter()
                    .map(|e| {
                        let lines: Vec<String> = e
                            .written
                            .iter()
                            .map(|p| format!("wrote {}", p.display()))
                            .collect();
                        json!({"source": e.source, "snapshot": e.snapshot.to_hex(), "ok": true, "lines": lines})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(arr));
            }
            for e in done.iter().filter(|_| req.dry_run) {
                println!(
                    "would write `{}` from snapshot {} into {}",
                    e.source,
                    e.snapshot.short(),
                    e.dir.display()
                );
            }
            Ok(exit::OK)
        }
        RestoreReport::Planned(planned) => {
            print_plan(ctx, planned);
            Ok(if failures == 0 {
                exit::OK
            } else {
                exit::FAILED
            })
        }
        RestoreReport::Restored(done) => {
            print_outcome(ctx, done);
            Ok(exit::for_sources(failures, total))
        }
    }
}

fn print_plan(ctx: &Ctx<'_>, planned: &[SourceRestore]) {
    if ctx.json() {
        let arr: Vec<_> = planned
            .iter()
            .map(|p| {
                json!({"source": p.source, "snapshot": p.snapshot.to_hex(),
                       "items": p.plan.items, "safety_snapshot": p.safety_snapshot})
            })
            .collect();
        println!("{}", serde_json::Value::Array(arr));
        return;
    }
    for p in planned {
        for i in &p.plan.items {
            let state = match &i.state {
                TargetState::Absent => "absent".to_string(),
                TargetState::Empty => "empty".to_string(),
                TargetState::Holds(w) => format!("holds data ({w})"),
            };
            let action = match &i.action {
                PlanAction::Create => "create it".to_string(),
                PlanAction::Fill => "fill it".to_string(),
                PlanAction::Overwrite => "replace it".to_string(),
                PlanAction::Partial => "replace the selected part".to_string(),
                PlanAction::Refuse(why) => format!("REFUSED: {why}"),
            };
            let safety_note = match (i.overwrites_data(), p.safety_snapshot) {
                (true, true) => ", safety snapshot first",
                (true, false) => ", no safety snapshot",
                _ => "",
            };
            println!(
                "would restore `{}` {} (snapshot {}) into {}: {state} → {action}{safety_note}",
                p.source,
                i.what,
                p.snapshot.short(),
                i.target
            );
        }
        if !p.containers.is_empty() {
            println!(
                "would stop {} for the restore of `{}`, and start them again",
                p.containers.join(", "),
                p.source
            );
        }
    }
    println!("dry run: nothing was changed");
}

fn print_outcome(ctx: &Ctx<'_>, done: &[SourceRestore]) {
    if ctx.json() {
        let arr: Vec<_> = done
            .iter()
            .map(|p| {
                json!({"source": p.source, "snapshot": p.snapshot.to_hex(),
                       "ok": p.error.is_none(), "error": p.error, "lines": p.lines,
                       "items": p.plan.items, "phases_ms": p.phases})
            })
            .collect();
        println!("{}", serde_json::Value::Array(arr));
        return;
    }
    for p in done {
        for l in &p.lines {
            ctx.say(format!("{}: {l}", p.source));
        }
        if let Some(e) = &p.error {
            eprintln!("error: restore of `{}` failed: {e}", p.source);
        }
    }
}
