//! `diff A B`: what changed between two snapshots, source by source — files
//! added, removed and modified (content or metadata only) in trees, stream
//! artifacts that differ, and the recorded counts (rows per table, keys per
//! database, points per measurement) that moved.

use respaldo_core::artifact::Artifact;
use respaldo_core::inventory::{self, Change};
use respaldo_core::ops::browse::{self, Modification};
use respaldo_core::repo::snapshot::SourceEntry;
use respaldo_core::repo::tree::TreeEntry;
use serde::Serialize;

use super::browse::inventory;
use crate::error::Result;
use crate::stack::Stack;
use crate::units;

/// A snapshot as `diff` names it.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// Its id.
    pub id: String,
    /// When its run started.
    pub time: chrono::DateTime<chrono::Utc>,
}

/// One path that differs.
#[derive(Debug, Clone, Serialize)]
pub struct PathChange {
    /// `added`, `removed`, `content` or `metadata`.
    pub change: &'static str,
    /// The path (prefixed with its tree's name when the source has several).
    pub path: String,
    /// Its size in the older snapshot.
    pub size_before: Option<u64>,
    /// Its size in the newer snapshot.
    pub size_after: Option<u64>,
}

/// How one source changed.
#[derive(Debug, Clone, Serialize)]
pub struct SourceDiff {
    /// The source.
    pub name: String,
    /// Its driver.
    #[serde(rename = "type")]
    pub kind: String,
    /// `added`, `removed`, `modified` or `unchanged`.
    pub state: &'static str,
    /// Plaintext bytes before.
    pub size_before: Option<u64>,
    /// Plaintext bytes after.
    pub size_after: Option<u64>,
    /// Paths of its trees and names of its stream artifacts that differ, in order.
    pub paths: Vec<PathChange>,
    /// Recorded counts that differ.
    pub counts: Vec<Change>,
}

impl SourceDiff {
    /// How many paths changed in each way: (added, removed, content, metadata).
    pub fn tally(&self) -> (usize, usize, usize, usize) {
        let n = |c: &str| self.paths.iter().filter(|p| p.change == c).count();
        (n("added"), n("removed"), n("content"), n("metadata"))
    }
}

/// What `diff` found.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// The older snapshot.
    pub from: Side,
    /// The newer snapshot.
    pub to: Side,
    /// Every source of either, by name.
    pub sources: Vec<SourceDiff>,
}

/// `diff A B` (ids, prefixes, `latest`, `latest~N`); the older of the two
/// is always `from`. Sources failed in one of them count as absent there.
pub async fn diff(ctx: &Stack, a: &str, b: &str) -> Result<DiffReport> {
    let repo = ctx.repo().await?;
    repo.require_readable("diff")?;
    let list = ctx.snapshots(&repo).await?;
    let (mut x, mut y) = (ctx.resolve(&list, a, None)?, ctx.resolve(&list, b, None)?);
    if (x.snapshot.time, x.id) > (y.snapshot.time, y.id) {
        std::mem::swap(&mut x, &mut y);
    }
    let mut names: Vec<&String> = x
        .snapshot
        .sources
        .keys()
        .chain(y.snapshot.sources.keys())
        .collect();
    names.sort();
    names.dedup();
    let mut sources = Vec::new();
    for name in names {
        let (old, new) = (x.good(name), y.good(name));
        let Some(any) = new.or(old) else { continue };
        let mut d = SourceDiff {
            name: name.clone(),
            kind: any.kind.clone(),
            state: match (old, new) {
                (None, _) => "added",
                (_, None) => "removed",
                _ => "unchanged",
            },
            size_before: old.map(|e| e.stats.bytes_total),
            size_after: new.map(|e| e.stats.bytes_total),
            paths: Vec::new(),
            counts: inventory::changes(
                &old.map(inventory).unwrap_or_default(),
                &new.map(inventory).unwrap_or_default(),
            ),
        };
        let several = trees(old).len().max(trees(new).len()) > 1;
        let mut artifact_names: Vec<&str> = artifacts(old)
            .chain(artifacts(new))
            .map(|a| a.name.as_str())
            .collect();
        artifact_names.sort_unstable();
        artifact_names.dedup();
        for an in artifact_names {
            let (o, n) = (find(old, an), find(new, an));
            let tree = o.or(n).is_some_and(|a| a.kind.as_str() == "tree");
            if !tree {
                if let Some(change) = stream_change(o, n) {
                    d.paths.push(PathChange {
                        change,
                        path: an.to_string(),
                        size_before: o.map(|a| a.size),
                        size_after: n.map(|a| a.size),
                    });
                }
                continue;
            }
            let t = browse::diff_trees(&repo, o, n).await?;
            let named = |e: &TreeEntry| match several {
                true => format!("{an}/{}", e.path.display()),
                false => e.path.display(),
            };
            let mut changes: Vec<PathChange> = Vec::new();
            changes.extend(t.added.iter().map(|e| PathChange {
                change: "added",
                path: named(e),
                size_before: None,
                size_after: Some(e.size),
            }));
            changes.extend(t.removed.iter().map(|e| PathChange {
                change: "removed",
                path: named(e),
                size_before: Some(e.size),
                size_after: None,
            }));
            changes.extend(t.modified.iter().map(|(o, n, m)| PathChange {
                change: match m {
                    Modification::Content => "content",
                    Modification::Metadata => "metadata",
                },
                path: named(n),
                size_before: Some(o.size),
                size_after: Some(n.size),
            }));
            changes.sort_by(|a, b| a.path.cmp(&b.path));
            d.paths.extend(changes);
        }
        if d.state == "unchanged" && (!d.paths.is_empty() || !d.counts.is_empty()) {
            d.state = "modified";
        }
        sources.push(d);
    }
    let side = |s: &respaldo_core::repo::snapshot::SnapshotRef| Side {
        id: s.id.to_hex(),
        time: s.snapshot.time,
    };
    Ok(DiffReport {
        from: side(x),
        to: side(y),
        sources,
    })
}

