//! `find PATTERN`: a path glob searched in every snapshot's trees, newest
//! snapshot first, each distinct version of a matching path listed once
//! with the snapshots that hold it. A tree listing that several snapshots
//! share (its hash is the same) is read once.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use globset::{Glob, GlobMatcher};
use respaldo_core::repo::id::ObjectId;
use respaldo_core::repo::tree::{EntryKind, TreeEntry, TreeReader};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::stack::Stack;
use crate::units;

/// What `find` looks for.
#[derive(Debug, Clone, Default)]
pub struct FindRequest {
    /// A glob (`*`, `?`, `[…]`, `**`); without a `/` it matches file names
    /// in any directory, with one the whole path inside the tree.
    pub pattern: String,
    /// Only this source.
    pub source: Option<String>,
    /// Only entries modified after this time.
    pub newer: Option<DateTime<Utc>>,
    /// Only entries modified before this time.
    pub older: Option<DateTime<Utc>>,
}

/// A snapshot holding a version.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    /// Its id.
    pub id: String,
    /// When its run started.
    pub time: DateTime<Utc>,
}

/// One version of a path: its metadata as the newest holder recorded it.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    /// Entry type.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: DateTime<Utc>,
    /// The snapshots holding this version, newest first.
    pub snapshots: Vec<Holder>,
}

/// One matching path and its versions, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// The source.
    pub source: String,
    /// The tree (artifact) inside the source.
    pub tree: String,
    /// The path inside the tree.
    pub path: String,
    /// How `ls` and `dump` name it: `SOURCE:PATH`, or `SOURCE:TREE/PATH`
    /// when the source has several trees.
    pub address: String,
    /// Its distinct versions.
    pub versions: Vec<Version>,
}

/// What makes two entries the same version: content and metadata.
type VersionKey = (u8, u64, u32, i64, Vec<ObjectId>);

/// A `--newer`/`--older` time: `YYYY-MM-DD` (midnight UTC) or RFC 3339.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            Error::usage(format!(
                "`{text}` is not a date (YYYY-MM-DD) or an RFC 3339 time"
            ))
        })
}

fn matcher(pattern: &str) -> Result<(GlobMatcher, bool)> {
    let glob =
        Glob::new(pattern).map_err(|e| Error::usage(format!("bad pattern `{pattern}`: {e}")))?;
    Ok((glob.compile_matcher(), !pattern.contains('/')))
}

/// The entries of tree `a` that match.
async fn matches(
    repo: &std::sync::Arc<respaldo_core::Repository>,
    a: &respaldo_core::artifact::Artifact,
    glob: &GlobMatcher,
    by_name: bool,
    req: &FindRequest,
) -> Result<Vec<TreeEntry>> {
    let mut hits = Vec::new();
    let mut reader = TreeReader::new(repo.clone(), a)?;
    while let Some(e) = reader.next_entry().await? {
        let text = e.path.display();
        let subject = match by_name {
            true => text.rsplit('/').next().unwrap_or(&text),
            false => &text,
        };
        let t = DateTime::from_timestamp_nanos(e.mtime_ns);
        if glob.is_match(subject)
            && req.newer.is_none_or(|n| t > n)
            && req.older.is_none_or(|o| t < o)
        {
            hits.push(e);
        }
    }
    Ok(hits)
}

/// `find PATTERN [--source S] [--newer T] [--older T]` over the selected
/// hosts' snapshots; results in path order.
pub async fn find(ctx: &Stack, req: &FindRequest) -> Result<Vec<Found>> {
    let (glob, by_name) = matcher(&req.pattern)?;
    let repo = ctx.repo().await?;
    repo.require_readable("find")?;
    let mut list = ctx.snapshots(&repo).await?;
    let hosts = ctx.hosts();
    list.retain(|s| hosts.matches(&s.snapshot.host));
    list.sort_by_key(|s| std::cmp::Reverse((s.snapshot.time, s.id)));
    // Matches per listing hash, so a listing shared by many snapshots is read once.
    let mut read: HashMap<ObjectId, Vec<TreeEntry>> = HashMap::new();
    let mut found: Vec<Found> = Vec::new();
    let mut at: HashMap<(String, String, Vec<u8>), usize> = HashMap::new();
    let mut versions: HashMap<(usize, VersionKey), usize> = HashMap::new();
    for s in &list {
        for (name, entry) in &s.snapshot.sources {
            if !entry.is_ok() || req.source.as_ref().is_some_and(|n| n != name) {
                continue;
            }
            let trees = entry.artifacts.iter().filter(|a| a.kind.as_str() == "tree");
            let several = trees.clone().count() > 1;
            for a in trees {
                if let std::collections::hash_map::Entry::Vacant(slot) = read.entry(a.sha256) {
                    slot.insert(matches(&repo, a, &glob, by_name, req).await?);
                }
                for e in &read[&a.sha256] {
                    let place = (name.clone(), a.name.clone(), e.path.0.clone());
                    let i = *at.entry(place).or_insert_with(|| {
                        found.push(Found {
                            source: name.clone(),
                            tree: a.name.clone(),
                            path: e.path.display(),
                            address: match several {
                                true => format!("{name}:{}/{}", a.name, e.path.display()),
                                false => format!("{name}:{}", e.path.display()),
                            },
                            versions: Vec::new(),
                        });
                        found.len() - 1
                    });
                    let key = (e.kind as u8, e.size, e.mode, e.mtime_ns, e.chunks.clone());
                    let v = *versions.entry((i, key)).or_insert_with(|| {
                        found[i].versions.push(Version {
                            kind: e.kind,
                            size: e.size,
                            mode: e.mode,
                            mtime: DateTime::from_timestamp_nanos(e.mtime_ns),
                            snapshots: Vec::new(),
                        });
                        found[i].versions.len() - 1
                    });
                    found[i].versions[v].snapshots.push(Holder {
                        id: s.id.to_hex(),
                        time: s.snapshot.time,
                    });
                }
            }
        }
    }
    found.sort_by(|a, b| (&a.source, &a.tree, &a.path).cmp(&(&b.source, &b.tree, &b.path)));
    Ok(found)
}

/// The matches as text: each path, then each version (size, time, the
/// snapshots holding it).
pub fn text(found: &[Found]) -> String {
    let mut out = String::new();
    for f in found {
        out.push_str(&f.address);
        out.push('\n');
        for v in &f.versions {
            let ids: Vec<&str> = v.snapshots.iter().map(|s| &s.id[..8]).collect();
            let mode = super::browse::mode_string(v.kind, v.mode);
            let (size, time, n) = (units::size(v.size), units::time(&v.mtime), ids.len());
            let ids = ids.join(" ");
            out.push_str(&format!("  {mode} {size:>10}  {time}  in {n}: {ids}\n"));
        }
    }
    out
}
