//! `verify`: a cheap structural check, and with `read_data` a full re-read
//! that re-hashes every byte. Every problem names the damaged object and the
//! snapshots it affects. In an encrypted repository the structural check
//! works without the identity (index against packs, snapshot objects intact)
//! but cannot follow the sealed snapshots to their chunks; `read_data` needs
//! the identity.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::artifact::ArtifactKind;
use crate::error::Result;
use crate::format;
use crate::id::ObjectId;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::snapshot::SnapshotRef;
use crate::tree::TreeReader;

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Download every pack and re-hash every blob.
    pub read_data: bool,
    /// Only these snapshots (default: all).
    pub snapshots: Option<Vec<ObjectId>>,
}

/// The outcome of a verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Problems found, one line each.
    pub problems: Vec<String>,
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
    for d in repo.index_damage().await? {
        report.problems.push(format!(
            "index fragment {} is damaged: {} (its packs are rescanned; prune rewrites the index)",
            d.key, d.detail
        ));
    }
    let (snapshots, damaged) = repo.snapshots().await?;
    for d in damaged {
        report.problems.push(format!(
            "snapshot object {} is damaged: {}",
            d.key, d.detail
        ));
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
            None => report.problems.push(format!(
                "pack {} is in the index but missing from storage",
                p.id
            )),
            Some(&size) if size != p.size => report.problems.push(format!(
                "pack {} has size {size}, the index says {}",
                p.id, p.size
            )),
            _ => {}
        }
    }

    // Which snapshots use which pack, and whether every chunk is present.
    let mut users: HashMap<ObjectId, BTreeSet<ObjectId>> = HashMap::new();
    let mut seen: HashSet<ObjectId> = HashSet::new();
    for s in &selected {
        for (name, entry) in s.snapshot.sources.iter().filter(|(_, e)| e.is_ok()) {
            for a in &entry.artifacts {
                let mut ids: Vec<ObjectId> = a.chunks.clone();
                if a.kind == ArtifactKind::Tree {
                    let mut reader = TreeReader::new(repo.clone(), a)?;
                    loop {
                        match reader.next_entry().await {
                            Ok(Some(e)) => ids.extend(e.chunks),
                            Ok(None) => break,
                            Err(e) => {
                                report.problems.push(format!(
                                    "snapshot {} source `{name}`: cannot read tree `{}`: {e}",
                                    s.id.short(),
                                    a.name
                                ));
                                report.damaged_snapshots.insert(s.id);
                                break;
                            }
                        }
                    }
                }
                let mut missing = 0usize;
                for id in ids {
                    let loc = repo.with_index(|i| i.get(&id)).await?;
                    match loc {
                        Some((pack, _)) if listed.contains_key(&pack.id) => {
                            users.entry(pack.id).or_default().insert(s.id);
                        }
                        _ => {
                            // Not in a valid fragment: look in unindexed packs.
                            if repo.read_blob(&id).await.is_err() {
                                missing += 1;
                            }
                        }
                    }
                    seen.insert(id);
                }
                if missing > 0 {
                    report.problems.push(format!(
                        "snapshot {} source `{name}` artifact `{}`: {missing} chunk(s) missing or unreadable",
                        s.id.short(),
                        a.name
                    ));
                    report.damaged_snapshots.insert(s.id);
                }
            }
        }
        progress.add_item();
    }
    report.chunks_referenced = seen.len();

    if opts.read_data {
        let mut ids: Vec<(ObjectId, u64)> = listed.iter().map(|(k, v)| (*k, *v)).collect();
        ids.sort();
        progress.add_total(ids.iter().map(|(_, s)| s).sum());
        for (id, size) in ids {
            let bytes = repo.sink().get(&format::pack_key(&id)).await?;
            report.packs_read += 1;
            report.bytes_read += bytes.len() as u64;
            progress.add_bytes(size);
            if let Err(detail) = repo.parse_pack(&id, &bytes, true) {
                let affected: Vec<String> = users
                    .get(&id)
                    .map(|s| s.iter().map(|x| x.short()).collect())
                    .unwrap_or_default();
                if let Some(s) = users.get(&id) {
                    report.damaged_snapshots.extend(s.iter().copied());
                }
                report.problems.push(format!(
                    "pack {id} is damaged: {detail}; {}",
                    if affected.is_empty() {
                        "no snapshot uses it".to_string()
                    } else {
                        format!("affects snapshot(s) {}", affected.join(", "))
                    }
                ));
            }
        }
    }
    Ok(report)
}
