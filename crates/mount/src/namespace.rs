//! The mounted view as an inode table: the fixed top (`snapshots/`,
//! `hosts/`, `latest`) built from the snapshot list at mount time, and each
//! tree read into inodes the first time something looks inside it.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use respaldo_core::artifact::{Artifact, ArtifactKind};
use respaldo_core::kit::xattr::Xattr;
use respaldo_core::repo::snapshot::SnapshotRef;
use respaldo_core::repo::tree::{EntryKind, TreeEntry, TreeReader};
use respaldo_core::{ObjectId, Repository};

use crate::MountError;

/// The root's inode number.
pub(crate) const ROOT: u64 = 1;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Char,
    Block,
}

/// A node's metadata, as `stat` shows it.
#[derive(Debug, Clone)]
pub(crate) struct Attr {
    pub kind: Kind,
    /// Permission bits (with setuid, setgid, sticky).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: SystemTime,
    pub rdev: u32,
    /// Extended attributes (POSIX ACLs included), as recorded.
    pub xattrs: Arc<Vec<Xattr>>,
}

/// What a node holds.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    /// A directory whose entries are known, sorted by name.
    Dir(Arc<Vec<(OsString, u64)>>),
    /// The root of a tree artifact not read yet.
    Tree(Arc<Artifact>),
    /// Bytes: a file of a tree, or a stream artifact; its chunks in order.
    Bytes(Arc<Vec<ObjectId>>),
    /// A symbolic link's target.
    Link(Vec<u8>),
    /// A named pipe or a device: metadata only.
    Special,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub parent: u64,
    pub attr: Attr,
    pub content: Content,
}

/// The inode table. Inode `n` is `nodes[n - 1]`; nodes are never removed.
#[derive(Debug)]
pub(crate) struct Namespace {
    nodes: RwLock<Vec<Node>>,
    /// Held while a tree is read, so that a tree is read once.
    loading: tokio::sync::Mutex<()>,
}

/// The fixed part of the view.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The snapshots shown, in any order.
    pub snapshots: Vec<SnapshotRef>,
    /// The snapshot `/latest` points to (the current host's newest), if any.
    pub latest: Option<ObjectId>,
    /// Per host, the snapshot its `latest` points to.
    pub host_latest: Vec<(String, ObjectId)>,
}

/// The folder name of a snapshot: its time (UTC, sortable) and short id.
pub fn snapshot_dir_name(s: &SnapshotRef) -> String {
    format!(
        "{}-{}",
        s.snapshot.time.format("%Y-%m-%dT%H:%M:%SZ"),
        s.id.short()
    )
}

/// A name usable as one path component.
fn component(name: &str) -> OsString {
    OsString::from(name.replace('/', "_"))
}

fn dir_attr(mtime: SystemTime) -> Attr {
    Attr {
        kind: Kind::Dir,
        perm: 0o555,
        uid: 0,
        gid: 0,
        size: 0,
        mtime,
        rdev: 0,
        xattrs: Arc::default(),
    }
}

fn time_of(t: chrono::DateTime<chrono::Utc>) -> SystemTime {
    let ns = t.timestamp_nanos_opt().unwrap_or(0);
    nanos(ns)
}

fn nanos(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// Builds nodes under construction: pushes and links them.
struct Builder<'a> {
    nodes: &'a mut Vec<Node>,
}

impl Builder<'_> {
    fn push(&mut self, parent: u64, attr: Attr, content: Content) -> u64 {
        self.nodes.push(Node {
            parent,
            attr,
            content,
        });
        self.nodes.len() as u64
    }

    fn set_children(&mut self, dir: u64, mut children: Vec<(OsString, u64)>) {
        children.sort_by(|a, b| a.0.cmp(&b.0));
        children.dedup_by(|a, b| a.0 == b.0);
        self.nodes[(dir - 1) as usize].content = Content::Dir(Arc::new(children));
    }

    fn link(&mut self, parent: u64, target: String, mtime: SystemTime) -> u64 {
        let attr = Attr {
            kind: Kind::Symlink,
            perm: 0o777,
            size: target.len() as u64,
            ..dir_attr(mtime)
        };
        self.push(parent, attr, Content::Link(target.into_bytes()))
    }
}

