//! A local cache of a repository's index fragments and snapshot objects,
//! so that listing snapshots or loading the index of a remote repository
//! does not download them again.
//!
//! The cache is a folder per repository (named by the repository's id)
//! holding the objects' stored bytes — encrypted as they are in the
//! repository — under their own keys. Every cached object is checked
//! against its name (the SHA-256 of its bytes) before it is used: a damaged
//! entry is removed and the object fetched again. Deleting the folder is
//! always safe. Listings always come from the repository; cached objects
//! it no longer lists are removed then.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::error::Result;
use crate::repo::format;
use crate::repo::id::ObjectId;
use crate::sink::{self, ByteStream, ObjectInfo, Sink};

/// The prefixes whose objects are cached.
const CACHED: [&str; 2] = ["snapshots/", "index/"];

/// A sink that keeps its index and snapshot objects in a local folder.
#[derive(Debug)]
pub struct CacheSink {
    inner: Arc<dyn Sink>,
    dir: PathBuf,
}

impl CacheSink {
    /// Caches `inner`'s index and snapshot objects under `dir`.
    pub fn new(inner: Arc<dyn Sink>, dir: PathBuf) -> CacheSink {
        CacheSink { inner, dir }
    }

    /// The default cache folder: `$RESPALDO_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/respaldo`, else `~/.cache/respaldo`; `None` when
    /// none can be found or `$RESPALDO_CACHE_DIR` is `off`.
    pub fn default_root() -> Option<PathBuf> {
        match std::env::var_os("RESPALDO_CACHE_DIR") {
            Some(v) if v == "off" => return None,
            Some(v) if !v.is_empty() => return Some(PathBuf::from(v)),
            _ => {}
        }
        if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(x).join("respaldo"));
        }
        std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|h| PathBuf::from(h).join(".cache").join("respaldo"))
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        (CACHED.iter().any(|p| key.starts_with(p)) && !key.contains(".."))
            .then(|| self.dir.join(key))
    }

    /// The cached bytes of `key`, if present and matching their name.
    async fn read(&self, key: &str, path: &Path) -> Option<Bytes> {
        let bytes = tokio::fs::read(path).await.ok()?;
        let expected = format::id_from_key(key)?;
        if ObjectId::sha256(&bytes) == expected {
            return Some(Bytes::from(bytes));
        }
        tracing::warn!(
            "cache entry {} does not match its name; fetching the object again",
            path.display()
        );
        let _ = tokio::fs::remove_file(path).await;
        None
    }

    /// Keeps `bytes` for `key` (best effort: a cache that cannot be written
    /// only costs downloads).
    async fn keep(&self, path: &Path, bytes: &[u8]) {
        let Some(parent) = path.parent() else { return };
        if tokio::fs::create_dir_all(parent).await.is_err() {
            return;
        }
        let tmp = parent.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            crate::kit::scratch::unique_suffix('-')
        ));
        if tokio::fs::write(&tmp, bytes).await.is_ok()
            && tokio::fs::rename(&tmp, path).await.is_ok()
        {
            return;
        }
        let _ = tokio::fs::remove_file(&tmp).await;
    }

    /// Removes cached objects under `prefix` that `listed` no longer holds.
    async fn forget_unlisted(&self, prefix: &str, listed: &[ObjectInfo]) {
        let Some(dir) = self.path(prefix) else { return };
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
            return;
        };
        let keep: std::collections::HashSet<&str> = listed.iter().map(|o| o.key.as_str()).collect();
        while let Ok(Some(e)) = entries.next_entry().await {
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(format!("{prefix}{name}").as_str()) {
                let _ = tokio::fs::remove_file(e.path()).await;
            }
        }
    }
}

#[async_trait]
impl Sink for CacheSink {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, key: &str, data: ByteStream) -> Result<()> {
        let Some(path) = self.path(key) else {
            return self.inner.put(key, data).await;
        };
        // Index fragments and snapshots are documents of bounded size.
        let mut buf = BytesMut::new();
        let mut data = data;
        while let Some(piece) = data.next().await {
            buf.extend_from_slice(&piece.map_err(|e| crate::Error::io("reading", key, e))?);
        }
        let bytes = buf.freeze();
        self.inner.put(key, sink::once(bytes.clone())).await?;
        self.keep(&path, &bytes).await;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let Some(path) = self.path(key) else {
            return self.inner.get(key).await;
        };
        if let Some(b) = self.read(key, &path).await {
            return Ok(b);
        }
        let bytes = self.inner.get(key).await?;
        if format::id_from_key(key).is_some_and(|id| ObjectId::sha256(&bytes) == id) {
            self.keep(&path, &bytes).await;
        }
        Ok(bytes)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.inner.get_range(key, range).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let listed = self.inner.list(prefix).await?;
        if CACHED.contains(&prefix) {
            self.forget_unlisted(prefix, &listed).await;
        }
        Ok(listed)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await?;
        if let Some(path) = self.path(key) {
            let _ = tokio::fs::remove_file(path).await;
        }
        Ok(())
    }

    async fn reclaim_incomplete(&self) -> Result<u64> {
        self.inner.reclaim_incomplete().await
    }
}
