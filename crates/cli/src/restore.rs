//! `restore`: every selected source is planned before anything changes (each
//! target's state — absent, empty, holds data — and the action), a refusal
//! anywhere stops the whole restore with nothing changed, and then, around
//! the services: the sources' `before` hooks, their containers stopped, the
//! safety snapshot of what will be overwritten (targets that exist only),
//! the restores (databases first), the containers started again, the
//! `after` hooks and the health checks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use respaldo_core::kit::progress::Progress;
use respaldo_core::ops::backup::{self, BackupJob, BackupOptions};
use respaldo_core::repo::extract::{self as core_restore, TreeRestoreOptions};
use respaldo_core::repo::snapshot::{self, SnapshotRef};
use respaldo_core::repo::tree::RawPath;
use respaldo_core::source::{PlanAction, RestoreContext, RestorePlan, RestoreTarget, Selection};
use respaldo_core::{Error, Repository};
use serde_json::json;

use crate::config::SourceSpec;
use crate::ctx::{load_snapshots, resolve, usage, Ctx};
use crate::exit::describe;
use crate::hooks::Stage;

/// What to restore.
pub struct RestoreRequest<'a> {
    /// Snapshot id, prefix or `latest`.
    pub spec: &'a str,
    /// `--source` (empty: all).
    pub sources: &'a [String],
    /// `--target`.
    pub target: Option<&'a str>,
    /// `--to`.
    pub to: Option<&'a Path>,
    /// `--path`.
    pub paths: &'a [String],
    /// `--table`, `--schema`, …
    pub selection: Selection,
    /// `--force`.
    pub force: bool,
    /// Not `--no-safety-snapshot`.
    pub safety_snapshot: bool,
    /// `--dry-run`.
    pub dry_run: bool,
}

/// Databases are restored before the services that use them.
fn restore_rank(kind: &str) -> u8 {
    match kind {
        "postgres" | "mysql" | "redis" | "influxdb" => 0,
        _ => 1,
    }
}

/// One source of the restore.
struct Planned<'a> {
    name: String,
    snapshot: &'a SnapshotRef,
    spec: Option<&'a SourceSpec>,
    rctx: RestoreContext,
    plan: RestorePlan,
    /// Why this source stops (hook, safety snapshot, restore, health).
    error: Option<String>,
    lines: Vec<String>,
    phases: std::collections::BTreeMap<String, u64>,
}

/// A `--target` that looks like a relative path is taken relative to the
/// current directory (URLs and names pass unchanged).
fn resolve_target(t: &str) -> String {
    if t.contains("://") || !(t.starts_with('.') || t.contains('/')) {
        return t.to_string();
    }
    std::path::absolute(PathBuf::from(t))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| t.to_string())
}

