//! `forget` (by retention policy, for the selected hosts, or exactly the
//! snapshots named) and `prune`, each under the right lock.

use respaldo_core::ops::maintenance::{self, ForgetDecision};
use respaldo_core::ops::prune::{self as core_prune, PruneOptions, PruneReport};
use respaldo_core::repo::lock::LockMode;
use respaldo_core::repo::snapshot::{self, Hosts, SnapshotRef};

use crate::error::{Error, Result};
use crate::stack::Stack;

/// `--max-unused`: a percentage (`10%`, `10`) as a share; `None` is the
/// default.
pub fn parse_max_unused(v: Option<&str>) -> Result<f64> {
    let Some(v) = v else {
        return Ok(core_prune::DEFAULT_MAX_UNUSED);
    };
    let n: f64 = v.trim().trim_end_matches('%').trim().parse().map_err(|_| {
        Error::usage(format!(
            "--max-unused `{v}`: expected a percentage, e.g. `10%`"
        ))
    })?;
    if !(0.0..=100.0).contains(&n) {
        return Err(Error::usage(format!(
            "--max-unused `{v}`: must be between 0% and 100%"
        )));
    }
    Ok(n / 100.0)
}

/// Removes exactly the snapshots `specs` name (ids or unique prefixes),
/// whatever their host or tags; returns them.
pub async fn forget_ids(ctx: &Stack, specs: &[String], dry_run: bool) -> Result<Vec<SnapshotRef>> {
    let repo = ctx.repo().await?;
    ctx.with_lock(&repo, LockMode::Shared, "forget", async {
        let list = ctx.snapshots(&repo).await?;
        let mut chosen: Vec<SnapshotRef> = Vec::new();
        for spec in specs {
            if spec == "latest" {
                return Err(Error::usage(
                    "`forget` takes snapshot ids, not `latest` (name the snapshot to remove)",
                ));
            }
            let s = snapshot::resolve(&list, spec, None, &Hosts::All)?;
            if !chosen.iter().any(|c| c.id == s.id) {
                chosen.push(s.clone());
            }
        }
        let ids: Vec<_> = chosen.iter().map(|s| s.id).collect();
        maintenance::forget_ids(&repo, &ids, dry_run).await?;
        Ok(chosen)
    })
    .await
}

/// Applies the retention policy to the selected hosts' snapshots; returns
/// every snapshot's decision and the hosts it applied to.
pub async fn forget(ctx: &Stack, dry_run: bool) -> Result<(Vec<ForgetDecision>, Hosts)> {
    if ctx.config.retention.is_empty() {
        return Err(Error::usage(format!(
            "no retention rule in {} ([retention] keep_last, keep_daily, …); refusing to forget everything",
            ctx.config.path.display()
        )));
    }
    let repo = ctx.repo().await?;
    let opts = maintenance::ForgetOptions {
        dry_run,
        hosts: ctx.hosts(),
        safety_window: chrono::TimeDelta::from_std(ctx.config.keep_safety_snapshots)
            .unwrap_or(maintenance::DEFAULT_SAFETY_WINDOW),
        now: chrono::Utc::now(),
    };
    // Shared: backups and a prune may go on.
    let decisions = ctx
        .with_lock(&repo, LockMode::Shared, "forget", async {
            Ok(maintenance::forget(&repo, &ctx.config.retention, &chrono::Local, &opts).await?)
        })
        .await?;
    Ok((decisions, opts.hosts))
}

/// Removes data no snapshot refers to, under a prune lock (backups go on).
pub async fn prune(ctx: &Stack, dry_run: bool, max_unused: f64) -> Result<PruneReport> {
    let repo = ctx.repo().await?;
    let opts = PruneOptions {
        dry_run,
        max_unused,
    };
    ctx.with_lock(&repo, LockMode::Prune, "prune", async {
        Ok(core_prune::prune(&repo, &opts).await?)
    })
    .await
}
