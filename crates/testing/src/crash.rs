//! [`CrashSink`]: a process that dies at a chosen moment, as storage sees it.
//!
//! The sink lets a set number of writes (puts and deletes) through; the next
//! one is the moment of the crash: it is either applied or not (both happen
//! to a process killed with SIGKILL around a write), and from then on every
//! operation fails, as nothing of a dead process reaches storage any more.
//! A test then "restarts" by opening the repository again on the inner sink.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use respaldo_core::error::{Error, Result};
use respaldo_core::sink::{self, ByteStream, ObjectInfo, Sink};

/// A sink that crashes after a number of writes (see the module docs).
#[derive(Debug)]
pub struct CrashSink {
    inner: Arc<dyn Sink>,
    /// Writes still allowed before the crash.
    left: AtomicU64,
    /// Whether the crashing write is applied before the process "dies".
    apply_last: bool,
    dead: AtomicBool,
    writes: AtomicU64,
}

impl CrashSink {
    /// Crashes at write number `after + 1` (`u64::MAX`: never), applying
    /// that write first when `apply_last` is set.
    pub fn new(inner: Arc<dyn Sink>, after: u64, apply_last: bool) -> Self {
        CrashSink {
            inner,
            left: AtomicU64::new(after),
            apply_last,
            dead: AtomicBool::new(false),
            writes: AtomicU64::new(0),
        }
    }

    /// Whether the crash happened.
    pub fn crashed(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Writes that reached storage.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    fn dead_err(&self, key: &str) -> Error {
        Error::Storage {
            location: self.inner.location(),
            key: key.to_string(),
            source: "simulated crash: the process is gone".into(),
        }
    }

    fn alive(&self, key: &str) -> Result<()> {
        if self.crashed() {
            Err(self.dead_err(key))
        } else {
            Ok(())
        }
    }

    /// Accounts for one write: `Ok(true)` to apply it and go on, `Ok(false)`
    /// to apply it and die, `Err` to die without applying it.
    fn write_allowed(&self, key: &str) -> Result<bool> {
        self.alive(key)?;
        let prev = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                Some(l.saturating_sub(1))
            })
            .expect("always Some");
        if prev > 0 {
            return Ok(true);
        }
        self.dead.store(true, Ordering::SeqCst);
        if self.apply_last {
            Ok(false)
        } else {
            Err(self.dead_err(key))
        }
    }
}

#[async_trait]
impl Sink for CrashSink {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put(&self, key: &str, data: ByteStream) -> Result<()> {
        // The data is read whole first, so that the write is all or nothing.
        use futures::TryStreamExt;
        let chunks: Vec<Bytes> = data
            .try_collect()
            .await
            .map_err(|e| Error::io("reading", key, e))?;
        let go_on = self.write_allowed(key)?;
        let mut all = bytes::BytesMut::new();
        for c in chunks {
            all.extend_from_slice(&c);
        }
        self.inner.put(key, sink::once(all.freeze())).await?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        if go_on {
            Ok(())
        } else {
            Err(self.dead_err(key))
        }
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.alive(key)?;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.alive(key)?;
        self.inner.get_range(key, range).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.alive(prefix)?;
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        let go_on = self.write_allowed(key)?;
        self.inner.delete(key).await?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        if go_on {
            Ok(())
        } else {
            Err(self.dead_err(key))
        }
    }
    async fn reclaim_incomplete(&self) -> Result<u64> {
        self.alive("(incomplete uploads)")?;
        self.inner.reclaim_incomplete().await
    }
}
