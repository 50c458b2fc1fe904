//! `prune`: removes the data no snapshot refers to, while backups go on.
//!
//! Prune holds a prune lock: shared with backups, restores, copies and
//! verifies, never beside another prune or a repair. It works in two phases
//! so that nothing a running command may still store a reference to is
//! deleted:
//!
//! 1. **Mark.** The chunks the snapshots use get one home pack each; packs
//!    with too much unused data are rewritten (their used chunks copied to
//!    new packs, indexed); then the index is rewritten without the packs to
//!    delete, and those packs are listed in a deletion mark
//!    ([`crate::repo::marks`]) with the lock objects held at that moment.
//! 2. **Sweep.** A mark whose locks are all gone (ended, or stale) is
//!    swept: the snapshots are listed again, and each marked pack that a
//!    snapshot written meanwhile needs (a backup that loaded the old index
//!    deduplicated against it) is indexed again; the others are deleted.
//!    A pack stored again after its mark (a copy, or a backup that produced
//!    the very same pack) is left alone.
//!
//! Every command loads the index only after its lock is written (see
//! [`Repository::lock`]), so a command whose lock is not in a mark never
//! saw the marked packs in the index. The same run sweeps its own mark at
//! once when no other command held a lock; otherwise the next prune does.
//! Order everywhere: new packs → new index fragments → deletion mark → old
//! fragments deleted → (a second mark with the locks taken meanwhile) →
//! packs deleted, so an interruption at any point loses nothing; a pack
//! that several marks list is deleted only when none of them waits.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::artifact::ArtifactKind;
use crate::error::{Error, Result};
use crate::repo::format::{self, BLOB_HEADER_LEN};
use crate::repo::id::ObjectId;
use crate::repo::index::PackEntry;
use crate::repo::lock::LockState;
use crate::repo::marks::{mark_key, DeletionMark};
use crate::repo::snapshot::SnapshotRef;
use crate::repo::tree::TreeReader;
use crate::repo::writer::WriteSession;
use crate::repo::Repository;

/// What prune did (or would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneReport {
    /// Packs found unused (deleted now, or marked to be).
    pub packs_deleted: usize,
    /// Packs rewritten because they were partly unused.
    pub packs_repacked: usize,
    /// Packs left by interrupted runs (never indexed), found unused.
    pub packs_unindexed: usize,
    /// Packs no valid index fragment described whose blobs are still used
    /// (a damaged or deleted fragment, or a pack an earlier prune marked
    /// that a newer snapshot needs): indexed again, not deleted.
    pub packs_recovered: usize,
    /// Live blobs copied out of the rewritten packs.
    pub blobs_rewritten: u64,
    /// Bytes freed (before counting the rewritten packs' new size), now or
    /// once the packs marked by this run are swept.
    pub bytes_freed: u64,
    /// Bytes written by repacking.
    pub bytes_rewritten: u64,
    /// Bytes of incomplete uploads / temporary files removed.
    pub bytes_incomplete: u64,
    /// Old index fragments replaced.
    pub fragments_replaced: usize,
    /// New index fragments written.
    pub fragments_written: usize,
    /// Packs deleted by the sweep (this run's marks and earlier ones).
    pub packs_swept: usize,
    /// Marked packs still waiting, at the end, for commands that held a
    /// lock when they were marked: the next prune deletes them.
    pub packs_waiting: usize,
    /// Their bytes.
    pub bytes_waiting: u64,
}

/// How prune works.
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// Work out and report what would be done; change nothing.
    pub dry_run: bool,
    /// A partly used pack is rewritten when more than this share of its
    /// bytes (0.0–1.0) is unused: 0 rewrites every partly used pack, 1 never
    /// rewrites one (only wholly unused packs are deleted).
    pub max_unused: f64,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            max_unused: DEFAULT_MAX_UNUSED,
        }
    }
}

/// Packs with at most this share of unused bytes are kept as they are.
pub const DEFAULT_MAX_UNUSED: f64 = 0.10;

/// Every chunk any snapshot refers to (listing chunks and file
/// chunks of trees included).
pub async fn used_chunks(
    repo: &Arc<Repository>,
    snapshots: &[SnapshotRef],
) -> Result<HashSet<ObjectId>> {
    repo.require_readable("prune")?;
    let mut used = HashSet::new();
    add_used_chunks(repo, snapshots, &mut used).await?;
    Ok(used)
}

async fn add_used_chunks(
    repo: &Arc<Repository>,
    snapshots: &[SnapshotRef],
    used: &mut impl Extend<ObjectId>,
) -> Result<()> {
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
    Ok(())
}

