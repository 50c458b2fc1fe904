//! `backup`: the sources selected by name and type, checked on a dry run,
//! or backed up under a lock with everything around it (hooks, free-space
//! check, history, notifications — see [`super::tracked`]); a cancellation
//! or a lost lock stops it cleanly (no snapshot, lock released).

use std::path::Path;
use std::sync::Arc;

use respaldo_core::kit::progress::Progress;
use respaldo_core::ops::backup::{self, BackupJob, BackupOptions, BackupOutcome};
use respaldo_core::repo::lock::LockMode;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::stack::Stack;

/// What to back up.
#[derive(Debug, Clone, Default)]
pub struct BackupRequest {
    /// Only these sources (empty: every enabled source).
    pub sources: Vec<String>,
    /// Only sources of these types.
    pub types: Vec<String>,
    /// Tags of the snapshot.
    pub tags: Vec<String>,
}

/// What a dry run found.
#[derive(Debug)]
pub struct DryRun {
    /// Each selected source's check: `Err` holds why it failed.
    pub checks: Vec<(String, std::result::Result<(), respaldo_core::Error>)>,
    /// The hooks that would run.
    pub hooks: Vec<String>,
    /// Free space where the repository is, when known.
    pub free_space: Option<u64>,
}

/// A tag is one word without commas.
pub fn check_tag(t: &str) -> Result<()> {
    if t.is_empty() || t.contains(char::is_whitespace) || t.contains(',') {
        return Err(Error::usage(format!(
            "invalid tag `{t}`: no spaces or commas"
        )));
    }
    Ok(())
}

/// The jobs `req` selects.
pub fn jobs(ctx: &Stack, req: &BackupRequest) -> Result<Vec<BackupJob>> {
    let c = &ctx.config;
    for n in &req.sources {
        match c.source(n) {
            None => {
                let known: Vec<&str> = c.sources.iter().map(|s| s.name.as_str()).collect();
                return Err(Error::usage(format!(
                    "no source named `{n}` in {} (sources: {})",
                    c.path.display(),
                    known.join(", ")
                )));
            }
            Some(s) if !s.enabled => {
                return Err(Error::usage(format!(
                    "source `{n}` is disabled (enabled = false)"
                )))
            }
            _ => {}
        }
    }
    for t in &req.types {
        if crate::registry::driver(t).is_none() {
            return Err(Error::usage(format!(
                "unknown source type `{t}` (known: {})",
                crate::registry::kinds().join(", ")
            )));
        }
    }
    for t in &req.tags {
        check_tag(t)?;
    }
    let jobs: Vec<BackupJob> = c
        .sources
        .iter()
        .filter(|s| s.enabled)
        .filter(|s| req.sources.is_empty() || req.sources.contains(&s.name))
        .filter(|s| req.types.is_empty() || req.types.contains(&s.kind))
        .map(|s| BackupJob::new(s.name.clone(), s.source.clone(), s.compression_level))
        .collect();
    if jobs.is_empty() {
        return Err(Error::usage(
            "no source selected (check --source/--type and `enabled`)",
        ));
    }
    Ok(jobs)
}

/// Checks the selected sources and what would run; writes nothing.
pub async fn dry_run(ctx: &Stack, req: &BackupRequest) -> Result<DryRun> {
    let jobs = jobs(ctx, req)?;
    let _repo = ctx.repo().await?; // it must exist
    let checks = backup::check_sources(&jobs).await;
    Ok(DryRun {
        checks,
        hooks: ctx.config.hooks.describe(),
        free_space: crate::precheck::free_space(Path::new(&ctx.config.repository.url)).ok(),
    })
}

/// Backs up what `req` selects, with the hooks, history and notifications
/// of a run; `stop` stops it cleanly.
pub async fn backup(
    ctx: &Stack,
    req: &BackupRequest,
    stop: &CancellationToken,
) -> Result<BackupOutcome> {
    let jobs = jobs(ctx, req)?;
    let selected: Vec<String> = jobs.iter().map(|j| j.name.clone()).collect();
    super::tracked::tracked(
        &ctx.config,
        &selected,
        &req.tags,
        locked(ctx, jobs, &req.tags, stop),
    )
    .await
}

/// Locks the repository and backs `jobs` up (verifying the new snapshot
/// before it is written when configured).
async fn locked(
    ctx: &Stack,
    jobs: Vec<BackupJob>,
    tags: &[String],
    stop: &CancellationToken,
) -> Result<(BackupOutcome, Option<u64>)> {
    let c = &ctx.config;
    let names_run: Vec<String> = jobs.iter().map(|j| format!("`{}`", j.name)).collect();
    let repo = ctx.repo().await?;
    let lock = tokio::select! {
        l = repo.lock(LockMode::Shared, "backup", ctx.lock_wait()) => l?,
        () = stop.cancelled() => return Err(respaldo_core::Error::Interrupted.into()),
    };
    let cancel = stop.child_token();
    let progress = Arc::new(Progress::default());
    let view = ctx.progress("backing up", &progress);
    let opts = BackupOptions {
        tags: tags.to_vec(),
        concurrency: c.backup.concurrency,
        host: c.host.clone(),
        redact: Some(c.masker.redactor()),
        verify: c.repository.verify_after_backup,
        cancel: Some(cancel.clone()),
    };
    // A signal or a lost lock stops the backup cleanly (its sources' tasks
    // awaited, their guards cleaned up), never by dropping it midway.
    let watch = lock.cancel_when_lost(cancel);
    let outcome = backup::backup(&repo, jobs, &opts, progress).await;
    watch.abort();
    drop(view);
    let outcome = match outcome {
        Err(respaldo_core::Error::Interrupted) if lock.is_lost() => Err(lock.lost_error()),
        o => o,
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let _ = lock.release().await;
            return Err(Error::from(e).context(format!(
                "backup of {} failed, no snapshot was written",
                names_run.join(", ")
            )));
        }
    };
    // Measured under the lock: what this backup left, before a prune.
    let repository_size = match c.max_repository_size {
        Some(_) => repo.total_size().await.ok(),
        None => None,
    };
    lock.release().await?;
    Ok((outcome, repository_size))
}
