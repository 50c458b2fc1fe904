//! The storage backend trait.
//!
//! A [`Sink`] is a flat key/value store of immutable objects. Keys use `/` as a
//! separator (`packs/ab/ab12…`, `index/…`, `snapshots/…`, `locks/…`, `config`).
//! Implementations must make [`Sink::put`] atomic: a reader sees the whole
//! object or nothing, never a prefix, whatever happens to the writer.

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::Result;

/// A stream of byte buffers, pulled by the consumer (backpressure).
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Turns one buffer into a [`ByteStream`].
pub fn once(data: Bytes) -> ByteStream {
    Box::pin(futures::stream::once(async move { Ok(data) }))
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When the storage last wrote it (its own clock, not the writer's), when
    /// the backend reports it. Used to judge locks that cannot be read.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// Where repository objects are stored.
#[async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// A human-readable location for messages (never contains secrets).
    fn location(&self) -> String;

    /// Stores `data` under `key`, atomically: until it returns `Ok`, no reader
    /// sees any part of the object; an existing object is replaced whole.
    async fn put(&self, key: &str, data: ByteStream) -> Result<()>;

    /// Reads a whole object. A missing object is [`Error::NotFound`](crate::Error::NotFound).
    async fn get(&self, key: &str) -> Result<Bytes>;

    /// Reads `range` of an object. Reading past the end is an error.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;

    /// Lists the objects whose key starts with `prefix`, in no particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Removes what interrupted writers left behind that is not an object
    /// (temporary files, unfinished multipart uploads). Called by prune.
    /// Returns the number of bytes reclaimed.
    async fn reclaim_incomplete(&self) -> Result<u64> {
        Ok(0)
    }
}
