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
    /// The host's boot id (Linux): a lock from this host taken before its
    /// last reboot is stale whatever its PID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The holder's start time (clock ticks since boot, Linux): a live
    /// process with the same PID but another start time reused the PID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
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
        if self.host != host {
            return false;
        }
        if let (Some(theirs), Some(ours)) = (&self.boot_id, boot_id()) {
            if *theirs != ours {
                return true;
            }
        }
        // SAFETY: kill with signal 0 only checks that the process exists.
        if unsafe { libc::kill(self.pid as libc::pid_t, 0) } != 0 {
            return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        }
        match (self.start_time, start_time(self.pid)) {
            (Some(recorded), Some(now)) => recorded != now,
            _ => false,
        }
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
    /// Set when the lock could not be refreshed in time: other commands may
    /// soon take it for stale, so its holder must stop.
    lost: tokio::sync::watch::Receiver<bool>,
}

impl RepoLock {
    /// Releases the lock.
    pub async fn release(self) -> Result<()> {
        self.refresher.abort();
        remove(&self.sink, &self.key, &self.info).await
    }

    /// Runs `work` while the lock holds: if the lock cannot be refreshed
    /// before its lease would run out (storage unreachable for 25 minutes),
    /// `work` is dropped and an error returned, before any other command
    /// may take the lock for stale and, say, prune data this one is writing.
    pub async fn while_held<T>(
        &self,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let mut lost = self.lost.clone();
        tokio::select! {
            r = work => r,
            () = async {
                if lost.wait_for(|l| *l).await.is_err() {
                    // The refresher is gone (runtime shutting down): not lost.
                    std::future::pending::<()>().await;
                }
            } => Err(self.lost_error()),
        }
    }

    /// Whether the lock could not be refreshed in time (see
    /// [`RepoLock::while_held`]).
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// The error of work stopped because the lock was lost.
    pub fn lost_error(&self) -> Error {
        Error::Locked(format!(
            "lost the lock on {}: it could not be refreshed for {} minutes; stopped before its lease ran out",
            self.sink.location(),
            (LEASE.to_std().unwrap_or_default() - REFRESH).as_secs() / 60
        ))
    }