impl Namespace {
    /// The fixed top of the view.
    pub(crate) fn new(view: &View) -> Namespace {
        let now = SystemTime::now();
        let mut nodes = Vec::new();
        let mut b = Builder { nodes: &mut nodes };
        let root = b.push(0, dir_attr(now), Content::Dir(Arc::default()));
        let snaps = b.push(root, dir_attr(now), Content::Dir(Arc::default()));
        let hosts = b.push(root, dir_attr(now), Content::Dir(Arc::default()));
        let mut top = vec![("snapshots".into(), snaps), ("hosts".into(), hosts)];
        let mut names: HashMap<ObjectId, String> = HashMap::new();
        let mut listed = Vec::new();
        let mut by_host: HashMap<&str, Vec<(OsString, String)>> = HashMap::new();
        for s in &view.snapshots {
            let name = snapshot_dir_name(s);
            let mtime = time_of(s.snapshot.time);
            let dir = b.push(snaps, dir_attr(mtime), Content::Dir(Arc::default()));
            let mut sources = Vec::new();
            for (source, entry) in &s.snapshot.sources {
                if !entry.is_ok() || entry.artifacts.is_empty() {
                    continue;
                }
                let node = match entry.artifacts.as_slice() {
                    [one] if one.kind == ArtifactKind::Tree => {
                        b.push(dir, dir_attr(mtime), Content::Tree(Arc::new(one.clone())))
                    }
                    many => {
                        let sdir = b.push(dir, dir_attr(mtime), Content::Dir(Arc::default()));
                        let children = many
                            .iter()
                            .map(|a| (component(&a.name), artifact_node(&mut b, sdir, a, mtime)))
                            .collect();
                        b.set_children(sdir, children);
                        sdir
                    }
                };
                sources.push((component(source), node));
            }
            b.set_children(dir, sources);
            by_host
                .entry(s.snapshot.host.as_str())
                .or_default()
                .push((OsString::from(&name), format!("../../snapshots/{name}")));
            names.insert(s.id, name.clone());
            listed.push((OsString::from(name), dir));
        }
        b.set_children(snaps, listed);
        let mut host_dirs = Vec::new();
        for (host, links) in by_host {
            let hdir = b.push(hosts, dir_attr(now), Content::Dir(Arc::default()));
            let mut children: Vec<(OsString, u64)> = links
                .into_iter()
                .map(|(n, target)| (n, b.link(hdir, target, now)))
                .collect();
            let latest = view.host_latest.iter().find(|(h, _)| h == host);
            if let Some(name) = latest.and_then(|(_, id)| names.get(id)) {
                let l = b.link(hdir, format!("../../snapshots/{name}"), now);
                children.push(("latest".into(), l));
            }
            b.set_children(hdir, children);
            host_dirs.push((component(host), hdir));
        }
        b.set_children(hosts, host_dirs);
        if let Some(name) = view.latest.and_then(|id| names.get(&id)) {
            let l = b.link(root, format!("snapshots/{name}"), now);
            top.push(("latest".into(), l));
        }
        b.set_children(root, top);
        Namespace {
            nodes: RwLock::new(nodes),
            loading: tokio::sync::Mutex::new(()),
        }
    }

    /// A copy of node `ino`.
    pub(crate) fn get(&self, ino: u64) -> Option<Node> {
        let nodes = self.nodes.read().expect("inode table");
        ino.checked_sub(1)
            .and_then(|i| nodes.get(i as usize))
            .cloned()
    }

    /// The entries of directory `ino`, reading its tree first if needed
    /// (`None`: not a directory).
    pub(crate) async fn children(
        &self,
        repo: &Arc<Repository>,
        ino: u64,
    ) -> Result<Option<Arc<Vec<(OsString, u64)>>>, MountError> {
        match self.get(ino).map(|n| n.content) {
            Some(Content::Dir(c)) => Ok(Some(c)),
            Some(Content::Tree(_)) => {
                self.load(repo, ino).await?;
                Ok(match self.get(ino).map(|n| n.content) {
                    Some(Content::Dir(c)) => Some(c),
                    _ => None,
                })
            }
            _ => Ok(None),
        }
    }

