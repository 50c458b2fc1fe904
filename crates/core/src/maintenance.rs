//! `forget` (apply retention) and `prune` (remove unreferenced data).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::artifact::ArtifactKind;
use crate::error::{Error, Result};
use crate::format::{self, BLOB_HEADER_LEN};
use crate::id::ObjectId;
use crate::index::PackEntry;
use crate::repo::Repository;
use crate::retention::{Candidate, RetentionPolicy};
use crate::snapshot::SnapshotRef;
use crate::tree::TreeReader;
use crate::writer::WriteSession;

/// One snapshot's fate.
#[derive(Debug, Clone)]
pub struct ForgetDecision {
    /// Snapshot id.
    pub id: ObjectId,
    /// When it was taken.
    pub time: chrono::DateTime<chrono::Utc>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Kept or removed.
    pub keep: bool,
    /// Why it is kept (rule names per source), or why removed.
    pub reasons: Vec<String>,
}

/// Decides which snapshots a policy keeps. Each source's good backups form a
/// series the policy is applied to; a snapshot is kept if any of its sources
/// keeps it. Snapshots without any good source are removed.
pub fn decide<Tz: chrono::TimeZone>(
    snapshots: &[SnapshotRef],
    policy: &RetentionPolicy,
    tz: &Tz,
) -> Vec<ForgetDecision> {
    let mut reasons: HashMap<ObjectId, Vec<String>> = HashMap::new();
    let mut sources: Vec<&str> = snapshots
        .iter()
        .flat_map(|s| s.snapshot.sources.keys().map(String::as_str))
        .collect();
    sources.sort_unstable();
    sources.dedup();
    for source in sources {
        let series: Vec<(String, &SnapshotRef)> = snapshots
            .iter()
            .filter(|s| s.good(source).is_some())
            .map(|s| (s.id.to_hex(), s))
            .collect();
        let candidates: Vec<Candidate<'_>> = series
            .iter()
            .map(|(id, s)| Candidate {
                id,
                time: s.snapshot.time,
                tags: &s.snapshot.tags,
            })
            .collect();
        for d in policy.apply(&candidates, tz) {
            if d.keep {
                let id: ObjectId = d.id.parse().expect("ids are hex");
                let r = reasons.entry(id).or_default();
                r.extend(d.reasons.into_iter().map(|x| format!("{source}: {x}")));
            }
        }
    }
    let mut out: Vec<ForgetDecision> = snapshots
        .iter()
        .map(|s| {
            let kept = reasons.remove(&s.id);
            let keep = kept.is_some();
            ForgetDecision {
                id: s.id,
                time: s.snapshot.time,
                tags: s.snapshot.tags.clone(),
                keep,
                reasons: kept.unwrap_or_else(|| {
                    if s.snapshot.sources.values().any(|e| e.is_ok()) {
                        vec!["no rule keeps it".into()]
                    } else {
                        vec!["no good source".into()]
                    }
                }),
            }
        })
        .collect();
    out.sort_by_key(|d| std::cmp::Reverse((d.time, d.id)));
    out
}

/// What prune did (or would do).
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Packs deleted because nothing uses them.
    pub packs_deleted: usize,
    /// Packs rewritten because they were partly unused.
    pub packs_repacked: usize,
    /// Packs left by interrupted runs (never indexed), deleted.
    pub packs_unindexed: usize,
    /// Bytes freed (before counting the rewritten packs' new size).
    pub bytes_freed: u64,
    /// Bytes written by repacking.
    pub bytes_rewritten: u64,
    /// Bytes of incomplete uploads / temporary files removed.
    pub bytes_incomplete: u64,
    /// Old index fragments replaced.
    pub fragments_replaced: usize,
}

/// The set of every chunk any snapshot refers to (listing chunks and file
/// chunks of trees included).
pub async fn used_chunks(
    repo: &Arc<Repository>,
    snapshots: &[SnapshotRef],
) -> Result<HashSet<ObjectId>> {
    repo.require_readable("prune")?;
    let mut used = HashSet::new();
    for s in snapshots {
        for e in s.snapshot.sources.values().filter(|e| e.is_ok()) {
            for a in &e.artifacts {
                used.extend(a.chunks.iter().copied());
                if a.kind == ArtifactKind::Tree {
                    let mut r = TreeReader::new(repo.clone(), a)?;
                    while let Some(entry) = r.next_entry().await? {
                        used.extend(entry.chunks);
                    }
                }
            }
        }
    }
    Ok(used)
}

/// Packs with less than this share of unused bytes are kept as they are.
const REPACK_UNUSED_SHARE: f64 = 0.10;