    /// Cancels `token` when the lock is lost: for work that stops cleanly on
    /// cancellation (a backup aborts and awaits its sources' tasks, so their
    /// guards clean up), instead of being dropped by
    /// [`RepoLock::while_held`]. Abort the returned task when the work is
    /// done.
    pub fn cancel_when_lost(
        &self,
        token: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let mut lost = self.lost.clone();
        tokio::spawn(async move {
            if lost.wait_for(|l| *l).await.is_ok() {
                token.cancel();
            }
        })
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

/// This boot's id (Linux), if known.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// A process's start time in clock ticks since boot (Linux), if known.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from its `)`.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
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

/// One object under `locks/` as found in storage.
#[derive(Debug, Clone)]
pub struct FoundLock {
    /// Its key.
    pub key: String,
    /// When the storage last wrote it (its own clock), if known.
    pub modified: Option<DateTime<Utc>>,
    /// What it says.
    pub state: LockState,
}

/// What a lock object says.
#[derive(Debug, Clone)]
pub enum LockState {
    /// A readable lock.
    Info(LockInfo),
    /// An object that is not a lock this build can read (damaged, or written
    /// by something else). An exclusive command treats it as held until it is
    /// older than the lease by the storage's time.
    Unreadable {
        /// Why it cannot be read.
        detail: String,
    },
}

impl FoundLock {
    /// Whether an unreadable lock is older than the lease by its stored time
    /// (one without a stored time never expires by itself).
    fn expired(&self) -> bool {
        self.modified.is_some_and(|m| Utc::now() - m > LEASE)
    }

    /// Whether the lock may be removed without `--remove-all`: stale by its
    /// holder's state, or unreadable and older than the lease.
    pub fn is_stale(&self) -> bool {
        match &self.state {
            LockState::Info(i) => i.is_stale(&hostname()),
            LockState::Unreadable { .. } => self.expired(),
        }
    }

    /// One line for messages.
    pub fn describe(&self) -> String {
        match &self.state {
            LockState::Info(i) => i.describe(),
            LockState::Unreadable { detail } => format!(
                "an unreadable lock object `{}` ({detail}{}), treated as held until it is older \
                 than {} minutes (`respaldo unlock --remove-all` removes it when no other command \
                 is running)",
                self.key,
                self.modified
                    .map(|m| format!(
                        ", written {}",
                        m.with_timezone(&chrono::Local)
                            .format("%Y-%m-%d %H:%M:%S %Z")
                    ))
                    .unwrap_or_default(),
                LEASE.num_minutes()
            ),
        }
    }
}

/// Reads every lock object.
async fn read_locks(sink: &Arc<dyn Sink>) -> Result<Vec<FoundLock>> {
    let mut out = Vec::new();
    for obj in sink.list("locks/").await? {
        let state = match sink.get(&obj.key).await {
            Ok(b) => match serde_json::from_slice::<LockInfo>(&b) {
                Ok(i) => LockState::Info(i),
                Err(e) => LockState::Unreadable {
                    detail: format!("not a lock: {e}"),
                },
            },
            Err(Error::NotFound { .. }) => continue, // released meanwhile
            Err(e) => return Err(e),
        };
        out.push(FoundLock {
            key: obj.key,
            modified: obj.modified,
            state,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// What `unlock` did.
#[derive(Debug, Clone, Default)]
pub struct UnlockReport {
    /// Locks removed, described.
    pub removed: Vec<String>,
    /// Locks left in place (held by a live command), described.
    pub kept: Vec<String>,
}

impl Repository {
    /// Every lock object in the repository.
    pub async fn locks(&self) -> Result<Vec<FoundLock>> {
        read_locks(self.sink()).await
    }

    /// Removes stale and expired unreadable locks; with `remove_all`, every
    /// lock (for when the user knows no other command is running).
    pub async fn unlock(&self, remove_all: bool) -> Result<UnlockReport> {
        let mut report = UnlockReport::default();
        for l in self.locks().await? {
            if remove_all || l.is_stale() {
                self.sink().delete(&l.key).await?;
                report.removed.push(l.describe());
            } else {
                report.kept.push(l.describe());
            }
        }
        Ok(report)
    }
}

impl Repository {
    /// Takes a lock, waiting up to `wait` for conflicting holders to finish.
    pub async fn lock(&self, exclusive: bool, command: &str, wait: Duration) -> Result<RepoLock> {
        let host = hostname();
        let key = format!("locks/{}", hex::encode(rand::random::<[u8; 16]>()));
        let info = LockInfo {
            boot_id: boot_id(),
            start_time: start_time(std::process::id()),
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
            for found in read_locks(&sink).await? {
                if found.key == key {
                    continue;
                }
                match &found.state {
                    LockState::Unreadable { detail } => {
                        if !exclusive {
                            tracing::warn!(
                                "lock object {} is unreadable ({detail}); ignored by a shared lock",
                                found.key
                            );
                            continue;
                        }
                        if found.expired() {
                            tracing::warn!(
                                "removing unreadable lock object {} ({detail}): older than the lease",
                                found.key
                            );
                            if let Err(e) = sink.delete(&found.key).await {
                                tracing::debug!("cannot remove lock {}: {e}", found.key);
                            }
                            continue;
                        }
                        conflict = Some(found.describe());
                    }
                    LockState::Info(other) => {
                        if other.is_stale(&host) {
                            if !other.released {
                                tracing::warn!("removing stale lock: {}", other.describe());
                            }
                            if let Err(e) = sink.delete(&found.key).await {
                                tracing::debug!("cannot remove stale lock {}: {e}", found.key);
                            }
                            continue;
                        }
                        if exclusive || other.exclusive {
                            conflict = Some(other.describe());
                        }
                    }
                }
            }
            let Some(other) = conflict else { break };
            remove(&sink, &key, &info).await?;
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Locked(format!(
                    "repository {} is locked: {other}; waited {}s",
                    sink.location(),
                    wait.as_secs()
                )));
            }
            let jitter = Duration::from_millis(200 + rand::random::<u64>() % 800);
            tokio::time::sleep(jitter).await;
        }
        self.upgrade_config().await;
        let (lost_tx, lost) = tokio::sync::watch::channel(false);
        let refresher = {
            let sink = sink.clone();
            let key = key.clone();
            let mut info = info.clone();
            let lease = LEASE.to_std().unwrap_or_default();
            tokio::spawn(async move {
                let mut refreshed = tokio::time::Instant::now();
                loop {
                    tokio::time::sleep(REFRESH).await;
                    info.time = Utc::now();
                    match put_info(&sink, &key, &info).await {
                        Ok(()) => refreshed = tokio::time::Instant::now(),
                        // The next refresh would come after the lease ran out.
                        Err(e) if refreshed.elapsed() + REFRESH >= lease => {
                            tracing::error!(
                                "cannot refresh the repository lock, giving it up: {e}"
                            );
                            let _ = lost_tx.send(true);
                            // Keep the sender: receivers see `true`, not a
                            // closed channel.
                            std::future::pending::<()>().await;
                        }
                        Err(e) => tracing::warn!("cannot refresh the repository lock: {e}"),
                    }
                }
            })
        };
        Ok(RepoLock {
            sink,
            key,
            info,
            refresher,
            lost,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(
        pid: u32,
        start: Option<u64>,
        boot: Option<String>,
        age: chrono::TimeDelta,
    ) -> LockInfo {
        LockInfo {
            boot_id: boot,
            start_time: start,
            host: hostname(),
            pid,
            command: "backup".into(),
            exclusive: false,
            released: false,
            time: Utc::now() - age,
        }
    }

    #[test]
    fn staleness() {
        let me = std::process::id();
        let host = hostname();
        let fresh = chrono::TimeDelta::zero();
        // Alive, same start time: held.
        assert!(!info(me, start_time(me), boot_id(), fresh).is_stale(&host));
        // Our PID with another start time: the PID was reused.
        let reused = start_time(me).map(|t| t + 1);
        assert_eq!(
            info(me, reused, boot_id(), fresh).is_stale(&host),
            reused.is_some()
        );
        // Taken before a reboot.
        assert_eq!(
            info(me, None, Some("another-boot".into()), fresh).is_stale(&host),
            boot_id().is_some()
        );
        // A process that ended.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        assert!(info(dead, None, None, fresh).is_stale(&host));
        // Another host: only the lease decides.
        assert!(!info(dead, None, None, fresh).is_stale("elsewhere"));
        assert!(info(me, None, None, LEASE + chrono::TimeDelta::seconds(1)).is_stale("elsewhere"));
    }
}