    /// The inode of `name` in directory `parent`.
    pub(crate) async fn lookup(
        &self,
        repo: &Arc<Repository>,
        parent: u64,
        name: &OsStr,
    ) -> Result<Option<u64>, MountError> {
        let Some(children) = self.children(repo, parent).await? else {
            return Ok(None);
        };
        Ok(children
            .binary_search_by(|(n, _)| n.as_os_str().cmp(name))
            .ok()
            .map(|i| children[i].1))
    }

    /// Reads the tree whose root is `ino` into nodes (once).
    async fn load(&self, repo: &Arc<Repository>, ino: u64) -> Result<(), MountError> {
        let _one_at_a_time = self.loading.lock().await;
        let Some(Content::Tree(artifact)) = self.get(ino).map(|n| n.content) else {
            return Ok(()); // read meanwhile
        };
        let mut reader = TreeReader::new(repo.clone(), &artifact)
            .map_err(|e| MountError::tree(&artifact.name, e))?;
        let mut entries = Vec::new();
        while let Some(e) = reader
            .next_entry()
            .await
            .map_err(|e| MountError::tree(&artifact.name, e))?
        {
            entries.push(e);
        }
        let mut nodes = self.nodes.write().expect("inode table");
        add_tree(&mut Builder { nodes: &mut nodes }, ino, entries);
        Ok(())
    }
}

/// A node for one artifact of a source with several.
fn artifact_node(b: &mut Builder<'_>, parent: u64, a: &Artifact, mtime: SystemTime) -> u64 {
    match a.kind {
        ArtifactKind::Tree => b.push(parent, dir_attr(mtime), Content::Tree(Arc::new(a.clone()))),
        ArtifactKind::Stream => {
            let attr = Attr {
                kind: Kind::File,
                perm: 0o444,
                size: a.size,
                ..dir_attr(mtime)
            };
            b.push(parent, attr, Content::Bytes(Arc::new(a.chunks.clone())))
        }
    }
}

/// The node of a tree entry's own metadata.
fn entry_attr(e: &TreeEntry) -> Attr {
    let kind = match e.kind {
        EntryKind::File => Kind::File,
        EntryKind::Dir => Kind::Dir,
        EntryKind::Symlink => Kind::Symlink,
        EntryKind::Fifo => Kind::Fifo,
        EntryKind::Char => Kind::Char,
        EntryKind::Block => Kind::Block,
    };
    let size = match e.kind {
        EntryKind::Symlink => e.target.as_ref().map_or(0, |t| t.0.len() as u64),
        _ => e.size,
    };
    Attr {
        kind,
        perm: (e.mode & 0o7777) as u16,
        uid: e.uid,
        gid: e.gid,
        size,
        mtime: nanos(e.mtime_ns),
        rdev: e.rdev.unwrap_or(0) as u32,
        xattrs: Arc::new(e.xattrs.clone()),
    }
}

