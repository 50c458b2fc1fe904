//! Tar streams of the archive endpoints to and from file trees.
//!
//! Backup: the engine's `GET /containers/{id}/archive` stream is parsed by the
//! `tar` crate on a blocking thread and sent, file by file and block by block,
//! to the async side that feeds the [`TreeWriter`]. Restore: a tar stream is
//! written from the tree's [`TreeContent`] (entries in order, file content
//! read ahead in coalesced ranges) straight into a pipe whose other end is
//! the body of `PUT /containers/{id}/archive`.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use respaldo_core::artifact::Artifact;
use respaldo_core::repo::tar_stream::{count_entry, write_tar, RootHeader, TarLayout, TarStats};
use respaldo_core::repo::tree::{EntryKind, RawPath, TreeEntry, TreeWriter};
use respaldo_core::repo::Repository;
use respaldo_core::source::BackupContext;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::DockerError;

/// Where helper containers mount the volume; tar entries are named under it.
pub(crate) const MOUNT: &str = "volume";
const BLOCK: usize = 1024 * 1024;

/// Owner and mode of the volume's root directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RootMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

/// Counts per entry type.
pub(crate) type Counts = BTreeMap<String, u64>;

enum Msg {
    Root(RootMeta),
    Entry(TreeEntry),
    FileStart(TreeEntry),
    Data(Bytes),
    FileEnd,
}

/// Strips the mount point from a tar name: `None` for the root itself.
fn relative(name: &[u8]) -> Result<Option<RawPath>, DockerError> {
    let name = name.strip_suffix(b"/").unwrap_or(name);
    if name == MOUNT.as_bytes() {
        return Ok(None);
    }
    match name.strip_prefix(MOUNT.as_bytes()) {
        Some(rest) if rest.first() == Some(&b'/') => Ok(Some(RawPath(rest[1..].to_vec()))),
        _ => Err(DockerError::Archive(format!(
            "unexpected entry `{}` in the engine's archive",
            String::from_utf8_lossy(name)
        ))),
    }
}

