//! Copying snapshots between repositories that share chunk ids and keys
//! (one was created from the other with `init --repository NAME`): only
//! what the destination lacks is sent, and a snapshot already there is
//! skipped, so running a copy again transfers nothing.
//!
//! Two ways, the same result: with the identity, [`copy`] sends the chunks
//! the destination lacks (re-packed there); without it (a host holding only
//! the public recipients), [`copy_stored`] sends the stored objects as they
//! are — the packs holding chunks the destination lacks, the index
//! fragments that describe them, and the snapshot objects, which keep
//! their ids.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::kit::progress::Progress;
use crate::ops::prune::used_chunks;
use crate::repo::fetch::ChunkFetcher;
use crate::repo::id::ObjectId;
use crate::repo::snapshot::SnapshotRef;
use crate::repo::writer::WriteSession;
use crate::repo::Repository;

/// What a copy did.
#[derive(Debug, Default, Clone)]
pub struct CopyReport {
    /// Snapshots written to the destination.
    pub snapshots_copied: Vec<(ObjectId, ObjectId)>,
    /// Snapshots the destination already had.
    pub snapshots_present: usize,
    /// Chunks sent.
    pub chunks_copied: u64,
    /// Bytes stored at the destination (packs).
    pub bytes_copied: u64,
}

/// Copies `snapshots` of `src` into `dst`. Each snapshot is committed at the
/// destination after all its chunks are there (packs, then an index
/// fragment, then the snapshot), so an interrupted copy leaves the
/// destination sound and the next run continues. The caller holds shared
/// locks on both repositories.
pub async fn copy(
    src: &Arc<Repository>,
    dst: &Arc<Repository>,
    snapshots: &[SnapshotRef],
    progress: &Arc<Progress>,
) -> Result<CopyReport> {
    src.require_readable("copy")?;
    if !src.shares_chunks_with(dst) {
        return Err(Error::Invalid(format!(
            "{} does not share chunk ids with {} (different chunking parameters or keys); \
             create the destination with `respaldo init --repository NAME`",
            dst.sink().location(),
            src.sink().location()
        )));
    }
    let (present, _) = dst.snapshots().await?;
    let present: HashSet<ObjectId> = present.iter().map(|s| s.snapshot.origin_or(s.id)).collect();
    let mut report = CopyReport::default();
    let session = WriteSession::new(dst.clone()).await?;
    let mut known = dst.known_blobs().await?;
    // Oldest first, so the destination's history grows in order.
    let mut todo: Vec<&SnapshotRef> = snapshots.iter().collect();
    todo.sort_by_key(|s| (s.snapshot.time, s.id));
    for s in todo {
        let origin = s.snapshot.origin_or(s.id);
        if present.contains(&origin) {
            report.snapshots_present += 1;
            continue;
        }
        let missing: Vec<ObjectId> = used_chunks(src, std::slice::from_ref(s))
            .await?
            .into_iter()
            .filter(|id| !known.contains(id))
            .collect();
        // In the order they are stored, so that neighbours are read
        // together (see `ChunkFetcher`).
        let mut located = Vec::with_capacity(missing.len());
        for id in missing {
            let at = src.locate_indexed(&id).await?;
            located.push((at.map(|(p, l)| (p.id, l.offset)), id));
        }
        located.sort_unstable();
        let missing: Vec<ObjectId> = located.into_iter().map(|(_, id)| id).collect();
        progress.set_current(format!("snapshot {}", s.id.short()));
        let mut fetcher = ChunkFetcher::encoded(src.clone());
        let (mut asked, mut taken) = (missing.iter(), missing.iter());
        loop {
            while !fetcher.is_full() {
                let Some(id) = asked.next() else { break };
                fetcher.push(*id).await?;
            }
            let Some(encoded) = fetcher.next().await? else {
                break;
            };
            let id = *taken.next().expect("one chunk per id asked for");
            progress.add_bytes(encoded.len() as u64);
            let kind = crate::repo::format::BlobHeader::decode(&encoded)
                .map_err(|d| Error::corrupt(format!("chunk {}", id.short()), d))?
                .kind;
            session.add_encoded(id, kind, encoded).await?;
        }
        session.finish().await?;
        report.chunks_copied += missing.len() as u64;
        known.extend(missing);
        let mut snapshot = s.snapshot.clone();
        snapshot.origin = Some(origin);
        let new_id = dst.write_snapshot(&snapshot).await?;
        report.snapshots_copied.push((s.id, new_id));
        progress.add_item();
    }
    report.bytes_copied = session.stats.bytes_added.load(Ordering::Relaxed);
    Ok(report)
}

/// Objects transferred at once by [`copy_stored`].
const OBJECTS_IN_FLIGHT: usize = 4;

