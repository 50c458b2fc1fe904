use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use respaldo_core::error::{Error, Result};
use respaldo_core::sink::{ByteStream, ObjectInfo, Sink};

/// Which operation fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing fails: the sink only counts reads (see
    /// [`FaultySink::pack_reads`]).
    None,
    /// The Nth put (counting from 1) of a key with this prefix fails.
    PutNth {
        /// Key prefix that counts (`packs/`, `snapshots/`, …).
        prefix: &'static str,
        /// Which put fails.
        n: usize,
    },
    /// Every put of a key with this prefix after the first `n` fails
    /// (storage that becomes unreachable).
    PutsAfter {
        /// Key prefix that counts.
        prefix: &'static str,
        /// Puts that still succeed.
        n: usize,
    },
    /// Every get of a key with this prefix fails.
    Get {
        /// Key prefix.
        prefix: &'static str,
    },
}

/// A sink wrapper that injects one kind of failure.
#[derive(Debug)]
pub struct FaultySink {
    inner: Arc<dyn Sink>,
    fault: Fault,
    puts: AtomicUsize,
    pack_reads: AtomicUsize,
}

impl FaultySink {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Sink>, fault: Fault) -> Self {
        FaultySink {
            inner,
            fault,
            puts: AtomicUsize::new(0),
            pack_reads: AtomicUsize::new(0),
        }
    }

    /// Reads (whole or ranged) of pack objects so far.
    pub fn pack_reads(&self) -> usize {
        self.pack_reads.load(Ordering::SeqCst)
    }

    fn count_read(&self, key: &str) {
        if key.starts_with("packs/") {
            self.pack_reads.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn injected(&self, key: &str) -> Error {
        Error::Storage {
            location: self.inner.location(),
            key: key.to_string(),
            source: "injected fault".into(),
        }
    }
}

#[async_trait]
impl Sink for FaultySink {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put(&self, key: &str, data: ByteStream) -> Result<()> {
        match self.fault {
            Fault::PutNth { prefix, n }
                if key.starts_with(prefix) && self.puts.fetch_add(1, Ordering::SeqCst) + 1 == n =>
            {
                return Err(self.injected(key));
            }
            Fault::PutsAfter { prefix, n }
                if key.starts_with(prefix) && self.puts.fetch_add(1, Ordering::SeqCst) >= n =>
            {
                return Err(self.injected(key));
            }
            _ => {}
        }
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.count_read(key);
        if matches!(self.fault, Fault::Get { prefix } if key.starts_with(prefix)) {
            return Err(self.injected(key));
        }
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.count_read(key);
        if matches!(self.fault, Fault::Get { prefix } if key.starts_with(prefix)) {
            return Err(self.injected(key));
        }
        self.inner.get_range(key, range).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn reclaim_incomplete(&self) -> Result<u64> {
        self.inner.reclaim_incomplete().await
    }
}
