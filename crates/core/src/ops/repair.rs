//! `repair`: rebuild the index from the packs, replace damaged snapshots, and
//! retag snapshots (the one way a stored snapshot changes: a new object is
//! written, then the old one removed).
//!
//! * [`repair_index`] reads every pack's self-describing blob headers and
//!   writes a fresh set of index fragments, then removes the old ones. A pack
//!   whose bytes are damaged gives up only its damaged blobs: the intact ones
//!   are checked one by one and moved to new packs, then it is deleted.
//! * [`repair_snapshots`] writes, for every snapshot that refers to chunks
//!   that are gone, a replacement (tag `repaired`) without the files or
//!   artifacts that lost data, and keeps the original under the tag
//!   `damaged` (never `latest`, never removed by retention) until it is
//!   forgotten by id.
//!
//! Both write before they delete, so an interruption leaves the repository
//! as it was or repaired, never worse; running them again is harmless.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::artifact::{Artifact, ArtifactKind};
use crate::error::{Error, Result};
use crate::kit::progress::Progress;
use crate::repo::format::{self, BLOB_HEADER_LEN};
use crate::repo::id::ObjectId;
use crate::repo::index::PackEntry;
use crate::repo::snapshot::{SnapshotRef, SourceStatus, DAMAGED_TAG, REPAIRED_TAG};
use crate::repo::tree::{RawPath, TreeReader, TreeWriter};
use crate::repo::writer::WriteSession;
use crate::repo::{ChunkLocation, Repository};

/// Blobs described per index fragment written by repair, at most.
const FRAGMENT_BLOBS: usize = 50_000;

/// What `repair index` did.
#[derive(Debug, Clone, Default)]
pub struct RepairIndexReport {
    /// Packs read.
    pub packs_read: usize,
    /// Blobs indexed.
    pub blobs_indexed: u64,
    /// Damaged packs, each with what was wrong and how many blobs were saved.
    pub damaged_packs: Vec<String>,
    /// Fragments written.
    pub fragments_written: usize,
    /// Old fragments removed.
    pub fragments_removed: usize,
}

/// Rebuilds the index from the packs alone. The caller holds an exclusive
/// lock. An encrypted repository needs the identity (the blob headers are
/// encrypted).
pub async fn repair_index(
    repo: &Arc<Repository>,
    progress: &Arc<Progress>,
) -> Result<RepairIndexReport> {
    repo.require_readable("repair index")?;
    let mut report = RepairIndexReport::default();
    let old: Vec<String> = repo
        .sink()
        .list("index/")
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
    let mut listed: Vec<(ObjectId, u64)> = repo.list_packs().await?.into_iter().collect();
    listed.sort();
    progress.add_total(listed.iter().map(|(_, s)| s).sum());
    let mut written: HashSet<String> = HashSet::new();
    let mut batch: Vec<PackEntry> = Vec::new();
    let mut blobs = 0usize;
    // The intact blobs of damaged packs go to new packs; the damaged packs
    // are deleted once those are indexed.
    let salvage = WriteSession::with_known(repo.clone(), HashSet::new());
    let mut damaged: Vec<ObjectId> = Vec::new();
    for (id, size) in listed {
        let bytes = match repo.sink().get(&format::pack_key(&id)).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        report.packs_read += 1;
        progress.add_bytes(size);
        let entry = match repo.parse_pack(&id, &bytes, true) {
            Ok(e) => e,
            Err(detail) => {
                let saved = salvage_pack(repo, &id, &bytes);
                for b in &saved.blobs {
                    let frame = bytes.slice(b.offset as usize..(b.offset + b.length) as usize);
                    let encoded = repo.open_frame(&id, &bytes, frame)?;
                    salvage.add_encoded(b.id, b.kind, encoded).await?;
                }
                report.damaged_packs.push(format!(
                    "pack {id}: {detail}; {} intact blob(s) moved to new packs, the rest is lost",
                    saved.blobs.len()
                ));
                damaged.push(id);
                continue;
            }
        };
        if entry.blobs.is_empty() {
            continue;
        }
        blobs += entry.blobs.len();
        report.blobs_indexed += entry.blobs.len() as u64;
        batch.push(entry);
        if blobs >= FRAGMENT_BLOBS {
            written.insert(format::index_key(&repo.write_fragment(&batch).await?));
            report.fragments_written += 1;
            batch.clear();
            blobs = 0;
        }
    }
    if !batch.is_empty() {
        written.insert(format::index_key(&repo.write_fragment(&batch).await?));
        report.fragments_written += 1;
    }
    for f in salvage.finish().await? {
        written.insert(format::index_key(&f));
        report.fragments_written += 1;
    }
    report.blobs_indexed += salvage
        .stats
        .blobs_added
        .load(std::sync::atomic::Ordering::Relaxed);
    for key in old.iter().filter(|k| !written.contains(*k)) {
        repo.sink().delete(key).await?;
        report.fragments_removed += 1;
    }
    let fresh = salvage.written_packs();
    for id in damaged.iter().filter(|id| !fresh.contains(id)) {
        repo.sink().delete(&format::pack_key(id)).await?;
    }
    repo.index_reset().await;
    Ok(report)
}

