//! Scratch targets: the one shape of a drill. A test-restore creates a
//! throwaway target (a database, a bucket, a volume, a server) under a
//! name no one else uses, restores the snapshot into it, checks it, and
//! removes it whatever happened. [`Scratch::drill`] holds that order so no
//! driver repeats it: the removal runs after a failed restore or check
//! too, the restore's error wins over the removal's, and a successful
//! drill reports the removal in words.
//!
//! ```
//! use respaldo_core::kit::scratch::Scratch;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let scratch = Scratch::new("database", "respaldo_test_db", '_');
//! assert!(scratch.name().starts_with("respaldo_test_db_"));
//! let name = scratch.name().to_string();
//! let (rows, line) = scratch
//!     .drill(
//!         async { Ok::<_, String>(42) },
//!         |n| async move { assert_eq!(n, name); Ok(()) },
//!     )
//!     .await
//!     .unwrap();
//! assert_eq!(rows, 42);
//! assert!(line.starts_with("scratch database `respaldo_test_db_"));
//! assert!(line.ends_with("` removed"));
//! # });
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A throwaway target for one drill: what it is (for the report) and a
/// name no one else uses.
#[derive(Debug, Clone)]
pub struct Scratch {
    what: &'static str,
    name: String,
    removed: Option<String>,
}

impl Scratch {
    /// A scratch `what` (e.g. "database", "bucket", "volume") named
    /// `prefix`, then `sep`, this process's id, `sep` and the time in
    /// nanoseconds: unique among concurrent drills on one server.
    pub fn new(what: &'static str, prefix: &str, sep: char) -> Scratch {
        Scratch::named(what, format!("{prefix}{sep}{}", unique_suffix(sep)))
    }

    /// A scratch `what` with a name the driver made itself (for targets
    /// whose names have rules of their own, such as a length limit).
    pub fn named(what: &'static str, name: String) -> Scratch {
        Scratch {
            what,
            name,
            removed: None,
        }
    }

    /// Reports the removal in these words instead of "scratch WHAT `NAME`
    /// removed".
    pub fn reported_as(mut self, removed: impl Into<String>) -> Scratch {
        self.removed = Some(removed.into());
        self
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `restore_and_check` (which restores into the target and checks
    /// it), then `remove(name)` whatever it returned. The result is the
    /// restore's value and the report line saying the target was removed;
    /// a restore error is returned before a removal error.
    pub async fn drill<T, E, R>(
        self,
        restore_and_check: impl Future<Output = Result<T, E>>,
        remove: impl FnOnce(String) -> R,
    ) -> Result<(T, String), E>
    where
        R: Future<Output = Result<(), E>>,
    {
        let result = restore_and_check.await;
        let removed = remove(self.name.clone()).await;
        let value = result?;
        removed?;
        let line = self
            .removed
            .unwrap_or_else(|| format!("scratch {} `{}` removed", self.what, self.name));
        Ok((value, line))
    }
}

/// This process's id and the time in nanoseconds, joined by `sep`; the
/// time never repeats within one process.
pub fn unique_suffix(sep: char) -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let prev = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(0);
    let ns = now.max(prev + 1);
    format!("{}{sep}{ns}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn block<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_failed_restore_still_removes_the_target_and_its_error_wins() {
        let removed = AtomicBool::new(false);
        let r: Result<((), String), String> = block(Scratch::new("bucket", "t", '_').drill(
            async { Err("restore failed".to_string()) },
            |_| async {
                removed.store(true, Ordering::SeqCst);
                Err("remove failed too".to_string())
            },
        ));
        assert_eq!(r.unwrap_err(), "restore failed");
        assert!(removed.load(Ordering::SeqCst));
    }

    #[test]
    fn a_failed_removal_fails_the_drill() {
        let r: Result<((), String), String> = block(Scratch::new("volume", "t", '-').drill(
            async { Ok(()) },
            |n| async move { Err(format!("{n} busy")) },
        ));
        assert!(r.unwrap_err().starts_with("t-"));
    }

    #[test]
    fn names_do_not_repeat() {
        let a = Scratch::new("database", "x", '_');
        let b = Scratch::new("database", "x", '_');
        assert_ne!(a.name(), b.name());
    }
}
