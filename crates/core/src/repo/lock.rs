//! Repository locks: shared for commands that read or only add (backup, copy,
//! restore, verify, forget), prune for prune (any number of shared holders
//! beside it, but no second prune), exclusive for repair. A lock is an object
//! under `locks/` with its holder; a lock whose process is gone (same host,
//! dead PID) or whose lease expired is stale and removed.
//!
//! A lease is measured by the storage's clock: the age of a lock object is
//! the difference between its stored modification time and that of the lock
//! object the command has just written, so hosts whose clocks disagree still
//! agree on which locks expired. Only a storage that keeps no modification
//! times falls back to the holders' own clocks.

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

/// How a lock shares the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Reads or only adds: any number at once, and beside one prune.
    Shared,
    /// Prune: beside shared holders (it deletes only what none of them can
    /// still use, see `ops::prune`), never beside another prune.
    Prune,
    /// Alone (repair).
    Exclusive,
}

impl LockMode {
    /// Whether holders in these two modes may not hold the lock together.
    fn conflicts(self, other: LockMode) -> bool {
        use LockMode::*;
        matches!(
            (self, other),
            (Exclusive, _) | (_, Exclusive) | (Prune, Prune)
        )
    }
}

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
    /// Exclusive (repair), or shared by readers and writers that only add.
    pub exclusive: bool,
    /// A prune: shared with readers and writers, not with another prune.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune: bool,
    /// When taken or last refreshed.
    pub time: DateTime<Utc>,
    /// Set when the holder finished but could not delete the lock (a writer
    /// without delete permission, e.g. an append-only bucket): others treat it
    /// as absent, and a prune run removes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