/// The blobs of a damaged pack that are still intact, read one after the
/// other from the start until its structure breaks.
fn salvage_pack(repo: &Repository, id: &ObjectId, bytes: &[u8]) -> PackEntry {
    let mut out = PackEntry {
        id: *id,
        size: bytes.len() as u64,
        blobs: Vec::new(),
    };
    let Ok(header) = format::parse_pack_header(bytes) else {
        return out;
    };
    let mut pos = header.data_start;
    while pos + BLOB_HEADER_LEN <= bytes.len() {
        match repo.frame_at(id, bytes, pos) {
            Some((entry, end)) => {
                if let Some(e) = entry {
                    out.blobs.push(e);
                }
                pos = end;
            }
            None => break,
        }
    }
    out
}

/// What `repair snapshots` did.
#[derive(Debug, Clone, Default)]
pub struct RepairSnapshotsReport {
    /// Packs the index described that are gone from storage, taken out of
    /// the index.
    pub packs_forgotten: usize,
    /// Snapshots checked.
    pub checked: usize,
    /// Per replaced snapshot: its id, the replacement's id (none in a dry
    /// run) and what was dropped.
    pub replaced: Vec<Replaced>,
}

/// One snapshot replaced by `repair snapshots`.
#[derive(Debug, Clone)]
pub struct Replaced {
    /// The damaged original.
    pub original: ObjectId,
    /// The replacement (none in a dry run).
    pub replacement: Option<ObjectId>,
    /// The original, kept under the tag `damaged` (none in a dry run).
    pub kept_as: Option<ObjectId>,
    /// What was dropped, one line each (`source: path` or `source: artifact`).
    pub lost: Vec<String>,
}