/// Chunk ids gathered with repeats, sorted and deduplicated whenever they
/// have doubled: memory follows the distinct ids (32 bytes each, no table
/// overhead), and the result is searched by bisection.
#[derive(Default)]
struct SortedIds {
    ids: Vec<ObjectId>,
    compact_at: usize,
}

impl Extend<ObjectId> for SortedIds {
    fn extend<I: IntoIterator<Item = ObjectId>>(&mut self, iter: I) {
        self.ids.extend(iter);
        if self.ids.len() >= self.compact_at {
            self.compact();
            self.compact_at = (2 * self.ids.len()).max(1 << 16);
        }
    }
}

impl SortedIds {
    fn compact(&mut self) {
        self.ids.sort_unstable();
        self.ids.dedup();
    }

    fn finish(mut self) -> Vec<ObjectId> {
        self.compact();
        self.ids.shrink_to_fit();
        self.ids
    }
}

/// No home pack (yet) for a used chunk.
const NO_HOME: u32 = u32::MAX;
/// A used chunk already written again by this run's repacking.
const REWRITTEN: u32 = u32::MAX - 1;

/// What prune does with one pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Keep,
    Repack,
    Delete,
}

/// Where prune found a pack; also the order in which packs become a used
/// chunk's home.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    /// Described by a valid index fragment.
    Indexed,
    /// Described by none (an interrupted run, a damaged or deleted
    /// fragment, a backup still running): read to learn its blobs.
    Unindexed,
    /// Marked by an earlier prune, not swept yet.
    Marked,
}

/// One pack as prune sees it.
struct PackCandidate {
    entry: PackEntry,
    origin: Origin,
    /// Bytes of the blobs this pack is the home of (see [`prune`]).
    live_bytes: u64,
    total_bytes: u64,
    fate: Fate,
}

