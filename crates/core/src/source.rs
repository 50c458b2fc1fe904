//! The `Source` trait that every driver implements, and the contexts the
//! engine hands it for backup and restore.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::artifact::{Artifact, ArtifactKind};
use crate::error::{BoxError, Error, Result};
use crate::format::BlobKind;
use crate::id::ObjectId;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore::{self, TreeRestoreOptions, TreeRestoreStats};
use crate::snapshot::{SourceEntry, SourceStats};
use crate::tree::{RawPath, TreeReader, TreeWriter};
use crate::writer::{StreamWriter, WriteSession};

/// Read buffer size for streams.
const READ_BUF: usize = 1024 * 1024;

/// Where a restore goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreTarget {
    /// Back into the live system described by the configuration.
    Live,
    /// Somewhere else (`--target`): a database URL, a volume name, a directory…
    /// interpreted by the driver.
    Other(String),
}

/// What a restore did, for the user.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    /// One line per notable result (what was restored where, checks passed).
    pub lines: Vec<String>,
}

/// A backup driver. One value per configured source.
#[async_trait]
pub trait Source: Send + Sync + std::fmt::Debug {
    /// The driver type, as written in `type = "…"`.
    fn kind(&self) -> &'static str;

    /// A cheap preflight: reachability, credentials, client binaries present.
    async fn check(&self) -> Result<(), BoxError>;

    /// Backs the source up by adding artifacts to `ctx`. Returning an error
    /// marks the source as failed in the snapshot.
    async fn backup(&self, ctx: &mut BackupContext) -> Result<(), BoxError>;

    /// Restores a snapshot's artifacts of this source into `target`. Without
    /// `ctx.force`, a restore that would overwrite data must refuse and change
    /// nothing.
    async fn restore(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestoreReport, BoxError>;

    /// Restores the snapshot into a throwaway target the driver provides (a
    /// scratch database on the same server, a temporary server or volume),
    /// checks it against what the backup recorded, and removes the target.
    /// Drivers without such a target say so.
    async fn test_restore(&self, ctx: &RestoreContext) -> Result<RestoreReport, BoxError> {
        Err(format!(
            "the `{}` driver has no throwaway target for test-restore of `{}`",
            self.kind(),
            ctx.source_name
        )
        .into())
    }
}

/// Which part of a source to restore, beyond whole artifacts. Drivers
/// interpret what applies to them and refuse the rest
/// ([`RestoreContext::refuse_selection`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only these tables (`table` or `schema.table`) — `--table`.
    pub tables: Vec<String>,
    /// Only these schemas — `--schema`.
    pub schemas: Vec<String>,
    /// Definitions only, no data — `--schema-only`.
    pub schema_only: bool,
    /// Only keys matching these glob patterns — `--keys`.
    pub keys: Vec<String>,
}

impl Selection {
    /// The command-line options that are set, as `--flag` names.
    pub fn options_set(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if !self.tables.is_empty() {
            v.push("--table");
        }
        if !self.schemas.is_empty() {
            v.push("--schema");
        }
        if self.schema_only {
            v.push("--schema-only");
        }
        if !self.keys.is_empty() {
            v.push("--keys");
        }
        v
    }
}

/// What a source's backup writes into.
pub struct BackupContext {
    name: String,
    session: Arc<WriteSession>,
    parent: Option<SourceEntry>,
    level: i32,
    progress: Arc<Progress>,
    pub(crate) artifacts: Vec<Artifact>,
    pub(crate) metadata: serde_json::Map<String, serde_json::Value>,
    pub(crate) warnings: Vec<String>,
    pub(crate) stats: SourceStats,
}

