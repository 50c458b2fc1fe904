//! `restore`: every selected source is planned before anything changes (each
//! target's state — absent, empty, holds data — and the action), a refusal
//! anywhere stops the whole restore with nothing changed, and then, around
//! the services: the sources' `before` hooks, their containers stopped, the
//! safety snapshot of what will be overwritten (targets that exist only),
//! the restores (databases first), the containers started again, the
//! `after` hooks and the health checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use respaldo_core::kit::progress::Progress;
use respaldo_core::ops::backup::{self, BackupJob, BackupOptions};
use respaldo_core::repo::extract::{self as core_restore, TreeRestoreOptions};
use respaldo_core::repo::id::ObjectId;
use respaldo_core::repo::lock::LockMode;
use respaldo_core::repo::snapshot::{self, SnapshotRef};
use respaldo_core::repo::tree::RawPath;
use respaldo_core::source::{RestoreContext, RestorePlan, RestoreTarget, Selection, SelectionPart};
use respaldo_core::Repository;

use crate::config::SourceSpec;
use crate::error::{Error, Result};
use crate::hooks::Stage;
use crate::stack::Stack;

/// What to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// Snapshot id, prefix or `latest` (each source's latest good backup).
    pub spec: String,
    /// Only these sources (empty: all).
    pub sources: Vec<String>,
    /// With one source: restore somewhere else (a folder, a database URL, …).
    pub target: Option<String>,
    /// Write the artifacts as plain files under this folder instead.
    pub to: Option<PathBuf>,
    /// Only these paths of file trees, relative to the tree.
    pub paths: Vec<String>,
    /// Only part of a source (tables, schemas, keys, …).
    pub selection: Selection,
    /// Overwrite existing data.
    pub force: bool,
    /// With `force` into the live systems: back up what is overwritten first.
    pub safety_snapshot: bool,
    /// Plan only; change nothing.
    pub dry_run: bool,
}

/// How a restore went.
#[derive(Debug)]
pub enum RestoreReport {
    /// `to`: the artifacts written as files (or, on a dry run, where).
    Exported(Vec<Exported>),
    /// A dry run: what would be restored where.
    Planned(Vec<SourceRestore>),
    /// The restore ran: each source's outcome.
    Restored(Vec<SourceRestore>),
}

/// One source written as files.
#[derive(Debug)]
pub struct Exported {
    /// The source.
    pub source: String,
    /// Its snapshot.
    pub snapshot: ObjectId,
    /// Where it goes.
    pub dir: PathBuf,
    /// The files written (empty on a dry run).
    pub written: Vec<PathBuf>,
}

/// One source of a restore.
#[derive(Debug)]
pub struct SourceRestore {
    /// The source.
    pub source: String,
    /// Its snapshot.
    pub snapshot: ObjectId,
    /// Each target's state and the action on it.
    pub plan: RestorePlan,
    /// Whether what it overwrites is backed up first (a safety snapshot).
    pub safety_snapshot: bool,
    /// The containers stopped around its restore.
    pub containers: Vec<String>,
    /// Why it failed (hook, safety snapshot, restore, health check).
    pub error: Option<String>,
    /// What was done.
    pub lines: Vec<String>,
    /// How long each step took, in milliseconds.
    pub phases: BTreeMap<String, u64>,
}

impl RestoreReport {
    /// The sources that failed, of how many.
    pub fn failures(&self) -> (usize, usize) {
        match self {
            RestoreReport::Restored(s) => (s.iter().filter(|s| s.error.is_some()).count(), s.len()),
            RestoreReport::Planned(s) => (
                s.iter().filter(|s| !s.plan.refusals().is_empty()).count(),
                s.len(),
            ),
            RestoreReport::Exported(e) => (0, e.len()),
        }
    }
}

/// The command-line option of a selection part.
fn flag(part: SelectionPart) -> &'static str {
    match part {
        SelectionPart::Tables => "--table",
        SelectionPart::Schemas => "--schema",
        SelectionPart::SchemaOnly => "--schema-only",
        SelectionPart::Keys => "--keys",
        SelectionPart::Databases => "--database",
        SelectionPart::Volumes => "--volume",
        SelectionPart::Paths => "--path",
    }
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
    phases: BTreeMap<String, u64>,
}

impl Planned<'_> {
    fn into_report(self, safety: bool) -> SourceRestore {
        SourceRestore {
            safety_snapshot: safety && self.plan.overwrites_data(),
            containers: self
                .spec
                .map(|s| s.restore.containers().to_vec())
                .unwrap_or_default(),
            source: self.name,
            snapshot: self.snapshot.id,
            plan: self.plan,
            error: self.error,
            lines: self.lines,
            phases: self.phases,
        }
    }
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

