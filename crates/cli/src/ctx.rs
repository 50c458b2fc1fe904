//! A command's context (the command line and the loaded configuration) and
//! what every command needs from it: the repository, messages, progress,
//! snapshots by reference.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use respaldo_core::kit::progress::Progress;
use respaldo_core::repo::snapshot::{self, Hosts, SnapshotRef};
use respaldo_core::{Error, Repository};
use respaldo_sink_local::LocalSink;
use respaldo_sink_object_store::ObjectStoreSink;

use crate::config::error::UsageError;
use crate::config::Config;
use crate::keys;
use crate::output::ProgressView;
use crate::Cli;

/// A usage error (exit code 2) with this message.
pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// A command's context: the command line and the loaded configuration.
pub(crate) struct Ctx<'a> {
    /// The command line.
    pub cli: &'a Cli,
    /// The configuration.
    pub config: Config,
}

impl Ctx<'_> {
    pub(crate) fn say(&self, msg: impl AsRef<str>) {
        if !self.cli.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }

    pub(crate) fn progress(&self, p: &Arc<Progress>, verb: &'static str) -> ProgressView {
        ProgressView::start(p.clone(), !self.cli.quiet && !self.cli.json, verb)
    }

    pub(crate) async fn sink(&self) -> Result<Arc<dyn respaldo_core::Sink>> {
        let r = &self.config.repository;
        sink_for(&r.url, r.s3.as_ref()).await
    }

    pub(crate) async fn repo(&self) -> Result<Arc<Repository>> {
        let keys = keys::material(&self.config.repository).await?;
        Ok(Repository::open_with(self.sink().await?, &keys).await?)
    }

    /// The sink of a `[repositories.NAME]`.
    pub(crate) async fn named_sink(&self, name: &str) -> Result<Arc<dyn respaldo_core::Sink>> {
        let r = self.config.repositories.get(name).ok_or_else(|| {
            let known: Vec<&str> = self
                .config
                .repositories
                .keys()
                .map(String::as_str)
                .collect();
            usage(format!(
                "no [repositories.{name}] in {} (configured: {})",
                self.config.path.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })?;
        sink_for(&r.url, r.s3.as_ref()).await
    }

    pub(crate) fn lock_wait(&self) -> Duration {
        Duration::from_secs(self.config.backup.lock_wait_secs)
    }

    /// Whose snapshots the command acts on: `--host`, else this
    /// configuration's host.
    pub(crate) fn hosts(&self) -> Hosts {
        match &self.cli.host {
            Some(h) => Hosts::parse(h),
            None => Hosts::Only(self.config.host.clone()),
        }
    }
}

async fn sink_for(
    url: &str,
    s3: Option<&respaldo_sink_object_store::S3Options>,
) -> Result<Arc<dyn respaldo_core::Sink>> {
    if ObjectStoreSink::handles(url) {
        let sink = ObjectStoreSink::connect(url, &s3.cloned().unwrap_or_default())
            .await
            .map_err(|e| usage(e.to_string()))?;
        return Ok(Arc::new(sink));
    }
    Ok(Arc::new(LocalSink::new(url)))
}

/// The snapshots, warning about damaged snapshot objects.
pub(crate) async fn load_snapshots(
    ctx: &Ctx<'_>,
    repo: &Arc<Repository>,
) -> Result<Vec<SnapshotRef>> {
    let (list, damaged) = repo.snapshots().await?;
    for d in damaged {
        if !ctx.cli.quiet {
            eprintln!(
                "warning: snapshot object {} is damaged ({}); skipped",
                d.key, d.detail
            );
        }
    }
    Ok(list)
}

/// The snapshot `spec` names (`latest`, an id prefix), of `source`.
pub(crate) fn resolve<'a>(
    ctx: &Ctx<'_>,
    list: &'a [SnapshotRef],
    spec: &str,
    source: Option<&str>,
) -> Result<&'a SnapshotRef> {
    snapshot::resolve(list, spec, source, &ctx.hosts())
        .map_err(|m| anyhow::Error::from(Error::SnapshotNotFound(m)))
}