/// Removes data no snapshot refers to. The caller holds an exclusive lock.
/// Order: new packs → new index → old index fragments deleted → old packs
/// deleted, so an interruption at any point loses nothing.
pub async fn prune(repo: &Arc<Repository>, dry_run: bool) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    let (snapshots, damaged) = repo.snapshots().await?;
    if let Some(d) = damaged.first() {
        return Err(Error::corrupt(
            format!("snapshot object {}", d.key),
            format!("{}; prune cannot know what it refers to, so nothing was deleted (remove the object if it cannot be recovered)", d.detail),
        ));
    }
    let used = used_chunks(repo, &snapshots).await?;
    repo.load_index().await?;
    let has_damage = !repo.index_damage().await?.is_empty();
    let listed = repo.list_packs().await?;
    let mut packs = repo.with_index(|i| i.pack_entries()).await?;
    let indexed: HashSet<ObjectId> = packs.iter().map(|p| p.id).collect();
    let mut delete: Vec<ObjectId> = Vec::new();
    for (id, size) in &listed {
        if indexed.contains(id) {
            continue;
        }
        if has_damage {
            // The damaged fragment may have described this pack: recover it.
            let bytes = repo.sink().get(&format::pack_key(id)).await?;
            match repo.parse_pack(id, &bytes, false) {
                Ok(p) => packs.push(p),
                Err(e) => tracing::warn!(
                    "pack {} is damaged ({e}); keeping it for inspection",
                    id.short()
                ),
            }
        } else {
            report.packs_unindexed += 1;
            report.bytes_freed += size;
            delete.push(*id);
        }
    }
    packs.retain(|p| listed.contains_key(&p.id));

    let mut kept_blobs: HashSet<ObjectId> = HashSet::new();
    let mut keep: Vec<PackEntry> = Vec::new();
    let mut repack: Vec<PackEntry> = Vec::new();
    for p in packs {
        let used_bytes: u64 = p
            .blobs
            .iter()
            .filter(|b| used.contains(&b.id))
            .map(|b| b.length as u64)
            .sum();
        let total: u64 = p.blobs.iter().map(|b| b.length as u64).sum::<u64>().max(1);
        if used_bytes == 0 {
            report.packs_deleted += 1;
            report.bytes_freed += p.size;
            delete.push(p.id);
        } else if (total - used_bytes) as f64 / total as f64 > REPACK_UNUSED_SHARE {
            repack.push(p);
        } else {
            kept_blobs.extend(p.blobs.iter().map(|b| b.id));
            keep.push(p);
        }
    }
    report.packs_repacked = repack.len();
    let old_fragments = repo.index_fragments().await?;
    report.fragments_replaced = old_fragments.len();
    if dry_run {
        report.bytes_freed += repack.iter().map(|p| p.size).sum::<u64>();
        return Ok(report);
    }

    // 1. Rewrite the used blobs of partly used packs.
    let session = WriteSession::new(repo.clone()).await?;
    for p in &repack {
        let bytes = repo.sink().get(&format::pack_key(&p.id)).await?;
        for b in &p.blobs {
            if !used.contains(&b.id) || !kept_blobs.insert(b.id) {
                continue;
            }
            let start = b.offset as usize;
            let end = start + b.length as usize;
            if end > bytes.len() || b.length as usize <= BLOB_HEADER_LEN {
                return Err(Error::corrupt(
                    format!("pack {}", p.id.short()),
                    "index entry out of range",
                ));
            }
            let encoded = repo.open_frame(&p.id, &bytes, bytes.slice(start..end))?;
            session.add_encoded(b.id, b.kind, encoded).await?;
        }
        report.bytes_freed += p.size;
        delete.push(p.id);
    }
    let repacked_fragment = session.finish().await?;
    report.bytes_rewritten = session
        .stats
        .bytes_added
        .load(std::sync::atomic::Ordering::Relaxed);

    // 2. One fragment for every pack kept as is.
    let mut new_fragments: Vec<ObjectId> = repacked_fragment.into_iter().collect();
    if !keep.is_empty() {
        new_fragments.push(repo.write_fragment(&keep).await?);
    }
    // 3. Old fragments, then 4. packs.
    for f in old_fragments.iter().filter(|f| !new_fragments.contains(f)) {
        repo.sink().delete(&format::index_key(f)).await?;
    }
    for d in repo.index_damage().await? {
        repo.sink().delete(&d.key).await?;
    }
    for id in &delete {
        repo.sink().delete(&format::pack_key(id)).await?;
    }
    report.bytes_incomplete = repo.sink().reclaim_incomplete().await?;
    repo.index_reset().await;
    Ok(report)
}

/// Removes the snapshots a policy does not keep. Returns the decisions.
pub async fn forget<Tz: chrono::TimeZone>(
    repo: &Arc<Repository>,
    policy: &RetentionPolicy,
    tz: &Tz,
    dry_run: bool,
) -> Result<Vec<ForgetDecision>> {
    if policy.is_empty() {
        return Err(Error::Invalid(
            "no retention rule is configured ([retention] keep_*); refusing to forget every snapshot".into(),
        ));
    }
    let (snapshots, _) = repo.snapshots().await?;
    let decisions = decide(&snapshots, policy, tz);
    if !dry_run {
        for d in decisions.iter().filter(|d| !d.keep) {
            repo.delete_snapshot(&d.id).await?;
        }
    }
    Ok(decisions)
}
