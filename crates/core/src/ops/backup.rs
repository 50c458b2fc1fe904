//! A backup run: every selected source concurrently (bounded), into one write
//! session, committed by one snapshot.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::kit::progress::Progress;
use crate::repo::id::ObjectId;
use crate::repo::snapshot::{
    Hosts, RunStats, Snapshot, SnapshotRef, SourceEntry, SourceStats, SourceStatus,
};
use crate::repo::writer::WriteSession;
use crate::repo::Repository;
use crate::source::{BackupContext, RestorePlan, Source};

/// One source to back up.
#[derive(Debug, Clone)]
pub struct BackupJob {
    /// The source's name.
    pub name: String,
    /// The driver.
    pub source: Arc<dyn Source>,
    /// zstd level for its data.
    pub compression_level: i32,
    /// For a safety snapshot before a restore: the restore's plan, so the
    /// driver backs up what it will destroy ([`Source::safety_backup`]).
    pub safety: Option<RestorePlan>,
}

impl BackupJob {
    /// A regular backup job.
    pub fn new(name: impl Into<String>, source: Arc<dyn Source>, compression_level: i32) -> Self {
        BackupJob {
            name: name.into(),
            source,
            compression_level,
            safety: None,
        }
    }
}

/// Options of a run.
#[derive(Clone)]
pub struct BackupOptions {
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Sources backed up at once.
    pub concurrency: usize,
    /// Host name recorded in the snapshot.
    pub host: String,
    /// Applied to every source error and warning before it is logged or
    /// stored (the CLI masks secrets with it); `None` keeps them as they are.
    pub redact: Option<Redactor>,
    /// Check every source's chunks against the index and the packs in
    /// storage before the snapshot is written (`verify_after_backup`): a
    /// source that fails is recorded as failed, with what was damaged, so a
    /// snapshot never looks good while its data is not all there.
    pub verify: bool,
    /// Stops the run when cancelled (the CLI cancels it on SIGINT/SIGTERM):
    /// every source's task is aborted and awaited, so the drivers' guards
    /// (stopped containers, helper containers, child processes) have cleaned
    /// up when [`backup`] returns [`Error::Interrupted`]; no snapshot is
    /// written.
    pub cancel: Option<CancellationToken>,
}

impl std::fmt::Debug for BackupOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupOptions")
            .field("tags", &self.tags)
            .field("concurrency", &self.concurrency)
            .field("host", &self.host)
            .field("redact", &self.redact.is_some())
            .field("verify", &self.verify)
            .field("cancel", &self.cancel.is_some())
            .finish()
    }
}

/// Rewrites a message before it is logged or stored (see
/// [`BackupOptions::redact`]).
pub type Redactor = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// The result of a run.
#[derive(Debug)]
pub struct BackupOutcome {
    /// The snapshot written, unless every source failed.
    pub snapshot_id: Option<ObjectId>,
    /// The snapshot (also when it was not written, for reporting).
    pub snapshot: Snapshot,
}

impl BackupOutcome {
    /// Sources that failed, with their errors.
    pub fn failures(&self) -> Vec<(&str, &str)> {
        self.snapshot
            .sources
            .iter()
            .filter(|(_, e)| !e.is_ok())
            .map(|(n, e)| (n.as_str(), e.error.as_deref().unwrap_or("failed")))
            .collect()
    }
}

/// The latest good entry of each source among the regular snapshots of
/// `hosts` (see [`SnapshotRef::is_regular`]), from the newest that has one.
pub fn latest_good(snapshots: &[SnapshotRef], hosts: &Hosts) -> BTreeMap<String, SourceEntry> {
    let mut out = BTreeMap::new();
    let mut sorted: Vec<&SnapshotRef> = snapshots
        .iter()
        .filter(|s| s.is_regular() && hosts.matches(&s.snapshot.host))
        .collect();
    sorted.sort_by_key(|s| std::cmp::Reverse((s.snapshot.time, s.id)));
    for s in sorted {
        for (name, e) in &s.snapshot.sources {
            if e.is_ok() && !out.contains_key(name) {
                out.insert(name.clone(), e.clone());
            }
        }
    }
    out
}

/// Formats an error with its causes, each once.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = c.source();
    }
    msg
}

