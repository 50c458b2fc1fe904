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
use respaldo_core::repo::extract::{TreeContent, TreeItem};
use respaldo_core::repo::tree::{EntryKind, RawPath, TreeEntry, TreeWriter};
use respaldo_core::repo::Repository;
use respaldo_core::source::BackupContext;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};
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

fn count(counts: &mut Counts, kind: EntryKind, hardlink: bool) {
    let k = match kind {
        EntryKind::File if hardlink => "hardlinks",
        EntryKind::File => "files",
        EntryKind::Dir => "dirs",
        EntryKind::Symlink => "symlinks",
        _ => "special",
    };
    *counts.entry(k.to_string()).or_default() += 1;
}

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

/// A PAX extended header carrying `xattrs` for the entry that follows.
async fn write_pax_xattrs<W: AsyncWrite + Unpin>(
    w: &mut W,
    xattrs: &[respaldo_core::kit::xattr::Xattr],
) -> std::io::Result<()> {
    if xattrs.is_empty() {
        return Ok(());
    }
    let mut body = Vec::new();
    for x in xattrs {
        let rest_len = format!(" SCHILY.xattr.{}=", x.name).len() + x.value.len() + 1;
        // The record's length counts its own digits.
        let mut len = rest_len + 1;
        while len.to_string().len() + rest_len > len {
            len += 1;
        }
        body.extend_from_slice(format!("{len} SCHILY.xattr.{}=", x.name).as_bytes());
        body.extend_from_slice(&x.value);
        body.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_mode(0o644);
    h.set_size(body.len() as u64);
    h.set_path("././@PaxHeader")
        .map_err(std::io::Error::other)?;
    h.set_cksum();
    w.write_all(h.as_bytes()).await?;
    write_padded(w, &body).await
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
                    count(&mut stats.counts, e.kind, e.hardlink.is_some());
                    tree.add(e).await?;
                }
                Msg::FileStart(e) => {
                    count(&mut stats.counts, e.kind, false);
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
            count(&mut counts, entry.kind, entry.hardlink.is_some());
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

fn name_field(header: &mut tar::Header, name: &[u8]) {
    let gnu = header.as_gnu_mut().expect("GNU header");
    let n = name.len().min(gnu.name.len());
    gnu.name = [0; 100];
    gnu.name[..n].copy_from_slice(&name[..n]);
}

async fn write_padded<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
    w.write_all(data).await?;
    let pad = (512 - data.len() % 512) % 512;
    w.write_all(&[0u8; 512][..pad]).await
}

/// Writes one header, preceded by GNU long-name / long-link records when the
/// name or link target does not fit.
async fn write_header<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut header: tar::Header,
    name: &[u8],
    link: Option<&[u8]>,
) -> std::io::Result<()> {
    for (bytes, kind) in [(Some(name), b'L'), (link, b'K')] {
        let Some(bytes) = bytes else { continue };
        if bytes.len() < 100 {
            continue;
        }
        let mut long = tar::Header::new_gnu();
        name_field(&mut long, b"././@LongLink");
        long.set_entry_type(tar::EntryType::new(kind));
        long.set_mode(0o644);
        long.set_size(bytes.len() as u64 + 1);
        long.set_cksum();
        w.write_all(long.as_bytes()).await?;
        let mut data = bytes.to_vec();
        data.push(0);
        write_padded(w, &data).await?;
    }
    name_field(&mut header, name);
    if let Some(l) = link {
        let gnu = header.as_gnu_mut().expect("GNU header");
        let n = l.len().min(gnu.linkname.len());
        gnu.linkname = [0; 100];
        gnu.linkname[..n].copy_from_slice(&l[..n]);
    }
    header.set_cksum();
    w.write_all(header.as_bytes()).await
}

fn prefixed(p: &RawPath) -> Vec<u8> {
    let mut v = MOUNT.as_bytes().to_vec();
    v.push(b'/');
    v.extend_from_slice(&p.0);
    v
}

/// What a restore stream held.
#[derive(Debug, Default)]
pub(crate) struct WriteStats {
    pub counts: Counts,
    pub bytes: u64,
}

