//! The walker: a blocking thread that lists and reads files and sends what it
//! finds to the async side over a bounded channel (backpressure).

use crate::FilesError;
use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use respaldo_core::repo::tree::{EntryKind, RawPath, TreeEntry, TreeWriter};
use respaldo_core::source::BackupContext;
use tokio::sync::mpsc;

const READ_BLOCK: usize = 1024 * 1024;
static ZEROS: [u8; READ_BLOCK] = [0; READ_BLOCK];

/// Exclude patterns, plus absolute paths that are never backed up (the
/// repository itself when it lies inside a backed-up folder).
#[derive(Debug)]
pub(crate) struct Filter {
    names: GlobSet,
    paths: GlobSet,
    pub(crate) absolute: Vec<PathBuf>,
}

impl Filter {
    pub(crate) fn new(patterns: &[String]) -> Result<Self, FilesError> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let glob = GlobBuilder::new(p.trim_end_matches('/'))
                .literal_separator(true)
                .build()
                .map_err(|e| FilesError::Config(format!("exclude pattern `{p}`: {e}")))?;
            if p.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        Ok(Filter {
            names: names
                .build()
                .map_err(|e| FilesError::Config(e.to_string()))?,
            paths: paths
                .build()
                .map_err(|e| FilesError::Config(e.to_string()))?,
            absolute: Vec::new(),
        })
    }

    /// Whether `path` (absolute) is one of the folders never backed up.
    pub(crate) fn excluded_absolute(&self, path: &Path) -> bool {
        self.absolute.iter().any(|a| path.starts_with(a))
    }

    pub(crate) fn excluded(&self, rel_root: &Path, rel_top: &Path) -> bool {
        let name_hit = rel_root
            .file_name()
            .map(|n| self.names.is_match(n))
            .unwrap_or(false);
        name_hit || self.paths.is_match(rel_root) || self.paths.is_match(rel_top)
    }
}

pub(crate) struct WalkOptions {
    pub paths: Vec<PathBuf>,
    pub root: PathBuf,
    pub filter: Arc<Filter>,
    pub min_mtime: Option<SystemTime>,
    pub one_file_system: bool,
    pub parent: HashMap<RawPath, TreeEntry>,
}

#[derive(Debug, Default)]
pub(crate) struct WalkStats {
    pub files: u64,
    pub files_read: u64,
    pub files_unchanged: u64,
    pub bytes_read: u64,
}

enum Msg {
    Entry(TreeEntry),
    FileStart(TreeEntry),
    Data(Bytes),
    FileEnd { changed: bool },
    Warning(String),
}

struct Walker {
    opts: WalkOptions,
    tx: mpsc::Sender<Msg>,
    stats: WalkStats,
    /// First name of each multiply-linked file, by (device, inode).
    links: HashMap<(u64, u64), RawPath>,
}

fn ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

fn entry_from(rel: RawPath, m: &Metadata) -> Option<TreeEntry> {
    let ft = m.file_type();
    let kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_char_device() {
        EntryKind::Char
    } else if ft.is_block_device() {
        EntryKind::Block
    } else {
        return None; // sockets: recreated by their servers, not restorable
    };
    Some(TreeEntry {
        path: rel,
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: ns(m.mtime(), m.mtime_nsec()),
        ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        ino: m.ino(),
        size: if kind == EntryKind::File { m.size() } else { 0 },
        target: None,
        rdev: matches!(kind, EntryKind::Char | EntryKind::Block).then(|| m.rdev()),
        chunks: Vec::new(),
        sha256: None,
        hardlink: None,
        changed_during_backup: false,
        xattrs: Vec::new(),
    })
}

/// Stops the walk when the async side has gone away.
struct Closed;

impl Walker {
    fn send(&self, msg: Msg) -> Result<(), Closed> {
        self.tx.blocking_send(msg).map_err(|_| Closed)
    }

    fn warn(&self, msg: String) -> Result<(), Closed> {
        self.send(Msg::Warning(msg))
    }

