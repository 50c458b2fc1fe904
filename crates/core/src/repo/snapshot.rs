//! Snapshots: one backup run, the commit point of the repository.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::artifact::Artifact;
use crate::repo::id::ObjectId;

/// One backup run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// When the run started (UTC).
    pub time: DateTime<Utc>,
    /// When the snapshot was written (UTC).
    pub finished: DateTime<Utc>,
    /// Host that ran the backup.
    pub host: String,
    /// Tags given to the run (`daily`, `pre-migration`, …).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The respaldo version that wrote it.
    pub program_version: String,
    /// One entry per source.
    pub sources: BTreeMap<String, SourceEntry>,
    /// Run totals.
    pub stats: RunStats,
    /// The id of this snapshot in the repository it was first written to,
    /// when it was copied from there (`copy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<ObjectId>,
    /// Encrypted repositories: everything but what listing and retention
    /// need, sealed to the recipients (base64 age). Set when the snapshot was
    /// read without an identity; its artifacts are then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

impl Snapshot {
    /// What stays readable without an identity: times, host, tags, program
    /// version, run totals, and per source its type, outcome, timing and
    /// counters. Artifacts, metadata, errors and warnings are dropped.
    pub fn redacted(&self) -> Snapshot {
        let mut s = self.clone();
        for e in s.sources.values_mut() {
            e.error = None;
            e.artifacts.clear();
            e.metadata.clear();
            e.warnings.clear();
        }
        s
    }

    /// The id this snapshot has in the repository it was first written to.
    pub fn origin_or(&self, id: ObjectId) -> ObjectId {
        self.origin.unwrap_or(id)
    }
}

/// Whether a source's backup in a snapshot succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceStatus {
    /// Complete and restorable.
    Ok,
    /// Failed: never used for restore or as `latest`.
    Failed,
}

/// One source's part of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceEntry {
    /// Driver type (`files`, `postgres`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Outcome.
    pub status: SourceStatus,
    /// The error, when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When this source's backup started.
    pub started: DateTime<Utc>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// The artifacts (empty when failed).
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// Driver metadata (row counts, key counts, server versions, …).
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Warnings (e.g. a file that changed while being read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Counters.
    pub stats: SourceStats,
}

impl SourceEntry {
    /// Whether this entry is a good, restorable backup.
    pub fn is_ok(&self) -> bool {
        self.status == SourceStatus::Ok
    }

    /// The artifact with this name.
    pub fn artifact(&self, name: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.name == name)
    }
}

/// Per-source counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SourceStats {
    /// Plaintext bytes in the artifacts.
    pub bytes_total: u64,
    /// Bytes actually read from the source (unchanged files are not read).
    pub bytes_read: u64,
    /// Bytes newly stored in the repository (after dedup and compression).
    pub bytes_added: u64,
    /// Files read (trees).
    pub files_read: u64,
    /// Files skipped as unchanged by the parent snapshot's metadata (trees).
    pub files_unchanged: u64,
}

/// Totals of one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RunStats {
    /// Bytes newly stored (pack bytes added).
    pub bytes_added: u64,
    /// New blobs stored.
    pub blobs_added: u64,
    /// Packs written.
    pub packs_added: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// A snapshot with its id.
#[derive(Debug, Clone)]
pub struct SnapshotRef {
    /// The snapshot id (SHA-256 of the stored object).
    pub id: ObjectId,
    /// The snapshot.
    pub snapshot: Snapshot,
}

impl SnapshotRef {
    /// The good entry for `source`, if this snapshot has one.
    pub fn good(&self, source: &str) -> Option<&SourceEntry> {
        self.snapshot.sources.get(source).filter(|e| e.is_ok())
    }
}

/// The tag of the safety snapshot taken before a restore overwrites live
/// data. Such a snapshot is never `latest`, never a source's last good
/// backup, and is kept for the safety window whatever the retention rules say.
pub const PRE_RESTORE_TAG: &str = "pre-restore";

/// The tag of an original snapshot that `repair snapshots` replaced: kept
/// (never `latest`, never removed by retention) until it is forgotten by id.
pub const DAMAGED_TAG: &str = "damaged";

/// The tag of a replacement written by `repair snapshots`.
pub const REPAIRED_TAG: &str = "repaired";

/// Snapshots with this tag are kept by retention whatever the rules say.
pub const KEEP_TAG: &str = "keep";

/// Which hosts' snapshots a command acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hosts {
    /// Every host's (`--host '*'`).
    All,
    /// One host's.
    Only(String),
}

impl Hosts {
    /// From a `--host` value: `*` means all.
    pub fn parse(value: &str) -> Hosts {
        if value == "*" {
            Hosts::All
        } else {
            Hosts::Only(value.to_string())
        }
    }

    /// Whether a snapshot taken on `host` is included.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Hosts::All => true,
            Hosts::Only(h) => h == host,
        }
    }
}

