//! `forget` (apply retention) and `prune` (remove unreferenced data).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::artifact::ArtifactKind;
use crate::error::{Error, Result};
use crate::ops::retention::{Candidate, RetentionPolicy};
use crate::repo::format::{self, BLOB_HEADER_LEN};
use crate::repo::id::ObjectId;
use crate::repo::index::PackEntry;
use crate::repo::snapshot::{Hosts, SnapshotRef, DAMAGED_TAG, KEEP_TAG, PRE_RESTORE_TAG};
use crate::repo::tree::TreeReader;
use crate::repo::writer::WriteSession;
use crate::repo::Repository;

/// One snapshot's fate.
#[derive(Debug, Clone)]
pub struct ForgetDecision {
    /// Snapshot id.
    pub id: ObjectId,
    /// When it was taken.
    pub time: chrono::DateTime<chrono::Utc>,
    /// The host that took it.
    pub host: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Kept or removed.
    pub keep: bool,
    /// Why it is kept (rule names per source), or why removed.
    pub reasons: Vec<String>,
}

/// What `forget` considers and protects.
#[derive(Debug, Clone)]
pub struct ForgetOptions {
    /// Work out and report the decisions; delete nothing.
    pub dry_run: bool,
    /// Whose snapshots: the others are neither considered nor touched.
    pub hosts: Hosts,
    /// Safety snapshots (tag `pre-restore`) younger than this are kept
    /// whatever the rules say; older ones are removed. They never take a
    /// place in a source's retention series.
    pub safety_window: chrono::TimeDelta,
    /// The time the safety window is measured from.
    pub now: chrono::DateTime<chrono::Utc>,
}

impl Default for ForgetOptions {
    fn default() -> Self {
        ForgetOptions {
            dry_run: false,
            hosts: Hosts::All,
            safety_window: DEFAULT_SAFETY_WINDOW,
            now: chrono::Utc::now(),
        }
    }
}