impl LockInfo {
    fn mode(&self) -> LockMode {
        if self.exclusive {
            LockMode::Exclusive
        } else if self.prune {
            LockMode::Prune
        } else {
            LockMode::Shared
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} lock held by `{}` (pid {} on {}, since {})",
            match self.mode() {
                LockMode::Exclusive => "an exclusive",
                LockMode::Prune => "a prune",
                LockMode::Shared => "a",
            },
            self.command,
            self.pid,
            self.host,
            self.time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S %Z")
        )
    }

    /// Whether the holder is gone: released, its lease over (`age`, by the
    /// storage's clock when known), or, on this host, its process ended.
    fn is_stale(&self, host: &str, age: chrono::TimeDelta) -> bool {
        if self.released || age > LEASE {
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

/// The storage's "now", as far as a command can tell: the stored time of an
/// object it has just written (`None` when the storage keeps none).
#[derive(Debug, Clone, Copy)]
pub struct StorageClock(Option<DateTime<Utc>>);

impl StorageClock {
    /// How old an object is: by the storage's clock when both times are
    /// known, else by this host's clock against `written` (the time the
    /// holder says it wrote the object, which its own clock measured).
    fn age(&self, modified: Option<DateTime<Utc>>, written: DateTime<Utc>) -> chrono::TimeDelta {
        match (self.0, modified) {
            (Some(now), Some(m)) => now - m,
            _ => Utc::now() - written,
        }
    }

    /// How far this host's clock is from the storage's (positive: ahead).
    fn skew(&self) -> Option<chrono::TimeDelta> {
        self.0.map(|now| Utc::now() - now)
    }
}

/// Clock differences above this are worth a warning (they no longer matter
/// to locks, but do to snapshot times and retention).
const SKEW_WARNING: chrono::TimeDelta = chrono::TimeDelta::minutes(2);

impl FoundLock {
    /// Whether an unreadable lock is older than the lease by its stored time
    /// (one without a stored time never expires by itself).
    fn expired(&self, clock: &StorageClock) -> bool {
        self.modified.is_some_and(|m| clock.age(Some(m), m) > LEASE)
    }

    /// Whether the lock may be removed without `--remove-all`: stale by its
    /// holder's state, or unreadable and older than the lease.
    pub fn is_stale(&self, clock: &StorageClock) -> bool {
        match &self.state {
            LockState::Info(i) => i.is_stale(&hostname(), clock.age(self.modified, i.time)),
            LockState::Unreadable { .. } => self.expired(clock),
        }
    }

    /// Whether this lock is held by someone (not stale).
    pub fn is_live(&self, clock: &StorageClock) -> bool {
        !self.is_stale(clock)
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
    /// Every lock object in the repository, and the storage's clock read
    /// with them (see [`StorageClock`]). `own` is a lock object this command
    /// has just written, if any; without one a released marker is written
    /// and removed to read the clock.
    pub async fn locks(&self, own: Option<&str>) -> Result<(Vec<FoundLock>, StorageClock)> {
        let sink = self.sink();
        let probe = match own {
            Some(_) => None,
            None => {
                let key = format!("locks/{}", hex::encode(rand::random::<[u8; 16]>()));
                let mut info = holder(LockMode::Shared, "clock probe");
                info.released = true;
                match put_info(sink, &key, &info).await {
                    Ok(()) => Some(key),
                    Err(e) => {
                        tracing::debug!("cannot write a clock probe: {e}");
                        None
                    }
                }
            }
        };
        let mine = own.map(str::to_string).or_else(|| probe.clone());
        let mut found = read_locks(sink).await?;
        let clock = StorageClock(
            found
                .iter()
                .find(|l| Some(&l.key) == mine.as_ref())
                .and_then(|l| l.modified),
        );
        found.retain(|l| Some(&l.key) != mine.as_ref());
        if let Some(key) = probe {
            if let Err(e) = sink.delete(&key).await {
                tracing::debug!("cannot remove the clock probe {key}: {e}");
            }
        }
        Ok((found, clock))
    }

    /// Removes stale and expired unreadable locks; with `remove_all`, every
    /// lock (for when the user knows no other command is running).
    pub async fn unlock(&self, remove_all: bool) -> Result<UnlockReport> {
        let mut report = UnlockReport::default();
        let (locks, clock) = self.locks(None).await?;
        for l in locks {
            if remove_all || l.is_stale(&clock) {
                self.sink().delete(&l.key).await?;
                report.removed.push(l.describe());
            } else {
                report.kept.push(l.describe());
            }
        }
        Ok(report)
    }
}

/// This process as a lock holder.
fn holder(mode: LockMode, command: &str) -> LockInfo {
    LockInfo {
        boot_id: boot_id(),
        start_time: start_time(std::process::id()),
        host: hostname(),
        pid: std::process::id(),
        command: command.to_string(),
        exclusive: mode == LockMode::Exclusive,
        prune: mode == LockMode::Prune,
        time: Utc::now(),
        released: false,
    }
}

impl Repository {
    /// Takes a lock, waiting up to `wait` for conflicting holders to finish.
    /// Whatever this process loaded of the index before is forgotten, so
    /// that work under the lock sees the index as it is now (a prune
    /// running beside it relies on that, see `ops::prune`).
    pub async fn lock(&self, mode: LockMode, command: &str, wait: Duration) -> Result<RepoLock> {
        let host = hostname();
        let key = format!("locks/{}", hex::encode(rand::random::<[u8; 16]>()));
        let info = holder(mode, command);
        let deadline = tokio::time::Instant::now() + wait;
        let sink = self.sink().clone();
        let mut skew_warned = false;
        loop {
            put_info(&sink, &key, &info).await?;
            let (found_locks, clock) = self.locks(Some(&key)).await?;
            if let Some(skew) = clock.skew().filter(|s| s.abs() > SKEW_WARNING) {
                if !skew_warned {
                    tracing::warn!(
                        "this host's clock is {}s {} the storage's ({}); lock leases are measured \
                         by the storage's clock, but snapshot times come from this host's",
                        skew.num_seconds().abs(),
                        if skew > chrono::TimeDelta::zero() {
                            "ahead of"
                        } else {
                            "behind"
                        },
                        sink.location()
                    );
                    skew_warned = true;
                }
            }
            let mut conflict = None;
            for found in found_locks {
                match &found.state {
                    LockState::Unreadable { detail } => {
                        // Only commands that never delete go on beside it
                        // (it may be a newer version's exclusive lock).
                        if mode == LockMode::Shared {
                            tracing::warn!(
                                "lock object {} is unreadable ({detail}); ignored by a shared lock",
                                found.key
                            );
                            continue;
                        }
                        if found.expired(&clock) {
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
                        if other.is_stale(&host, clock.age(found.modified, other.time)) {
                            if !other.released {
                                tracing::warn!("removing stale lock: {}", other.describe());
                            }
                            if let Err(e) = sink.delete(&found.key).await {
                                tracing::debug!("cannot remove stale lock {}: {e}", found.key);
                            }
                            continue;
                        }
                        if mode.conflicts(other.mode()) {
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
        self.index_reset().await;
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

    fn info(pid: u32, start: Option<u64>, boot: Option<String>) -> LockInfo {
        LockInfo {
            boot_id: boot,
            start_time: start,
            pid,
            ..holder(LockMode::Shared, "backup")
        }
    }

    #[test]
    fn staleness() {
        let me = std::process::id();
        let host = hostname();
        let fresh = chrono::TimeDelta::zero();
        // Alive, same start time: held.
        assert!(!info(me, start_time(me), boot_id()).is_stale(&host, fresh));
        // Our PID with another start time: the PID was reused.
        let reused = start_time(me).map(|t| t + 1);
        assert_eq!(
            info(me, reused, boot_id()).is_stale(&host, fresh),
            reused.is_some()
        );
        // Taken before a reboot.
        assert_eq!(
            info(me, None, Some("another-boot".into())).is_stale(&host, fresh),
            boot_id().is_some()
        );
        // A process that ended.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        assert!(info(dead, None, None).is_stale(&host, fresh));
        // Another host: only the lease decides.
        assert!(!info(dead, None, None).is_stale("elsewhere", fresh));
        let expired = LEASE + chrono::TimeDelta::seconds(1);
        assert!(info(me, None, None).is_stale("elsewhere", expired));
    }

    #[test]
    fn ages_come_from_the_storage_clock_when_it_has_one() {
        let storage_now = Utc::now() - chrono::TimeDelta::hours(5);
        let clock = StorageClock(Some(storage_now));
        // The holder's clock is hours behind, the storage wrote it a minute ago.
        let minute_ago = storage_now - chrono::TimeDelta::minutes(1);
        let holder_time = Utc::now() - chrono::TimeDelta::hours(9);
        assert_eq!(
            clock.age(Some(minute_ago), holder_time),
            chrono::TimeDelta::minutes(1)
        );
        // Without stored times, this host's clock against the holder's.
        let no_times = StorageClock(None);
        assert!(no_times.age(None, holder_time) > chrono::TimeDelta::hours(8));
        assert!(clock.skew().unwrap() > chrono::TimeDelta::hours(4));
    }

    #[test]
    fn modes_conflict_as_documented() {
        use LockMode::*;
        assert!(!Shared.conflicts(Shared));
        assert!(!Shared.conflicts(Prune) && !Prune.conflicts(Shared));
        assert!(Prune.conflicts(Prune));
        for m in [Shared, Prune, Exclusive] {
            assert!(Exclusive.conflicts(m) && m.conflicts(Exclusive));
        }
    }
}