impl std::fmt::Debug for BackupContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupContext")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl BackupContext {
    pub(crate) fn new(
        name: String,
        session: Arc<WriteSession>,
        parent: Option<SourceEntry>,
        level: i32,
        progress: Arc<Progress>,
    ) -> Self {
        BackupContext {
            name,
            session,
            parent,
            level,
            progress,
            artifacts: Vec::new(),
            metadata: serde_json::Map::new(),
            warnings: Vec::new(),
            stats: SourceStats::default(),
        }
    }

    /// The source's name in the configuration.
    pub fn source_name(&self) -> &str {
        &self.name
    }

    /// The progress counters.
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Counters the driver may update (files read, files unchanged).
    pub fn stats_mut(&mut self) -> &mut SourceStats {
        &mut self.stats
    }

    /// Records driver metadata (row counts, server version, …).
    pub fn set_metadata(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.metadata.insert(key.to_string(), value.into());
    }

    /// Records a warning shown to the user and kept in the snapshot.
    pub fn warn(&mut self, message: impl Into<String>) {
        let m = message.into();
        tracing::warn!("{}: {m}", self.name);
        self.warnings.push(m);
    }

    fn check_name(&self, name: &str) -> Result<()> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Error::Invalid(format!("bad artifact name `{name}`")));
        }
        if self.artifacts.iter().any(|a| a.name == name) {
            return Err(Error::Invalid(format!("duplicate artifact `{name}`")));
        }
        Ok(())
    }

    /// Stores a byte stream artifact, pulling from `reader` until EOF with
    /// bounded memory. A read error fails the artifact.
    pub async fn add_stream<R: AsyncRead + Unpin + Send>(
        &mut self,
        name: &str,
        mut reader: R,
    ) -> Result<Artifact> {
        self.check_name(name)?;
        self.progress.set_current(format!("{}/{name}", self.name));
        let mut w = StreamWriter::new(
            self.session.clone(),
            BlobKind::Data,
            self.level,
            Some(self.progress.clone()),
        );
        let mut buf = vec![0u8; READ_BUF];
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| Error::io("reading stream", format!("{}/{name}", self.name), e))?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n]).await?;
        }
        let s = w.finish().await?;
        self.stats.bytes_read += s.size;
        self.stats.bytes_total += s.size;
        self.stats.bytes_added += s.added;
        let artifact = Artifact {
            name: name.to_string(),
            kind: ArtifactKind::Stream,
            size: s.size,
            sha256: s.sha256,
            chunks: s.chunks,
            tree: None,
        };
        self.artifacts.push(artifact.clone());
        Ok(artifact)
    }

    /// Starts a tree artifact. `root` is the absolute directory its paths are
    /// relative to, when there is one. The parent snapshot's tree of the same
    /// name (if any) is loaded so unchanged files can be skipped.
    pub async fn tree(&mut self, name: &str, root: Option<String>) -> Result<TreeWriter> {
        self.check_name(name)?;
        let parent_tree = self
            .parent
            .as_ref()
            .and_then(|p| p.artifact(name))
            .filter(|a| {
                a.kind == ArtifactKind::Tree && a.tree.as_ref().map(|t| &t.root) == Some(&root)
            });
        let parent = match parent_tree {
            Some(a) => match TreeReader::new(self.session.repo().clone(), a)?
                .into_map()
                .await
            {
                Ok(mut m) => {
                    // An unchanged file reuses its parent's chunk list only
                    // when every chunk is still stored; otherwise it is read
                    // again, so a new snapshot never inherits a hole.
                    let before = m.len();
                    m.retain(|_, e| e.chunks.iter().all(|c| self.session.is_stored(c)));
                    let dropped = before - m.len();
                    if dropped > 0 {
                        self.warn(format!(
                            "{dropped} file(s) of the previous snapshot refer to chunks missing \
                             from the repository; they are read again"
                        ));
                    }
                    m
                }
                Err(e) => {
                    self.warn(format!(
                        "cannot read the previous snapshot's tree ({e}); reading every file"
                    ));
                    Default::default()
                }
            },
            None => Default::default(),
        };
        Ok(TreeWriter::new(
            name.to_string(),
            root,
            self.session.clone(),
            self.level,
            parent,
            self.progress.clone(),
        ))
    }

    /// Completes a tree artifact started with [`BackupContext::tree`].
    pub async fn add_tree(&mut self, tree: TreeWriter) -> Result<Artifact> {
        let (artifact, added) = tree.finish().await?;
        self.stats.bytes_total += artifact.size;
        self.stats.bytes_added += added;
        self.artifacts.push(artifact.clone());
        Ok(artifact)
    }
}

/// What a source's restore reads from.
#[derive(Debug, Clone)]
pub struct RestoreContext {
    /// The repository.
    pub repo: Arc<Repository>,
    /// The snapshot restored from.
    pub snapshot_id: ObjectId,
    /// The source's name.
    pub source_name: String,
    /// The source's entry in the snapshot (artifacts and metadata).
    pub entry: SourceEntry,
    /// Overwrite existing data.
    pub force: bool,
    /// Only restore these paths (and what is below them) of tree artifacts.
    pub paths: Vec<RawPath>,
    /// Only restore this part of the source (tables, schemas, keys).
    pub selection: Selection,
    /// Progress counters.
    pub progress: Arc<Progress>,
}

impl RestoreContext {
    /// The artifact with this name.
    pub fn artifact(&self, name: &str) -> Result<&Artifact> {
        self.entry.artifact(name).ok_or_else(|| {
            Error::Invalid(format!(
                "snapshot {} has no artifact `{name}` for source `{}`",
                self.snapshot_id.short(),
                self.source_name
            ))
        })
    }

    /// Fails when a selection option the driver does not support is set
    /// (`supported` lists the `--flag` names it handles).
    pub fn refuse_selection(&self, kind: &str, supported: &[&str]) -> Result<()> {
        let mut bad: Vec<&str> = self
            .selection
            .options_set()
            .into_iter()
            .filter(|o| !supported.contains(o))
            .collect();
        if !self.paths.is_empty() && !supported.contains(&"--path") {
            bad.push("--path");
        }
        if bad.is_empty() {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "{} cannot be used with source `{}` (type `{kind}`)",
            bad.join(", "),
            self.source_name
        )))
    }

    /// A reader over a stream artifact's bytes; every chunk is checked.
    pub fn open_stream(&self, artifact: &Artifact) -> impl AsyncRead + Send + Unpin + 'static {
        restore::stream_reader(&self.repo, artifact)
    }

    /// Restores a tree artifact under `dest`, honouring `force` and `paths`.
    pub async fn restore_tree(&self, artifact: &Artifact, dest: &Path) -> Result<TreeRestoreStats> {
        let opts = TreeRestoreOptions {
            force: self.force,
            paths: self.paths.clone(),
        };
        restore::restore_tree(&self.repo, artifact, dest, &opts, &self.progress).await
    }
}
