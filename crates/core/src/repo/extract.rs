//! Restore plumbing shared by every driver: reading streams back, writing a
//! tree into a directory (metadata, sparse files, never outside the target),
//! and exporting artifacts as plain files (`restore --to`).

use std::collections::{HashSet, VecDeque};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::os::unix::fs::DirBuilderExt;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use crate::artifact::{Artifact, ArtifactKind};
use crate::error::{Error, Result};
use crate::kit::progress::Progress;
use crate::repo::fetch::ChunkFetcher;
use crate::repo::snapshot::SourceEntry;
use crate::repo::tree::{EntryKind, RawPath, TreeEntry, TreeReader};
use crate::repo::Repository;

/// Entries read ahead of the writer at most (their chunks are fetched
/// ahead within the fetcher's own bounds).
const MAX_QUEUED_ENTRIES: usize = 4096;
/// Sparse detection granularity.
const HOLE_BLOCK: usize = 4096;

/// A reader over a stream artifact's plaintext.
pub fn stream_reader(
    repo: &Arc<Repository>,
    artifact: &Artifact,
) -> impl AsyncRead + Send + Unpin + 'static {
    chunks_reader(repo, artifact.chunks.clone())
}

/// A reader over the plaintext of `chunks` in order (a stream artifact's,
/// or one file's of a tree).
pub fn chunks_reader(
    repo: &Arc<Repository>,
    chunks: Vec<crate::ObjectId>,
) -> impl AsyncRead + Send + Unpin + 'static {
    let stream = repo
        .chunk_stream(chunks)
        .map_err(|e| std::io::Error::other(e.to_string()));
    tokio_util_reader(stream)
}

fn tokio_util_reader<S>(stream: S) -> impl AsyncRead + Send + Unpin + 'static
where
    S: futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    StreamRead {
        inner: Box::pin(stream),
        current: Bytes::new(),
    }
}

struct StreamRead {
    inner: futures::stream::BoxStream<'static, std::io::Result<Bytes>>,
    current: Bytes,
}

impl AsyncRead for StreamRead {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        loop {
            if !self.current.is_empty() {
                let n = self.current.len().min(buf.remaining());
                let part = self.current.split_to(n);
                buf.put_slice(&part);
                return Poll::Ready(Ok(()));
            }
            match self.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(b))) => self.current = b,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Options of a tree restore.
#[derive(Debug, Clone, Default)]
pub struct TreeRestoreOptions {
    /// Overwrite existing entries (and write into a non-empty directory).
    pub force: bool,
    /// Only these paths and what is below them (empty: everything).
    pub paths: Vec<RawPath>,
    /// With `force`: make the restored part identical to the tree by first
    /// removing what is in `dest` but not in the tree — under the selected
    /// paths, or under the tree's top-level entries when there is no
    /// selection. Nothing outside them is touched.
    pub mirror: bool,
    /// With `mirror`: entries the backup would never have held (excluded,
    /// too old, on another filesystem), which are kept.
    pub out_of_scope: Option<OutOfScope>,
}

/// Tells entries outside a source's scope (see
/// [`TreeRestoreOptions::out_of_scope`]): given a path relative to the
/// restore target and its metadata, true keeps it.
#[derive(Clone)]
pub struct OutOfScope(pub Arc<ScopeTest>);

/// The test an [`OutOfScope`] runs.
pub type ScopeTest = dyn Fn(&Path, &fs::Metadata) -> bool + Send + Sync;

impl std::fmt::Debug for OutOfScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutOfScope(..)")
    }
}

/// What a tree restore wrote.
#[derive(Debug, Clone, Default)]
pub struct TreeRestoreStats {
    /// Entries restored.
    pub entries: u64,
    /// Regular files restored.
    pub files: u64,
    /// File bytes written (holes excluded).
    pub bytes: u64,
    /// Entries removed because the tree does not have them (mirror).
    pub removed: u64,
    /// Non-fatal problems (ownership not restorable as non-root, …).
    pub warnings: Vec<String>,
}