/// Runs a backup. Sources that fail are recorded as failed; the snapshot is
/// written when at least one source succeeded, after all data and the index
/// are durable. A storage failure fails the whole run and writes no snapshot.
pub async fn backup(
    repo: &Arc<Repository>,
    jobs: Vec<BackupJob>,
    opts: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupOutcome> {
    let started = chrono::Utc::now();
    let clock = Instant::now();
    let (snapshots, _) = repo.snapshots().await?;
    let parents = latest_good(&snapshots, &Hosts::Only(opts.host.clone()));
    let session = WriteSession::new(repo.clone()).await?;

    let runs = futures::stream::iter(jobs.into_iter().map(|job| {
        let session = session.clone();
        let parent = parents
            .get(&job.name)
            .filter(|p| p.kind == job.source.kind())
            .cloned();
        let progress = progress.clone();
        let cancel = opts.cancel.clone();
        async move {
            let name = job.name.clone();
            if cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                return (name, None);
            }
            let kind = job.source.kind().to_string();
            let handle = tokio::spawn(async move {
                let t0 = Instant::now();
                let start = chrono::Utc::now();
                let mut ctx = BackupContext::new(
                    job.name.clone(),
                    session,
                    parent,
                    job.compression_level,
                    progress,
                );
                let r = match &job.safety {
                    Some(plan) => job.source.safety_backup(&mut ctx, plan).await,
                    None => job.source.backup(&mut ctx).await,
                };
                (ctx, r, start, t0.elapsed())
            });
            let mut handle = handle;
            let joined = match &cancel {
                Some(c) => tokio::select! {
                    r = &mut handle => r,
                    () = c.cancelled() => {
                        handle.abort();
                        // The task is dropped (its guards clean up) before
                        // this resolves.
                        let _ = handle.await;
                        return (name, None);
                    }
                },
                None => handle.await,
            };
            let entry = match joined {
                Ok((ctx, r, start, took)) => {
                    let (status, error) = match r {
                        Ok(()) => (SourceStatus::Ok, None),
                        Err(e) => (SourceStatus::Failed, Some(error_chain(e.as_ref()))),
                    };
                    SourceEntry {
                        kind: kind.clone(),
                        status,
                        error,
                        started: start,
                        duration_ms: took.as_millis() as u64,
                        artifacts: if status == SourceStatus::Ok {
                            ctx.artifacts
                        } else {
                            Vec::new()
                        },
                        metadata: ctx.metadata,
                        warnings: ctx.warnings,
                        stats: ctx.stats,
                    }
                }
                Err(e) => SourceEntry {
                    kind: kind.clone(),
                    status: SourceStatus::Failed,
                    error: Some(format!("the {kind} driver crashed: {e}")),
                    started,
                    duration_ms: 0,
                    artifacts: Vec::new(),
                    metadata: Default::default(),
                    warnings: Vec::new(),
                    stats: SourceStats::default(),
                },
            };
            let mut entry = entry;
            if let Some(redact) = &opts.redact {
                entry.error = entry.error.map(|e| redact(&e));
                for w in &mut entry.warnings {
                    *w = redact(w);
                }
            }
            if let Some(err) = &entry.error {
                tracing::error!("source `{name}` ({kind}) failed: {err}");
            }
            (name, Some(entry))
        }
    }))
    .buffer_unordered(opts.concurrency.max(1))
    .collect::<Vec<_>>()
    .await;

    let interrupted = runs.iter().any(|(_, e)| e.is_none())
        || opts.cancel.as_ref().is_some_and(|c| c.is_cancelled());
    if interrupted {
        return Err(Error::Interrupted);
    }
    // Data and index first: only then may a snapshot refer to them.
    session.finish().await?;

    let mut sources: BTreeMap<String, SourceEntry> = runs
        .into_iter()
        .filter_map(|(name, e)| Some((name, e?)))
        .collect();
    if opts.verify {
        verify_entries(repo, &mut sources).await?;
    }
    let snapshot = Snapshot {
        time: started,
        finished: chrono::Utc::now(),
        host: opts.host.clone(),
        tags: opts.tags.clone(),
        program_version: env!("CARGO_PKG_VERSION").to_string(),
        stats: RunStats {
            bytes_added: session.stats.bytes_added.load(Ordering::Relaxed),
            blobs_added: session.stats.blobs_added.load(Ordering::Relaxed),
            packs_added: session.stats.packs_added.load(Ordering::Relaxed),
            duration_ms: clock.elapsed().as_millis() as u64,
        },
        sources,
        origin: None,
        sealed: None,
    };
    let snapshot_id = if snapshot.sources.values().any(|e| e.is_ok()) {
        Some(repo.write_snapshot(&snapshot).await?)
    } else {
        None
    };
    Ok(BackupOutcome {
        snapshot_id,
        snapshot,
    })
}

/// Checks every good entry's chunks (see [`BackupOptions::verify`]); an entry
/// with problems becomes a failed one whose error lists them.
async fn verify_entries(
    repo: &Arc<Repository>,
    sources: &mut BTreeMap<String, SourceEntry>,
) -> Result<()> {
    let listed = repo.list_packs().await?;
    for (name, entry) in sources.iter_mut().filter(|(_, e)| e.is_ok()) {
        let check = crate::ops::verify::check_entry(repo, entry, &listed).await?;
        if check.problems.is_empty() {
            continue;
        }
        let error = format!(
            "verification after backup failed: {}; the backup of `{name}` is recorded as failed \
             (see `respaldo verify`)",
            check.problems.join("; ")
        );
        tracing::error!("source `{name}` ({}): {error}", entry.kind);
        entry.status = SourceStatus::Failed;
        entry.error = Some(error);
        entry.artifacts.clear();
    }
    Ok(())
}

/// Errors from [`Source::check`], wrapped with the source's name.
pub async fn check_sources(jobs: &[BackupJob]) -> Vec<(String, Result<()>)> {
    futures::stream::iter(jobs.iter().map(|j| async move {
        let r = j.source.check().await.map_err(|e| Error::Source {
            name: j.name.clone(),
            kind: j.source.kind().to_string(),
            source: e,
        });
        (j.name.clone(), r)
    }))
    .buffer_unordered(4)
    .collect()
    .await
}
