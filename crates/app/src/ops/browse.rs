//! `ls` and `dump`: what one snapshot holds, for every kind of source —
//! file trees and volumes as listings, databases as what their driver
//! recorded (databases, tables and row counts; keys; points) — and the bytes
//! of one artifact, file or directory.

use std::sync::Arc;

use respaldo_core::artifact::Artifact;
use respaldo_core::inventory::Item;
use respaldo_core::ops::browse::{self, tree_path};
use respaldo_core::repo::extract;
use respaldo_core::repo::snapshot::{SourceEntry, SourceStatus};
use respaldo_core::repo::tar_stream::{write_tar, TarLayout};
use respaldo_core::repo::tree::{EntryKind, RawPath, TreeEntry};
use respaldo_core::Repository;
use serde::Serialize;

use super::repository::good;
use crate::error::{Error, Result};
use crate::registry;
use crate::stack::Stack;
use crate::units;

/// What `SOURCE[:PATH]` names, split.
pub fn split_target(what: &str) -> (&str, &str) {
    what.split_once(':').unwrap_or((what, ""))
}

/// What the driver of `entry` recorded it held.
pub fn inventory(entry: &SourceEntry) -> Vec<Item> {
    registry::driver(&entry.kind).map_or_else(Vec::new, |d| (d.inventory)(&entry.metadata))
}

