//! A [`Sink`] that keeps every object in memory: the repository of
//! in-process driver tests and of examples (no disk, no server). It passes
//! the [`conformance`](crate::conformance) suite like every other sink.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use respaldo_core::sink::{ByteStream, ObjectInfo, Sink};
use respaldo_core::{Error, Result};

/// Objects in memory, by key, with the time each was stored.
#[derive(Debug, Default)]
pub struct MemorySink {
    objects: Mutex<BTreeMap<String, (Bytes, chrono::DateTime<chrono::Utc>)>>,
}

impl MemorySink {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of objects stored.
    pub fn len(&self) -> usize {
        self.objects.lock().expect("not poisoned").len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn not_found(&self, key: &str) -> Error {
        Error::NotFound {
            key: key.to_string(),
            location: self.location(),
        }
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn location(&self) -> String {
        "memory".to_string()
    }

    async fn put(&self, key: &str, mut data: ByteStream) -> Result<()> {
        // Gathered first: a failing stream stores nothing (atomic put).
        let mut buf = BytesMut::new();
        while let Some(part) = data.next().await {
            let part = part.map_err(|e| Error::Storage {
                location: self.location(),
                key: key.to_string(),
                source: Box::new(e),
            })?;
            buf.extend_from_slice(&part);
        }
        self.objects
            .lock()
            .expect("not poisoned")
            .insert(key.to_string(), (buf.freeze(), chrono::Utc::now()));
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let objects = self.objects.lock().expect("not poisoned");
        objects
            .get(key)
            .map(|(b, _)| b.clone())
            .ok_or_else(|| self.not_found(key))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let whole = self.get(key).await?;
        if range.start > range.end || range.end > whole.len() as u64 {
            return Err(Error::Storage {
                location: self.location(),
                key: key.to_string(),
                source: format!(
                    "range {}..{} outside an object of {} bytes",
                    range.start,
                    range.end,
                    whole.len()
                )
                .into(),
            });
        }
        Ok(whole.slice(range.start as usize..range.end as usize))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let objects = self.objects.lock().expect("not poisoned");
        Ok(objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (b, t))| ObjectInfo {
                key: k.clone(),
                size: b.len() as u64,
                modified: Some(*t),
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.objects.lock().expect("not poisoned").remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        crate::conformance::run(&MemorySink::new()).await;
    }
}