/// Writes the tar stream of a tree artifact (entries under `volume/`, the
/// root's own metadata first) into `w`; with `paths`, only those paths and
/// what is below them.
pub(crate) async fn write_tree<W: AsyncWrite + Unpin>(
    repo: &Arc<Repository>,
    artifact: &Artifact,
    root: RootMeta,
    paths: &[RawPath],
    mut w: W,
) -> Result<WriteStats, DockerError> {
    let io = |e: std::io::Error| DockerError::Archive(format!("sending the archive: {e}"));
    let mut stats = WriteStats::default();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(root.mode);
    h.set_uid(root.uid.into());
    h.set_gid(root.gid.into());
    h.set_mtime(root.mtime.max(0) as u64);
    h.set_size(0);
    write_header(&mut w, h, format!("{MOUNT}/").as_bytes(), None)
        .await
        .map_err(io)?;
    // The file whose content is being written: its path, size and the
    // bytes written so far.
    let mut open: Option<(RawPath, u64, u64)> = None;
    let mut content = TreeContent::new(repo.clone(), artifact, paths)?;
    while let Some(item) = content.next().await? {
        let e = match item {
            TreeItem::Data(data) => {
                let Some((_, _, written)) = open.as_mut() else {
                    return Err(DockerError::Archive(
                        "the backup's listing holds content outside a file".into(),
                    ));
                };
                *written += data.len() as u64;
                w.write_all(&data).await.map_err(io)?;
                continue;
            }
            TreeItem::Entry(e) => e,
        };
        end_file(&mut w, open.take(), &mut stats).await?;
        if !e.path.is_safe() {
            return Err(DockerError::Archive(format!(
                "unsafe path in the backup: {}",
                e.path.display()
            )));
        }
        count(&mut stats.counts, e.kind, e.hardlink.is_some());
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(e.uid.into());
        h.set_gid(e.gid.into());
        h.set_mtime(e.mtime_ns.max(0) as u64 / 1_000_000_000);
        h.set_size(0);
        let mut name = prefixed(&e.path);
        let mut link = None;
        use tar::EntryType as T;
        match e.kind {
            EntryKind::File if e.hardlink.is_some() => {
                h.set_entry_type(T::Link);
                link = e.hardlink.as_ref().map(prefixed);
            }
            EntryKind::File => {
                h.set_entry_type(T::Regular);
                h.set_size(e.size);
            }
            EntryKind::Dir => {
                h.set_entry_type(T::Directory);
                name.push(b'/');
            }
            EntryKind::Symlink => {
                h.set_entry_type(T::Symlink);
                link = e.target.as_ref().map(|t| t.0.clone());
            }
            EntryKind::Fifo => h.set_entry_type(T::Fifo),
            EntryKind::Char | EntryKind::Block => {
                h.set_entry_type(if e.kind == EntryKind::Char {
                    T::Char
                } else {
                    T::Block
                });
                let rdev = e.rdev.unwrap_or(0);
                h.set_device_major(libc::major(rdev)).map_err(io)?;
                h.set_device_minor(libc::minor(rdev)).map_err(io)?;
            }
        }
        write_pax_xattrs(&mut w, &e.xattrs).await.map_err(io)?;
        write_header(&mut w, h, &name, link.as_deref())
            .await
            .map_err(io)?;
        if e.kind == EntryKind::File && e.hardlink.is_none() {
            open = Some((e.path.clone(), e.size, 0));
        }
    }
    end_file(&mut w, open.take(), &mut stats).await?;
    w.write_all(&[0u8; 1024]).await.map_err(io)?;
    w.shutdown().await.map_err(io)?;
    Ok(stats)
}

/// Ends the content of a file entry of the tar stream: checks its length
/// against the listing and pads it to a whole block.
async fn end_file<W: AsyncWrite + Unpin>(
    w: &mut W,
    open: Option<(RawPath, u64, u64)>,
    stats: &mut WriteStats,
) -> Result<(), DockerError> {
    let Some((path, size, written)) = open else {
        return Ok(());
    };
    if written != size {
        return Err(DockerError::Archive(format!(
            "{}: backup holds {written} bytes, listing says {size}",
            path.display()
        )));
    }
    let pad = ((512 - written % 512) % 512) as usize;
    w.write_all(&[0u8; 512][..pad])
        .await
        .map_err(|e| DockerError::Archive(format!("sending the archive: {e}")))?;
    stats.bytes += written;
    Ok(())
}