impl std::fmt::Display for Hosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hosts::All => f.write_str("every host"),
            Hosts::Only(h) => write!(f, "host `{h}`"),
        }
    }
}

impl SnapshotRef {
    /// Whether the snapshot carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.snapshot.tags.iter().any(|t| t == tag)
    }

    /// Whether this is a regular backup: not a safety snapshot taken before a
    /// restore and not a damaged original replaced by `repair snapshots`.
    /// Only regular backups are `latest`, count for `status` and form the
    /// retention series.
    pub fn is_regular(&self) -> bool {
        !self.has_tag(PRE_RESTORE_TAG) && !self.has_tag(DAMAGED_TAG)
    }
}

/// Resolves a user's snapshot reference: `latest`, a full id or a unique id
/// prefix. `latest` is the newest regular snapshot of `hosts` (with `source`,
/// the newest holding a good backup of that source); an id names any
/// snapshot, whatever its host.
pub fn resolve<'a>(
    snapshots: &'a [SnapshotRef],
    spec: &str,
    source: Option<&str>,
    hosts: &Hosts,
) -> Result<&'a SnapshotRef, crate::Error> {
    find(snapshots, spec, source, hosts).map_err(crate::Error::SnapshotNotFound)
}

/// Why a snapshot reference (`latest`, an id or an id prefix) did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No usable snapshot from the selected hosts (of the source, if one was named).
    #[error("{}{}", match source_name {
        Some(name) => format!("no good backup of source `{name}` from {hosts} in the repository"),
        None => format!("the repository has no snapshots from {hosts}"),
    }, if *other_hosts {
        " (other hosts have some: see `respaldo snapshots --host '*'`, or pass --host NAME)"
    } else {
        ""
    })]
    NoLatest {
        /// The source asked for, if any.
        source_name: Option<String>,
        /// The host selection, as written for people.
        hosts: String,
        /// Whether other hosts hold usable snapshots.
        other_hosts: bool,
    },
    /// The reference is neither `latest`, `latest~N` nor hexadecimal.
    #[error("`{0}` is not a snapshot id, id prefix, `latest` or `latest~N`")]
    NotAnId(String),
    /// `latest~N` with fewer than N + 1 usable snapshots.
    #[error("`{spec}` goes back further than the {count} usable snapshots")]
    TooFarBack {
        /// The reference.
        spec: String,
        /// How many usable snapshots there are.
        count: usize,
    },
    /// No snapshot id starts with the prefix.
    #[error("no snapshot matches `{0}`")]
    NoMatch(String),
    /// Several snapshot ids start with the prefix.
    #[error("`{spec}` is ambiguous: it matches {count} snapshots")]
    Ambiguous {
        /// The prefix.
        spec: String,
        /// How many ids it matches.
        count: usize,
    },
}

fn find<'a>(
    snapshots: &'a [SnapshotRef],
    spec: &str,
    source: Option<&str>,
    hosts: &Hosts,
) -> Result<&'a SnapshotRef, LookupError> {
    let usable = |s: &&SnapshotRef| match source {
        Some(name) => s.good(name).is_some(),
        None => s.snapshot.sources.values().any(|e| e.is_ok()),
    };
    let back = match spec.strip_prefix("latest") {
        Some("") => Some(0),
        Some(n) => match n.strip_prefix('~').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => Some(n),
            None => return Err(LookupError::NotAnId(spec.to_string())),
        },
        None => None,
    };
    if let Some(back) = back {
        let mut candidates: Vec<&SnapshotRef> = snapshots
            .iter()
            .filter(usable)
            .filter(|s| s.is_regular() && hosts.matches(&s.snapshot.host))
            .collect();
        candidates.sort_by_key(|s| std::cmp::Reverse((s.snapshot.time, s.id)));
        if !candidates.is_empty() && back >= candidates.len() {
            return Err(LookupError::TooFarBack {
                spec: spec.to_string(),
                count: candidates.len(),
            });
        }
        return candidates
            .first()
            .map(|_| candidates[back])
            .ok_or_else(|| LookupError::NoLatest {
                source_name: source.map(str::to_string),
                hosts: hosts.to_string(),
                other_hosts: snapshots
                    .iter()
                    .filter(usable)
                    .any(|s| s.is_regular() && !hosts.matches(&s.snapshot.host)),
            });
    }
    let spec_l = spec.to_ascii_lowercase();
    if spec_l.is_empty() || !spec_l.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(LookupError::NotAnId(spec.to_string()));
    }
    let matches: Vec<_> = snapshots
        .iter()
        .filter(|s| s.id.to_hex().starts_with(&spec_l))
        .collect();
    match matches.as_slice() {
        [] => Err(LookupError::NoMatch(spec.to_string())),
        [one] => Ok(one),
        many => Err(LookupError::Ambiguous {
            spec: spec.to_string(),
            count: many.len(),
        }),
    }
}