/// Removes data no snapshot refers to (see the module docs). The caller
/// holds a prune lock.
///
/// Every used chunk gets one home pack: the pack the index names for it,
/// else the first pack found by listing that holds it, else a pack marked by
/// an earlier prune. A pack that is home to no used chunk is marked for
/// deletion; one whose unused share is over [`PruneOptions::max_unused`] is
/// rewritten: its used chunks are checked, written to new packs and indexed,
/// and then it is marked. A repository whose snapshots use chunks that are
/// nowhere is refused with nothing changed.
pub async fn prune(repo: &Arc<Repository>, opts: &PruneOptions) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    let (marks, damaged_marks) = repo.marks().await?;
    let marked: HashMap<ObjectId, &PackEntry> = marks
        .iter()
        .flat_map(|m| m.packs.iter().map(|p| (p.id, p)))
        .collect();
    let (snapshots, damaged) = repo.snapshots().await?;
    if let Some(d) = damaged.first() {
        return Err(Error::corrupt(
            format!("snapshot object {}", d.key),
            format!("{}; prune cannot know what it refers to, so nothing was deleted (run `respaldo repair snapshots`, or remove the object if it cannot be recovered)", d.detail),
        ));
    }
    repo.require_readable("prune")?;
    // Every used chunk, sorted, and beside it the position of its home pack
    // among the candidates.
    let used: Vec<ObjectId> = {
        let mut ids = SortedIds::default();
        add_used_chunks(repo, &snapshots, &mut ids).await?;
        ids.finish()
    };
    let used_at = |id: &ObjectId| used.binary_search(id).ok();
    repo.load_index().await?;
    let listed = repo.list_packs().await?;
    let mut candidates: Vec<PackCandidate> = repo
        .with_index(|i| i.pack_entries())
        .await?
        .into_iter()
        .filter(|p| listed.contains_key(&p.id))
        .map(|entry| PackCandidate::new(entry, Origin::Indexed))
        .collect();
    let indexed: HashSet<ObjectId> = repo
        .with_index(|i| i.packs().iter().map(|p| p.id).collect())
        .await?;
    // Packs no fragment describes: read them (those an earlier prune marked
    // are described by their mark), so that used chunks in them are never
    // deleted with them.
    let mut unindexed: Vec<&ObjectId> = listed.keys().filter(|id| !indexed.contains(id)).collect();
    unindexed.sort();
    for id in unindexed {
        if let Some(entry) = marked.get(id) {
            candidates.push(PackCandidate::new((*entry).clone(), Origin::Marked));
            continue;
        }
        let bytes = match repo.sink().get(&format::pack_key(id)).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        match repo.parse_pack(id, &bytes, false) {
            Ok(p) => candidates.push(PackCandidate::new(p, Origin::Unindexed)),
            Err(e) => {
                tracing::warn!(
                    "pack {} is damaged ({e}); prune keeps it for inspection",
                    id.short()
                );
            }
        }
    }
    candidates.sort_by_key(|c| c.origin);

    // Each used chunk's home: indexed packs first, then the others.
    let mut home: Vec<u32> = vec![NO_HOME; used.len()];
    for (at, c) in candidates.iter_mut().enumerate() {
        for b in &c.entry.blobs {
            if let Some(i) = used_at(&b.id) {
                if home[i] == NO_HOME {
                    home[i] = at as u32;
                    c.live_bytes += b.length as u64;
                }
            }
        }
    }
    if home.contains(&NO_HOME) {
        let missing: HashSet<&ObjectId> = used
            .iter()
            .zip(&home)
            .filter(|(_, h)| **h == NO_HOME)
            .map(|(id, _)| id)
            .collect();
        let affected = snapshots_using(repo, &snapshots, &missing).await?;
        return Err(Error::corrupt(
            "repository",
            format!(
                "{} chunk(s) used by snapshot(s) {} are in no pack; prune refuses to run on a \
                 damaged repository and changed nothing (see `respaldo verify`; \
                 `respaldo repair snapshots` replaces the damaged snapshots)",
                missing.len(),
                affected.join(", ")
            ),
        ));
    }

    for c in &mut candidates {
        c.fate = if c.live_bytes == 0 {
            Fate::Delete
        } else if (c.total_bytes - c.live_bytes) as f64 / c.total_bytes as f64 > opts.max_unused {
            Fate::Repack
        } else {
            Fate::Keep
        };
        match (c.fate, c.origin) {
            // Already marked: the sweep below decides.
            (Fate::Delete, Origin::Marked) => {}
            (Fate::Delete, Origin::Unindexed) => {
                report.packs_unindexed += 1;
                report.bytes_freed += c.entry.size;
            }
            (Fate::Delete, Origin::Indexed) => {
                report.packs_deleted += 1;
                report.bytes_freed += c.entry.size;
            }
            (Fate::Repack, _) => {
                report.packs_repacked += 1;
                report.bytes_freed += c.entry.size;
            }
            (Fate::Keep, Origin::Indexed) => {}
            (Fate::Keep, _) => report.packs_recovered += 1,
        }
    }
    let kept: HashSet<ObjectId> = candidates
        .iter()
        .filter(|c| c.fate == Fate::Keep)
        .map(|c| c.entry.id)
        .collect();
    // A fragment stays as it is when every pack it describes is kept and
    // nothing in it changes; the others are replaced, and so are those in
    // the JSON encoding of earlier versions (migrated to the binary one).
    let old_fragments = repo.index_fragments().await?;
    let legacy = repo.legacy_fragments().await?;
    let (fragments_kept, fragments_dropped): (Vec<_>, Vec<_>) = old_fragments
        .into_iter()
        .partition(|(f, packs)| !legacy.contains(f) && packs.iter().all(|p| kept.contains(p)));
    let described: HashSet<ObjectId> = fragments_kept
        .iter()
        .flat_map(|(_, packs)| packs.iter().copied())
        .collect();
    let damaged_fragments = repo.index_damage().await?;
    report.fragments_replaced = fragments_dropped.len() + damaged_fragments.len();
    if opts.dry_run {
        return Ok(report);
    }

    // 1. Rewrite the used blobs whose home is a pack being repacked, each
    //    checked against its id first (a damaged blob is never copied on).
    //    A used blob homed in a kept pack stays there.
    let session = WriteSession::with_known(repo.clone(), HashSet::new());
    for (at, c) in candidates.iter().enumerate() {
        if c.fate != Fate::Repack {
            continue;
        }
        let p = &c.entry;
        let bytes = repo.sink().get(&format::pack_key(&p.id)).await?;
        for b in &p.blobs {
            let Some(i) = used_at(&b.id).filter(|&i| home[i] == at as u32) else {
                continue;
            };
            home[i] = REWRITTEN;
            let start = b.offset as usize;
            let end = start + b.length as usize;
            let what = || format!("pack {} (chunk {})", p.id.short(), b.id.short());
            if end > bytes.len() || b.length as usize <= BLOB_HEADER_LEN {
                return Err(Error::corrupt(
                    what(),
                    "index entry out of range; nothing was deleted",
                ));
            }
            let encoded = repo.open_frame(&p.id, &bytes, bytes.slice(start..end))?;
            repo.check_encoded(&b.id, &encoded).map_err(|d| {
                Error::corrupt(
                    what(),
                    format!("{d}; prune stopped before deleting anything"),
                )
            })?;
            session.add_encoded(b.id, b.kind, encoded).await?;
            report.blobs_rewritten += 1;
        }
    }
    drop(home);
    // Names are content hashes: what this run writes may carry the very name
    // of an object it is about to delete (a pack or fragment an interrupted
    // earlier prune wrote with the same content). Those are never deleted.
    let mut written_fragments: HashSet<ObjectId> = HashSet::new();
    for f in session.finish().await? {
        report.fragments_written += 1;
        written_fragments.insert(f);
    }
    let written_packs = session.written_packs();
    report.bytes_rewritten = session
        .stats
        .bytes_added
        .load(std::sync::atomic::Ordering::Relaxed);

    // 2. New fragments for the kept packs that no kept fragment describes
    //    (the packs of replaced fragments, recovered and re-indexed ones).
    let undescribed: Vec<PackEntry> = candidates
        .iter()
        .filter(|c| c.fate == Fate::Keep && !described.contains(&c.entry.id))
        .map(|c| c.entry.clone())
        .collect();
    for f in repo.write_fragments(undescribed).await? {
        written_fragments.insert(f);
        report.fragments_written += 1;
    }

    // 3. Mark the packs to delete with the locks held now, then delete the
    //    old fragments: from there on the index no longer names those
    //    packs. A command that took its lock in between may have loaded the
    //    old index: a second mark adding its lock replaces the first.
    let doomed: Vec<PackEntry> = candidates
        .into_iter()
        .filter(|c| {
            c.fate != Fate::Keep
                && c.origin != Origin::Marked
                && !written_packs.contains(&c.entry.id)
        })
        .map(|c| c.entry)
        .collect();
    let mut mark = match doomed.is_empty() {
        true => None,
        false => Some(new_mark(repo, held_locks(repo).await?, doomed).await?),
    };
    for (f, _) in fragments_dropped
        .iter()
        .filter(|(f, _)| !written_fragments.contains(f))
    {
        repo.sink().delete(&format::index_key(f)).await?;
    }
    for d in damaged_fragments
        .iter()
        .filter(|d| format::id_from_key(&d.key).is_none_or(|id| !written_fragments.contains(&id)))
    {
        repo.sink().delete(&d.key).await?;
    }
    if let Some(m) = &mut mark {
        let held = held_locks(repo).await?;
        if held.iter().any(|k| !m.waits_for.contains(k)) {
            let mut waits_for = m.waits_for.clone();
            waits_for.extend(held.into_iter().filter(|k| !m.waits_for.contains(k)));
            let first = m.id;
            *m = new_mark(repo, waits_for, std::mem::take(&mut m.packs)).await?;
            repo.delete_mark(&mark_key(&first)).await?;
        }
    }
    let mut marks = marks;
    marks.extend(mark);
    for d in &damaged_marks {
        tracing::warn!(
            "deletion mark {} is damaged ({}); its packs are marked again by the next prune",
            d.key,
            d.detail
        );
        repo.delete_mark(&d.key).await?;
    }

    // 4. Sweep the marks nothing waits for any more.
    let seen: HashSet<ObjectId> = snapshots.iter().map(|s| s.id).collect();
    sweep(repo, marks, &seen, &used, &mut report).await?;
    report.bytes_incomplete = repo.sink().reclaim_incomplete().await?;
    repo.index_reset().await;
    Ok(report)
}

