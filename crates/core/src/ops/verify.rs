//! `verify`: a cheap structural check, and with `read_data` a full re-read
//! that re-hashes every byte. Every problem names the damaged object and the
//! snapshots it affects, and the report suggests the `repair` that applies.
//! In an encrypted repository the structural check works without the
//! identity (index against packs, snapshot objects intact) but cannot follow
//! the sealed snapshots to their chunks; `read_data` needs the identity.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::artifact::ArtifactKind;
use crate::error::Result;
use crate::kit::progress::Progress;
use crate::repo::format;
use crate::repo::id::ObjectId;
use crate::repo::lock::LockState;
use crate::repo::snapshot::{SnapshotRef, SourceEntry, DAMAGED_TAG};
use crate::repo::tree::TreeReader;
use crate::repo::{ChunkLocation, Repository};

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Download every pack and re-hash every blob.
    pub read_data: bool,
    /// Only these snapshots (default: all).
    pub snapshots: Option<Vec<ObjectId>>,
}

/// The outcome of a verify (its JSON form is `verify --json`'s, with `ok`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Problems found, one line each.
    pub problems: Vec<String>,
    /// What to run about them (`respaldo repair …`, `respaldo unlock`).
    pub suggestions: Vec<String>,
    /// Findings that are not damage (packs of interrupted runs, stale locks).
    pub notes: Vec<String>,
    /// Snapshots whose data is damaged or missing.
    pub damaged_snapshots: BTreeSet<ObjectId>,
    /// Snapshots checked.
    pub snapshots_checked: usize,
    /// Packs read (with `read_data`).
    pub packs_read: usize,
    /// Chunks referenced by the checked snapshots.
    pub chunks_referenced: usize,
    /// Bytes downloaded.
    pub bytes_read: u64,
    /// Checked snapshots whose contents are sealed (an encrypted repository
    /// opened without the identity): their chunk references were not checked.
    pub sealed_snapshots: usize,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn suggest(&mut self, s: &str) {
        if !self.suggestions.iter().any(|x| x == s) {
            self.suggestions.push(s.to_string());
        }
    }
}

const REPAIR_INDEX: &str = "`respaldo repair index` rebuilds the index from the packs' own headers";
const REPAIR_SNAPSHOTS: &str = "`respaldo repair snapshots` replaces the damaged snapshots with \
     ones that keep everything that survived (the originals stay, tagged `damaged`)";
const REPAIR_CONFIG: &str = "`respaldo repair config` writes the config and its copy again";
const UNLOCK: &str = "`respaldo unlock` removes stale locks (`--remove-all` every lock, when no \
     other command is running)";

/// Where every chunk of one source entry is, checked against the index and
/// the packs in storage: one line per artifact with missing chunks or an
/// unreadable listing, and the packs the entry uses. Used by `verify` and
/// to check a new snapshot before it is written (`verify_after_backup`).
pub async fn check_entry(
    repo: &Arc<Repository>,
    entry: &SourceEntry,
    listed: &HashMap<ObjectId, u64>,
) -> Result<EntryCheck> {
    let mut out = EntryCheck::default();
    for a in &entry.artifacts {
        let mut ids: Vec<ObjectId> = a.chunks.clone();
        if a.kind == ArtifactKind::Tree {
            let mut reader = TreeReader::new(repo.clone(), a)?;
            loop {
                match reader.next_entry().await {
                    Ok(Some(e)) => ids.extend(e.chunks),
                    Ok(None) => break,
                    Err(e) => {
                        out.problems
                            .push(format!("artifact `{}`: cannot read its tree: {e}", a.name));
                        break;
                    }
                }
            }
        }
        let mut missing = 0usize;
        for id in ids {
            match repo.locate_chunk(&id, listed).await? {
                ChunkLocation::Indexed(pack) => {
                    out.packs.insert(pack);
                }
                ChunkLocation::Unindexed(pack) => {
                    out.packs.insert(pack);
                    out.unindexed.insert(id);
                }
                ChunkLocation::Missing => missing += 1,
            }
            out.chunks.insert(id);
        }
        if missing > 0 {
            out.problems.push(format!(
                "artifact `{}`: {missing} chunk(s) missing from the repository",
                a.name
            ));
        }
    }
    Ok(out)
}

