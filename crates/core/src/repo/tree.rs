//! File trees: entries with metadata and content, serialized as a listing of
//! JSON lines that is itself chunked and deduplicated.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::artifact::{Artifact, ArtifactKind, TreeSummary};
use crate::error::{Error, Result};
use crate::kit::progress::Progress;
use crate::repo::fetch::ChunkFetcher;
use crate::repo::format::BlobKind;
use crate::repo::id::ObjectId;
use crate::repo::writer::{Deferred, StreamWriter, WriteSession};
use crate::repo::Repository;

/// Files whose content is still being stored, at most.
const PENDING_FILES: usize = 512;
/// Bytes of files whose content is still being stored, at most.
const PENDING_BYTES: u64 = 8 * 1024 * 1024;

/// A path inside a tree, relative to the tree's root, as raw bytes (Unix
/// names need not be UTF-8). Serialized as a string when it is UTF-8 and as
/// `{"hex": "…"}` otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawPath(pub Vec<u8>);

impl RawPath {
    /// From a relative path.
    pub fn from_path(p: &Path) -> Self {
        RawPath(p.as_os_str().as_bytes().to_vec())
    }
    /// As a path.
    pub fn as_path(&self) -> &Path {
        Path::new(std::ffi::OsStr::from_bytes(&self.0))
    }
    /// For messages.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
    /// Whether the path is safe to join under a restore target: relative, not
    /// empty, without `.`/`..` components or NUL bytes.
    pub fn is_safe(&self) -> bool {
        if self.0.is_empty() || self.0.contains(&0) || self.0[0] == b'/' {
            return false;
        }
        self.0
            .split(|&b| b == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b"..")
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawPathRepr {
    Text(String),
    Bytes { hex: String },
}

impl Serialize for RawPath {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(t) => RawPathRepr::Text(t.to_string()).serialize(s),
            Err(_) => RawPathRepr::Bytes {
                hex: hex::encode(&self.0),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for RawPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match RawPathRepr::deserialize(d)? {
            RawPathRepr::Text(t) => Ok(RawPath(t.into_bytes())),
            RawPathRepr::Bytes { hex } => hex::decode(hex)
                .map(RawPath)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Entry type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    Char,
    /// Block device.
    Block,
}

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeEntry {
    /// Path relative to the tree's root.
    pub path: RawPath,
    /// Type.
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Permission bits (including setuid/setgid/sticky).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the epoch (change detection only).
    #[serde(default)]
    pub ctime_ns: i64,
    /// Inode number (change detection only).
    #[serde(default)]
    pub ino: u64,
    /// Size of a regular file.
    #[serde(default)]
    pub size: u64,
    /// Link target of a symlink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RawPath>,
    /// Device number of a device node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    /// Content chunks of a regular file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ObjectId>,
    /// SHA-256 of a regular file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<ObjectId>,
    /// For the second and later names of a hard-linked file: the path (in
    /// this tree) of its first name, which holds the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardlink: Option<RawPath>,
    /// Set when the file changed while it was being read; its content may be
    /// inconsistent (a warning was reported).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub changed_during_backup: bool,
    /// Extended attributes, POSIX ACLs included, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<crate::kit::xattr::Xattr>,
}

impl TreeEntry {
    /// Whether the file is unchanged compared with `parent`, judged by size,
    /// mtime, ctime and inode, so its content need not be read again.
    pub fn unchanged_since(&self, parent: &TreeEntry) -> bool {
        self.kind == EntryKind::File
            && parent.kind == EntryKind::File
            && parent.hardlink.is_none()
            && !parent.changed_during_backup
            && parent.sha256.is_some()
            && self.size == parent.size
            && self.mtime_ns == parent.mtime_ns
            && self.ctime_ns == parent.ctime_ns
            && self.ino == parent.ino
    }
}

/// Writes a tree artifact: entries in order (a directory before its content).
pub struct TreeWriter {
    name: String,
    root: Option<String>,
    session: Arc<WriteSession>,
    level: i32,
    listing: StreamWriter,
    parent: HashMap<RawPath, TreeEntry>,
    summary: TreeSummary,
    size: u64,
    added: u64,
    progress: Arc<Progress>,
    pending: VecDeque<(TreeEntry, Option<Deferred>)>,
    pending_bytes: u64,
}

impl std::fmt::Debug for TreeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeWriter")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TreeWriter {
    pub(crate) fn new(
        name: String,
        root: Option<String>,
        session: Arc<WriteSession>,
        level: i32,
        parent: HashMap<RawPath, TreeEntry>,
        progress: Arc<Progress>,
    ) -> Self {
        TreeWriter {
            listing: StreamWriter::new(session.clone(), BlobKind::Tree, level, None),
            name,
            root,
            session,
            level,
            parent,
            summary: TreeSummary::default(),
            size: 0,
            added: 0,
            progress,
            pending: VecDeque::new(),
            pending_bytes: 0,
        }
    }

    /// The parent snapshot's entry at `path`, for skipping unchanged files.
    pub fn parent(&self, path: &RawPath) -> Option<&TreeEntry> {
        self.parent.get(path)
    }

    /// Takes the parent snapshot's entries (for a walker on another thread);
    /// [`TreeWriter::parent`] finds nothing afterwards.
    pub fn take_parent(&mut self) -> HashMap<RawPath, TreeEntry> {
        std::mem::take(&mut self.parent)
    }

    /// Adds an entry whose content (if any) is already set: directories,
    /// symlinks, special files, and files reused from the parent.
    pub async fn add(&mut self, entry: TreeEntry) -> Result<()> {
        self.enqueue(entry, None).await
    }

    async fn enqueue(&mut self, entry: TreeEntry, content: Option<Deferred>) -> Result<()> {
        if !entry.path.is_safe() {
            return Err(Error::Invalid(format!(
                "unsafe path in tree: {}",
                entry.path.display()
            )));
        }
        if let Some(d) = &content {
            self.pending_bytes += d.size();
        }
        self.pending.push_back((entry, content));
        self.flush(false).await
    }

    /// Writes queued entries to the listing, in order: those whose content is
    /// stored, and (to bound memory) the oldest ones when too many wait.
    async fn flush(&mut self, all: bool) -> Result<()> {
        while let Some((_, content)) = self.pending.front() {
            let over = self.pending.len() > PENDING_FILES || self.pending_bytes > PENDING_BYTES;
            if !(all || over || content.as_ref().is_none_or(|d| d.is_ready())) {
                break;
            }
            let (mut entry, content) = self.pending.pop_front().expect("front exists");
            if let Some(d) = content {
                self.pending_bytes -= d.size();
                let s = d.resolve().await?;
                entry.size = s.size;
                entry.chunks = s.chunks;
                entry.sha256 = Some(s.sha256);
                self.added += s.added;
            }
            self.write_entry(&entry).await?;
        }
        Ok(())
    }

    async fn write_entry(&mut self, entry: &TreeEntry) -> Result<()> {
        self.summary.entries += 1;
        match entry.kind {
            EntryKind::File if entry.hardlink.is_none() => {
                self.summary.files += 1;
                self.size += entry.size;
            }
            EntryKind::Dir => self.summary.dirs += 1,
            _ => {}
        }
        self.progress.add_item();
        let mut line = serde_json::to_vec(entry).map_err(|e| Error::Task(e.to_string()))?;
        line.push(b'\n');
        self.listing.write(&line).await
    }

    /// Starts a regular file whose content follows through [`FileWriter::write`].
    pub fn begin_file(&mut self, entry: TreeEntry) -> FileWriter<'_> {
        let data = StreamWriter::new(
            self.session.clone(),
            BlobKind::Data,
            self.level,
            Some(self.progress.clone()),
        );
        FileWriter {
            tree: self,
            entry,
            data,
        }
    }

    /// Ends the tree and returns the artifact.
    pub async fn finish(mut self) -> Result<(Artifact, u64)> {
        self.flush(true).await?;
        let listing = self.listing.finish().await?;
        let artifact = Artifact {
            name: self.name,
            kind: ArtifactKind::Tree,
            size: self.size,
            sha256: listing.sha256,
            chunks: listing.chunks,
            tree: Some(TreeSummary {
                root: self.root,
                ..self.summary
            }),
        };
        Ok((artifact, self.added + listing.added))
    }
}

/// Content of one regular file being added to a tree.
pub struct FileWriter<'a> {
    tree: &'a mut TreeWriter,
    entry: TreeEntry,
    data: StreamWriter,
}

impl std::fmt::Debug for FileWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWriter")
            .field("path", &self.entry.path)
            .finish_non_exhaustive()
    }
}