/// Whether `path` is one of `filter`, below one, or a directory above one
/// (an empty filter selects everything): the `--path` rule of tree restores.
pub fn selected(path: &RawPath, filter: &[RawPath]) -> bool {
    filter.is_empty()
        || filter.iter().any(|f| {
            path.0 == f.0
                || (path.0.starts_with(&f.0) && path.0.get(f.0.len()) == Some(&b'/'))
                || (f.0.starts_with(&path.0) && f.0.get(path.0.len()) == Some(&b'/'))
        })
}

/// Whether `dir` exists and has any entry.
pub fn dir_is_nonempty(dir: &Path) -> Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(true),
        Err(e) => Err(Error::io("reading", dir, e)),
    }
}

enum Op {
    Entry(Box<TreeEntry>),
    Data(Bytes),
}

/// The filters of `paths` that match no entry of a tree artifact (a `--path`
/// that would restore nothing).
pub async fn unmatched_paths(
    repo: &Arc<Repository>,
    artifact: &Artifact,
    paths: &[RawPath],
) -> Result<Vec<RawPath>> {
    let mut left: Vec<RawPath> = paths.to_vec();
    let mut reader = TreeReader::new(repo.clone(), artifact)?;
    while !left.is_empty() {
        let Some(e) = reader.next_entry().await? else {
            break;
        };
        left.retain(|f| {
            !(e.path.0 == f.0
                || (e.path.0.starts_with(&f.0) && e.path.0.get(f.0.len()) == Some(&b'/')))
        });
    }
    Ok(left)
}

fn path_key(p: &[u8]) -> u64 {
    let h = blake3::hash(p);
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Removes what is under the mirrored part of `dest` but not in the tree
/// (see [`TreeRestoreOptions::mirror`]); returns how many entries went.
async fn remove_extras(
    repo: &Arc<Repository>,
    artifact: &Artifact,
    dest: &Path,
    filter: &[RawPath],
    out_of_scope: Option<OutOfScope>,
) -> Result<u64> {
    let mut keep: HashSet<u64> = HashSet::new();
    let mut scope: Vec<RawPath> = filter.to_vec();
    let mut reader = TreeReader::new(repo.clone(), artifact)?;
    while let Some(e) = reader.next_entry().await? {
        if selected(&e.path, filter) {
            keep.insert(path_key(&e.path.0));
            if filter.is_empty() && !e.path.0.contains(&b'/') {
                scope.push(e.path.clone());
            }
        }
    }
    let dest = dest.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut removed = 0u64;
        let mut stack: Vec<PathBuf> = scope.iter().map(|p| dest.join(p.as_path())).collect();
        while let Some(dir) = stack.pop() {
            let md = match fs::symlink_metadata(&dir) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("reading", &dir, e)),
            };
            if !md.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&dir).map_err(|e| Error::io("reading", &dir, e))? {
                let entry = entry.map_err(|e| Error::io("reading", &dir, e))?;
                let path = entry.path();
                let rel = path.strip_prefix(&dest).unwrap_or(&path);
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if keep.contains(&path_key(rel.as_os_str().as_bytes())) {
                    if is_dir {
                        stack.push(path);
                    }
                    continue;
                }
                if let Some(f) = &out_of_scope {
                    match fs::symlink_metadata(&path) {
                        Ok(md) if (f.0)(rel, &md) => continue,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(Error::io("reading", &path, e)),
                    }
                }
                let r = if is_dir {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                r.map_err(|e| Error::io("removing", &path, e))?;
                removed += 1;
            }
        }
        Ok(removed)
    })
    .await?
}

