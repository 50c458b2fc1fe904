//! # respaldo-source-files
//!
//! The `files` source: plain files and directory trees, stored as a tree
//! artifact with full metadata (modes, owners, mtimes, symlinks, special files,
//! sparse files, names that are not UTF-8).
//!
//! * Unchanged files are skipped by the parent snapshot's metadata (size,
//!   mtime, ctime, inode) without being read.
//! * A file that changes while it is read is stored with a warning and flagged
//!   in the snapshot, never silently.
//! * Holes in sparse files are not read (`SEEK_DATA`), and restore leaves them
//!   as holes.
//!
//! ```toml
//! [sources.models]
//! type = "files"
//! paths = ["models", "config"]
//! exclude = ["**/__pycache__", "*.pyc"]
//! max_age = "7d"
//! ```
#![deny(missing_docs)]

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use respaldo_core::error::BoxError;
use respaldo_core::repo::extract::{self, OutOfScope, TreeRestoreOptions};
use respaldo_core::repo::tree::RawPath;
use respaldo_core::source::SelectionPart;
use respaldo_core::source::{
    BackupContext, PlanAction, PlanItem, RestoreContext, RestorePlan, RestoreReport, RestoreTarget,
    Source, TargetState,
};
use serde::Deserialize;

mod walk;

/// Configuration of a `files` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Files and directories to back up. Relative paths are resolved against
    /// the folder of the configuration file.
    pub paths: Vec<PathBuf>,
    /// Glob patterns to leave out. A pattern without `/` matches a file or
    /// directory name anywhere (`*.pyc`, `__pycache__`); one with `/` matches
    /// the path relative to the backed-up folder (`**/cache/**`, `logs/old`).
    /// An excluded directory is skipped with everything below it.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Only keep regular files modified within this long (`"7d"`, `"12h"`;
    /// units s, min, h, d, w). Directories are always kept.
    #[serde(default)]
    pub max_age: Option<String>,
    /// Stay on the filesystem of each path: mount points below it are kept as
    /// empty directories.
    #[serde(default)]
    pub one_file_system: bool,
}

/// Errors of the files source.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// A configured path cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing to the repository failed.
    #[error(transparent)]
    Core(#[from] respaldo_core::Error),
}