/// The result of [`check_entry`].
#[derive(Debug, Clone, Default)]
pub struct EntryCheck {
    /// Problems, one line each (empty when the entry is whole).
    pub problems: Vec<String>,
    /// Packs holding its chunks.
    pub packs: HashSet<ObjectId>,
    /// Chunks it refers to.
    pub chunks: HashSet<ObjectId>,
    /// Chunks found only in packs that no index fragment describes.
    pub unindexed: HashSet<ObjectId>,
}

/// Verifies the repository.
pub async fn verify(
    repo: &Arc<Repository>,
    opts: &VerifyOptions,
    progress: &Arc<Progress>,
) -> Result<VerifyReport> {
    if opts.read_data {
        repo.require_readable("verify --read-data")?;
    }
    let mut report = VerifyReport::default();
    for d in repo.config_damage() {
        report.problems.push(format!(
            "repository config object `{}`: {}",
            d.key, d.detail
        ));
        report.suggest(REPAIR_CONFIG);
    }
    let (locks, clock) = repo.locks(None).await?;
    for l in locks {
        match &l.state {
            LockState::Unreadable { .. } => {
                report.problems.push(format!("lock: {}", l.describe()));
                report.suggest(UNLOCK);
            }
            LockState::Info(_) if l.is_stale(&clock) => {
                report
                    .notes
                    .push(format!("stale lock {}: {}", l.key, l.describe()));
            }
            LockState::Info(_) => {}
        }
    }
    for d in repo.index_damage().await? {
        report.problems.push(format!(
            "index fragment {} is damaged: {} (its packs are found by scanning meanwhile)",
            d.key, d.detail
        ));
        report.suggest(REPAIR_INDEX);
    }
    let (snapshots, damaged) = repo.snapshots().await?;
    for d in damaged {
        report.problems.push(format!(
            "snapshot object {} is damaged: {}",
            d.key, d.detail
        ));
        report.suggest(
            "remove the damaged snapshot object (`respaldo forget ID`); the other snapshots are unaffected",
        );
    }
    let selected: Vec<&SnapshotRef> = match &opts.snapshots {
        Some(ids) => snapshots.iter().filter(|s| ids.contains(&s.id)).collect(),
        None => snapshots.iter().collect(),
    };
    report.snapshots_checked = selected.len();
    report.sealed_snapshots = selected
        .iter()
        .filter(|s| s.snapshot.sealed.is_some())
        .count();

    let listed = repo.list_packs().await?;
    let index_packs = repo.with_index(|i| i.packs().to_vec()).await?;
    for p in &index_packs {
        match listed.get(&p.id) {
            None => {
                report.problems.push(format!(
                    "pack {} is in the index but missing from storage",
                    p.id
                ));
                report.suggest(REPAIR_INDEX);
            }
            Some(&size) if size != p.size => {
                report.problems.push(format!(
                    "pack {} has size {size}, the index says {} (truncated or replaced)",
                    p.id, p.size
                ));
                report.suggest(REPAIR_INDEX);
            }
            _ => {}
        }
    }
    let indexed: HashSet<ObjectId> = index_packs.iter().map(|p| p.id).collect();
    // Packs a prune marked for deletion wait, unindexed, for the commands
    // that were running then; the next prune deletes them (or indexes
    // again those a snapshot written meanwhile uses).
    let (marks, damaged_marks) = repo.marks().await?;
    let marked: HashSet<ObjectId> = marks
        .iter()
        .flat_map(|m| m.packs.iter().map(|p| p.id))
        .filter(|id| listed.contains_key(id))
        .collect();
    let marked_chunks: HashSet<ObjectId> = marks
        .iter()
        .flat_map(|m| m.packs.iter())
        .filter(|p| marked.contains(&p.id))
        .flat_map(|p| p.blobs.iter().map(|b| b.id))
        .collect();
    if !marked.is_empty() {
        report.notes.push(format!(
            "{} pack(s) are marked for deletion by a prune and wait for the commands that \
             were running then; the next prune deletes them",
            marked.len()
        ));
    }
    for d in damaged_marks {
        report.notes.push(format!(
            "deletion mark {} is damaged ({}): the next prune marks its packs again",
            d.key, d.detail
        ));
    }
    let unindexed = listed
        .keys()
        .filter(|id| !indexed.contains(id) && !marked.contains(id))
        .count();
    if unindexed > 0 {
        report.notes.push(format!(
            "{unindexed} pack(s) are described by no index fragment (left by an interrupted run, \
             or their fragment is gone): prune removes the unused ones, `repair index` indexes them"
        ));
    }

    // Which snapshots use which pack, and whether every chunk is present.
    let mut users: HashMap<ObjectId, BTreeSet<ObjectId>> = HashMap::new();
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut only_unindexed = 0usize;
    let mut only_marked = 0usize;
    for s in &selected {
        for (name, entry) in s.snapshot.sources.iter().filter(|(_, e)| e.is_ok()) {
            let check = check_entry(repo, entry, &listed).await?;
            if s.has_tag(DAMAGED_TAG) {
                // Known: replaced by `repair snapshots`, kept on purpose.
                for p in &check.problems {
                    report.notes.push(format!(
                        "snapshot {} (tag `{DAMAGED_TAG}`, replaced by `repair snapshots`) source `{name}` {p}; `respaldo forget {}` removes it",
                        s.id.short(),
                        s.id.short()
                    ));
                }
            } else {
                for p in &check.problems {
                    report
                        .problems
                        .push(format!("snapshot {} source `{name}` {p}", s.id.short()));
                }
                if !check.problems.is_empty() {
                    report.damaged_snapshots.insert(s.id);
                }
            }
            for id in &check.unindexed {
                match marked_chunks.contains(id) {
                    true => only_marked += 1,
                    false => only_unindexed += 1,
                }
            }
            for p in check.packs {
                users.entry(p).or_default().insert(s.id);
            }
            seen.extend(check.chunks);
        }
        progress.add_item();
    }
    if !report.damaged_snapshots.is_empty() {
        report.suggest(REPAIR_SNAPSHOTS);
    }
    if only_marked > 0 {
        report.notes.push(format!(
            "{only_marked} chunk reference(s) of snapshots written while a prune ran point into \
             packs it marked: they are readable, and the next prune indexes those packs again"
        ));
    }
    if only_unindexed > 0 {
        report.problems.push(format!(
            "{only_unindexed} chunk reference(s) point into packs that no index fragment \
             describes (the index is incomplete)"
        ));
        report.suggest(REPAIR_INDEX);
    }
    report.chunks_referenced = seen.len();

    if opts.read_data {
        let mut expected: HashMap<ObjectId, Vec<(ObjectId, u32, u32)>> = HashMap::new();
        for p in repo.with_index(|i| i.pack_entries()).await? {
            expected.insert(
                p.id,
                p.blobs.iter().map(|b| (b.id, b.offset, b.length)).collect(),
            );
        }
        let mut ids: Vec<(ObjectId, u64)> = listed.iter().map(|(k, v)| (*k, *v)).collect();
        ids.sort();
        progress.add_total(ids.iter().map(|(_, s)| s).sum());
        for (id, size) in ids {
            let bytes = repo.sink().get(&format::pack_key(&id)).await?;
            report.packs_read += 1;
            report.bytes_read += bytes.len() as u64;
            progress.add_bytes(size);
            let affected = || -> String {
                match users.get(&id) {
                    None => "no snapshot uses it".to_string(),
                    Some(s) => format!(
                        "affects snapshot(s) {}",
                        s.iter().map(|x| x.short()).collect::<Vec<_>>().join(", ")
                    ),
                }
            };
            match repo.parse_pack(&id, &bytes, true) {
                Err(detail) => {
                    if let Some(s) = users.get(&id) {
                        report.damaged_snapshots.extend(s.iter().copied());
                        report.suggest(REPAIR_SNAPSHOTS);
                    }
                    report
                        .problems
                        .push(format!("pack {id} is damaged: {detail}; {}", affected()));
                }
                Ok(parsed) => {
                    // The index must say where each blob really is.
                    let actual: HashSet<(ObjectId, u32, u32)> = parsed
                        .blobs
                        .iter()
                        .map(|b| (b.id, b.offset, b.length))
                        .collect();
                    let wrong = expected
                        .get(&id)
                        .map(|e| e.iter().filter(|b| !actual.contains(b)).count())
                        .unwrap_or(0);
                    if wrong > 0 {
                        report.problems.push(format!(
                            "pack {id}: {wrong} index entr(ies) do not match its content; {}",
                            affected()
                        ));
                        report.suggest(REPAIR_INDEX);
                    }
                }
            }
        }
    }
    Ok(report)
}
