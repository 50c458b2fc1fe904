//! Progress counters shared between the engine and whatever displays them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Live counters of a long operation. The engine only increments them; the CLI
/// polls them to draw a progress bar on a terminal.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files (or artifacts) processed.
    pub items: AtomicU64,
    /// Plaintext bytes processed.
    pub bytes: AtomicU64,
    /// Expected plaintext bytes, 0 when unknown.
    pub total: AtomicU64,
    /// Bytes newly stored.
    pub stored: AtomicU64,
    current: Mutex<String>,
}

impl Progress {
    /// Adds processed bytes.
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts one processed item.
    pub fn add_item(&self) {
        self.items.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds to the expected total.
    pub fn add_total(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }
    /// Sets what is being worked on.
    pub fn set_current(&self, what: impl Into<String>) {
        if let Ok(mut c) = self.current.lock() {
            *c = what.into();
        }
    }
    /// What is being worked on.
    pub fn current(&self) -> String {
        self.current.lock().map(|c| c.clone()).unwrap_or_default()
    }
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