/// How long safety snapshots are kept by default: 7 days.
pub const DEFAULT_SAFETY_WINDOW: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// Decides which of the snapshots of `opts.hosts` a policy keeps.
///
/// Each (host, source) pair's good regular backups form a series the policy
/// is applied to (per-tag rules within it); a snapshot is kept if any of its
/// sources keeps it, so two hosts with a source of the same name never
/// share a series. Snapshots tagged `keep` and damaged originals (tag
/// `damaged`) are always kept; safety snapshots (tag `pre-restore`) are kept
/// within the safety window, and longer by a `tags.pre-restore` rule
/// (counted among the safety snapshots of each host). Snapshots without any
/// good source are removed.
pub fn decide<Tz: chrono::TimeZone>(
    snapshots: &[SnapshotRef],
    policy: &RetentionPolicy,
    tz: &Tz,
    opts: &ForgetOptions,
) -> Vec<ForgetDecision> {
    let considered: Vec<&SnapshotRef> = snapshots
        .iter()
        .filter(|s| opts.hosts.matches(&s.snapshot.host))
        .collect();
    let mut reasons: HashMap<ObjectId, Vec<String>> = HashMap::new();
    let mut removed_why: HashMap<ObjectId, String> = HashMap::new();
    for s in &considered {
        let r = if s.has_tag(KEEP_TAG) {
            Some("tag keep".to_string())
        } else if s.has_tag(DAMAGED_TAG) {
            Some("damaged original replaced by `repair snapshots` (forget it by id)".to_string())
        } else if s.has_tag(PRE_RESTORE_TAG) {
            let window = opts.safety_window;
            if opts.now - s.snapshot.time < window {
                Some(format!("safety snapshot, kept for {}", human_days(window)))
            } else {
                removed_why.insert(
                    s.id,
                    format!("safety snapshot older than {}", human_days(window)),
                );
                None
            }
        } else {
            None
        };
        if let Some(r) = r {
            reasons.entry(s.id).or_default().push(r);
        }
    }
    // A rule written for the safety snapshots' own tag keeps them longer,
    // counted among themselves, per host.
    if let Some(rules) = policy.tags.get(PRE_RESTORE_TAG) {
        let own = RetentionPolicy {
            tags: [(PRE_RESTORE_TAG.to_string(), rules.clone())].into(),
            ..Default::default()
        };
        let mut hosts: Vec<&str> = considered
            .iter()
            .map(|s| s.snapshot.host.as_str())
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        for host in hosts {
            let members: Vec<(String, &SnapshotRef)> = considered
                .iter()
                .filter(|s| s.snapshot.host == host && s.has_tag(PRE_RESTORE_TAG))
                .map(|s| (s.id.to_hex(), *s))
                .collect();
            let candidates: Vec<Candidate<'_>> = members
                .iter()
                .map(|(id, s)| Candidate {
                    id,
                    time: s.snapshot.time,
                    tags: &s.snapshot.tags,
                })
                .collect();
            for d in own.apply(&candidates, tz).into_iter().filter(|d| d.keep) {
                let id: ObjectId = d.id.parse().expect("ids are hex");
                removed_why.remove(&id);
                reasons.entry(id).or_default().extend(d.reasons);
            }
        }
    }
    let mut series: Vec<(&str, &str)> = considered
        .iter()
        .filter(|s| s.is_regular())
        .flat_map(|s| {
            s.snapshot
                .sources
                .keys()
                .map(|k| (s.snapshot.host.as_str(), k.as_str()))
        })
        .collect();
    series.sort_unstable();
    series.dedup();
    for (host, source) in series {
        let members: Vec<(String, &SnapshotRef)> = considered
            .iter()
            .filter(|s| s.is_regular() && s.snapshot.host == host && s.good(source).is_some())
            .map(|s| (s.id.to_hex(), *s))
            .collect();
        let candidates: Vec<Candidate<'_>> = members
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
    let mut out: Vec<ForgetDecision> = considered
        .iter()
        .map(|s| {
            let kept = reasons.remove(&s.id);
            let keep = kept.is_some();
            ForgetDecision {
                id: s.id,
                time: s.snapshot.time,
                host: s.snapshot.host.clone(),
                tags: s.snapshot.tags.clone(),
                keep,
                reasons: kept.unwrap_or_else(|| {
                    if let Some(why) = removed_why.remove(&s.id) {
                        vec![why]
                    } else if s.snapshot.sources.values().any(|e| e.is_ok()) {
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

fn human_days(d: chrono::TimeDelta) -> String {
    if d.num_hours() % 24 == 0 {
        format!("{}d", d.num_days())
    } else {
        format!("{}h", d.num_hours())
    }
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
    /// Packs no valid index fragment described whose blobs are still used
    /// (a damaged or deleted fragment): indexed again, not deleted.
    pub packs_recovered: usize,
    /// Live blobs copied out of the rewritten packs.
    pub blobs_rewritten: u64,
    /// Bytes freed (before counting the rewritten packs' new size).
    pub bytes_freed: u64,
    /// Bytes written by repacking.
    pub bytes_rewritten: u64,
    /// Bytes of incomplete uploads / temporary files removed.
    pub bytes_incomplete: u64,
    /// Old index fragments replaced.
    pub fragments_replaced: usize,
    /// New index fragments written.
    pub fragments_written: usize,
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

/// Every chunk any snapshot refers to (listing chunks and file
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

/// Packs with at most this share of unused bytes are kept as they are.
pub const DEFAULT_MAX_UNUSED: f64 = 0.10;

/// Blobs described per new index fragment, at most (prune writes several
/// bounded fragments rather than one for the whole repository).
const FRAGMENT_BLOBS: usize = 50_000;

/// What prune does with one pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Keep,
    Repack,
    Delete,
}

/// One pack as prune sees it.
struct PackCandidate {
    entry: PackEntry,
    /// No valid index fragment describes it (found by listing).
    unindexed: bool,
    /// Bytes of the blobs this pack is the home of (see [`prune`]).
    live_bytes: u64,
    total_bytes: u64,
    fate: Fate,
}

/// Removes data no snapshot refers to. The caller holds an exclusive lock.
///
/// Every used chunk gets one home pack: the pack the index names for it, or
/// else the first pack found by listing that holds it (packs of interrupted
/// runs, of a damaged or deleted index fragment). A pack that is home to no
/// used chunk is deleted; one whose unused share is over
/// [`PruneOptions::max_unused`] is rewritten: its used chunks are checked,
/// written to new packs and indexed, and only then is it deleted. Order: new
/// packs → new index fragments → old fragments deleted → old packs deleted,
/// so an interruption at any point loses nothing. A repository whose
/// snapshots use chunks that are nowhere is refused with nothing changed.
pub async fn prune(repo: &Arc<Repository>, opts: &PruneOptions) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    let (snapshots, damaged) = repo.snapshots().await?;
    if let Some(d) = damaged.first() {
        return Err(Error::corrupt(
            format!("snapshot object {}", d.key),
            format!("{}; prune cannot know what it refers to, so nothing was deleted (run `respaldo repair snapshots`, or remove the object if it cannot be recovered)", d.detail),
        ));
    }
    let used = used_chunks(repo, &snapshots).await?;
    repo.load_index().await?;
    let listed = repo.list_packs().await?;
    let mut candidates: Vec<PackCandidate> = repo
        .with_index(|i| i.pack_entries())
        .await?
        .into_iter()
        .filter(|p| listed.contains_key(&p.id))
        .map(|entry| PackCandidate::new(entry, false))
        .collect();
    let indexed: HashSet<ObjectId> = repo
        .with_index(|i| i.packs().iter().map(|p| p.id).collect())
        .await?;
    // Packs no fragment describes: read them, so that used chunks in them
    // are never deleted with them.
    let mut unreadable: HashSet<ObjectId> = HashSet::new();
    let mut unindexed: Vec<&ObjectId> = listed.keys().filter(|id| !indexed.contains(id)).collect();
    unindexed.sort();
    for id in unindexed {
        let bytes = repo.sink().get(&format::pack_key(id)).await?;
        match repo.parse_pack(id, &bytes, false) {
            Ok(p) => candidates.push(PackCandidate::new(p, true)),
            Err(e) => {
                tracing::warn!(
                    "pack {} is damaged ({e}); prune keeps it for inspection",
                    id.short()
                );
                unreadable.insert(*id);
            }
        }
    }

    // Each used chunk's home: indexed packs first, then the others.
    let mut homed: HashSet<ObjectId> = HashSet::with_capacity(used.len());
    for c in &mut candidates {
        for b in &c.entry.blobs {
            if used.contains(&b.id) && homed.insert(b.id) {
                c.live_bytes += b.length as u64;
            }
        }
    }
    if homed.len() < used.len() {
        let missing: HashSet<&ObjectId> = used.iter().filter(|id| !homed.contains(id)).collect();
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
        match (c.fate, c.unindexed) {
            (Fate::Delete, true) => {
                report.packs_unindexed += 1;
                report.bytes_freed += c.entry.size;
            }
            (Fate::Delete, false) => {
                report.packs_deleted += 1;
                report.bytes_freed += c.entry.size;
            }
            (Fate::Repack, _) => {
                report.packs_repacked += 1;
                report.bytes_freed += c.entry.size;
            }
            (Fate::Keep, true) => report.packs_recovered += 1,
            (Fate::Keep, false) => {}
        }
    }
    let kept: HashSet<ObjectId> = candidates
        .iter()
        .filter(|c| c.fate == Fate::Keep)
        .map(|c| c.entry.id)
        .collect();
    // A fragment stays as it is when every pack it describes is kept and
    // nothing in it changes; the others are replaced.
    let old_fragments = repo.index_fragments().await?;
    let (fragments_kept, fragments_dropped): (Vec<_>, Vec<_>) = old_fragments
        .into_iter()
        .partition(|(_, packs)| packs.iter().all(|p| kept.contains(p)));
    let described: HashSet<ObjectId> = fragments_kept
        .iter()
        .flat_map(|(_, packs)| packs.iter().copied())
        .collect();
    let damaged_fragments = repo.index_damage().await?;
    report.fragments_replaced = fragments_dropped.len() + damaged_fragments.len();
    if opts.dry_run {
        return Ok(report);
    }

    // 1. Rewrite the used blobs of the packs being repacked, each checked
    //    against its id first (a damaged blob is never copied on).
    let known: HashSet<ObjectId> = candidates
        .iter()
        .filter(|c| c.fate == Fate::Keep)
        .flat_map(|c| c.entry.blobs.iter().map(|b| b.id))
        .collect();
    let session = WriteSession::with_known(repo.clone(), known);
    let mut rewritten: HashSet<ObjectId> = HashSet::new();
    for c in candidates.iter().filter(|c| c.fate == Fate::Repack) {
        let p = &c.entry;
        let bytes = repo.sink().get(&format::pack_key(&p.id)).await?;
        for b in &p.blobs {
            if !used.contains(&b.id) || !rewritten.insert(b.id) {
                continue;
            }
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
    // Names are content hashes: what this run writes may carry the very name
    // of an object it is about to delete (a pack or fragment an interrupted
    // earlier prune wrote with the same content). Those are never deleted.
    let mut written_fragments: HashSet<ObjectId> = HashSet::new();
    if let Some(f) = session.finish().await? {
        report.fragments_written += 1;
        written_fragments.insert(f);
    }
    let written_packs = session.written_packs();
    report.bytes_rewritten = session
        .stats
        .bytes_added
        .load(std::sync::atomic::Ordering::Relaxed);

    // 2. New fragments for the kept packs that no kept fragment describes.
    let mut undescribed: Vec<PackEntry> = candidates
        .iter()
        .filter(|c| c.fate == Fate::Keep && !described.contains(&c.entry.id))
        .map(|c| c.entry.clone())
        .collect();
    undescribed.sort_by_key(|p| p.id);
    let mut batch: Vec<PackEntry> = Vec::new();
    let mut blobs = 0usize;
    for p in undescribed {
        blobs += p.blobs.len();
        batch.push(p);
        if blobs >= FRAGMENT_BLOBS {
            written_fragments.insert(repo.write_fragment(&batch).await?);
            report.fragments_written += 1;
            batch.clear();
            blobs = 0;
        }
    }
    if !batch.is_empty() {
        written_fragments.insert(repo.write_fragment(&batch).await?);
        report.fragments_written += 1;
    }

    // 3. Old fragments, then 4. packs.
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
    for c in candidates
        .iter()
        .filter(|c| c.fate != Fate::Keep && !written_packs.contains(&c.entry.id))
    {
        repo.sink().delete(&format::pack_key(&c.entry.id)).await?;
    }
    report.bytes_incomplete = repo.sink().reclaim_incomplete().await?;
    repo.index_reset().await;
    Ok(report)
}

impl PackCandidate {
    fn new(entry: PackEntry, unindexed: bool) -> Self {
        let total_bytes = entry
            .blobs
            .iter()
            .map(|b| b.length as u64)
            .sum::<u64>()
            .max(1);
        PackCandidate {
            entry,
            unindexed,
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

/// Removes the snapshots of `opts.hosts` a policy does not keep. Returns the
/// decisions.
pub async fn forget<Tz: chrono::TimeZone>(
    repo: &Arc<Repository>,
    policy: &RetentionPolicy,
    tz: &Tz,
    opts: &ForgetOptions,
) -> Result<Vec<ForgetDecision>> {
    if policy.is_empty() {
        return Err(Error::Invalid(
            "no retention rule is configured ([retention] keep_*); refusing to forget every snapshot".into(),
        ));
    }
    let (snapshots, _) = repo.snapshots().await?;
    let decisions = decide(&snapshots, policy, tz, opts);
    if !opts.dry_run {
        for d in decisions.iter().filter(|d| !d.keep) {
            repo.delete_snapshot(&d.id).await?;
        }
    }
    Ok(decisions)
}

/// Removes the given snapshots (ids as resolved by the caller), whatever
/// their tags or host: an explicit `forget ID`.
pub async fn forget_ids(repo: &Arc<Repository>, ids: &[ObjectId], dry_run: bool) -> Result<()> {
    if !dry_run {
        for id in ids {
            repo.delete_snapshot(id).await?;
        }
    }
    Ok(())
}
