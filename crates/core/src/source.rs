//! The `Source` trait that every driver implements, and the contexts the
//! engine hands it for backup and restore.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::artifact::{Artifact, ArtifactKind};
use crate::error::{BoxError, Error, Result};
use crate::kit::progress::Progress;
use crate::repo::extract::{self, TreeRestoreOptions, TreeRestoreStats};
use crate::repo::format::BlobKind;
use crate::repo::id::ObjectId;
use crate::repo::snapshot::{SourceEntry, SourceStats};
use crate::repo::tree::{RawPath, TreeReader, TreeWriter};
use crate::repo::writer::{StreamWriter, WriteSession};
use crate::repo::Repository;

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

/// The state of one restore target before anything is changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "detail")]
pub enum TargetState {
    /// It does not exist (a database, volume or folder that is gone).
    Absent,
    /// It exists and holds nothing.
    Empty,
    /// It holds data (what, briefly: "12 tables", "3 042 keys").
    Holds(String),
}

/// What a restore does to one target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "action", content = "detail")]
pub enum PlanAction {
    /// Creates it.
    Create,
    /// Fills it (it exists and is empty).
    Fill,
    /// Replaces what it holds (`--force`): a safety snapshot of it is taken
    /// first when the restore goes into the live system.
    Overwrite,
    /// Changes only the selected part, leaving the rest as it is.
    Partial,
    /// Refuses: the reason, and what to type instead.
    Refuse(String),
}

/// One target of a restore: what goes where, the target's state, and what
/// the restore will do to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlanItem {
    /// What is restored (`database shop`, `volume grafana-data`, `files`).
    pub what: String,
    /// Where it goes (a URL, a volume, a folder).
    pub target: String,
    /// The target's state now.
    #[serde(flatten)]
    pub state: TargetState,
    /// What the restore does to it.
    #[serde(rename = "plan")]
    pub action: PlanAction,
}

impl PlanItem {
    /// A new item.
    pub fn new(
        what: impl Into<String>,
        target: impl Into<String>,
        state: TargetState,
        action: PlanAction,
    ) -> Self {
        PlanItem {
            what: what.into(),
            target: target.into(),
            state,
            action,
        }
    }

    /// The usual decision for a whole target: create an absent one, fill an
    /// empty one, overwrite one that holds data only with `force` (else
    /// refuse, saying how to go on).
    pub fn decide(
        what: impl Into<String>,
        target: impl Into<String>,
        state: TargetState,
        force: bool,
    ) -> Self {
        let target = target.into();
        let action = match &state {
            TargetState::Absent => PlanAction::Create,
            TargetState::Empty => PlanAction::Fill,
            TargetState::Holds(_) if force => PlanAction::Overwrite,
            TargetState::Holds(what) => PlanAction::Refuse(format!(
                "{target} is not empty ({what}); add --force to replace it, or restore \
                 somewhere else with --target"
            )),
        };
        PlanItem::new(what, target, state, action)
    }

    /// Whether this item's current content will be destroyed, so a safety
    /// snapshot must hold it first.
    pub fn overwrites_data(&self) -> bool {
        matches!(self.state, TargetState::Holds(_))
            && matches!(self.action, PlanAction::Overwrite | PlanAction::Partial)
    }
}

/// What a restore of one source will do, found out without changing
/// anything ([`Source::plan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestorePlan {
    /// One entry per target.
    pub items: Vec<PlanItem>,
}

impl RestorePlan {
    /// The refusals, one line each.
    pub fn refusals(&self) -> Vec<String> {
        self.items
            .iter()
            .filter_map(|i| match &i.action {
                PlanAction::Refuse(why) => Some(format!("{}: {why}", i.what)),
                _ => None,
            })
            .collect()
    }

    /// Whether any target's data would be destroyed.
    pub fn overwrites_data(&self) -> bool {
        self.items.iter().any(PlanItem::overwrites_data)
    }

    /// The error for a plan with refusals, naming the source.
    pub fn refused(&self, source: &str) -> Option<Error> {
        let r = self.refusals();
        (!r.is_empty()).then(|| {
            Error::Refused(format!(
                "restore of `{source}` refused, nothing was changed: {}",
                r.join("; ")
            ))
        })
    }
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