/// Restores a tree artifact into `dest`. Refuses a non-empty `dest` unless
/// `force`. Every path is checked to stay inside `dest`: entries with unsafe
/// paths are rejected and existing symlinks are never followed.
pub async fn restore_tree(
    repo: &Arc<Repository>,
    artifact: &Artifact,
    dest: &Path,
    opts: &TreeRestoreOptions,
    progress: &Arc<Progress>,
) -> Result<TreeRestoreStats> {
    if dest.as_os_str().is_empty() {
        return Err(Error::Invalid(
            "the restore target is an empty path; name a folder".into(),
        ));
    }
    if !opts.force && dir_is_nonempty(dest)? {
        return Err(Error::TargetNotEmpty(format!(
            "{} is not empty",
            dest.display()
        )));
    }
    let removed = if opts.force && opts.mirror {
        remove_extras(repo, artifact, dest, &opts.paths, opts.out_of_scope.clone()).await?
    } else {
        0
    };
    fs::create_dir_all(dest).map_err(|e| Error::io("creating", dest, e))?;
    let (tx, rx) = mpsc::channel::<Op>(32);
    let writer = {
        let dest = dest.to_path_buf();
        let force = opts.force;
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || TreeWriterFs::new(dest, force, progress).run(rx))
    };
    let produced: Result<()> = async {
        let mut content = TreeContent::new(repo.clone(), artifact, &opts.paths)?;
        while let Some(item) = content.next().await? {
            let op = match item {
                TreeItem::Entry(e) => {
                    if e.kind == EntryKind::File && e.hardlink.is_none() {
                        progress.add_total(e.size);
                    }
                    Op::Entry(e)
                }
                TreeItem::Data(d) => Op::Data(d),
            };
            if tx.send(op).await.is_err() {
                break; // the writer stopped; its error is reported below
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let written = writer.await?;
    let mut stats = written?;
    produced?;
    stats.removed = removed;
    Ok(stats)
}

/// One item of [`TreeContent`].
#[derive(Debug)]
pub enum TreeItem {
    /// The next selected entry.
    Entry(Box<TreeEntry>),
    /// The next piece of the last file entry's content.
    Data(Bytes),
}

/// A tree artifact's selected entries in order, each file followed by its
/// content; the content of the files ahead is read in coalesced ranges
/// while the consumer works (see [`ChunkFetcher`]).
#[derive(Debug)]
pub struct TreeContent {
    reader: TreeReader,
    fetcher: ChunkFetcher,
    filter: Vec<RawPath>,
    queue: VecDeque<Pending>,
    entries_done: bool,
}

#[derive(Debug)]
enum Pending {
    Entry(Box<TreeEntry>),
    /// This many chunks, from the fetcher.
    Chunks(usize),
}

impl TreeContent {
    /// The entries of `artifact` that `filter` selects (see [`selected`]).
    pub fn new(repo: Arc<Repository>, artifact: &Artifact, filter: &[RawPath]) -> Result<Self> {
        Ok(TreeContent {
            reader: TreeReader::new(repo.clone(), artifact)?,
            fetcher: ChunkFetcher::new(repo),
            filter: filter.to_vec(),
            queue: VecDeque::new(),
            entries_done: false,
        })
    }

    /// The next item, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<TreeItem>> {
        while !self.entries_done && !self.fetcher.is_full() && self.queue.len() < MAX_QUEUED_ENTRIES
        {
            match self.reader.next_entry().await? {
                None => self.entries_done = true,
                Some(e) if selected(&e.path, &self.filter) => {
                    for id in &e.chunks {
                        self.fetcher.push(*id).await?;
                    }
                    let chunks = e.chunks.len();
                    self.queue.push_back(Pending::Entry(Box::new(e)));
                    if chunks > 0 {
                        self.queue.push_back(Pending::Chunks(chunks));
                    }
                }
                Some(_) => {}
            }
        }
        match self.queue.pop_front() {
            None => Ok(None),
            Some(Pending::Entry(e)) => Ok(Some(TreeItem::Entry(e))),
            Some(Pending::Chunks(n)) => {
                if n > 1 {
                    self.queue.push_front(Pending::Chunks(n - 1));
                }
                let data = self.fetcher.next().await?.ok_or_else(|| {
                    Error::Invalid("restore: fewer chunks fetched than asked for".into())
                })?;
                Ok(Some(TreeItem::Data(data)))
            }
        }
    }
}

struct OpenFile {
    file: File,
    path: PathBuf,
    entry: TreeEntry,
    pos: u64,
}

struct TreeWriterFs {
    dest: PathBuf,
    force: bool,
    is_root: bool,
    progress: Arc<Progress>,
    verified: HashSet<PathBuf>,
    dirs: Vec<(PathBuf, TreeEntry)>,
    current: Option<OpenFile>,
    stats: TreeRestoreStats,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(op, path, e)
}

impl TreeWriterFs {
    fn new(dest: PathBuf, force: bool, progress: Arc<Progress>) -> Self {
        TreeWriterFs {
            verified: HashSet::from([dest.clone()]),
            dest,
            force,
            // SAFETY: geteuid has no preconditions.
            is_root: unsafe { libc::geteuid() } == 0,
            progress,
            dirs: Vec::new(),
            current: None,
            stats: TreeRestoreStats::default(),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Op>) -> Result<TreeRestoreStats> {
        while let Some(op) = rx.blocking_recv() {
            match op {
                Op::Entry(e) => {
                    self.finish_file()?;
                    self.begin(*e)?;
                }
                Op::Data(b) => self.write(&b)?,
            }
        }
        self.finish_file()?;
        // Deepest directories first, so setting a parent's mtime is last.
        for (path, e) in std::mem::take(&mut self.dirs).into_iter().rev() {
            self.apply_meta(&path, &e)?;
        }
        Ok(self.stats)
    }

    /// Makes sure every directory between the target and `dir` is a real
    /// directory (never a symlink), creating missing ones.
    fn ensure_dir(&mut self, dir: &Path) -> Result<()> {
        if self.verified.contains(dir) {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            if dir != self.dest {
                self.ensure_dir(parent)?;
            }
        }
        match fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                if !self.force {
                    return Err(Error::TargetNotEmpty(format!(
                        "{} exists and is not a directory",
                        dir.display()
                    )));
                }
                fs::remove_file(dir).map_err(io_err("removing", dir))?;
                fs::create_dir(dir).map_err(io_err("creating directory", dir))?;
            }
            Err(_) => fs::create_dir(dir).map_err(io_err("creating directory", dir))?,
        }
        self.verified.insert(dir.to_path_buf());
        Ok(())
    }

    /// Removes whatever is at `path` (with `force`), so a new entry can be created.
    fn clear(&self, path: &Path, keep_dir: bool) -> Result<()> {
        let Ok(m) = fs::symlink_metadata(path) else {
            return Ok(());
        };
        if keep_dir && m.is_dir() {
            return Ok(());
        }
        if !self.force {
            return Err(Error::TargetNotEmpty(format!(
                "{} already exists",
                path.display()
            )));
        }
        if m.is_dir() {
            fs::remove_dir_all(path).map_err(io_err("removing", path))
        } else {
            fs::remove_file(path).map_err(io_err("removing", path))
        }
    }

    fn begin(&mut self, e: TreeEntry) -> Result<()> {
        if !e.path.is_safe() {
            return Err(Error::corrupt(
                "tree listing",
                format!("unsafe path `{}`", e.path.display()),
            ));
        }
        let path = self.dest.join(e.path.as_path());
        let parent = path.parent().unwrap_or(&self.dest).to_path_buf();
        self.ensure_dir(&parent)?;
        self.stats.entries += 1;
        self.progress.add_item();
        match e.kind {
            EntryKind::Dir => {
                self.clear(&path, true)?;
                if fs::symlink_metadata(&path).is_err() {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&path)
                        .map_err(io_err("creating directory", &path))?;
                }
                self.verified.insert(path.clone());
                self.dirs.push((path, e));
            }
            EntryKind::File if e.hardlink.is_some() => {
                self.clear(&path, false)?;
                let first = e.hardlink.as_ref().expect("checked");
                if !first.is_safe() {
                    return Err(Error::corrupt(
                        "tree listing",
                        format!("unsafe link `{}`", first.display()),
                    ));
                }
                let original = self.dest.join(first.as_path());
                match std::fs::hard_link(&original, &path) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                        self.stats.warnings.push(format!(
                            "{}: hard link to {} not restored (its first name was not restored)",
                            path.display(),
                            first.display()
                        ))
                    }
                    Err(err) => return Err(Error::io("creating hard link", &path, err)),
                }
            }
            EntryKind::File => {
                self.clear(&path, false)?;
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(io_err("creating", &path))?;
                self.stats.files += 1;
                self.current = Some(OpenFile {
                    file,
                    path,
                    entry: e,
                    pos: 0,
                });
            }
            EntryKind::Symlink => {
                self.clear(&path, false)?;
                let target = e
                    .target
                    .as_ref()
                    .ok_or_else(|| Error::corrupt("tree listing", "symlink without target"))?;
                std::os::unix::fs::symlink(target.as_path(), &path)
                    .map_err(io_err("creating symlink", &path))?;
                if self.is_root {
                    std::os::unix::fs::lchown(&path, Some(e.uid), Some(e.gid))
                        .map_err(io_err("chown", &path))?;
                }
                self.stats
                    .warnings
                    .extend(crate::kit::xattr::write(&path, &e.xattrs));
                let t = mtime(&e);
                filetime::set_symlink_file_times(&path, t, t)
                    .map_err(io_err("setting times", &path))?;
            }
            EntryKind::Fifo | EntryKind::Char | EntryKind::Block => {
                self.clear(&path, false)?;
                let kind_bits = match e.kind {
                    EntryKind::Fifo => libc::S_IFIFO,
                    EntryKind::Char => libc::S_IFCHR,
                    _ => libc::S_IFBLK,
                };
                if e.kind != EntryKind::Fifo && !self.is_root {
                    self.stats.warnings.push(format!(
                        "{}: device nodes can only be restored as root; skipped",
                        path.display()
                    ));
                    return Ok(());
                }
                let c = CString::new(path.as_os_str().as_bytes())
                    .map_err(|_| Error::corrupt("tree listing", "path with NUL"))?;
                // SAFETY: `c` is a valid NUL-terminated path.
                let rc = unsafe {
                    libc::mknod(
                        c.as_ptr(),
                        kind_bits | 0o600,
                        e.rdev.unwrap_or(0) as libc::dev_t,
                    )
                };
                if rc != 0 {
                    return Err(Error::io(
                        "creating special file",
                        &path,
                        std::io::Error::last_os_error(),
                    ));
                }
                self.apply_meta(&path, &e)?;
            }
        }
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        let f = self
            .current
            .as_mut()
            .ok_or_else(|| Error::Task("data without a file".into()))?;
        use std::os::unix::fs::FileExt;
        // Write runs of non-zero blocks; all-zero blocks stay holes.
        let mut i = 0;
        while i < data.len() {
            let end = (i + HOLE_BLOCK).min(data.len());
            if data[i..end].iter().all(|&b| b == 0) {
                i = end;
                continue;
            }
            let mut j = end;
            while j < data.len() {
                let e2 = (j + HOLE_BLOCK).min(data.len());
                if data[j..e2].iter().all(|&b| b == 0) {
                    break;
                }
                j = e2;
            }
            f.file
                .write_all_at(&data[i..j], f.pos + i as u64)
                .map_err(|e| Error::io("writing", &f.path, e))?;
            i = j;
        }
        f.pos += data.len() as u64;
        self.stats.bytes += data.len() as u64;
        self.progress.add_bytes(data.len() as u64);
        Ok(())
    }

    fn finish_file(&mut self) -> Result<()> {
        let Some(mut f) = self.current.take() else {
            return Ok(());
        };
        if f.pos != f.entry.size {
            return Err(Error::corrupt(
                format!("file {}", f.entry.path.display()),
                format!("restored {} bytes, expected {}", f.pos, f.entry.size),
            ));
        }
        f.file
            .set_len(f.pos)
            .map_err(|e| Error::io("truncating", &f.path, e))?;
        f.file
            .flush()
            .map_err(|e| Error::io("writing", &f.path, e))?;
        let _ = f.file.seek(SeekFrom::Start(0));
        if self.is_root {
            std::os::unix::fs::fchown(&f.file, Some(f.entry.uid), Some(f.entry.gid))
                .map_err(io_err("chown", &f.path))?;
        }
        f.file
            .set_permissions(fs::Permissions::from_mode(f.entry.mode & 0o7777))
            .map_err(io_err("chmod", &f.path))?;
        // After chmod, which would rewrite an ACL's mask.
        self.stats
            .warnings
            .extend(crate::kit::xattr::write(&f.path, &f.entry.xattrs));
        let t = mtime(&f.entry);
        filetime::set_file_handle_times(&f.file, Some(t), Some(t))
            .map_err(io_err("setting times", &f.path))?;
        Ok(())
    }

    fn apply_meta(&mut self, path: &Path, e: &TreeEntry) -> Result<()> {
        if self.is_root {
            std::os::unix::fs::lchown(path, Some(e.uid), Some(e.gid))
                .map_err(io_err("chown", path))?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(e.mode & 0o7777))
            .map_err(io_err("chmod", path))?;
        self.stats
            .warnings
            .extend(crate::kit::xattr::write(path, &e.xattrs));
        let t = mtime(e);
        // Never opens the entry (a FIFO would block): utimensat on the path.
        filetime::set_symlink_file_times(path, t, t).map_err(io_err("setting times", path))
    }
}

