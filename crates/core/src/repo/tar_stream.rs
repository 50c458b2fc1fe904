//! A tree artifact (or part of it) written as a tar stream, metadata kept:
//! modes, owners, mtimes, symlinks, hard links, devices, FIFOs and extended
//! attributes (as PAX `SCHILY.xattr.*` records); GNU long-name records for
//! paths of 100 bytes or more. File content is read through
//! [`TreeContent`] (entries in order, chunks read ahead in coalesced ranges),
//! so memory stays bounded whatever the tree's size.
//!
//! Used by `dump` of a directory and by the Docker driver, which restores a
//! volume by sending such a stream to the engine.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::artifact::Artifact;
use crate::repo::extract::{TreeContent, TreeItem};
use crate::repo::tree::{EntryKind, RawPath, TreeEntry};
use crate::repo::Repository;
use crate::{Error, Result};

/// Owner, mode and time of a directory written as the stream's first entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RootHeader {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

/// How the tree's entries are named in the stream.
#[derive(Debug, Clone, Default)]
pub struct TarLayout {
    /// Every name is `PREFIX/path` (none: the tree's own relative paths).
    pub prefix: Option<String>,
    /// With a prefix: the prefix directory's own entry, written first.
    pub root: Option<RootHeader>,
}

/// What a stream held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TarStats {
    /// Entries per type: `files`, `hardlinks`, `dirs`, `symlinks`, `special`.
    pub counts: BTreeMap<String, u64>,
    /// File content bytes.
    pub bytes: u64,
}

/// Counts one entry in `counts` under its type's name (see [`TarStats`]).
pub fn count_entry(counts: &mut BTreeMap<String, u64>, kind: EntryKind, hardlink: bool) {
    let k = match kind {
        EntryKind::File if hardlink => "hardlinks",
        EntryKind::File => "files",
        EntryKind::Dir => "dirs",
        EntryKind::Symlink => "symlinks",
        _ => "special",
    };
    *counts.entry(k.to_string()).or_default() += 1;
}

fn io(e: std::io::Error) -> Error {
    Error::Io {
        op: "writing",
        path: "the tar stream".into(),
        source: e,
    }
}

fn corrupt(detail: String) -> Error {
    Error::Corrupt {
        what: "a tree listing".into(),
        detail,
    }
}

/// Writes the tar stream of `artifact` into `w` (with `paths`: only those
/// paths and what is below them), ends it with the two zero blocks and shuts
/// `w` down.
pub async fn write_tar<W: AsyncWrite + Unpin>(
    repo: &Arc<Repository>,
    artifact: &Artifact,
    paths: &[RawPath],
    layout: &TarLayout,
    mut w: W,
) -> Result<TarStats> {
    let mut stats = TarStats::default();
    let name_of = |p: &RawPath| -> Vec<u8> {
        match &layout.prefix {
            Some(prefix) => {
                let mut v = prefix.as_bytes().to_vec();
                v.push(b'/');
                v.extend_from_slice(&p.0);
                v
            }
            None => p.0.clone(),
        }
    };
    if let (Some(prefix), Some(root)) = (&layout.prefix, layout.root) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(root.mode);
        h.set_uid(root.uid.into());
        h.set_gid(root.gid.into());
        h.set_mtime(root.mtime.max(0) as u64);
        h.set_size(0);
        write_header(&mut w, h, format!("{prefix}/").as_bytes(), None)
            .await
            .map_err(io)?;
    }
    // The file whose content is being written: its path, size and the
    // bytes written so far.
    let mut open: Option<(RawPath, u64, u64)> = None;
    let mut content = TreeContent::new(repo.clone(), artifact, paths)?;
    while let Some(item) = content.next().await? {
        let e = match item {
            TreeItem::Data(data) => {
                let Some((_, _, written)) = open.as_mut() else {
                    return Err(corrupt(
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
            return Err(corrupt(format!(
                "unsafe path in the backup: {}",
                e.path.display()
            )));
        }
        count_entry(&mut stats.counts, e.kind, e.hardlink.is_some());
        let (h, name, link) = header_of(&e, &name_of)?;
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

/// The header of one entry, its name and its link target.
fn header_of(
    e: &TreeEntry,
    name_of: &impl Fn(&RawPath) -> Vec<u8>,
) -> Result<(tar::Header, Vec<u8>, Option<Vec<u8>>)> {
    use tar::EntryType as T;
    let mut h = tar::Header::new_gnu();
    h.set_mode(e.mode);
    h.set_uid(e.uid.into());
    h.set_gid(e.gid.into());
    h.set_mtime(e.mtime_ns.max(0) as u64 / 1_000_000_000);
    h.set_size(0);
    let mut name = name_of(&e.path);
    let mut link = None;
    match e.kind {
        EntryKind::File if e.hardlink.is_some() => {
            h.set_entry_type(T::Link);
            link = e.hardlink.as_ref().map(name_of);
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
    Ok((h, name, link))
}

/// Ends the content of a file entry of the tar stream: checks its length
/// against the listing and pads it to a whole block.
async fn end_file<W: AsyncWrite + Unpin>(
    w: &mut W,
    open: Option<(RawPath, u64, u64)>,
    stats: &mut TarStats,
) -> Result<()> {
    let Some((path, size, written)) = open else {
        return Ok(());
    };
    if written != size {
        return Err(corrupt(format!(
            "{}: backup holds {written} bytes, listing says {size}",
            path.display()
        )));
    }
    let pad = ((512 - written % 512) % 512) as usize;
    w.write_all(&[0u8; 512][..pad]).await.map_err(io)?;
    stats.bytes += written;
    Ok(())
}

/// A PAX extended header carrying `xattrs` for the entry that follows.
async fn write_pax_xattrs<W: AsyncWrite + Unpin>(
    w: &mut W,
    xattrs: &[crate::kit::xattr::Xattr],
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
