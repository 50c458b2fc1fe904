//! Run history: one JSON line per run (backup, or a scheduled verify,
//! test-restore, forget or prune) in a local state file, so `status`, the
//! daemon's metrics and `schedule status` know the last runs — including
//! those that failed before any snapshot could be written — across restarts.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// When the file grows past this size, the oldest records are dropped until
/// it is half as large.
const MAX_BYTES: u64 = 4 << 20;

/// One run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// A random id.
    pub id: String,
    /// `backup`, `verify`, `test-restore`, `forget`, `prune`.
    pub action: String,
    /// The `[schedule]` entry that started it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// When it started.
    pub started: DateTime<Utc>,
    /// When it ended.
    pub finished: DateTime<Utc>,
    /// Whether everything it was asked to do succeeded.
    pub ok: bool,
    /// The snapshot written, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Snapshot tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Bytes added to the repository.
    #[serde(default)]
    pub bytes_added: u64,
    /// Why it failed (secrets masked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What needs attention although it succeeded (sizes over their limits).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Per source (backups).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, SourceRun>,
}

/// One source's part of a backup run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SourceRun {
    /// Whether its backup succeeded.
    pub ok: bool,
    /// Why not (secrets masked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Plaintext size of its artifacts.
    #[serde(default)]
    pub bytes_total: u64,
    /// Bytes it added to the repository.
    #[serde(default)]
    pub bytes_added: u64,
    /// How long it took.
    #[serde(default)]
    pub duration_ms: u64,
    /// Restores: how long each step took, in milliseconds (`safety`,
    /// `stop`, `restore`, `start`, `health`), for the RTO `test-restore`
    /// reports.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub phases: BTreeMap<String, u64>,
}

impl RunRecord {
    /// A new record for a run starting now.
    pub fn start(action: &str, trigger: Option<String>) -> RunRecord {
        let now = Utc::now();
        RunRecord {
            id: hex::encode(rand::random::<[u8; 8]>()),
            action: action.to_string(),
            trigger,
            started: now,
            finished: now,
            ok: false,
            snapshot: None,
            tags: Vec::new(),
            bytes_added: 0,
            error: None,
            warnings: Vec::new(),
            sources: BTreeMap::new(),
        }
    }
}

/// The history file of one repository.
#[derive(Debug, Clone)]
pub struct History {
    path: PathBuf,
}

impl History {
    /// The history of the repository at `url`, kept in `state_dir`.
    pub fn new(state_dir: &Path, url: &str) -> History {
        let digest = Sha256::digest(url.as_bytes());
        History {
            path: state_dir.join(format!("history-{}.jsonl", hex::encode(&digest[..8]))),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::io::Result<File> {
        if let Some(dir) = self.path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.path.with_extension("lock"))?;
        // SAFETY: flock on a valid descriptor; released when `f` is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(f)
    }

    /// Appends a record (trimming old ones when the file is large).
    pub fn append(&self, rec: &RunRecord) -> std::io::Result<()> {
        let _guard = self.lock()?;
        let mut line = serde_json::to_vec(rec)?;
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        f.write_all(&line)?;
        f.sync_data()?;
        if f.metadata()?.len() > MAX_BYTES {
            let all = self.read()?;
            let mut lines: Vec<Vec<u8>> = Vec::new();
            let mut total = 0u64;
            for r in all.iter().rev() {
                let l = serde_json::to_vec(r)?;
                total += l.len() as u64 + 1;
                if total > MAX_BYTES / 2 {
                    break;
                }
                lines.push(l);
            }
            let tmp = self.path.with_extension("tmp");
            let mut out = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            for l in lines.iter().rev() {
                out.write_all(l)?;
                out.write_all(b"\n")?;
            }
            out.sync_data()?;
            std::fs::rename(&tmp, &self.path)?;
        }
        Ok(())
    }

    /// Every record, oldest first (lines that do not parse are skipped).
    pub fn read(&self) -> std::io::Result<Vec<RunRecord>> {
        let f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for line in BufReader::new(f).lines() {
            if let Ok(r) = serde_json::from_str::<RunRecord>(&line?) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Every record, or none with a warning when the file cannot be read.
    pub fn read_or_warn(&self) -> Vec<RunRecord> {
        self.read().unwrap_or_else(|e| {
            tracing::warn!("cannot read the run history {}: {e}", self.path.display());
            Vec::new()
        })
    }
}

/// The default state folder: `$RESPALDO_STATE_DIR`, else `/var/lib/respaldo`
/// for root, else `$XDG_STATE_HOME/respaldo` or `~/.local/state/respaldo`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RESPALDO_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/respaldo");
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("respaldo");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".local/state/respaldo")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_reads_and_trims() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(dir.path(), "/some/repo");
        assert!(h.read().unwrap().is_empty());
        let mut r = RunRecord::start("backup", Some("daily".into()));
        r.error = Some("x".repeat(5000));
        for _ in 0..(MAX_BYTES / 5000 + 10) {
            h.append(&r).unwrap();
        }
        r.error = Some("the newest".into());
        h.append(&r).unwrap();
        let all = h.read().unwrap();
        assert!(std::fs::metadata(h.path()).unwrap().len() <= MAX_BYTES);
        assert!(all.len() > 100, "{}", all.len());
        assert_eq!(all.last(), Some(&r));
        // Another repository has its own file.
        assert!(History::new(dir.path(), "/other")
            .read()
            .unwrap()
            .is_empty());
    }
}
