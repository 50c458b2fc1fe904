//! Copying snapshots between repositories that share chunk ids (one was
//! created from the other with `init --repository NAME`): only the chunks the
//! destination lacks are sent, and a snapshot already there is skipped, so
//! running a copy again transfers nothing.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::kit::progress::Progress;
use crate::ops::maintenance::used_chunks;
use crate::repo::id::ObjectId;
use crate::repo::snapshot::SnapshotRef;
use crate::repo::writer::WriteSession;
use crate::repo::Repository;

/// Chunks read from the source at once.
const READS_IN_FLIGHT: usize = 8;

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
        let mut missing: Vec<ObjectId> = used_chunks(src, std::slice::from_ref(s))
            .await?
            .into_iter()
            .filter(|id| !known.contains(id))
            .collect();
        missing.sort();
        progress.set_current(format!("snapshot {}", s.id.short()));
        futures::stream::iter(missing.iter().copied())
            .map(|id| async move {
                let (encoded, _) = src.read_encoded(&id).await?;
                Ok::<_, Error>((id, encoded))
            })
            .buffered(READS_IN_FLIGHT)
            .try_for_each(|(id, encoded)| {
                let session = session.clone();
                async move {
                    progress.add_bytes(encoded.len() as u64);
                    let kind = crate::repo::format::BlobHeader::decode(&encoded)
                        .map_err(|d| Error::corrupt(format!("chunk {}", id.short()), d))?
                        .kind;
                    session.add_encoded(id, kind, encoded).await
                }
            })
            .await?;
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
