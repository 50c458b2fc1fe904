//! Repository locks: shared for writers that only add (backup, copy), exclusive
//! for prune. A lock is an object under `locks/` with its holder; a lock whose
//! process is gone (same host, dead PID) or whose lease expired is stale and
//! removed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::sink::{self, Sink};

/// How long a lock is valid without refresh.
const LEASE: chrono::TimeDelta = chrono::TimeDelta::minutes(30);
/// How often a held lock is refreshed.
const REFRESH: Duration = Duration::from_secs(5 * 60);

/// What a lock object says about its holder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// What the holder is doing (`backup`, `prune`).
    pub command: String,
    /// Exclusive (prune) or shared (backup).
    pub exclusive: bool,
    /// When taken or last refreshed.
    pub time: DateTime<Utc>,
    /// Set when the holder finished but could not delete the lock (a writer
    /// without delete permission, e.g. an append-only bucket): others treat it
    /// as absent, and a prune run removes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

impl LockInfo {
    fn describe(&self) -> String {
        format!(
            "{} lock held by `{}` (pid {} on {}, since {})",
            if self.exclusive { "an exclusive" } else { "a" },
            self.command,
            self.pid,
            self.host,
            self.time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S %Z")
        )
    }

    fn is_stale(&self, host: &str) -> bool {
        if self.released || Utc::now() - self.time > LEASE {
            return true;
        }
        // SAFETY: kill with signal 0 only checks that the process exists.
        self.host == host
            && unsafe { libc::kill(self.pid as libc::pid_t, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
}

/// A held lock; call [`RepoLock::release`] when done (a lock left by a killed
/// process is recovered by the next one).
#[derive(Debug)]
pub struct RepoLock {
    sink: Arc<dyn Sink>,
    key: String,
    info: LockInfo,
    refresher: tokio::task::JoinHandle<()>,
}

impl RepoLock {
    /// Releases the lock.
    pub async fn release(self) -> Result<()> {
        self.refresher.abort();
        remove(&self.sink, &self.key, &self.info).await
    }
}

/// Removes a lock object; a writer that may not delete (append-only storage)
/// overwrites it with a `released` marker instead.
async fn remove(sink: &Arc<dyn Sink>, key: &str, info: &LockInfo) -> Result<()> {
    match sink.delete(key).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let released = LockInfo {
                released: true,
                time: Utc::now(),
                ..info.clone()
            };
            put_info(sink, key, &released).await.map_err(|_| e)?;
            tracing::debug!("lock {key} marked released (cannot delete it)");
            Ok(())
        }
    }
}

/// The local host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

async fn put_info(sink: &Arc<dyn Sink>, key: &str, info: &LockInfo) -> Result<()> {
    let bytes = serde_json::to_vec(info).map_err(|e| Error::Task(e.to_string()))?;
    sink.put(key, sink::once(Bytes::from(bytes))).await
}

impl Repository {
    /// Takes a lock, waiting up to `wait` for conflicting holders to finish.
    pub async fn lock(&self, exclusive: bool, command: &str, wait: Duration) -> Result<RepoLock> {
        let host = hostname();
        let key = format!("locks/{}", hex::encode(rand::random::<[u8; 16]>()));
        let info = LockInfo {
            host: host.clone(),
            pid: std::process::id(),
            command: command.to_string(),
            exclusive,
            time: Utc::now(),
            released: false,
        };
        let deadline = tokio::time::Instant::now() + wait;
        let sink = self.sink().clone();
        loop {
            put_info(&sink, &key, &info).await?;
            let mut conflict = None;
            for obj in sink.list("locks/").await? {
                if obj.key == key {
                    continue;
                }
                let other: LockInfo = match sink.get(&obj.key).await {
                    Ok(b) => match serde_json::from_slice(&b) {
                        Ok(i) => i,
                        Err(_) => continue, // being written; treat as absent this round
                    },
                    Err(Error::NotFound { .. }) => continue,
                    Err(e) => return Err(e),
                };
                if other.is_stale(&host) {
                    if !other.released {
                        tracing::warn!("removing stale lock: {}", other.describe());
                    }
                    if let Err(e) = sink.delete(&obj.key).await {
                        tracing::debug!("cannot remove stale lock {}: {e}", obj.key);
                    }
                    continue;
                }
                if exclusive || other.exclusive {
                    conflict = Some(other);
                }
            }
            let Some(other) = conflict else { break };
            remove(&sink, &key, &info).await?;
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Locked(format!(
                    "repository {} is locked: {}; waited {}s",
                    sink.location(),
                    other.describe(),
                    wait.as_secs()
                )));
            }
            let jitter = Duration::from_millis(200 + rand::random::<u64>() % 800);
            tokio::time::sleep(jitter).await;
        }
        let refresher = {
            let sink = sink.clone();
            let key = key.clone();
            let mut info = info.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(REFRESH).await;
                    info.time = Utc::now();
                    if let Err(e) = put_info(&sink, &key, &info).await {
                        tracing::warn!("cannot refresh the repository lock: {e}");
                    }
                }
            })
        };
        Ok(RepoLock {
            sink,
            key,
            info,
            refresher,
        })
    }
}