/// Replaces every snapshot that refers to chunks no pack holds (see the
/// module docs). The caller holds an exclusive lock.
pub async fn repair_snapshots(
    repo: &Arc<Repository>,
    dry_run: bool,
    progress: &Arc<Progress>,
) -> Result<RepairSnapshotsReport> {
    repo.require_readable("repair snapshots")?;
    let mut report = RepairSnapshotsReport::default();
    repo.load_index().await?;
    let listed = repo.list_packs().await?;
    if !dry_run {
        report.packs_forgotten = drop_missing_packs(repo, &listed).await?;
    }
    let (snapshots, _) = repo.snapshots().await?;
    let session = WriteSession::new(repo.clone()).await?;
    let present = Presence {
        repo: repo.clone(),
        listed,
        cache: tokio::sync::Mutex::new(HashMap::new()),
    };
    let mut pending: Vec<(SnapshotRef, Vec<String>)> = Vec::new();
    for s in snapshots.iter().filter(|s| !s.has_tag(DAMAGED_TAG)) {
        report.checked += 1;
        progress.add_item();
        let mut fixed = s.clone();
        let mut lost = Vec::new();
        for (name, entry) in fixed.snapshot.sources.iter_mut() {
            if !entry.is_ok() {
                continue;
            }
            let mut kept: Vec<Artifact> = Vec::new();
            let mut stream_lost = Vec::new();
            for a in std::mem::take(&mut entry.artifacts) {
                match repair_artifact(repo, &session, &present, a.clone(), dry_run).await? {
                    ArtifactFate::Whole => kept.push(a),
                    ArtifactFate::Pruned(new, paths) => {
                        lost.extend(paths.iter().map(|p| format!("{name}: {}/{p}", a.name)));
                        entry.warnings.push(format!(
                            "repaired: {} file(s) of `{}` were lost and dropped",
                            paths.len(),
                            a.name
                        ));
                        kept.push(new);
                    }
                    ArtifactFate::Lost(why) => {
                        lost.push(format!("{name}: artifact `{}` ({why})", a.name));
                        stream_lost.push(format!("`{}` ({why})", a.name));
                    }
                }
            }
            entry.artifacts = kept;
            if !stream_lost.is_empty() {
                entry.status = SourceStatus::Failed;
                entry.error = Some(format!(
                    "damaged: artifact(s) {} lost data; replaced by `repair snapshots`",
                    stream_lost.join(", ")
                ));
                entry.artifacts.clear();
            }
            entry.stats.bytes_total = entry.artifacts.iter().map(|a| a.size).sum();
        }
        if !lost.is_empty() {
            pending.push((fixed, lost));
        }
    }
    if dry_run {
        report.replaced = pending
            .into_iter()
            .map(|(s, lost)| Replaced {
                original: s.id,
                replacement: None,
                kept_as: None,
                lost,
            })
            .collect();
        return Ok(report);
    }
    // The rewritten listings are stored and indexed before any snapshot
    // refers to them.
    session.finish().await?;
    for (fixed, lost) in pending {
        let original = snapshots
            .iter()
            .find(|s| s.id == fixed.id)
            .expect("from the list");
        let mut replacement = fixed.snapshot.clone();
        if !replacement.tags.iter().any(|t| t == REPAIRED_TAG) {
            replacement.tags.push(REPAIRED_TAG.into());
        }
        let new_id = repo.write_snapshot(&replacement).await?;
        let kept_as = retag(repo, original, &[DAMAGED_TAG.to_string()], &[]).await?;
        report.replaced.push(Replaced {
            original: original.id,
            replacement: Some(new_id),
            kept_as: Some(kept_as),
            lost,
        });
    }
    Ok(report)
}

/// Takes the packs that are gone from storage out of the index: the
/// fragments that describe them are written again without them, then
/// removed. Returns how many packs were dropped.
async fn drop_missing_packs(
    repo: &Arc<Repository>,
    listed: &HashMap<ObjectId, u64>,
) -> Result<usize> {
    let entries: HashMap<ObjectId, PackEntry> = repo
        .with_index(|i| i.pack_entries())
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    let mut dropped: HashSet<ObjectId> = HashSet::new();
    for (fragment, packs) in repo.index_fragments().await? {
        if packs.iter().all(|p| listed.contains_key(p)) {
            continue;
        }
        dropped.extend(packs.iter().filter(|p| !listed.contains_key(p)));
        let keep: Vec<PackEntry> = packs
            .iter()
            .filter(|p| listed.contains_key(p))
            .filter_map(|p| entries.get(p).cloned())
            .collect();
        let new = if keep.is_empty() {
            None
        } else {
            Some(repo.write_fragment(&keep).await?)
        };
        if new != Some(fragment) {
            repo.sink().delete(&format::index_key(&fragment)).await?;
        }
    }
    repo.index_reset().await;
    repo.load_index().await?;
    Ok(dropped.len())
}

/// Whether chunks are stored, remembered per chunk.
struct Presence {
    repo: Arc<Repository>,
    listed: HashMap<ObjectId, u64>,
    cache: tokio::sync::Mutex<HashMap<ObjectId, bool>>,
}