/// The `files` source.
#[derive(Debug)]
pub struct FilesSource {
    paths: Vec<PathBuf>,
    root: PathBuf,
    filter: Arc<walk::Filter>,
    exclude: Vec<String>,
    max_age: Option<Duration>,
    one_file_system: bool,
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl FilesSource {
    /// Builds the source; `base` is the folder relative paths are resolved against.
    pub fn new(config: FilesConfig, base: &Path) -> Result<Self, FilesError> {
        if config.paths.is_empty() {
            return Err(FilesError::Config(
                "`paths` must list at least one path".into(),
            ));
        }
        if let Some(bad) = config
            .paths
            .iter()
            .find(|p| p.as_os_str().to_string_lossy().trim().is_empty())
        {
            return Err(FilesError::Config(format!(
                "`paths` has an empty entry ({bad:?}); name a file or folder (`\".\"` for the \
                 configuration's own folder)"
            )));
        }
        let mut paths: Vec<PathBuf> = config
            .paths
            .iter()
            .map(|p| normalize(&base.join(p)))
            .collect();
        paths.sort();
        paths.dedup();
        // Drop paths inside another configured path.
        let all = paths.clone();
        paths.retain(|p| !all.iter().any(|q| q != p && p.starts_with(q)));
        let root = common_root(&paths);
        let max_age = config
            .max_age
            .as_deref()
            .map(respaldo_core::kit::duration::parse_duration)
            .transpose()
            .map_err(|e| FilesError::Config(format!("max_age: {e}")))?;
        Ok(FilesSource {
            filter: Arc::new(walk::Filter::new(&config.exclude)?),
            exclude: config.exclude.clone(),
            paths,
            root,
            max_age,
            one_file_system: config.one_file_system,
        })
    }

    /// The folder entries are stored relative to: the deepest common folder of
    /// the configured paths' parents.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Never backs up `folder` (absolute), nor restores over it: the
    /// repository itself when it lies inside a backed-up folder. Returns
    /// whether it is inside one.
    pub fn never_back_up(&mut self, folder: &Path) -> bool {
        let folder = normalize(folder);
        if !self.paths.iter().any(|p| folder.starts_with(p)) {
            return false;
        }
        let mut filter = walk::Filter::new(&self.exclude).expect("validated in new");
        filter.absolute = self.filter.absolute.clone();
        filter.absolute.push(folder);
        self.filter = Arc::new(filter);
        true
    }

    fn relative(&self, p: &Path) -> RawPath {
        RawPath::from_path(p.strip_prefix(&self.root).unwrap_or(p))
    }

    /// The configured paths that exist now.
    fn existing_paths(&self) -> Vec<PathBuf> {
        self.paths
            .iter()
            .filter(|p| p.symlink_metadata().is_ok())
            .cloned()
            .collect()
    }

    /// Tells what the backup would never hold (excluded, too old, below a
    /// mount point with `one_file_system`), so a mirroring restore into
    /// `dest` keeps it.
    fn out_of_scope(&self, dest: &Path) -> OutOfScope {
        let filter = self.filter.clone();
        let min_mtime = self.max_age.map(|a| SystemTime::now() - a);
        let one_fs = self.one_file_system;
        let dest = dest.to_path_buf();
        OutOfScope(Arc::new(move |rel: &Path, md: &std::fs::Metadata| {
            let mut parts = rel.components();
            let top = parts.next().map(|c| PathBuf::from(c.as_os_str()));
            let rel_top = parts.as_path();
            if filter.excluded(rel, rel_top) || filter.excluded_absolute(&dest.join(rel)) {
                return true;
            }
            if let (Some(min), true) = (min_mtime, md.is_file()) {
                if md.modified().is_ok_and(|t| t < min) {
                    return true;
                }
            }
            if one_fs {
                if let Some(top) = top {
                    use std::os::unix::fs::MetadataExt;
                    if let Ok(tm) = std::fs::symlink_metadata(dest.join(top)) {
                        return tm.dev() != md.dev();
                    }
                }
            }
            false
        }))
    }

    /// The live folder a snapshot's tree goes back to, and its top paths.
    fn live(&self, ctx: &RestoreContext) -> Result<(PathBuf, Vec<String>), FilesError> {
        let artifact = ctx.artifact("files")?;
        let root = artifact
            .tree
            .as_ref()
            .and_then(|t| t.root.clone())
            .map(PathBuf::from)
            .unwrap_or_else(|| self.root.clone());
        let tops: Vec<String> = ctx
            .entry
            .metadata
            .get("paths")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        Ok((root, tops))
    }

    async fn plan_restore(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestorePlan, FilesError> {
        ctx.refuse_selection("files", &[SelectionPart::Paths])?;
        let artifact = ctx.artifact("files")?;
        if !ctx.paths.is_empty() {
            let unmatched = extract::unmatched_paths(&ctx.repo, artifact, &ctx.paths).await?;
            if !unmatched.is_empty() {
                let (_, tops) = self.live(ctx)?;
                return Err(FilesError::Config(format!(
                    "--path {} matches nothing in snapshot {} (paths are relative to the \
                     backed-up folder's parent; its top paths: {})",
                    unmatched
                        .iter()
                        .map(|p| format!("`{}`", p.display()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    ctx.snapshot_id.short(),
                    tops.join(", ")
                )));
            }
        }
        let partial = !ctx.paths.is_empty();
        let mut plan = RestorePlan::default();
        match target {
            RestoreTarget::Live => {
                let (root, tops) = self.live(ctx)?;
                let items: Vec<String> = if partial {
                    ctx.paths.iter().map(|p| p.display()).collect()
                } else {
                    tops
                };
                for rel in items {
                    let path = root.join(&rel);
                    let mut item = PlanItem::decide(
                        rel.clone(),
                        path.display().to_string(),
                        state_of(&path),
                        ctx.force,
                    );
                    if partial && item.action == PlanAction::Overwrite {
                        item.action = PlanAction::Partial;
                    }
                    plan.items.push(item);
                }
            }
            RestoreTarget::Other(dir) => {
                let dir = PathBuf::from(dir);
                plan.items.push(PlanItem::decide(
                    "files",
                    dir.display().to_string(),
                    state_of(&dir),
                    ctx.force,
                ));
            }
        }
        Ok(plan)
    }
}

/// Whether a path is absent, an empty folder, or holds something.
fn state_of(path: &Path) -> TargetState {
    match std::fs::symlink_metadata(path) {
        Err(_) => TargetState::Absent,
        Ok(m) if m.is_dir() => match std::fs::read_dir(path) {
            Ok(rd) => match rd.count() {
                0 => TargetState::Empty,
                n => TargetState::Holds(format!("{n} entries")),
            },
            Err(e) => TargetState::Holds(format!("unreadable: {e}")),
        },
        Ok(_) => TargetState::Holds("a file".into()),
    }
}

fn common_root(paths: &[PathBuf]) -> PathBuf {
    let parents: Vec<&Path> = paths
        .iter()
        .map(|p| p.parent().unwrap_or(Path::new("/")))
        .collect();
    let mut root = parents[0].to_path_buf();
    for p in &parents[1..] {
        while !p.starts_with(&root) {
            if !root.pop() {
                return PathBuf::from("/");
            }
        }
    }
    root
}

/// The driver's registry entry: what the application's one list of
/// drivers holds. It builds a source from the `[sources.NAME]` table (as
/// JSON, `type` taken out), naming the key of any error:
///
/// ```
/// use respaldo_core::registry::BuildContext;
/// let ctx = BuildContext { base: std::path::Path::new("/srv/app"), local_repository: None };
/// let table = serde_json::json!({"paths": ["/etc"], "exclude": ["*.tmp"]});
/// let source = (respaldo_source_files::DRIVER.build)(table, &ctx).unwrap();
/// assert_eq!(source.kind(), "files");
///
/// let bad = serde_json::json!({"no_such_key": 1});
/// let err = (respaldo_source_files::DRIVER.build)(bad, &ctx).err().unwrap();
/// assert!(err.to_string().contains("no_such_key"), "{err}");
/// ```
pub const DRIVER: respaldo_core::registry::Driver = respaldo_core::registry::Driver {
    kind: "files",
    build: |value, cx| {
        respaldo_core::registry::build_with(value, |c| {
            FilesSource::new(c, cx.base).map(|mut f| {
                // The repository is never backed up into itself.
                if let Some(repo) = cx.local_repository {
                    f.never_back_up(repo);
                }
                f
            })
        })
    },
    example: "type = \"files\"\npaths = [\"models\", \"config\"]\nexclude = [\"**/__pycache__\", \"*.pyc\"]\n",
    inventory: respaldo_core::inventory::nothing,
};

#[async_trait]
impl Source for FilesSource {
    fn kind(&self) -> &'static str {
        "files"
    }

    async fn check(&self) -> Result<(), BoxError> {
        for p in &self.paths {
            tokio::fs::symlink_metadata(p)
                .await
                .map_err(|source| FilesError::Io {
                    path: p.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    async fn backup(&self, ctx: &mut BackupContext) -> Result<(), BoxError> {
        let root = self.root.to_string_lossy().into_owned();
        let mut tree = ctx
            .tree("files", Some(root))
            .await
            .map_err(FilesError::from)?;
        let opts = walk::WalkOptions {
            paths: self.paths.clone(),
            root: self.root.clone(),
            filter: self.filter.clone(),
            min_mtime: self.max_age.map(|a| SystemTime::now() - a),
            one_file_system: self.one_file_system,
            parent: tree.take_parent(),
        };
        let stats = walk::run(opts, &mut tree, ctx).await?;
        let s = ctx.stats_mut();
        s.files_read += stats.files_read;
        s.files_unchanged += stats.files_unchanged;
        s.bytes_read += stats.bytes_read;
        ctx.add_tree(tree).await.map_err(FilesError::from)?;
        let tops: Vec<String> = self
            .paths
            .iter()
            .map(|p| self.relative(p).display())
            .collect();
        ctx.set_metadata("paths", tops);
        ctx.set_metadata("files", stats.files);
        Ok(())
    }

    async fn plan(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestorePlan, BoxError> {
        Ok(self.plan_restore(ctx, target).await?)
    }

    async fn restore(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestoreReport, BoxError> {
        let plan = self.plan_restore(ctx, target).await?;
        if let Some(e) = plan.refused(&ctx.source_name) {
            return Err(e.into());
        }
        let artifact = ctx.artifact("files")?;
        let dest = match target {
            RestoreTarget::Live => self.live(ctx)?.0,
            RestoreTarget::Other(dir) => PathBuf::from(dir),
        };
        // The plan refused what holds data without --force; what is left is
        // absent or empty, or is replaced (made identical) with --force.
        let opts = TreeRestoreOptions {
            force: true,
            paths: ctx.paths.clone(),
            mirror: ctx.force,
            out_of_scope: Some(self.out_of_scope(&dest)),
        };
        let stats = extract::restore_tree(&ctx.repo, artifact, &dest, &opts, &ctx.progress).await?;
        let mut lines = vec![format!(
            "restored {} entries ({} files, {} bytes) into {}{}",
            stats.entries,
            stats.files,
            stats.bytes,
            dest.display(),
            if stats.removed > 0 {
                format!("; {} entries not in the backup removed", stats.removed)
            } else {
                String::new()
            }
        )];
        lines.extend(stats.warnings);
        Ok(RestoreReport { lines })
    }

    /// Backs up the configured paths that exist (a folder that is gone has
    /// nothing to protect).
    async fn safety_backup(
        &self,
        ctx: &mut BackupContext,
        _plan: &RestorePlan,
    ) -> Result<(), BoxError> {
        let paths = self.existing_paths();
        if paths.is_empty() {
            return Ok(());
        }
        let present = FilesSource {
            root: common_root(&paths),
            paths,
            filter: self.filter.clone(),
            exclude: self.exclude.clone(),
            max_age: self.max_age,
            one_file_system: self.one_file_system,
        };
        present.backup(ctx).await
    }

    /// Restores the tree into a temporary folder (under `$TMPDIR`), which
    /// checks every chunk, compares the entry and file counts with what the
    /// backup recorded, and removes the folder.
    async fn test_restore(&self, ctx: &RestoreContext) -> Result<RestoreReport, BoxError> {
        let artifact = ctx.artifact("files")?;
        let scratch = tempfile::Builder::new()
            .prefix("respaldo-test-restore-")
            .tempdir()
            .map_err(|e| format!("cannot create a scratch folder for test-restore: {e}"))?;
        let opts = TreeRestoreOptions::default();
        let stats =
            extract::restore_tree(&ctx.repo, artifact, scratch.path(), &opts, &ctx.progress)
                .await?;
        let recorded = artifact.tree.clone().unwrap_or_default();
        if stats.entries != recorded.entries || stats.files != recorded.files {
            return Err(format!(
                "restored {} entries ({} files) but the backup recorded {} ({} files)",
                stats.entries, stats.files, recorded.entries, recorded.files
            )
            .into());
        }
        Ok(RestoreReport {
            lines: vec![format!(
                "restored {} entries ({} files, {} bytes) into a scratch folder: counts match, every chunk checked",
                stats.entries, stats.files, stats.bytes
            )],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_the_common_parent() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            common_root(&[p("/srv/app/models"), p("/srv/app/config")]),
            p("/srv/app")
        );
        assert_eq!(common_root(&[p("/data/tree")]), p("/data"));
        assert_eq!(common_root(&[p("/var/log/app"), p("/etc/app")]), p("/"));
    }

    #[test]
    fn nested_and_relative_paths() {
        let cfg = FilesConfig {
            paths: vec![p("models"), p("models/sub"), p("../x/./conf")],
            exclude: vec![],
            max_age: None,
            one_file_system: false,
        };
        fn p(s: &str) -> PathBuf {
            PathBuf::from(s)
        }
        let s = FilesSource::new(cfg, Path::new("/srv/app")).unwrap();
        assert_eq!(s.paths, vec![p("/srv/app/models"), p("/srv/x/conf")]);
        assert_eq!(s.root(), Path::new("/srv"));
    }

    #[test]
    fn bad_config_is_reported() {
        let cfg = FilesConfig {
            paths: vec![],
            exclude: vec![],
            max_age: None,
            one_file_system: false,
        };
        assert!(FilesSource::new(cfg, Path::new("/")).is_err());
        let cfg = FilesConfig {
            paths: vec!["a".into()],
            exclude: vec!["[".into()],
            max_age: Some("7m".into()),
            one_file_system: false,
        };
        assert!(FilesSource::new(cfg, Path::new("/")).is_err());
    }
}