/// The tree a path of `entry` lies in, and the path inside it: the one tree
/// when the source has one, else the tree the path's first part names
/// (`None`: the path names no tree, as the empty path of several).
pub fn locate_tree<'a>(
    source: &str,
    entry: &'a SourceEntry,
    path: &str,
) -> Result<Option<(&'a Artifact, RawPath)>> {
    let trees: Vec<&Artifact> = entry
        .artifacts
        .iter()
        .filter(|a| a.kind.as_str() == "tree")
        .collect();
    let path = tree_path(path);
    match trees.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((one, path))),
        many => {
            if path.0.is_empty() {
                return Ok(None);
            }
            let text = String::from_utf8_lossy(&path.0).into_owned();
            let (first, rest) = text.split_once('/').unwrap_or((&text, ""));
            match many.iter().find(|a| a.name == first) {
                Some(a) => Ok(Some((a, tree_path(rest)))),
                None => Err(Error::usage(format!(
                    "source `{source}` has no tree `{first}` (it has {})",
                    many.iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
    }
}

/// One source of a snapshot, in a line.
#[derive(Debug, Clone, Serialize)]
pub struct SourceSummary {
    /// Its name.
    pub name: String,
    /// Its driver.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its outcome.
    pub status: SourceStatus,
    /// Plaintext bytes of its artifacts.
    pub size: u64,
    /// Files in its trees.
    pub files: u64,
    /// What its driver recorded, summed per unit (`rows`, `keys`, …), in
    /// the order the driver lists them.
    pub totals: Vec<(&'static str, u64)>,
}

impl SourceSummary {
    fn of(name: &str, e: &SourceEntry) -> Self {
        let mut totals: Vec<(&'static str, u64)> = Vec::new();
        for i in inventory(e) {
            match totals.iter_mut().find(|(u, _)| *u == i.unit) {
                Some(t) => t.1 += i.count,
                None => totals.push((i.unit, i.count)),
            }
        }
        SourceSummary {
            name: name.to_string(),
            kind: e.kind.clone(),
            status: e.status,
            size: e.stats.bytes_total,
            files: e
                .artifacts
                .iter()
                .filter_map(|a| a.tree.as_ref())
                .map(|t| t.files)
                .sum(),
            totals,
        }
    }
}

/// One artifact, in a line.
#[derive(Debug, Clone, Serialize)]
pub struct ArtifactLine {
    /// Its name.
    pub name: String,
    /// `stream` or `tree`.
    pub kind: &'static str,
    /// Plaintext bytes.
    pub size: u64,
}

/// What `ls` found (tree entries are handed to the caller's visitor as
/// they are read, not gathered here).
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// The snapshot listed.
    pub snapshot: String,
    /// Every source (`ls SNAPSHOT`) or the one named.
    pub sources: Vec<SourceSummary>,
    /// With a source: its artifacts.
    pub artifacts: Vec<ArtifactLine>,
    /// With a source: what its driver recorded, below the path if one was given.
    pub inventory: Vec<Item>,
    /// The tree whose entries were visited, if any.
    pub tree: Option<String>,
}

/// `ls SNAPSHOT [SOURCE[:PATH]]`: the snapshot's sources, or one source's
/// artifacts and recorded contents, and the entries of its tree at `PATH`
/// (all below it with `recursive`), each passed to `visit` with the name of
/// its tree.
pub async fn ls(
    ctx: &Stack,
    spec: &str,
    what: Option<&str>,
    recursive: bool,
    mut visit: impl FnMut(&str, TreeEntry),
) -> Result<Listing> {
    let repo = ctx.repo().await?;
    let list = ctx.snapshots(&repo).await?;
    let source = what.map(|w| split_target(w).0);
    let s = ctx.resolve(&list, spec, source)?;
    let mut listing = Listing {
        snapshot: s.id.to_hex(),
        sources: Vec::new(),
        artifacts: Vec::new(),
        inventory: Vec::new(),
        tree: None,
    };
    let Some(what) = what else {
        listing.sources = s
            .snapshot
            .sources
            .iter()
            .map(|(n, e)| SourceSummary::of(n, e))
            .collect();
        return Ok(listing);
    };
    repo.require_readable("ls")?;
    let (name, path) = split_target(what);
    let entry = good(s, name)?;
    listing.sources.push(SourceSummary::of(name, entry));
    listing.artifacts = entry
        .artifacts
        .iter()
        .map(|a| ArtifactLine {
            name: a.name.clone(),
            kind: a.kind.as_str(),
            size: a.size,
        })
        .collect();
    let prefix: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    listing.inventory = inventory(entry)
        .into_iter()
        .filter(|i| i.path.starts_with(&prefix))
        .collect();
    if let Some((tree, dir)) = locate_tree(name, entry, path)? {
        listing.tree = Some(tree.name.clone());
        browse::list_tree(&repo, tree, &dir, recursive, |e| {
            visit(&tree.name, e);
            Ok(())
        })
        .await?;
    } else if !prefix.is_empty() && listing.inventory.is_empty() {
        return Err(Error::usage(format!(
            "source `{name}` holds nothing at `{path}` in snapshot {}",
            s.id.short()
        )));
    }
    Ok(listing)
}

/// What `dump` writes.
#[derive(Debug)]
pub enum Dump {
    /// A stream artifact's bytes.
    Stream(Artifact),
    /// One file's bytes.
    File(TreeEntry),
    /// A directory of a tree (empty path: the whole tree) as a tar stream.
    Directory(Artifact, RawPath),
}

/// `dump SNAPSHOT SOURCE[/ARTIFACT]` (a stream artifact) or
/// `dump SNAPSHOT SOURCE:PATH` (a file, or a directory as tar, of a tree).
pub async fn dump(ctx: &Stack, spec: &str, what: &str) -> Result<(Arc<Repository>, Dump)> {
    let Some((name, path)) = what.split_once(':') else {
        let (repo, a) = super::repository::stream_artifact(ctx, spec, what).await?;
        return Ok((repo, Dump::Stream(a)));
    };
    let repo = ctx.repo().await?;
    repo.require_readable("dump")?;
    let list = ctx.snapshots(&repo).await?;
    let s = ctx.resolve(&list, spec, Some(name))?;
    let entry = good(s, name)?;
    let Some((tree, inner)) = locate_tree(name, entry, path)? else {
        return Err(Error::usage(format!(
            "source `{name}` has no file tree to take `{path}` from; dump one of its artifacts as SOURCE/ARTIFACT"
        )));
    };
    if inner.0.is_empty() {
        return Ok((repo, Dump::Directory(tree.clone(), inner)));
    }
    let mut found = browse::find_entry(&repo, tree, &inner).await?;
    // A hard link's content is stored with the first path of its inode.
    if let Some(first) = found.as_ref().and_then(|e| e.hardlink.clone()) {
        found = browse::find_entry(&repo, tree, &first).await?;
    }
    match found {
        None => Err(Error::usage(format!(
            "`{path}` is not in source `{name}` of snapshot {}",
            s.id.short()
        ))),
        Some(e) if e.kind == EntryKind::Dir => Ok((repo, Dump::Directory(tree.clone(), inner))),
        Some(e) if e.kind == EntryKind::File => Ok((repo, Dump::File(e))),
        Some(e) => Err(Error::usage(format!(
            "`{path}` is a {:?}, not a file or directory",
            e.kind
        ))),
    }
}

/// `drwxr-xr-x`: an entry's type and permission bits as `ls -l` shows them.
pub fn mode_string(kind: EntryKind, mode: u32) -> String {
    let kind = match kind {
        EntryKind::File => '-',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Fifo => 'p',
        EntryKind::Char => 'c',
        EntryKind::Block => 'b',
    };
    let bits = b"rwxrwxrwx";
    std::iter::once(kind)
        .chain((0..9).map(|i| match mode & (0o400 >> i) {
            0 => '-',
            _ => bits[i] as char,
        }))
        .collect()
}

/// One tree entry as `ls -l` shows it (owner as uid:gid, local time).
pub fn entry_line(e: &TreeEntry) -> String {
    let mode = mode_string(e.kind, e.mode);
    let time = units::time(&chrono::DateTime::from_timestamp_nanos(e.mtime_ns));
    let owner = format!("{}:{}", e.uid, e.gid);
    let link = match &e.target {
        Some(t) => format!(" -> {}", t.display()),
        None => String::new(),
    };
    let (size, path) = (e.size, e.path.display());
    format!("{mode} {owner:>11} {size:>10} {time} {path}{link}")
}

impl std::fmt::Display for Listing {
    /// The sources as a table (`ls SNAPSHOT`), or a source's artifacts and
    /// recorded contents; nothing when a tree's entries were listed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tree.is_some() {
            return Ok(());
        }
        if self.artifacts.is_empty() {
            let rows: Vec<Vec<String>> = self
                .sources
                .iter()
                .map(|s| {
                    let files = (s.files > 0).then(|| format!("{} files", s.files));
                    let totals = s.totals.iter().map(|(u, n)| format!("{n} {u}"));
                    let contents: Vec<String> = files.into_iter().chain(totals).collect();
                    let status = format!("{:?}", s.status).to_lowercase();
                    let size = units::size(s.size);
                    vec![
                        s.name.clone(),
                        s.kind.clone(),
                        status,
                        size,
                        contents.join(", "),
                    ]
                })
                .collect();
            let header = ["SOURCE", "TYPE", "STATUS", "SIZE", "CONTENTS"];
            return write!(f, "{}", units::table(&header, &rows));
        }
        let rows: Vec<Vec<String>> = self
            .artifacts
            .iter()
            .map(|a| vec![a.name.clone(), a.kind.to_string(), units::size(a.size)])
            .collect();
        write!(f, "{}", units::table(&["ARTIFACT", "KIND", "SIZE"], &rows))?;
        if !self.inventory.is_empty() {
            let rows: Vec<Vec<String>> = self
                .inventory
                .iter()
                .map(|i| vec![i.name(), format!("{} {}", i.count, i.unit)])
                .collect();
            write!(f, "\n{}", units::table(&["HOLDS", "COUNT"], &rows))?;
        }
        Ok(())
    }
}

/// Writes what `dump` found into `w`: the stream's or file's bytes, or the
/// directory as a tar stream (names relative to the tree, metadata kept).
pub async fn write_dump(
    repo: &Arc<Repository>,
    dump: Dump,
    mut w: impl tokio::io::AsyncWrite + Unpin,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match dump {
        Dump::Stream(a) => Box::new(extract::stream_reader(repo, &a)),
        Dump::File(e) => Box::new(extract::chunks_reader(repo, e.chunks)),
        Dump::Directory(a, dir) => {
            let paths: Vec<RawPath> = Some(dir).filter(|d| !d.0.is_empty()).into_iter().collect();
            return match write_tar(repo, &a, &paths, &TarLayout::default(), w).await {
                Err(respaldo_core::Error::Io { source, .. }) => Err(source),
                r => r
                    .map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string())),
            };
        }
    };
    tokio::io::copy(&mut reader, &mut w).await?;
    w.flush().await
}