    fn walk(&mut self) -> Result<Result<(), FilesError>, Closed> {
        let paths = self.opts.paths.clone();
        for top in &paths {
            let m = match std::fs::symlink_metadata(top) {
                Ok(m) => m,
                Err(source) => {
                    return Ok(Err(FilesError::Io {
                        path: top.clone(),
                        source,
                    }))
                }
            };
            let dev = m.dev();
            self.visit(top, top, m, dev)?;
        }
        Ok(Ok(()))
    }

    fn visit(&mut self, path: &Path, top: &Path, m: Metadata, dev: u64) -> Result<(), Closed> {
        let rel_root = path.strip_prefix(&self.opts.root).unwrap_or(path);
        let rel_top = path.strip_prefix(top).unwrap_or(path);
        if path != top && self.opts.filter.excluded(rel_root, rel_top) {
            return Ok(());
        }
        if self.opts.filter.excluded_absolute(path) {
            return Ok(());
        }
        let Some(mut entry) = entry_from(RawPath::from_path(rel_root), &m) else {
            return Ok(());
        };
        match respaldo_core::kit::xattr::read(path) {
            Ok(x) => entry.xattrs = x,
            Err(e) => self.warn(format!(
                "cannot read the extended attributes of {}: {e}",
                path.display()
            ))?,
        }
        match entry.kind {
            EntryKind::Dir => {
                self.send(Msg::Entry(entry))?;
                if self.opts.one_file_system && m.dev() != dev {
                    return Ok(());
                }
                let mut children: Vec<(std::ffi::OsString, PathBuf)> = match std::fs::read_dir(path)
                {
                    Ok(rd) => rd
                        .filter_map(|e| e.ok())
                        .map(|e| (e.file_name(), e.path()))
                        .collect(),
                    Err(e) => {
                        return self.warn(format!("cannot list {}: {e}; skipped", path.display()))
                    }
                };
                children.sort();
                for (_, child) in children {
                    match std::fs::symlink_metadata(&child) {
                        Ok(cm) => self.visit(&child, top, cm, dev)?,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // vanished
                        Err(e) => {
                            self.warn(format!("cannot stat {}: {e}; skipped", child.display()))?
                        }
                    }
                }
                Ok(())
            }
            EntryKind::Symlink => {
                match std::fs::read_link(path) {
                    Ok(t) => entry.target = Some(RawPath::from_path(&t)),
                    Err(e) => {
                        return self
                            .warn(format!("cannot read link {}: {e}; skipped", path.display()))
                    }
                }
                self.send(Msg::Entry(entry))
            }
            EntryKind::File => self.file(path, entry, &m),
            _ => self.send(Msg::Entry(entry)),
        }
    }

    fn file(&mut self, path: &Path, mut entry: TreeEntry, m: &Metadata) -> Result<(), Closed> {
        if let Some(min) = self.opts.min_mtime {
            if m.modified().map(|t| t < min).unwrap_or(false) {
                return Ok(());
            }
        }
        if m.nlink() > 1 {
            let key = (m.dev(), m.ino());
            if let Some(first) = self.links.get(&key) {
                entry.hardlink = Some(first.clone());
                return self.send(Msg::Entry(entry));
            }
        }
        let link_key = (m.nlink() > 1).then(|| (m.dev(), m.ino()));
        self.stats.files += 1;
        if let Some(parent) = self.opts.parent.get(&entry.path) {
            if entry.unchanged_since(parent) {
                entry.chunks = parent.chunks.clone();
                entry.sha256 = parent.sha256;
                self.stats.files_unchanged += 1;
                if let Some(k) = link_key {
                    self.links.insert(k, entry.path.clone());
                }
                return self.send(Msg::Entry(entry));
            }
        }
        let mut f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return self.warn(format!("cannot read {}: {e}; skipped", path.display())),
        };
        // Registered only once the first name is really stored.
        if let Some(k) = link_key {
            self.links.insert(k, entry.path.clone());
        }
        self.stats.files_read += 1;
        self.send(Msg::FileStart(entry.clone()))?;
        let mut pos: u64 = 0;
        let mut failed = None;
        loop {
            // Skip holes without reading them: they read as zeros anyway.
            if let Some(data_at) = next_data(&f, pos, m.size()) {
                while pos < data_at {
                    let n = ((data_at - pos) as usize).min(READ_BLOCK);
                    self.send(Msg::Data(Bytes::from_static(&ZEROS[..n])))?;
                    pos += n as u64;
                }
                if let Err(e) = std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(pos)) {
                    failed = Some(e);
                    break;
                }
            }
            // A fresh buffer sized to what is left, handed over without a copy.
            let want = (m.size().saturating_sub(pos) as usize).clamp(4096, READ_BLOCK);
            let mut buf = vec![0u8; want];
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    pos += n as u64;
                    self.stats.bytes_read += n as u64;
                    buf.truncate(n);
                    self.send(Msg::Data(Bytes::from(buf)))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let after = f.metadata().ok();
        let changed = failed.is_some()
            || after.as_ref().is_none_or(|a| {
                a.size() != m.size()
                    || ns(a.mtime(), a.mtime_nsec()) != entry.mtime_ns
                    || ns(a.ctime(), a.ctime_nsec()) != entry.ctime_ns
            });
        if let Some(e) = failed {
            self.warn(format!(
                "error reading {}: {e}; stored what could be read, flagged as inconsistent",
                path.display()
            ))?;
        } else if changed {
            self.warn(format!(
                "{} changed while it was being read; stored and flagged as possibly inconsistent",
                path.display()
            ))?;
        }
        self.send(Msg::FileEnd { changed })
    }
}