/// Adds a tree's entries below `root` (whose node becomes a directory).
/// Entries come in listing order, a directory before what it holds; a
/// second name of a hard-linked file takes its first name's content.
fn add_tree(b: &mut Builder<'_>, root: u64, entries: Vec<TreeEntry>) {
    let mut by_path: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut children: HashMap<u64, Vec<(OsString, u64)>> = HashMap::new();
    children.insert(root, Vec::new());
    for e in entries {
        if e.path.0.is_empty() {
            // The tree's root itself: its metadata.
            let keep = b.nodes[(root - 1) as usize].attr.mtime;
            let mut attr = entry_attr(&e);
            attr.kind = Kind::Dir;
            attr.mtime = if e.mtime_ns == 0 { keep } else { attr.mtime };
            b.nodes[(root - 1) as usize].attr = attr;
            continue;
        }
        let (parent_path, name) = match e.path.0.iter().rposition(|&c| c == b'/') {
            Some(i) => (&e.path.0[..i], &e.path.0[i + 1..]),
            None => (&e.path.0[..0], &e.path.0[..]),
        };
        let parent = match parent_path {
            [] => root,
            p => match by_path.get(p) {
                Some(&d) => d,
                // A listing names a directory before its content; a parent
                // it lacks is shown bare rather than losing what is in it.
                None => continue,
            },
        };
        let attr = entry_attr(&e);
        let content = match e.kind {
            EntryKind::Dir => Content::Dir(Arc::default()),
            EntryKind::Symlink => Content::Link(e.target.map(|t| t.0).unwrap_or_default()),
            EntryKind::File => match &e.hardlink {
                Some(first) => match by_path.get(&first.0).map(|&i| &b.nodes[(i - 1) as usize]) {
                    Some(Node {
                        content: Content::Bytes(c),
                        ..
                    }) => Content::Bytes(c.clone()),
                    _ => Content::Bytes(Arc::new(e.chunks)),
                },
                None => Content::Bytes(Arc::new(e.chunks)),
            },
            _ => Content::Special,
        };
        let is_dir = matches!(content, Content::Dir(_));
        let mut attr = attr;
        if let (Some(first), Kind::File) = (&e.hardlink, attr.kind) {
            if let Some(&i) = by_path.get(&first.0) {
                attr.size = b.nodes[(i - 1) as usize].attr.size;
            }
        }
        let ino = b.push(parent, attr, content);
        let name = OsString::from_vec(name.to_vec());
        children.entry(parent).or_default().push((name, ino));
        if is_dir {
            children.entry(ino).or_default();
        }
        by_path.insert(e.path.0, ino);
    }
    for (dir, list) in children {
        b.set_children(dir, list);
    }
}

/// For messages: a name as text.
pub(crate) fn shown(name: &OsStr) -> String {
    String::from_utf8_lossy(name.as_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use respaldo_core::repo::tree::RawPath;

    fn entry(path: &str, kind: EntryKind) -> TreeEntry {
        TreeEntry {
            path: RawPath(path.as_bytes().to_vec()),
            kind,
            mode: 0o640,
            uid: 7,
            gid: 8,
            mtime_ns: 1_000_000_000,
            ctime_ns: 0,
            ino: 0,
            size: 3,
            target: None,
            rdev: None,
            chunks: vec![ObjectId([1; 32])],
            sha256: None,
            hardlink: None,
            changed_during_backup: false,
            xattrs: Vec::new(),
        }
    }

    fn names(nodes: &[Node], dir: u64) -> Vec<String> {
        match &nodes[(dir - 1) as usize].content {
            Content::Dir(c) => c.iter().map(|(n, _)| shown(n)).collect(),
            other => panic!("not a directory: {other:?}"),
        }
    }

    /// Entries land under their parents, sorted; a hard link shares its
    /// first name's content and size; metadata is the entry's.
    #[test]
    fn a_tree_listing_becomes_nested_sorted_directories() {
        let mut nodes = vec![Node {
            parent: 0,
            attr: dir_attr(UNIX_EPOCH),
            content: Content::Dir(Arc::default()),
        }];
        let mut link = entry("b/link", EntryKind::File);
        link.hardlink = Some(RawPath(b"b/z".to_vec()));
        link.chunks.clear();
        link.size = 0;
        let entries = vec![
            entry("b", EntryKind::Dir),
            entry("b/z", EntryKind::File),
            entry("a", EntryKind::File),
            link,
            entry("b/c", EntryKind::Dir),
        ];
        add_tree(&mut Builder { nodes: &mut nodes }, ROOT, entries);
        assert_eq!(names(&nodes, ROOT), ["a", "b"]);
        assert_eq!(names(&nodes, 2), ["c", "link", "z"]);
        let l = &nodes[4];
        assert_eq!(l.attr.size, 3);
        assert!(matches!(&l.content, Content::Bytes(c) if c.len() == 1));
        assert_eq!((l.attr.perm, l.attr.uid, l.attr.gid), (0o640, 7, 8));
        assert_eq!(names(&nodes, 6), Vec::<String>::new());
    }
}