/// `restore`.
pub async fn command(ctx: &Ctx<'_>, req: RestoreRequest<'_>) -> Result<u8> {
    let options = req.selection.options_set();
    if req.target.is_some_and(|t| t.trim().is_empty()) {
        return Err(usage(
            "--target is empty; name where to restore (a folder, a database URL, a volume)",
        ));
    }
    if req.target.is_some() && req.sources.len() != 1 {
        return Err(usage("--target needs exactly one --source"));
    }
    if !options.is_empty() && req.sources.len() != 1 {
        return Err(usage(format!(
            "{} needs exactly one --source",
            options.join(", ")
        )));
    }
    if !options.is_empty() && req.to.is_some() {
        return Err(usage(format!(
            "{} cannot be combined with --to (it writes whole artifacts)",
            options.join(", ")
        )));
    }
    let mut filter: Vec<RawPath> = Vec::new();
    for p in req.paths {
        let trimmed = p.trim_matches('/');
        let raw = RawPath(trimmed.as_bytes().to_vec());
        if !raw.is_safe() {
            return Err(usage(format!(
                "--path `{p}` must be a relative path inside the tree"
            )));
        }
        filter.push(raw);
    }
    let repo = ctx.repo().await?;
    repo.require_readable("restore")?;
    let list = load_snapshots(ctx, &repo).await?;
    let pairs = choose(ctx, &list, &req)?;
    if let Some(dir) = req.to {
        return export(ctx, &repo, &pairs, dir, &filter, &req).await;
    }
    let target = match req.target {
        Some(t) => RestoreTarget::Other(resolve_target(t)),
        None => RestoreTarget::Live,
    };
    let progress = Arc::new(Progress::default());
    let mut planned: Vec<Planned<'_>> = Vec::new();
    for (name, s) in pairs {
        let spec = ctx.config.source(&name);
        let rctx = RestoreContext {
            repo: repo.clone(),
            snapshot_id: s.id,
            source_name: name.clone(),
            entry: s.snapshot.sources[&name].clone(),
            force: req.force,
            paths: filter.clone(),
            selection: req.selection.clone(),
            progress: progress.clone(),
        };
        planned.push(Planned {
            name,
            snapshot: s,
            spec,
            rctx,
            plan: RestorePlan::default(),
            error: None,
            lines: Vec::new(),
            phases: Default::default(),
        });
    }
    planned.sort_by_key(|p| {
        (
            restore_rank(p.spec.map(|s| s.kind.as_str()).unwrap_or("")),
            p.name.clone(),
        )
    });

    // 1. Plan every source; nothing changes yet.
    let mut refusals: Vec<String> = Vec::new();
    for p in &mut planned {
        let spec = p.spec.expect("validated by choose");
        match spec.source.plan(&p.rctx, &target).await {
            Ok(plan) => {
                refusals.extend(
                    plan.refusals()
                        .into_iter()
                        .map(|r| format!("`{}`: {r}", p.name)),
                );
                p.plan = plan;
            }
            Err(e) => {
                let msg = respaldo_core::ops::backup::error_chain(e.as_ref());
                refusals.push(format!("`{}`: {msg}", p.name));
            }
        }
    }
    let live = target == RestoreTarget::Live;
    if req.dry_run {
        print_plan(ctx, &planned, &req, live);
        return Ok(if refusals.is_empty() { 0 } else { 1 });
    }
    if !refusals.is_empty() {
        return Err(anyhow::Error::from(Error::Refused(format!(
            "restore refused, nothing was changed:\n  {}",
            refusals.join("\n  ")
        ))));
    }

    // A shared lock: prune (exclusive) cannot remove data while it is read.
    let lock = repo.lock(false, "restore", ctx.lock_wait()).await?;
    let result = lock
        .while_held(async {
            run(ctx, &repo, &mut planned, &req, live).await;
            Ok(())
        })
        .await;
    lock.release().await?;
    result?;
    record(ctx, &planned);
    report(ctx, &planned)
}

/// Which (source, snapshot) pairs to restore.
fn choose<'a>(
    ctx: &Ctx<'_>,
    list: &'a [SnapshotRef],
    req: &RestoreRequest<'_>,
) -> Result<Vec<(String, &'a SnapshotRef)>> {
    let mut plan: Vec<(String, &SnapshotRef)> = Vec::new();
    if req.spec == "latest" {
        let names: Vec<String> = if req.sources.is_empty() {
            ctx.config
                .sources
                .iter()
                .filter(|s| s.enabled)
                .map(|s| s.name.clone())
                .collect()
        } else {
            req.sources.to_vec()
        };
        for n in names {
            let s = resolve(ctx, list, "latest", Some(&n))?;
            plan.push((n, s));
        }
    } else {
        let s = resolve(ctx, list, req.spec, None)?;
        let names: Vec<String> = if req.sources.is_empty() {
            s.snapshot
                .sources
                .iter()
                .filter(|(_, e)| e.is_ok())
                .map(|(n, _)| n.clone())
                .collect()
        } else {
            req.sources.to_vec()
        };
        for n in names {
            match s.snapshot.sources.get(&n) {
                None => {
                    return Err(usage(format!(
                        "snapshot {} has no source `{n}`",
                        s.id.short()
                    )))
                }
                Some(e) if !e.is_ok() => {
                    return Err(anyhow!(
                        "source `{n}` failed in snapshot {} ({}); it cannot be restored from there",
                        s.id.short(),
                        e.error.as_deref().unwrap_or("failed")
                    ))
                }
                Some(_) => plan.push((n, s)),
            }
        }
    }
    if plan.is_empty() {
        return Err(usage("nothing to restore"));
    }
    if req.to.is_none() {
        for (name, s) in &plan {
            let spec = ctx.config.source(name).ok_or_else(|| {
                usage(format!(
                    "source `{name}` is not in {}; use --to DIR to get its artifacts as files",
                    ctx.config.path.display()
                ))
            })?;
            let recorded = &s.snapshot.sources[name].kind;
            if &spec.kind != recorded {
                return Err(usage(format!(
                    "source `{name}` is `{}` in the configuration but `{recorded}` in snapshot {}",
                    spec.kind,
                    s.id.short()
                )));
            }
        }
    }
    Ok(plan)
}