/// Copies `snapshots` of `src` into `dst` without reading them: packs,
/// index fragments and snapshot objects are transferred as stored (named by
/// the SHA-256 of their bytes, which is checked on the way). Index ids are
/// readable without the identity, so the packs sent are those holding a
/// chunk the destination lacks, with every pack of the fragments that
/// describe them; a snapshot is written last, after all of its data, and
/// keeps its id. An interrupted copy leaves the destination sound and the
/// next run continues. The caller holds shared locks on both repositories.
pub async fn copy_stored(
    src: &Arc<Repository>,
    dst: &Arc<Repository>,
    snapshots: &[SnapshotRef],
    progress: &Arc<Progress>,
) -> Result<CopyReport> {
    use crate::repo::format::{index_key, pack_key, snapshot_key};
    if !src.shares_chunks_with(dst) {
        return Err(Error::Invalid(format!(
            "{} does not share chunk ids with {} (different chunking parameters or keys); \
             create the destination with `respaldo init --repository NAME`",
            dst.sink().location(),
            src.sink().location()
        )));
    }
    let (present, _) = dst.snapshots().await?;
    let present: HashSet<ObjectId> = present
        .iter()
        .flat_map(|s| [s.id, s.snapshot.origin_or(s.id)])
        .collect();
    let mut report = CopyReport::default();
    let mut todo: Vec<&SnapshotRef> = Vec::new();
    for s in snapshots {
        if present.contains(&s.id) || present.contains(&s.snapshot.origin_or(s.id)) {
            report.snapshots_present += 1;
        } else {
            todo.push(s);
        }
    }
    if todo.is_empty() {
        return Ok(report);
    }
    // The packs holding a chunk the destination lacks, and the fragments
    // that describe them (whole: their sealed details cannot be rewritten
    // without the identity).
    let known = dst.known_blobs().await?;
    let dst_packs = dst.list_packs().await?;
    let dst_fragments: HashSet<ObjectId> = dst
        .index_fragments()
        .await?
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    let entries = src.with_index(|i| i.pack_entries()).await?;
    let mut new_chunks: HashSet<ObjectId> = HashSet::new();
    let mut wanted: HashSet<ObjectId> = HashSet::new();
    for p in &entries {
        let lacking: Vec<ObjectId> = p
            .blobs
            .iter()
            .map(|b| b.id)
            .filter(|id| !known.contains(id))
            .collect();
        if !lacking.is_empty() {
            wanted.insert(p.id);
            new_chunks.extend(lacking);
        }
    }
    let fragments: Vec<(ObjectId, Vec<ObjectId>)> = src
        .index_fragments()
        .await?
        .into_iter()
        .filter(|(f, packs)| !dst_fragments.contains(f) && packs.iter().any(|p| wanted.contains(p)))
        .collect();
    // Packs a prune marked for deletion are described by their mark only; a
    // snapshot written beside that prune may use them, so a mark whose packs
    // are all still stored is sent as an index fragment of its own. (One
    // with packs gone was partly swept: the packs a snapshot needs were
    // indexed again before any was deleted.)
    let src_packs = src.list_packs().await?;
    let (marks, _) = src.marks().await?;
    let mut mark_fragments: Vec<(ObjectId, bytes::Bytes, Vec<ObjectId>)> = Vec::new();
    for m in marks {
        let lacking = m
            .packs
            .iter()
            .flat_map(|p| p.blobs.iter())
            .any(|b| !known.contains(&b.id));
        let whole = m.packs.iter().all(|p| src_packs.contains_key(&p.id));
        if lacking && whole {
            let (id, bytes) = m.stored.encode()?;
            if !dst_fragments.contains(&id) {
                let ids = m.packs.iter().map(|p| p.id).collect();
                new_chunks.extend(m.packs.iter().flat_map(|p| p.blobs.iter().map(|b| b.id)));
                mark_fragments.push((id, bytes, ids));
            }
        }
    }
    new_chunks.retain(|id| !known.contains(id));
    let mut packs: Vec<ObjectId> = fragments
        .iter()
        .flat_map(|(_, ps)| ps.iter().copied())
        .chain(
            mark_fragments
                .iter()
                .flat_map(|(_, _, ps)| ps.iter().copied()),
        )
        .filter(|p| !dst_packs.contains_key(p))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    packs.sort();
    let transfer = |key: String, id: ObjectId| async move {
        let bytes = src.sink().get(&key).await?;
        if ObjectId::sha256(&bytes) != id {
            return Err(Error::corrupt(
                key,
                "content does not match its name (SHA-256 mismatch); run `respaldo verify` on the source",
            ));
        }
        let n = bytes.len() as u64;
        dst.sink().put(&key, crate::sink::once(bytes)).await?;
        progress.add_bytes(n);
        Ok::<u64, Error>(n)
    };
    progress.set_current(format!("{} pack(s)", packs.len()));
    let sent: Vec<u64> = futures::stream::iter(packs.iter().map(|p| transfer(pack_key(p), *p)))
        .buffer_unordered(OBJECTS_IN_FLIGHT)
        .try_collect()
        .await?;
    report.bytes_copied = sent.iter().sum();
    for (f, _) in &fragments {
        report.bytes_copied += transfer(index_key(f), *f).await?;
    }
    for (f, bytes, _) in mark_fragments {
        report.bytes_copied += bytes.len() as u64;
        dst.sink()
            .put(&index_key(&f), crate::sink::once(bytes))
            .await?;
    }
    report.chunks_copied = new_chunks.len() as u64;
    // Oldest first, so the destination's history grows in order.
    todo.sort_by_key(|s| (s.snapshot.time, s.id));
    for s in todo {
        transfer(snapshot_key(&s.id), s.id).await?;
        report.snapshots_copied.push((s.id, s.id));
        progress.add_item();
    }
    Ok(report)
}
