//! Looking inside tree artifacts without restoring them: the entries under a
//! path, and what changed between two trees. Listings are read as streams
//! (chunks fetched ahead in coalesced ranges); file content is never read.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::artifact::Artifact;
use crate::repo::tree::{RawPath, TreeEntry, TreeReader};
use crate::repo::Repository;
use crate::{Error, Result};

/// A path inside a tree, without leading, trailing or doubled slashes
/// (empty: the tree's root).
pub fn tree_path(path: &str) -> RawPath {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    RawPath(parts.join("/").into_bytes())
}

/// Whether `path` is strictly below `dir` (every path is below the root).
pub fn is_below(path: &RawPath, dir: &RawPath) -> bool {
    if dir.0.is_empty() {
        return !path.0.is_empty();
    }
    path.0.len() > dir.0.len() && path.0.starts_with(&dir.0) && path.0[dir.0.len()] == b'/'
}

/// Whether `path` is directly inside `dir`.
pub fn is_child(path: &RawPath, dir: &RawPath) -> bool {
    let skip = if dir.0.is_empty() { 0 } else { dir.0.len() + 1 };
    is_below(path, dir) && !path.0[skip..].contains(&b'/')
}

/// Calls `visit` with each entry of `artifact` directly in `dir` (with
/// `recursive`: everything below it), in listing order. A `dir` naming a
/// file, symlink or other non-directory visits that one entry. Returns how
/// many entries were visited; a `dir` the tree does not hold is an error.
pub async fn list_tree(
    repo: &Arc<Repository>,
    artifact: &Artifact,
    dir: &RawPath,
    recursive: bool,
    mut visit: impl FnMut(TreeEntry) -> Result<()>,
) -> Result<u64> {
    let mut reader = TreeReader::new(repo.clone(), artifact)?;
    let mut found = dir.0.is_empty();
    let mut visited = 0;
    while let Some(e) = reader.next_entry().await? {
        if e.path == *dir {
            found = true;
            if e.kind != crate::repo::tree::EntryKind::Dir {
                visit(e)?;
                return Ok(1);
            }
            continue;
        }
        let wanted = if recursive {
            is_below(&e.path, dir)
        } else {
            is_child(&e.path, dir)
        };
        if wanted {
            found = true;
            visited += 1;
            visit(e)?;
        }
    }
    if !found {
        return Err(Error::Invalid(format!(
            "`{}` is not in `{}`",
            dir.display(),
            artifact.name
        )));
    }
    Ok(visited)
}

/// The entry at `path`, if the tree holds it.
pub async fn find_entry(
    repo: &Arc<Repository>,
    artifact: &Artifact,
    path: &RawPath,
) -> Result<Option<TreeEntry>> {
    let mut reader = TreeReader::new(repo.clone(), artifact)?;
    while let Some(e) = reader.next_entry().await? {
        if e.path == *path {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// How an entry present in both trees differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Modification {
    /// Its content (or type, or link target) differs.
    Content,
    /// Only its metadata differs: mode, owner, times, extended attributes.
    Metadata,
}

/// How two entries at one path differ, if they do.
pub fn modification(old: &TreeEntry, new: &TreeEntry) -> Option<Modification> {
    if old.kind != new.kind
        || old.size != new.size
        || old.chunks != new.chunks
        || old.target != new.target
        || old.rdev != new.rdev
        || old.hardlink != new.hardlink
    {
        return Some(Modification::Content);
    }
    (old.mode != new.mode
        || old.uid != new.uid
        || old.gid != new.gid
        || old.mtime_ns != new.mtime_ns
        || old.xattrs != new.xattrs)
        .then_some(Modification::Metadata)
}

/// What changed between two trees, each list in path order.
#[derive(Debug, Default)]
pub struct TreeDiff {
    /// In the newer tree only.
    pub added: Vec<TreeEntry>,
    /// In the older tree only.
    pub removed: Vec<TreeEntry>,
    /// In both, different: (older, newer, how).
    pub modified: Vec<(TreeEntry, TreeEntry, Modification)>,
}

/// Compares two tree artifacts by their listings (content by chunk ids,
/// never by reading it). Identical listings are recognised by their hash
/// without being read.
pub async fn diff_trees(
    repo: &Arc<Repository>,
    old: Option<&Artifact>,
    new: Option<&Artifact>,
) -> Result<TreeDiff> {
    let mut diff = TreeDiff::default();
    if let (Some(a), Some(b)) = (old, new) {
        if a.sha256 == b.sha256 {
            return Ok(diff);
        }
    }
    let mut before: HashMap<RawPath, TreeEntry> = match old {
        Some(a) => TreeReader::new(repo.clone(), a)?.into_map().await?,
        None => HashMap::new(),
    };
    if let Some(b) = new {
        let mut reader = TreeReader::new(repo.clone(), b)?;
        while let Some(e) = reader.next_entry().await? {
            match before.remove(&e.path) {
                None => diff.added.push(e),
                Some(o) => {
                    if let Some(m) = modification(&o, &e) {
                        diff.modified.push((o, e, m));
                    }
                }
            }
        }
    }
    diff.removed = before.into_values().collect();
    diff.added.sort_by(|a, b| a.path.0.cmp(&b.path.0));
    diff.removed.sort_by(|a, b| a.path.0.cmp(&b.path.0));
    diff.modified.sort_by(|a, b| a.0.path.0.cmp(&b.0.path.0));
    Ok(diff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_below_and_directly_in_a_directory() {
        let p = |s: &str| RawPath(s.as_bytes().to_vec());
        assert_eq!(tree_path("/a//b/./c/"), p("a/b/c"));
        assert_eq!(tree_path("/"), p(""));
        assert!(is_below(&p("a/b"), &p("a")));
        assert!(!is_below(&p("ab"), &p("a")));
        assert!(!is_below(&p("a"), &p("a")));
        assert!(is_below(&p("a"), &p("")));
        assert!(is_child(&p("a/b"), &p("a")));
        assert!(!is_child(&p("a/b/c"), &p("a")));
        assert!(is_child(&p("a"), &p("")));
        assert!(!is_child(&p("a/b"), &p("")));
    }
}
