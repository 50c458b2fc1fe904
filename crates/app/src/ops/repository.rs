//! Operations on the repository as a whole: `init`, `copy` to another
//! repository, `tag`, `verify` and `dump`'s artifact lookup.

use std::sync::Arc;

use respaldo_core::artifact::Artifact;
use respaldo_core::kit::progress::Progress;
use respaldo_core::ops::copy::CopyReport;
use respaldo_core::ops::verify::{self, VerifyOptions, VerifyReport};
use respaldo_core::repo::id::ObjectId;
use respaldo_core::repo::lock::LockMode;
use respaldo_core::repo::snapshot::{self, SnapshotRef, SourceEntry};
use respaldo_core::Repository;

use crate::error::{Error, Result};
use crate::stack::Stack;

/// Creates the repository, or with `named` a `[repositories.NAME]` that
/// shares its chunk ids and keys (for `copy`); returns it and its URL.
pub async fn init(ctx: &Stack, named: Option<&str>) -> Result<(Arc<Repository>, String)> {
    let keys = ctx.keys().await?;
    Ok(match named {
        None => (
            Repository::init_with(ctx.sink().await?, &keys, None).await?,
            ctx.config.repository.url.clone(),
        ),
        Some(name) => {
            let sink = ctx.named_sink(name).await?;
            let main = Repository::open_with(ctx.sink().await?, &keys).await?;
            (
                Repository::init_with(sink, &keys, Some(&main)).await?,
                ctx.config.repositories[name].url.clone(),
            )
        }
    })
}

/// Replicates the snapshots `specs` name (all when empty) to the
/// `[repositories.NAME]` `to`, sending only what it lacks: the chunks, or,
/// without the identity, the stored packs, index fragments and snapshots.
pub async fn copy(ctx: &Stack, to: &str, specs: &[String]) -> Result<CopyReport> {
    let src = ctx.repo().await?;
    let dst = ctx.named_repo(to).await?;
    ctx.with_lock(&src, LockMode::Shared, "copy", async {
        ctx.with_lock(&dst, LockMode::Shared, "copy", async {
            let all = ctx.snapshots(&src).await?;
            let selected: Vec<SnapshotRef> = if specs.is_empty() {
                all.clone()
            } else {
                specs
                    .iter()
                    .map(|spec| {
                        snapshot::resolve(&all, spec, None, &ctx.hosts())
                            .cloned()
                            .map_err(Error::from)
                    })
                    .collect::<Result<_>>()?
            };
            let progress = Arc::new(Progress::default());
            let _view = ctx.progress("copied", &progress);
            // Without the identity the stored objects travel as they are.
            let copied = if src.require_readable("copy").is_ok() {
                respaldo_core::ops::copy::copy(&src, &dst, &selected, &progress).await?
            } else {
                respaldo_core::ops::copy::copy_stored(&src, &dst, &selected, &progress).await?
            };
            Ok(copied)
        })
        .await
    })
    .await
}

/// Adds and removes tags of the snapshot `spec` names; returns it and its
/// id afterwards (the same when nothing changed).
pub async fn tag(
    ctx: &Stack,
    spec: &str,
    add: &[String],
    remove: &[String],
) -> Result<(SnapshotRef, ObjectId)> {
    if add.is_empty() && remove.is_empty() {
        return Err(Error::usage("give --add TAG or --remove TAG"));
    }
    for t in add {
        super::backup::check_tag(t)?;
    }
    let repo = ctx.repo().await?;
    ctx.with_lock(&repo, LockMode::Shared, "tag", async {
        let list = ctx.snapshots(&repo).await?;
        let s = ctx.resolve(&list, spec, None)?.clone();
        let id = respaldo_core::ops::repair::retag(&repo, &s, add, remove).await?;
        Ok((s, id))
    })
    .await
}