impl FileWriter<'_> {
    /// Appends content.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.data.write(data).await
    }

    /// Ends the file; `update` may adjust the entry (e.g. the
    /// changed-during-backup flag) before it is recorded. The entry's size
    /// becomes the number of bytes actually written. The last chunks may still
    /// be being stored when this returns; the entry is recorded once they are.
    pub async fn finish(self, update: impl FnOnce(&mut TreeEntry)) -> Result<()> {
        let content = self.data.finish_deferred().await?;
        let mut entry = self.entry;
        update(&mut entry);
        self.tree.enqueue(entry, Some(content)).await
    }
}

/// Reads a tree artifact's entries in order, prefetching listing chunks.
pub struct TreeReader {
    /// Listing chunks not yet given to the fetcher.
    pending: VecDeque<ObjectId>,
    fetcher: ChunkFetcher,
    /// Listing bytes read and not yet parsed start at `buf[start..]` (a
    /// cursor, so splitting a chunk into lines costs its length, not its
    /// length times its line count).
    buf: Vec<u8>,
    start: usize,
    done: bool,
    what: String,
}

impl std::fmt::Debug for TreeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeReader")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl TreeReader {
    /// Opens a tree artifact.
    pub fn new(repo: Arc<Repository>, artifact: &Artifact) -> Result<Self> {
        if artifact.kind != ArtifactKind::Tree {
            return Err(Error::Invalid(format!(
                "artifact `{}` is not a file tree",
                artifact.name
            )));
        }
        Ok(TreeReader {
            pending: artifact.chunks.iter().copied().collect(),
            fetcher: ChunkFetcher::new(repo),
            buf: Vec::new(),
            start: 0,
            done: false,
            what: format!("tree `{}`", artifact.name),
        })
    }

    /// The next entry, or `None` at the end.
    pub async fn next_entry(&mut self) -> Result<Option<TreeEntry>> {
        loop {
            let rest = &self.buf[self.start..];
            if let Some(pos) = memchr::memchr(b'\n', rest) {
                let entry = serde_json::from_slice(&rest[..pos])
                    .map_err(|e| Error::corrupt(self.what.clone(), format!("bad entry: {e}")))?;
                self.start += pos + 1;
                return Ok(Some(entry));
            }
            if self.done {
                if self.start < self.buf.len() {
                    return Err(Error::corrupt(self.what.clone(), "listing is truncated"));
                }
                return Ok(None);
            }
            while !self.fetcher.is_full() {
                let Some(id) = self.pending.pop_front() else {
                    break;
                };
                self.fetcher.push(id).await?;
            }
            match self.fetcher.next().await? {
                Some(data) => {
                    self.buf.drain(..self.start);
                    self.start = 0;
                    self.buf.extend_from_slice(&data);
                }
                None => self.done = true,
            }
        }
    }

    /// Reads every entry into a map by path (for parent lookups).
    pub async fn into_map(mut self) -> Result<HashMap<RawPath, TreeEntry>> {
        let mut map = HashMap::new();
        while let Some(e) = self.next_entry().await? {
            map.insert(e.path.clone(), e);
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_paths_round_trip_and_safety() {
        let p = RawPath(vec![b'a', 0xff, b'/', b'b']);
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("hex"));
        assert_eq!(serde_json::from_str::<RawPath>(&json).unwrap(), p);
        let q = RawPath("ñandú/☃ x".as_bytes().to_vec());
        assert_eq!(
            serde_json::from_str::<RawPath>(&serde_json::to_string(&q).unwrap()).unwrap(),
            q
        );
        assert!(p.is_safe() && q.is_safe());
        for bad in ["", "/etc", "a/../b", "..", "a//b", "./a"] {
            assert!(!RawPath(bad.as_bytes().to_vec()).is_safe(), "{bad}");
        }
    }
}