/// `--to DIR`: the artifacts as plain files.
async fn export(
    ctx: &Ctx<'_>,
    repo: &Arc<Repository>,
    pairs: &[(String, &SnapshotRef)],
    dir: &Path,
    filter: &[RawPath],
    req: &RestoreRequest<'_>,
) -> Result<u8> {
    if dir.as_os_str().is_empty() {
        return Err(usage("--to is empty; name a folder"));
    }
    let progress = Arc::new(Progress::default());
    let mut reports = Vec::new();
    for (name, s) in pairs {
        let entry = &s.snapshot.sources[name];
        if !filter.is_empty() {
            let mut unmatched = filter.to_vec();
            for a in entry
                .artifacts
                .iter()
                .filter(|a| a.kind == respaldo_core::artifact::ArtifactKind::Tree)
            {
                unmatched = core_restore::unmatched_paths(repo, a, &unmatched).await?;
            }
            if !unmatched.is_empty() {
                return Err(usage(format!(
                    "--path {} matches nothing in source `{name}` of snapshot {}",
                    unmatched
                        .iter()
                        .map(|p| format!("`{}`", p.display()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    s.id.short()
                )));
            }
        }
        if req.dry_run {
            println!(
                "would write `{name}` from snapshot {} into {}",
                s.id.short(),
                dir.join(name).display()
            );
            continue;
        }
        let opts = TreeRestoreOptions {
            force: req.force,
            paths: filter.to_vec(),
            ..Default::default()
        };
        let written = core_restore::export_source(repo, name, entry, dir, &opts, &progress).await?;
        let lines: Vec<String> = written
            .iter()
            .map(|p| format!("wrote {}", p.display()))
            .collect();
        reports
            .push(json!({"source": name, "snapshot": s.id.to_hex(), "ok": true, "lines": lines}));
        for l in lines {
            ctx.say(format!("{name}: {l}"));
        }
    }
    if ctx.cli.json && !req.dry_run {
        println!("{}", serde_json::Value::Array(reports));
    }
    Ok(0)
}

fn print_plan(ctx: &Ctx<'_>, planned: &[Planned<'_>], req: &RestoreRequest<'_>, live: bool) {
    let safety =
        |p: &Planned<'_>| live && req.force && req.safety_snapshot && p.plan.overwrites_data();
    if ctx.cli.json {
        let arr: Vec<_> = planned
            .iter()
            .map(|p| {
                json!({"source": p.name, "snapshot": p.snapshot.id.to_hex(),
                       "items": p.plan.items, "safety_snapshot": safety(p)})
            })
            .collect();
        println!("{}", serde_json::Value::Array(arr));
        return;
    }
    for p in planned {
        for i in &p.plan.items {
            let state = match &i.state {
                respaldo_core::source::TargetState::Absent => "absent".to_string(),
                respaldo_core::source::TargetState::Empty => "empty".to_string(),
                respaldo_core::source::TargetState::Holds(w) => format!("holds data ({w})"),
            };
            let action = match &i.action {
                PlanAction::Create => "create it".to_string(),
                PlanAction::Fill => "fill it".to_string(),
                PlanAction::Overwrite => "replace it".to_string(),
                PlanAction::Partial => "replace the selected part".to_string(),
                PlanAction::Refuse(why) => format!("REFUSED: {why}"),
            };
            let safety_note = if i.overwrites_data() && safety(p) {
                ", safety snapshot first"
            } else if i.overwrites_data() {
                ", no safety snapshot"
            } else {
                ""
            };
            println!(
                "would restore `{}` {} (snapshot {}) into {}: {state} → {action}{safety_note}",
                p.name,
                i.what,
                p.snapshot.id.short(),
                i.target
            );
        }
        if let Some(spec) = p.spec {
            if !spec.restore.containers().is_empty() {
                println!(
                    "would stop {} for the restore of `{}`, and start them again",
                    spec.restore.containers().join(", "),
                    p.name
                );
            }
        }
    }
    println!("dry run: nothing was changed");
}

/// Runs the planned restore (every source's outcome goes in its entry).
async fn run(
    ctx: &Ctx<'_>,
    repo: &Arc<Repository>,
    planned: &mut [Planned<'_>],
    req: &RestoreRequest<'_>,
    live: bool,
) {
    // 2. `before` hooks: a failure leaves that source out.
    for p in planned.iter_mut() {
        let spec = p.spec.expect("validated");
        if let Err(e) = spec
            .restore
            .hooks
            .run(Stage::Before, Some(&p.name), None)
            .await
        {
            p.error = Some(format!("{e}; it was not restored"));
        }
    }
    // 3. Containers stopped, for every source at once.
    let selectors: Vec<String> = planned
        .iter()
        .filter(|p| p.error.is_none())
        .flat_map(|p| p.spec.expect("validated").restore.containers().to_vec())
        .collect();
    let t = Instant::now();
    let stop_timeout = planned
        .iter()
        .filter_map(|p| p.spec)
        .map(|s| s.restore.stop_timeout)
        .max()
        .unwrap_or(Duration::from_secs(10));
    let stopped = match respaldo_source_docker::stop_containers(&selectors, stop_timeout).await {
        Ok(s) => Some(s),
        Err(e) => {
            for p in planned.iter_mut().filter(|p| p.error.is_none()) {
                if !p.spec.expect("validated").restore.containers().is_empty() {
                    p.error = Some(format!(
                        "cannot stop its containers: {e}; it was not restored"
                    ));
                }
            }
            None
        }
    };
    let stop_ms = t.elapsed().as_millis() as u64;
    if let Some(s) = &stopped {
        if !s.names().is_empty() {
            ctx.say(format!("stopped containers: {}", s.names().join(", ")));
        }
    }
    // 4. The safety snapshot of what will be overwritten.
    if live && req.force && req.safety_snapshot {
        safety_snapshot(ctx, repo, planned).await;
    }
    // 5. The restores, databases first.
    let view = ctx.progress(&planned[0].rctx.progress, "restoring");
    let target = match req.target {
        Some(t) => RestoreTarget::Other(resolve_target(t)),
        None => RestoreTarget::Live,
    };
    for p in planned.iter_mut().filter(|p| p.error.is_none()) {
        let spec = p.spec.expect("validated");
        let t = Instant::now();
        match spec.source.restore(&p.rctx, &target).await {
            Ok(r) => p.lines.extend(r.lines),
            Err(e) => {
                p.error = Some(
                    Error::Source {
                        name: p.name.clone(),
                        kind: spec.kind.clone(),
                        source: e,
                    }
                    .to_string(),
                )
            }
        }
        p.phases
            .insert("restore".into(), t.elapsed().as_millis() as u64);
        if stop_ms > 0 && !spec.restore.containers().is_empty() {
            p.phases.insert("stop".into(), stop_ms);
        }
    }
    view.finish();
    // 6. Containers started again, whatever happened.
    let t = Instant::now();
    if let Some(s) = stopped {
        match s.start().await {
            Ok(names) if !names.is_empty() => {
                ctx.say(format!("started containers again: {}", names.join(", ")))
            }
            Ok(_) => {}
            Err(e) => {
                for p in planned.iter_mut() {
                    if !p.spec.expect("validated").restore.containers().is_empty() {
                        p.error
                            .get_or_insert(format!("containers not started again: {e}"));
                    }
                }
            }
        }
    }
    let start_ms = t.elapsed().as_millis() as u64;
    // 7. `after` hooks and health checks of the sources restored.
    for p in planned.iter_mut().filter(|p| p.error.is_none()) {
        let spec = p.spec.expect("validated");
        if !spec.restore.containers().is_empty() {
            p.phases.insert("start".into(), start_ms);
        }
        if let Err(e) = spec
            .restore
            .hooks
            .run(Stage::After, Some(&p.name), None)
            .await
        {
            p.error = Some(e);
            continue;
        }
        if spec.restore.has_health_check() {
            let t = Instant::now();
            match spec.restore.health().await {
                Ok(lines) => p.lines.extend(lines),
                Err(e) => {
                    p.error = Some(format!(
                        "restored, but the health check failed: {}",
                        describe(&anyhow::Error::from(e))
                    ))
                }
            }
            p.phases
                .insert("health".into(), t.elapsed().as_millis() as u64);
        }
    }
}

/// Backs up, tagged `pre-restore`, what the restore will overwrite: only
/// the sources whose targets hold data, and of each only what exists. A
/// source whose safety snapshot fails is not restored.
async fn safety_snapshot(ctx: &Ctx<'_>, repo: &Arc<Repository>, planned: &mut [Planned<'_>]) {
    let mut jobs = Vec::new();
    for p in planned.iter_mut().filter(|p| p.error.is_none()) {
        if !p.plan.overwrites_data() {
            let absent: Vec<&str> = p.plan.items.iter().map(|i| i.target.as_str()).collect();
            p.lines.push(format!(
                "no safety snapshot needed: nothing there holds data ({})",
                absent.join(", ")
            ));
            continue;
        }
        let spec = p.spec.expect("validated");
        let mut job = BackupJob::new(&p.name, spec.source.clone(), spec.compression_level);
        job.safety = Some(p.plan.clone());
        jobs.push(job);
    }
    if jobs.is_empty() {
        return;
    }
    let names: Vec<String> = jobs.iter().map(|j| format!("`{}`", j.name)).collect();
    ctx.say(format!(
        "taking a safety snapshot of {} before overwriting it",
        names.join(", ")
    ));
    let progress = Arc::new(Progress::default());
    let view = ctx.progress(&progress, "safety snapshot");
    let opts = BackupOptions {
        tags: vec![snapshot::PRE_RESTORE_TAG.to_string()],
        concurrency: ctx.config.backup.concurrency,
        host: ctx.config.host.clone(),
        redact: Some(ctx.config.masker.redactor()),
        verify: ctx.config.repository.verify_after_backup,
        cancel: None,
    };
    let t = Instant::now();
    let outcome = backup::backup(repo, jobs, &opts, progress).await;
    view.finish();
    let ms = t.elapsed().as_millis() as u64;
    match outcome {
        Err(e) => {
            for p in planned.iter_mut().filter(|p| p.plan.overwrites_data()) {
                p.error = Some(format!(
                    "safety snapshot failed ({e}); it was not restored (--no-safety-snapshot restores anyway)"
                ));
            }
        }
        Ok(o) => {
            for p in planned.iter_mut() {
                let Some(entry) = o.snapshot.sources.get(&p.name) else {
                    continue;
                };
                p.phases.insert("safety".into(), ms);
                if entry.is_ok() {
                    if let Some(id) = o.snapshot_id {
                        p.lines.push(format!(
                            "safety snapshot {} taken (tag `{}`)",
                            id.short(),
                            snapshot::PRE_RESTORE_TAG
                        ));
                    }
                } else {
                    p.error = Some(format!(
                        "safety snapshot failed ({}); it was not restored (--no-safety-snapshot restores anyway)",
                        entry.error.as_deref().unwrap_or("failed")
                    ));
                }
            }
        }
    }
}

/// The restore in the run history (its phases feed test-restore's RTO).
fn record(ctx: &Ctx<'_>, planned: &[Planned<'_>]) {
    let mut rec = crate::run::record("restore");
    rec.ok = planned.iter().all(|p| p.error.is_none());
    for p in planned {
        rec.sources.insert(
            p.name.clone(),
            crate::history::SourceRun {
                ok: p.error.is_none(),
                error: p.error.as_ref().map(|e| ctx.config.masker.mask(e)),
                duration_ms: p.phases.values().sum(),
                phases: p.phases.clone(),
                ..Default::default()
            },
        );
    }
    rec.finished = chrono::Utc::now();
    if let Err(e) = ctx.config.status.history.append(&rec) {
        tracing::warn!("cannot record the restore in the history: {e}");
    }
}

fn report(ctx: &Ctx<'_>, planned: &[Planned<'_>]) -> Result<u8> {
    let failures = planned.iter().filter(|p| p.error.is_some()).count();
    if ctx.cli.json {
        let arr: Vec<_> = planned
            .iter()
            .map(|p| {
                json!({"source": p.name, "snapshot": p.snapshot.id.to_hex(),
                       "ok": p.error.is_none(), "error": p.error, "lines": p.lines,
                       "items": p.plan.items, "phases_ms": p.phases})
            })
            .collect();
        println!("{}", serde_json::Value::Array(arr));
    } else {
        for p in planned {
            for l in &p.lines {
                ctx.say(format!("{}: {l}", p.name));
            }
            if let Some(e) = &p.error {
                eprintln!("error: restore of `{}` failed: {e}", p.name);
            }
        }
    }
    Ok(crate::exit::for_sources(failures, planned.len()))
}