/// Checks the repository (only the snapshot `spec` names, when given);
/// `read_data` re-reads and re-hashes every pack.
///
/// The run is recorded in the history; a damaged repository's record holds
/// what was found, so a scheduled verify's `failure` notification says it.
pub async fn verify(ctx: &Stack, spec: Option<&str>, read_data: bool) -> Result<VerifyReport> {
    let mut rec = super::tracked::record("verify");
    let result = verify_repository(ctx, spec, read_data).await;
    match &result {
        Ok(report) if !report.is_ok() => rec.error = Some(damage(report)),
        Ok(_) => rec.ok = true,
        Err(e) => rec.error = Some(e.describe()),
    }
    super::tracked::save(&ctx.config, &mut rec);
    result
}

/// What verify found, in one message: the first problems and the repair.
fn damage(report: &VerifyReport) -> String {
    const SHOWN: usize = 10;
    let mut parts: Vec<String> = report.problems.iter().take(SHOWN).cloned().collect();
    if report.problems.len() > SHOWN {
        parts.push(format!("and {} more", report.problems.len() - SHOWN));
    }
    let mut msg = format!(
        "repository DAMAGED ({} problem(s)): {}",
        report.problems.len(),
        parts.join("; ")
    );
    if !report.suggestions.is_empty() {
        msg.push_str(&format!("; to repair: {}", report.suggestions.join("; ")));
    }
    msg
}

async fn verify_repository(
    ctx: &Stack,
    spec: Option<&str>,
    read_data: bool,
) -> Result<VerifyReport> {
    let repo = ctx.repo().await?;
    let snapshots = match spec {
        Some(sp) => {
            let (list, _) = repo.snapshots().await?;
            Some(vec![ctx.resolve(&list, sp, None)?.id])
        }
        None => None,
    };
    let opts = VerifyOptions {
        read_data,
        snapshots,
    };
    let progress = Arc::new(Progress::default());
    let run = async {
        let _view = ctx.progress("verifying", &progress);
        Ok(verify::verify(&repo, &opts, &progress).await?)
    };
    // Shared, so that no prune removes what is being checked. A host that
    // may only read still verifies, with a warning.
    match repo.lock(LockMode::Shared, "verify", ctx.lock_wait()).await {
        Ok(lock) => Stack::hold(lock, run).await,
        Err(e @ respaldo_core::Error::Locked(_)) => Err(e.into()),
        Err(e) => {
            tracing::warn!(
                "verifying without a lock ({e}); a prune running meanwhile would show up as damage"
            );
            run.await
        }
    }
}

/// The stream artifact `what` (`SOURCE` or `SOURCE/ARTIFACT`) of the
/// snapshot `spec` names, for `dump`.
pub async fn stream_artifact(
    ctx: &Stack,
    spec: &str,
    what: &str,
) -> Result<(Arc<Repository>, Artifact)> {
    let (source, artifact) = match what.split_once('/') {
        Some((s, a)) => (s, Some(a)),
        None => (what, None),
    };
    let repo = ctx.repo().await?;
    repo.require_readable("dump")?;
    let list = ctx.snapshots(&repo).await?;
    let s = ctx.resolve(&list, spec, Some(source))?;
    let entry = good(s, source)?;
    let a = match artifact {
        Some(name) => entry
            .artifact(name)
            .ok_or_else(|| Error::usage(format!("source `{source}` has no artifact `{name}`")))?,
        None => match entry.artifacts.as_slice() {
            [one] => one,
            many => {
                let names: Vec<&str> = many.iter().map(|a| a.name.as_str()).collect();
                return Err(Error::usage(format!(
                    "source `{source}` has several artifacts; name one: {}",
                    names.join(", ")
                )));
            }
        },
    };
    if a.kind.as_str() != "stream" {
        return Err(Error::usage(format!(
            "`{source}/{}` is a file tree; use `restore --to DIR` (or --path for single files)",
            a.name
        )));
    }
    Ok((repo, a.clone()))
}

/// The good entry of `name` in `s`, or a usage error naming both.
pub fn good<'a>(s: &'a SnapshotRef, name: &str) -> Result<&'a SourceEntry> {
    s.good(name).ok_or_else(|| {
        Error::usage(format!(
            "snapshot {} has no good backup of `{name}`",
            s.id.short()
        ))
    })
}