/// Restores what `req` asks for: every source is planned first, and a
/// refusal anywhere stops the whole restore with nothing changed.
pub async fn restore(ctx: &Stack, req: &RestoreRequest) -> Result<RestoreReport> {
    let options: Vec<&str> = req.selection.parts().into_iter().map(flag).collect();
    if req.target.as_ref().is_some_and(|t| t.trim().is_empty()) {
        return Err(Error::usage(
            "--target is empty; name where to restore (a folder, a database URL, a volume)",
        ));
    }
    if req.target.is_some() && req.sources.len() != 1 {
        return Err(Error::usage("--target needs exactly one --source"));
    }
    if !options.is_empty() && req.sources.len() != 1 {
        return Err(Error::usage(format!(
            "{} needs exactly one --source",
            options.join(", ")
        )));
    }
    if !options.is_empty() && req.to.is_some() {
        return Err(Error::usage(format!(
            "{} cannot be combined with --to (it writes whole artifacts)",
            options.join(", ")
        )));
    }
    let mut filter: Vec<RawPath> = Vec::new();
    for p in &req.paths {
        let trimmed = p.trim_matches('/');
        let raw = RawPath(trimmed.as_bytes().to_vec());
        if !raw.is_safe() {
            return Err(Error::usage(format!(
                "--path `{p}` must be a relative path inside the tree"
            )));
        }
        filter.push(raw);
    }
    let repo = ctx.repo().await?;
    repo.require_readable("restore")?;
    let list = ctx.snapshots(&repo).await?;
    let pairs = choose(ctx, &list, req)?;
    if let Some(dir) = &req.to {
        return export(ctx, &repo, &pairs, dir, &filter, req).await;
    }
    let target = match req.target.as_deref() {
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
    let safety = live && req.force && req.safety_snapshot;
    if req.dry_run {
        return Ok(RestoreReport::Planned(
            planned.into_iter().map(|p| p.into_report(safety)).collect(),
        ));
    }
    if !refusals.is_empty() {
        return Err(respaldo_core::Error::Refused(format!(
            "restore refused, nothing was changed:\n  {}",
            refusals.join("\n  ")
        ))
        .into());
    }

    // A shared lock: prune deletes nothing a running restore may still read
    // (the packs it marks wait for this lock).
    ctx.with_lock(&repo, LockMode::Shared, "restore", async {
        run(ctx, &repo, &mut planned, req, live).await;
        Ok(())
    })
    .await?;
    record(ctx, &planned);
    Ok(RestoreReport::Restored(
        planned.into_iter().map(|p| p.into_report(safety)).collect(),
    ))
}

/// Which (source, snapshot) pairs to restore.
fn choose<'a>(
    ctx: &Stack,
    list: &'a [SnapshotRef],
    req: &RestoreRequest,
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
            let s = ctx.resolve(list, "latest", Some(&n))?;
            plan.push((n, s));
        }
    } else {
        let s = ctx.resolve(list, &req.spec, None)?;
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
                    return Err(Error::usage(format!(
                        "snapshot {} has no source `{n}`",
                        s.id.short()
                    )))
                }
                Some(e) if !e.is_ok() => {
                    return Err(Error::failed(format!(
                        "source `{n}` failed in snapshot {} ({}); it cannot be restored from there",
                        s.id.short(),
                        e.error.as_deref().unwrap_or("failed")
                    )))
                }
                Some(_) => plan.push((n, s)),
            }
        }
    }
    if plan.is_empty() {
        return Err(Error::usage("nothing to restore"));
    }
    if req.to.is_none() {
        for (name, s) in &plan {
            let spec = ctx.config.source(name).ok_or_else(|| {
                Error::usage(format!(
                    "source `{name}` is not in {}; use --to DIR to get its artifacts as files",
                    ctx.config.path.display()
                ))
            })?;
            let recorded = &s.snapshot.sources[name].kind;
            if &spec.kind != recorded {
                return Err(Error::usage(format!(
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
    ctx: &Stack,
    repo: &Arc<Repository>,
    pairs: &[(String, &SnapshotRef)],
    dir: &Path,
    filter: &[RawPath],
    req: &RestoreRequest,
) -> Result<RestoreReport> {
    if dir.as_os_str().is_empty() {
        return Err(Error::usage("--to is empty; name a folder"));
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
                return Err(Error::usage(format!(
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
        let mut done = Exported {
            source: name.clone(),
            snapshot: s.id,
            dir: dir.join(name),
            written: Vec::new(),
        };
        if !req.dry_run {
            let opts = TreeRestoreOptions {
                force: req.force,
                paths: filter.to_vec(),
                ..Default::default()
            };
            done.written =
                core_restore::export_source(repo, name, entry, dir, &opts, &progress).await?;
            for p in &done.written {
                ctx.say(format!("{name}: wrote {}", p.display()));
            }
        }
        reports.push(done);
    }
    Ok(RestoreReport::Exported(reports))
}

/// Runs the planned restore (every source's outcome goes in its entry).
async fn run(
    ctx: &Stack,
    repo: &Arc<Repository>,
    planned: &mut [Planned<'_>],
    req: &RestoreRequest,
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
    let view = ctx.progress("restoring", &planned[0].rctx.progress);
    let target = match req.target.as_deref() {
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
                    respaldo_core::Error::Source {
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
    drop(view);
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
            p.error = Some(e.to_string());
            continue;
        }
        if spec.restore.has_health_check() {
            let t = Instant::now();
            match spec.restore.health().await {
                Ok(lines) => p.lines.extend(lines),
                Err(e) => {
                    p.error = Some(format!(
                        "restored, but the health check failed: {}",
                        Error::from(e).describe()
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
async fn safety_snapshot(ctx: &Stack, repo: &Arc<Repository>, planned: &mut [Planned<'_>]) {
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
    let view = ctx.progress("safety snapshot", &progress);
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
    drop(view);
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
fn record(ctx: &Stack, planned: &[Planned<'_>]) {
    let mut rec = crate::ops::tracked::record("restore");
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