fn artifacts(e: Option<&SourceEntry>) -> impl Iterator<Item = &Artifact> {
    e.into_iter().flat_map(|e| e.artifacts.iter())
}

fn trees(e: Option<&SourceEntry>) -> Vec<&Artifact> {
    artifacts(e).filter(|a| a.kind.as_str() == "tree").collect()
}

fn find<'a>(e: Option<&'a SourceEntry>, name: &str) -> Option<&'a Artifact> {
    e.and_then(|e| e.artifact(name))
}

fn stream_change(old: Option<&Artifact>, new: Option<&Artifact>) -> Option<&'static str> {
    match (old, new) {
        (None, Some(_)) => Some("added"),
        (Some(_), None) => Some("removed"),
        (Some(o), Some(n)) if o.sha256 != n.sha256 => Some("content"),
        _ => None,
    }
}

impl std::fmt::Display for DiffReport {
    /// A line naming both snapshots, then per source a summary line and
    /// its changes: `+` added, `-` removed, `M` content, `m` metadata only,
    /// and each count that moved.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = |s: &Side| format!("{} ({})", &s.id[..8], units::time(&s.time));
        writeln!(f, "from {} to {}", side(&self.from), side(&self.to))?;
        let size = |n: Option<u64>| n.map_or("-".to_string(), units::size);
        for s in &self.sources {
            let (added, removed, content, meta) = s.tally();
            let mut what = Vec::new();
            let labels = [
                (added, "added"),
                (removed, "removed"),
                (content, "changed"),
                (meta, "metadata only"),
            ];
            for (n, label) in labels {
                if n > 0 {
                    what.push(format!("{n} {label}"));
                }
            }
            if !s.counts.is_empty() {
                what.push(format!("{} count(s) moved", s.counts.len()));
            }
            let detail = match what.is_empty() {
                true => String::new(),
                false => format!(": {}", what.join(", ")),
            };
            let (before, after) = (size(s.size_before), size(s.size_after));
            writeln!(
                f,
                "{} ({}) {}{detail}; {before} -> {after}",
                s.name, s.kind, s.state
            )?;
            for p in &s.paths {
                let mark = match p.change {
                    "added" => '+',
                    "removed" => '-',
                    "content" => 'M',
                    _ => 'm',
                };
                let (b, a) = (size(p.size_before), size(p.size_after));
                writeln!(f, "  {mark} {}  ({b} -> {a})", p.path)?;
            }
            for c in &s.counts {
                let n = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
                let (path, b, a) = (c.path.join("/"), n(c.before), n(c.after));
                writeln!(f, "  {path}: {b} -> {a} {} ({:+})", c.unit, c.delta())?;
            }
        }
        Ok(())
    }
}