/// Where the next data after `pos` starts (`SEEK_DATA`), if that is past `pos`.
fn next_data(f: &File, pos: u64, size: u64) -> Option<u64> {
    if pos >= size {
        return None;
    }
    // SAFETY: lseek on a valid descriptor; it moves the file offset, which the
    // caller resets with an explicit seek.
    let r = unsafe { libc::lseek(f.as_raw_fd(), pos as libc::off_t, libc::SEEK_DATA) };
    if r < 0 {
        // ENXIO: only a hole until the end.
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
            return Some(size);
        }
        return None;
    }
    let r = r as u64;
    (r > pos).then_some(r.min(size))
}

/// Walks the configured paths into `tree`.
pub(crate) async fn run(
    opts: WalkOptions,
    tree: &mut TreeWriter,
    ctx: &mut BackupContext,
) -> Result<WalkStats, FilesError> {
    let (tx, mut rx) = mpsc::channel::<Msg>(8);
    let handle = tokio::task::spawn_blocking(move || {
        let mut w = Walker {
            opts,
            tx,
            stats: WalkStats::default(),
            links: HashMap::new(),
        };
        let r = w.walk();
        (r, w.stats)
    });
    let consumed: Result<(), FilesError> = async {
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Entry(e) => tree.add(e).await?,
                Msg::Warning(w) => ctx.warn(w),
                Msg::FileStart(e) => {
                    ctx.progress().set_current(e.path.display());
                    let mut fw = tree.begin_file(e);
                    let mut changed = None;
                    while let Some(m) = rx.recv().await {
                        match m {
                            Msg::Data(b) => fw.write(&b).await?,
                            Msg::FileEnd { changed: c } => {
                                changed = Some(c);
                                break;
                            }
                            Msg::Warning(w) => ctx.warn(w),
                            Msg::Entry(_) | Msg::FileStart(_) => {
                                return Err(FilesError::Config(
                                    "internal: walker protocol error".into(),
                                ))
                            }
                        }
                    }
                    let Some(changed) = changed else { break };
                    fw.finish(|e| e.changed_during_backup = changed).await?;
                }
                Msg::Data(_) | Msg::FileEnd { .. } => {
                    return Err(FilesError::Config("internal: walker protocol error".into()))
                }
            }
        }
        Ok(())
    }
    .await;
    drop(rx);
    let (walked, stats) = handle.await.map_err(respaldo_core::Error::from)?;
    consumed?;
    match walked {
        Ok(r) => r?,
        Err(Closed) => return Err(FilesError::Config("internal: walk interrupted".into())),
    }
    Ok(stats)
}