/// The extended attributes a tar entry carries as PAX records
/// (`SCHILY.xattr.NAME`; the engine exports file capabilities this way).
fn pax_xattrs(e: &mut tar::Entry<'_, impl Read>) -> Vec<respaldo_core::kit::xattr::Xattr> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = e.pax_extensions() {
        for ext in exts.flatten() {
            if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                out.push(respaldo_core::kit::xattr::Xattr {
                    name: name.to_string(),
                    value: ext.value_bytes().to_vec(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Converts one tar header into a tree entry (content not set).
fn entry_of(path: RawPath, e: &mut tar::Entry<'_, impl Read>) -> Result<TreeEntry, DockerError> {
    let xattrs = pax_xattrs(e);
    let h = e.header();
    let shown = path.display();
    let bad = |what: &str| DockerError::Archive(format!("{shown}: bad {what}"));
    let link = || -> Result<Option<RawPath>, DockerError> {
        Ok(e.link_name_bytes().map(|l| RawPath(l.into_owned())))
    };
    let mut entry = TreeEntry {
        kind: EntryKind::File,
        mode: h.mode().map_err(|_| bad("mode"))? & 0o7777,
        uid: h.uid().map_err(|_| bad("uid"))? as u32,
        gid: h.gid().map_err(|_| bad("gid"))? as u32,
        mtime_ns: (h.mtime().map_err(|_| bad("mtime"))? as i64).saturating_mul(1_000_000_000),
        ctime_ns: 0,
        ino: 0,
        size: 0,
        target: None,
        rdev: None,
        chunks: Vec::new(),
        sha256: None,
        hardlink: None,
        changed_during_backup: false,
        xattrs,
        path,
    };
    use tar::EntryType as T;
    match h.entry_type() {
        T::Regular | T::Continuous => entry.size = h.size().map_err(|_| bad("size"))?,
        T::Directory => entry.kind = EntryKind::Dir,
        T::Symlink => {
            entry.kind = EntryKind::Symlink;
            entry.target = link()?;
        }
        T::Link => {
            let target = link()?.ok_or_else(|| bad("hard link"))?;
            entry.hardlink = relative(&target.0)?;
            if entry.hardlink.is_none() {
                return Err(bad("hard link"));
            }
        }
        T::Fifo => entry.kind = EntryKind::Fifo,
        t @ (T::Char | T::Block) => {
            entry.kind = if t == T::Char {
                EntryKind::Char
            } else {
                EntryKind::Block
            };
            let major = h.device_major().ok().flatten().unwrap_or(0);
            let minor = h.device_minor().ok().flatten().unwrap_or(0);
            entry.rdev = Some(libc::makedev(major, minor));
        }
        other => {
            return Err(DockerError::Archive(format!(
                "{}: unsupported tar entry type {other:?}",
                entry.path.display()
            )))
        }
    }
    Ok(entry)
}

fn parse(reader: impl Read, tx: mpsc::Sender<Msg>) -> Result<(), DockerError> {
    let send = |m: Msg| {
        tx.blocking_send(m)
            .map_err(|_| DockerError::Archive("the copy was interrupted".into()))
    };
    let io = |e: std::io::Error| DockerError::Archive(format!("reading the engine's archive: {e}"));
    let mut ar = tar::Archive::new(reader);
    for e in ar.entries().map_err(io)? {
        let mut e = e.map_err(io)?;
        let Some(path) = relative(&e.path_bytes())? else {
            let h = e.header();
            send(Msg::Root(RootMeta {
                mode: h.mode().unwrap_or(0o755) & 0o7777,
                uid: h.uid().unwrap_or(0) as u32,
                gid: h.gid().unwrap_or(0) as u32,
                mtime: h.mtime().unwrap_or(0) as i64,
            }))?;
            continue;
        };
        let entry = entry_of(path, &mut e)?;
        if entry.kind != EntryKind::File || entry.hardlink.is_some() {
            send(Msg::Entry(entry))?;
            continue;
        }
        send(Msg::FileStart(entry))?;
        loop {
            let mut buf = vec![0u8; BLOCK];
            let n = e.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            send(Msg::Data(Bytes::from(buf)))?;
        }
        send(Msg::FileEnd)?;
    }
    Ok(())
}

/// The engine's tar stream as a blocking reader (for a blocking thread).
fn blocking_reader<S>(stream: S) -> impl Read + Send + 'static
where
    S: Stream<Item = Result<Bytes, bollard::errors::Error>> + Send + 'static,
{
    let stream = Box::pin(stream.map(|r| r.map_err(std::io::Error::other)));
    SyncIoBridge::new(StreamReader::new(stream))
}

/// What was read from a volume.
#[derive(Debug, Default)]
pub(crate) struct ReadStats {
    pub root: RootMeta,
    pub counts: Counts,
    pub bytes: u64,
}

/// Reads the engine's archive of a volume into `tree`.
pub(crate) async fn read_into_tree<S>(
    stream: S,
    tree: &mut TreeWriter,
    ctx: &mut BackupContext,
) -> Result<ReadStats, DockerError>
where
    S: Stream<Item = Result<Bytes, bollard::errors::Error>> + Send + 'static,
{
    let reader = blocking_reader(stream);
    let (tx, mut rx) = mpsc::channel::<Msg>(8);
    let handle = tokio::task::spawn_blocking(move || parse(reader, tx));
    let mut stats = ReadStats::default();
    let consumed: Result<(), DockerError> = async {
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Root(r) => stats.root = r,
                Msg::Entry(e) => {
                    count_entry(&mut stats.counts, e.kind, e.hardlink.is_some());
                    tree.add(e).await?;
                }
                Msg::FileStart(e) => {
                    count_entry(&mut stats.counts, e.kind, false);
                    ctx.progress().set_current(e.path.display());
                    let mut fw = tree.begin_file(e);
                    let mut ended = false;
                    while let Some(m) = rx.recv().await {
                        match m {
                            Msg::Data(b) => {
                                stats.bytes += b.len() as u64;
                                fw.write(&b).await?;
                            }
                            Msg::FileEnd => {
                                ended = true;
                                break;
                            }
                            _ => return Err(DockerError::Archive("internal: protocol".into())),
                        }
                    }
                    if !ended {
                        break;
                    }
                    fw.finish(|_| {}).await?;
                }
                Msg::Data(_) | Msg::FileEnd => {
                    return Err(DockerError::Archive("internal: protocol".into()))
                }
            }
        }
        Ok(())
    }
    .await;
    drop(rx);
    let parsed = handle
        .await
        .map_err(|e| DockerError::Archive(format!("archive reader: {e}")))?;
    consumed?;
    parsed?;
    let s = ctx.stats_mut();
    s.files_read += stats.counts.get("files").copied().unwrap_or(0);
    s.bytes_read += stats.bytes;
    Ok(stats)
}

/// Reads a volume's archive and returns the counts and each regular file's
/// SHA-256 (for checking a restore), of the entries `paths` selects (all when
/// empty).
pub(crate) async fn scan<S>(
    stream: S,
    paths: Vec<RawPath>,
) -> Result<(Counts, BTreeMap<RawPath, [u8; 32]>), DockerError>
where
    S: Stream<Item = Result<Bytes, bollard::errors::Error>> + Send + 'static,
{
    let reader = blocking_reader(stream);
    tokio::task::spawn_blocking(move || {
        let io =
            |e: std::io::Error| DockerError::Archive(format!("reading the engine's archive: {e}"));
        let mut counts = Counts::new();
        let mut hashes = BTreeMap::new();
        let mut ar = tar::Archive::new(reader);
        for e in ar.entries().map_err(io)? {
            let mut e = e.map_err(io)?;
            let Some(path) = relative(&e.path_bytes())? else {
                continue;
            };
            if !respaldo_core::repo::extract::selected(&path, &paths) {
                continue;
            }
            let entry = entry_of(path, &mut e)?;
            count_entry(&mut counts, entry.kind, entry.hardlink.is_some());
            if entry.kind == EntryKind::File && entry.hardlink.is_none() {
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = e.read(&mut buf).map_err(io)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                hashes.insert(entry.path, h.finalize().into());
            }
        }
        Ok((counts, hashes))
    })
    .await
    .map_err(|e| DockerError::Archive(format!("archive reader: {e}")))?
}

/// Whether the volume's archive holds anything besides its root (only the
/// first entries are read).
pub(crate) async fn has_content<S>(stream: S) -> Result<bool, DockerError>
where
    S: Stream<Item = Result<Bytes, bollard::errors::Error>> + Send + 'static,
{
    let reader = blocking_reader(stream);
    tokio::task::spawn_blocking(move || {
        let io =
            |e: std::io::Error| DockerError::Archive(format!("reading the engine's archive: {e}"));
        let mut ar = tar::Archive::new(reader);
        for e in ar.entries().map_err(io)? {
            if relative(&e.map_err(io)?.path_bytes())?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    })
    .await
    .map_err(|e| DockerError::Archive(format!("archive reader: {e}")))?
}

/// Writes the tar stream of a tree artifact (entries under `volume/`, the
/// root's own metadata first) into `w`; with `paths`, only those paths and
/// what is below them.
pub(crate) async fn write_tree<W: AsyncWrite + Unpin>(
    repo: &Arc<Repository>,
    artifact: &Artifact,
    root: RootMeta,
    paths: &[RawPath],
    w: W,
) -> Result<TarStats, DockerError> {
    let layout = TarLayout {
        prefix: Some(MOUNT.to_string()),
        root: Some(RootHeader {
            mode: root.mode,
            uid: root.uid,
            gid: root.gid,
            mtime: root.mtime,
        }),
    };
    write_tar(repo, artifact, paths, &layout, w)
        .await
        .map_err(|e| DockerError::Archive(format!("sending the archive: {e}")))
}