    /// Finds out, without changing anything, what a restore of this
    /// snapshot into `target` would do: each target's state (absent, empty,
    /// holds data) and the action (create, fill, overwrite with `--force`,
    /// refuse saying what to type instead). The restore of a whole stack
    /// plans every source before it changes any.
    async fn plan(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestorePlan, BoxError>;

    /// Restores a snapshot's artifacts of this source into `target`. Without
    /// `ctx.force`, a restore that would overwrite data must refuse and change
    /// nothing.
    async fn restore(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestoreReport, BoxError>;

    /// The safety snapshot before a restore into the live system: backs up
    /// what `plan` says the restore will destroy. Targets that are absent
    /// have nothing to protect and are left out; a failure to back up a
    /// target that holds data fails (and so stops that source's restore).
    /// The default backs the source up as configured, which is right for
    /// drivers whose backup covers exactly what their restore replaces.
    async fn safety_backup(
        &self,
        ctx: &mut BackupContext,
        plan: &RestorePlan,
    ) -> Result<(), BoxError> {
        let _ = plan;
        self.backup(ctx).await
    }

    /// Restores the snapshot into a throwaway target the driver provides (a
    /// scratch database on the same server, a temporary server or volume),
    /// checks it against what the backup recorded, and removes the target.
    /// Drivers without such a target say so.
    /// Drivers without such a target return [`Error::NotTestable`] with
    /// the reason: it is reported, not counted as a failure.
    async fn test_restore(&self, ctx: &RestoreContext) -> Result<RestoreReport, BoxError> {
        Err(Error::NotTestable(format!(
            "the `{}` driver has no throwaway target for `{}`",
            self.kind(),
            ctx.source_name
        ))
        .into())
    }
}

/// Which part of a source to restore, beyond whole artifacts. Drivers
/// interpret what applies to them and refuse the rest
/// ([`RestoreContext::refuse_selection`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only these tables (`table` or `schema.table`).
    pub tables: Vec<String>,
    /// Only these schemas.
    pub schemas: Vec<String>,
    /// Definitions only, no data.
    pub schema_only: bool,
    /// Only keys matching these glob patterns.
    pub keys: Vec<String>,
    /// Only these databases of a backup that holds several.
    pub databases: Vec<String>,
    /// Only these volumes of a backup that holds several.
    pub volumes: Vec<String>,
}

/// A kind of partial restore. A driver names the parts it supports
/// ([`RestoreContext::refuse_selection`]); the application maps them to
/// its own options (`--table`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SelectionPart {
    /// [`Selection::tables`].
    Tables,
    /// [`Selection::schemas`].
    Schemas,
    /// [`Selection::schema_only`].
    SchemaOnly,
    /// [`Selection::keys`].
    Keys,
    /// [`Selection::databases`].
    Databases,
    /// [`Selection::volumes`].
    Volumes,
    /// [`RestoreContext::paths`]: only some paths of file trees.
    Paths,
}

impl SelectionPart {
    /// What it selects, in words.
    pub fn describe(self) -> &'static str {
        match self {
            SelectionPart::Tables => "a selection of tables",
            SelectionPart::Schemas => "a selection of schemas",
            SelectionPart::SchemaOnly => "a definitions-only restore",
            SelectionPart::Keys => "a selection of keys",
            SelectionPart::Databases => "a selection of databases",
            SelectionPart::Volumes => "a selection of volumes",
            SelectionPart::Paths => "a selection of paths",
        }
    }
}

impl Selection {
    /// The parts that are set (never [`SelectionPart::Paths`], which is
    /// not part of a selection).
    pub fn parts(&self) -> Vec<SelectionPart> {
        let mut v = Vec::new();
        if !self.tables.is_empty() {
            v.push(SelectionPart::Tables);
        }
        if !self.schemas.is_empty() {
            v.push(SelectionPart::Schemas);
        }
        if self.schema_only {
            v.push(SelectionPart::SchemaOnly);
        }
        if !self.keys.is_empty() {
            v.push(SelectionPart::Keys);
        }
        if !self.databases.is_empty() {
            v.push(SelectionPart::Databases);
        }
        if !self.volumes.is_empty() {
            v.push(SelectionPart::Volumes);
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

    /// Fails when a part of the selection the driver does not support is
    /// set (`supported` lists the parts it handles).
    pub fn refuse_selection(&self, kind: &str, supported: &[SelectionPart]) -> Result<()> {
        let mut bad: Vec<SelectionPart> = self
            .selection
            .parts()
            .into_iter()
            .filter(|o| !supported.contains(o))
            .collect();
        if !self.paths.is_empty() && !supported.contains(&SelectionPart::Paths) {
            bad.push(SelectionPart::Paths);
        }
        if bad.is_empty() {
            return Ok(());
        }
        let bad: Vec<&str> = bad.iter().map(|p| p.describe()).collect();
        Err(Error::Invalid(format!(
            "{} cannot be restored for source `{}` (type `{kind}`)",
            bad.join(", "),
            self.source_name
        )))
    }

    /// A reader over a stream artifact's bytes; every chunk is checked.
    pub fn open_stream(&self, artifact: &Artifact) -> impl AsyncRead + Send + Unpin + 'static {
        extract::stream_reader(&self.repo, artifact)
    }

    /// Restores a tree artifact under `dest`, honouring `force` and `paths`.
    pub async fn restore_tree(&self, artifact: &Artifact, dest: &Path) -> Result<TreeRestoreStats> {
        let opts = TreeRestoreOptions {
            force: self.force,
            paths: self.paths.clone(),
            mirror: self.force,
            out_of_scope: None,
        };
        extract::restore_tree(&self.repo, artifact, dest, &opts, &self.progress).await
    }
}