fn mtime(e: &TreeEntry) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(
        e.mtime_ns.div_euclid(1_000_000_000),
        e.mtime_ns.rem_euclid(1_000_000_000) as u32,
    )
}

/// Writes a stream artifact to `path` (refusing an existing file unless `force`).
pub async fn write_stream_file(
    repo: &Arc<Repository>,
    artifact: &Artifact,
    path: &Path,
    force: bool,
    progress: &Arc<Progress>,
) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    if !force && fs::symlink_metadata(path).is_ok() {
        return Err(Error::TargetNotEmpty(format!(
            "{} already exists",
            path.display()
        )));
    }
    progress.add_total(artifact.size);
    let tmp = path.with_extension("respaldo-partial");
    let mut out = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| Error::io("creating", &tmp, e))?;
    let mut chunks = repo.chunk_stream(artifact.chunks.clone());
    while let Some(b) = chunks.next().await {
        let b = b?;
        out.write_all(&b)
            .await
            .map_err(|e| Error::io("writing", &tmp, e))?;
        progress.add_bytes(b.len() as u64);
    }
    out.sync_all()
        .await
        .map_err(|e| Error::io("writing", &tmp, e))?;
    drop(out);
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| Error::io("renaming", path, e))
}

/// `restore --to DIR`: writes a source's artifacts as plain files under
/// `DIR/<source>/<artifact>` (a stream as a file, a tree as a directory).
pub async fn export_source(
    repo: &Arc<Repository>,
    source: &str,
    entry: &SourceEntry,
    dir: &Path,
    opts: &TreeRestoreOptions,
    progress: &Arc<Progress>,
) -> Result<Vec<PathBuf>> {
    let plain = |n: &str| !n.is_empty() && !n.contains('/') && n != "." && n != "..";
    if !plain(source) || entry.artifacts.iter().any(|a| !plain(&a.name)) {
        return Err(Error::corrupt(
            format!("source `{source}`"),
            "source or artifact name is not a plain file name; refusing to write outside the target",
        ));
    }
    let base = dir.join(source);
    fs::create_dir_all(&base).map_err(|e| Error::io("creating", &base, e))?;
    let mut written = Vec::new();
    for a in &entry.artifacts {
        let path = base.join(&a.name);
        match a.kind {
            ArtifactKind::Stream => write_stream_file(repo, a, &path, opts.force, progress).await?,
            ArtifactKind::Tree => {
                restore_tree(repo, a, &path, opts, progress).await?;
            }
        }
        written.push(path);
    }
    Ok(written)
}