impl Presence {
    async fn has(&self, id: &ObjectId) -> Result<bool> {
        if let Some(v) = self.cache.lock().await.get(id) {
            return Ok(*v);
        }
        let v = self.repo.locate_chunk(id, &self.listed).await? != ChunkLocation::Missing;
        self.cache.lock().await.insert(*id, v);
        Ok(v)
    }

    async fn all(&self, ids: &[ObjectId]) -> Result<bool> {
        for id in ids {
            if !self.has(id).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

enum ArtifactFate {
    /// Every chunk is there.
    Whole,
    /// A tree without the files that lost chunks (their paths).
    Pruned(Artifact, Vec<String>),
    /// Nothing of it can be kept (why).
    Lost(String),
}

async fn repair_artifact(
    repo: &Arc<Repository>,
    session: &Arc<WriteSession>,
    present: &Presence,
    artifact: Artifact,
    dry_run: bool,
) -> Result<ArtifactFate> {
    if artifact.kind == ArtifactKind::Stream {
        return Ok(if present.all(&artifact.chunks).await? {
            ArtifactFate::Whole
        } else {
            ArtifactFate::Lost("chunks missing".into())
        });
    }
    if !present.all(&artifact.chunks).await? {
        return Ok(ArtifactFate::Lost("its file listing is lost".into()));
    }
    let mut entries = Vec::new();
    let mut reader = TreeReader::new(repo.clone(), &artifact)?;
    loop {
        match reader.next_entry().await {
            Ok(Some(e)) => entries.push(e),
            Ok(None) => break,
            Err(e) => {
                return Ok(ArtifactFate::Lost(format!(
                    "its file listing is unreadable: {e}"
                )))
            }
        }
    }
    let mut dropped: HashSet<RawPath> = HashSet::new();
    for e in &entries {
        if !present.all(&e.chunks).await? {
            dropped.insert(e.path.clone());
        }
    }
    // Further names of a dropped hard-linked file go with it.
    for e in &entries {
        if e.hardlink.as_ref().is_some_and(|h| dropped.contains(h)) {
            dropped.insert(e.path.clone());
        }
    }
    if dropped.is_empty() {
        return Ok(ArtifactFate::Whole);
    }
    let mut lost: Vec<String> = dropped.iter().map(RawPath::display).collect();
    lost.sort();
    if dry_run {
        return Ok(ArtifactFate::Pruned(artifact, lost));
    }
    let root = artifact.tree.as_ref().and_then(|t| t.root.clone());
    let mut writer = TreeWriter::new(
        artifact.name.clone(),
        root,
        session.clone(),
        3,
        HashMap::new(),
        Arc::new(Progress::default()),
    );
    for e in entries.into_iter().filter(|e| !dropped.contains(&e.path)) {
        writer.add(e).await?;
    }
    let (new, _) = writer.finish().await?;
    Ok(ArtifactFate::Pruned(new, lost))
}

/// Writes `snapshot` again with tags added and removed, then removes the old
/// object; returns the new id (the same when nothing changes). The new
/// object remembers the first id in `origin`. An encrypted repository needs
/// the identity (the sealed part holds the tags too).
pub async fn retag(
    repo: &Arc<Repository>,
    snapshot: &SnapshotRef,
    add: &[String],
    remove: &[String],
) -> Result<ObjectId> {
    repo.require_readable("changing a snapshot's tags")?;
    let mut s = snapshot.snapshot.clone();
    let before = s.tags.clone();
    s.tags.retain(|t| !remove.contains(t));
    for t in add {
        if !s.tags.contains(t) {
            s.tags.push(t.clone());
        }
    }
    if s.tags == before {
        return Ok(snapshot.id);
    }
    s.origin = Some(s.origin_or(snapshot.id));
    let id = repo.write_snapshot(&s).await?;
    if id != snapshot.id {
        repo.delete_snapshot(&snapshot.id).await?;
    }
    Ok(id)
}