/// Keys of the lock objects held now by other commands than prunes (a prune
/// never stores references; the one running is this one).
async fn held_locks(repo: &Repository) -> Result<Vec<String>> {
    let (locks, clock) = repo.locks(None).await?;
    Ok(locks
        .into_iter()
        .filter(|l| l.is_live(&clock))
        .filter(|l| !matches!(&l.state, LockState::Info(i) if i.prune))
        .map(|l| l.key)
        .collect())
}

/// Writes a deletion mark, with the storage's time of writing it (for the
/// "stored again since" check of the sweep).
async fn new_mark(
    repo: &Repository,
    waits_for: Vec<String>,
    packs: Vec<PackEntry>,
) -> Result<DeletionMark> {
    let (id, stored) = repo.write_mark(waits_for.clone(), &packs).await?;
    let key = mark_key(&id);
    let modified = repo
        .sink()
        .list(&key)
        .await?
        .into_iter()
        .find(|o| o.key == key)
        .and_then(|o| o.modified);
    Ok(DeletionMark {
        id,
        modified,
        waits_for,
        packs,
        stored,
    })
}

/// Deletes (or indexes again) the packs of the marks whose locks are gone.
/// A pack also listed by a mark that still waits is left to that mark.
/// `seen` are the snapshots whose chunks `used` (sorted) already holds.
async fn sweep(
    repo: &Arc<Repository>,
    marks: Vec<DeletionMark>,
    seen: &HashSet<ObjectId>,
    used: &[ObjectId],
    report: &mut PruneReport,
) -> Result<()> {
    let held: HashSet<String> = {
        let (locks, clock) = repo.locks(None).await?;
        locks
            .into_iter()
            .filter(|l| l.is_live(&clock))
            .map(|l| l.key)
            .collect()
    };
    let (ready, waiting): (Vec<_>, Vec<_>) = marks
        .into_iter()
        .partition(|m| m.waits_for.iter().all(|k| !held.contains(k)));
    for m in &waiting {
        report.packs_waiting += m.packs.len();
        report.bytes_waiting += m.packs.iter().map(|p| p.size).sum::<u64>();
    }
    let held_back: HashSet<ObjectId> = waiting
        .iter()
        .flat_map(|m| m.packs.iter().map(|p| p.id))
        .collect();
    if ready.is_empty() {
        return Ok(());
    }
    // Snapshots written since `used` was computed, by commands that may have
    // loaded the index before the marks were written.
    let (snapshots, damaged) = repo.snapshots().await?;
    if let Some(d) = damaged.first() {
        tracing::warn!(
            "snapshot object {} is damaged ({}); marked packs are kept until it is repaired",
            d.key,
            d.detail
        );
        for m in &ready {
            report.packs_waiting += m.packs.len();
            report.bytes_waiting += m.packs.iter().map(|p| p.size).sum::<u64>();
        }
        return Ok(());
    }
    let newer: Vec<SnapshotRef> = snapshots
        .into_iter()
        .filter(|s| !seen.contains(&s.id))
        .collect();
    // Their trees are read through the index as it is now: the one loaded
    // at the start lacks what they stored since, and its one scan of
    // unindexed packs may be over already.
    repo.index_reset().await;
    let mut newer_used: HashSet<ObjectId> = HashSet::new();
    add_used_chunks(repo, &newer, &mut newer_used).await?;
    let is_used = |id: &ObjectId| used.binary_search(id).is_ok() || newer_used.contains(id);
    // The checks below see only what index fragments describe (reading the
    // trees may have scanned unindexed packs, the marked ones among them,
    // into the index in memory).
    repo.index_reset().await;
    repo.load_index().await?;
    let stored: HashMap<ObjectId, Option<chrono::DateTime<chrono::Utc>>> = repo
        .sink()
        .list("packs/")
        .await?
        .into_iter()
        .filter_map(|o| format::id_from_key(&o.key).map(|id| (id, o.modified)))
        .collect();
    let mut rescue: Vec<PackEntry> = Vec::new();
    let mut delete: Vec<ObjectId> = Vec::new();
    for m in &ready {
        for p in &m.packs {
            let Some(written) = stored.get(&p.id) else {
                continue; // swept before
            };
            let again = match (written, m.modified) {
                (Some(w), Some(marked)) => *w >= marked,
                _ => false,
            };
            if again || held_back.contains(&p.id) || repo.with_index(|i| i.has_pack(&p.id)).await? {
                continue; // stored or indexed again since, or still waited for
            }
            let needed = repo
                .with_index(|i| p.blobs.iter().any(|b| is_used(&b.id) && !i.contains(&b.id)))
                .await?;
            if needed {
                rescue.push(p.clone());
            } else {
                delete.push(p.id);
            }
        }
    }
    report.packs_recovered += rescue.len();
    report.fragments_written += repo.write_fragments(rescue).await?.len();
    for id in &delete {
        repo.sink().delete(&format::pack_key(id)).await?;
    }
    report.packs_swept += delete.len();
    for m in &ready {
        repo.delete_mark(&mark_key(&m.id)).await?;
    }
    Ok(())
}

impl PackCandidate {
    fn new(entry: PackEntry, origin: Origin) -> Self {
        let total_bytes = entry
            .blobs
            .iter()
            .map(|b| b.length as u64)
            .sum::<u64>()
            .max(1);
        PackCandidate {
            entry,
            origin,
            live_bytes: 0,
            total_bytes,
            fate: Fate::Keep,
        }
    }
}

/// The short ids of the snapshots that refer to any of `chunks`.
pub async fn snapshots_using(
    repo: &Arc<Repository>,
    snapshots: &[SnapshotRef],
    chunks: &HashSet<&ObjectId>,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for s in snapshots {
        let mine = used_chunks(repo, std::slice::from_ref(s)).await?;
        if mine.iter().any(|c| chunks.contains(c)) {
            out.push(s.id.short());
        }
    }
    Ok(out)
}
