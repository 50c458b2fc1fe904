//! The repository: opening, the index, snapshots and reading blobs.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::RwLock;

use crate::error::{Error, Result};
use crate::format::{self, BlobHeader, RepoConfig, BLOB_HEADER_LEN, PACK_HEADER_LEN};
use crate::id::ObjectId;
use crate::index::{BlobEntry, Index, IndexFragment, PackEntry};
use crate::sink::{self, Sink};
use crate::snapshot::{Snapshot, SnapshotRef};

/// Concurrent object reads when loading many small objects.
const LOAD_CONCURRENCY: usize = 16;

/// A problem found while loading, kept for `verify` and shown as a warning.
#[derive(Debug, Clone)]
pub struct Damage {
    /// The damaged object's key.
    pub key: String,
    /// What is wrong.
    pub detail: String,
}

/// An open repository.
#[derive(Debug)]
pub struct Repository {
    sink: Arc<dyn Sink>,
    config: RepoConfig,
    key: [u8; 32],
    index: RwLock<LoadedIndex>,
}

#[derive(Debug, Default)]
struct LoadedIndex {
    index: Index,
    fragments: Vec<ObjectId>,
    damaged: Vec<Damage>,
    loaded: bool,
    scanned_unindexed: bool,
}

impl Repository {
    /// Creates a new repository in an empty location.
    pub async fn init(sink: Arc<dyn Sink>) -> Result<Arc<Self>> {
        if !sink.list("config").await?.is_empty() {
            return Err(Error::AlreadyInitialized(sink.location()));
        }
        let config = RepoConfig::generate();
        let bytes = serde_json::to_vec_pretty(&config).map_err(|e| Error::Task(e.to_string()))?;
        sink.put("config", sink::once(Bytes::from(bytes))).await?;
        Self::open(sink).await
    }

    /// Opens an existing repository (the index is loaded on first use).
    pub async fn open(sink: Arc<dyn Sink>) -> Result<Arc<Self>> {
        let raw = match sink.get("config").await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => return Err(Error::NotInitialized(sink.location())),
            Err(e) => return Err(e),
        };
        let config: RepoConfig = serde_json::from_slice(&raw)
            .map_err(|e| Error::corrupt("repository config", e.to_string()))?;
        let key = config.chunk_key()?;
        Ok(Arc::new(Repository {
            sink,
            config,
            key,
            index: RwLock::new(LoadedIndex::default()),
        }))
    }

    /// The storage backend.
    pub fn sink(&self) -> &Arc<dyn Sink> {
        &self.sink
    }

    /// The repository configuration.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The chunk-id key.
    pub(crate) fn chunk_key(&self) -> &[u8; 32] {
        &self.key
    }

    /// Loads every index fragment (once). Damaged fragments are recorded and
    /// skipped: their packs are found again by scanning when needed.
    pub async fn load_index(&self) -> Result<()> {
        if self.index.read().await.loaded {
            return Ok(());
        }
        let mut guard = self.index.write().await;
        if guard.loaded {
            return Ok(());
        }
        let listed = self.sink.list("index/").await?;
        let results: Vec<(String, Result<(ObjectId, IndexFragment)>)> =
            futures::stream::iter(listed)
                .map(|obj| async move {
                    let r = self.read_fragment(&obj.key).await;
                    (obj.key, r)
                })
                .buffer_unordered(LOAD_CONCURRENCY)
                .collect()
                .await;
        let mut loaded = LoadedIndex {
            loaded: true,
            ..Default::default()
        };
        for (key, r) in results {
            match r {
                Ok((id, frag)) => {
                    for p in &frag.packs {
                        loaded.index.add_pack(p);
                    }
                    loaded.fragments.push(id);
                }
                Err(Error::Corrupt { detail, .. }) => {
                    tracing::warn!(
                        "index fragment {key} is damaged ({detail}); its packs will be rescanned"
                    );
                    loaded.damaged.push(Damage { key, detail });
                }
                Err(e) => return Err(e),
            }
        }
        *guard = loaded;
        Ok(())
    }

    async fn read_fragment(&self, key: &str) -> Result<(ObjectId, IndexFragment)> {
        let id = format::id_from_key(key)
            .ok_or_else(|| Error::corrupt(format!("index object {key}"), "bad name"))?;
        let bytes = self.sink.get(key).await?;
        let frag = format::open_document(&format!("index fragment {}", id.short()), &id, &bytes)?;
        Ok((id, frag))
    }

    /// Runs `f` with the loaded index.
    pub async fn with_index<T>(&self, f: impl FnOnce(&Index) -> T) -> Result<T> {
        self.load_index().await?;
        let g = self.index.read().await;
        Ok(f(&g.index))
    }

    /// The ids of the loaded index fragments.
    pub async fn index_fragments(&self) -> Result<Vec<ObjectId>> {
        self.load_index().await?;
        Ok(self.index.read().await.fragments.clone())
    }

    /// Damage found while loading the index.
    pub async fn index_damage(&self) -> Result<Vec<Damage>> {
        self.load_index().await?;
        Ok(self.index.read().await.damaged.clone())
    }

    /// The set of every blob id in the index.
    pub async fn known_blobs(&self) -> Result<HashSet<ObjectId>> {
        self.with_index(|i| i.blob_ids().copied().collect()).await
    }

    /// Adds freshly written packs to the in-memory index.
    pub(crate) async fn index_add(&self, packs: &[PackEntry], fragment: Option<ObjectId>) {
        let mut g = self.index.write().await;
        for p in packs {
            g.index.add_pack(p);
        }
        if let Some(f) = fragment {
            g.fragments.push(f);
        }
    }

    /// Forgets the in-memory index so the next use reloads it.
    pub(crate) async fn index_reset(&self) {
        *self.index.write().await = LoadedIndex::default();
    }

    /// Reads and checks one blob's plaintext.
    pub async fn read_blob(&self, id: &ObjectId) -> Result<Bytes> {
        self.load_index().await?;
        let found = self.index.read().await.index.get(id);
        let (pack, loc) = match found {
            Some(x) => x,
            None => {
                self.scan_unindexed_packs().await?;
                self.index.read().await.index.get(id).ok_or_else(|| {
                    Error::corrupt(
                        format!("chunk {}", id.short()),
                        "missing from the repository",
                    )
                })?
            }
        };
        let key = format::pack_key(&pack.id);
        let what = || format!("pack {} (chunk {})", pack.id.short(), id.short());
        let raw = self
            .sink
            .get_range(
                &key,
                loc.offset as u64..loc.offset as u64 + loc.length as u64,
            )
            .await
            .map_err(|e| match e {
                Error::NotFound { .. } => Error::corrupt(what(), "pack is missing"),
                e => e,
            })?;
        let header = BlobHeader::decode(&raw).map_err(|d| Error::corrupt(what(), d))?;
        if header.id != *id {
            return Err(Error::corrupt(what(), "blob header names another chunk"));
        }
        format::decode_blob(&header, &raw[BLOB_HEADER_LEN..], &self.key)
            .map_err(|d| Error::corrupt(what(), d))
    }

    /// Parses a whole pack into its index entry, checking every blob when
    /// `check_data` is set. Used by verify and by index recovery.
    pub fn parse_pack(
        &self,
        id: &ObjectId,
        bytes: &[u8],
        check_data: bool,
    ) -> std::result::Result<PackEntry, String> {
        if ObjectId::sha256(bytes) != *id {
            return Err("content does not match its name (SHA-256 mismatch)".into());
        }
        format::check_pack_header(bytes)?;
        let mut blobs = Vec::new();
        let mut pos = PACK_HEADER_LEN;
        while pos < bytes.len() {
            let h =
                BlobHeader::decode(&bytes[pos..]).map_err(|e| format!("at offset {pos}: {e}"))?;
            let end = pos + BLOB_HEADER_LEN + h.stored_len as usize;
            if end > bytes.len() {
                return Err(format!("blob at offset {pos} runs past the end"));
            }
            if check_data {
                format::decode_blob(&h, &bytes[pos + BLOB_HEADER_LEN..end], &self.key)
                    .map_err(|e| format!("chunk {} at offset {pos}: {e}", h.id.short()))?;
            }
            blobs.push(BlobEntry {
                id: h.id,
                kind: h.kind,
                offset: pos as u32,
                length: (end - pos) as u32,
                raw_len: h.raw_len,
            });
            pos = end;
        }
        Ok(PackEntry {
            id: *id,
            size: bytes.len() as u64,
            blobs,
        })
    }

    /// Finds packs that no valid index fragment describes (a damaged fragment,
    /// an interrupted run) and indexes them from their self-describing headers,
    /// in memory only. Runs at most once per process.
    async fn scan_unindexed_packs(&self) -> Result<()> {
        if self.index.read().await.scanned_unindexed {
            return Ok(());
        }
        let listed = self.list_packs().await?;
        let unknown: Vec<ObjectId> = {
            let g = self.index.read().await;
            listed
                .keys()
                .filter(|id| !g.index.has_pack(id))
                .copied()
                .collect()
        };
        let mut found = Vec::new();
        for id in unknown {
            let bytes = self.sink.get(&format::pack_key(&id)).await?;
            match self.parse_pack(&id, &bytes, false) {
                Ok(entry) => found.push(entry),
                Err(e) => tracing::warn!("pack {} is damaged: {e}", id.short()),
            }
        }
        let mut g = self.index.write().await;
        for p in &found {
            g.index.add_pack(p);
        }
        g.scanned_unindexed = true;
        Ok(())
    }

    /// Every pack in storage with its size (indexed or not).
    pub async fn list_packs(&self) -> Result<std::collections::HashMap<ObjectId, u64>> {
        Ok(self
            .sink
            .list("packs/")
            .await?
            .into_iter()
            .filter_map(|o| format::id_from_key(&o.key).map(|id| (id, o.size)))
            .collect())
    }

    /// Lists every snapshot, newest first. Damaged snapshot objects are
    /// returned separately, never silently dropped.
    pub async fn snapshots(&self) -> Result<(Vec<SnapshotRef>, Vec<Damage>)> {
        let listed = self.sink.list("snapshots/").await?;
        let results: Vec<(String, Result<SnapshotRef>)> = futures::stream::iter(listed)
            .map(|obj| async move {
                let r = self.read_snapshot_key(&obj.key).await;
                (obj.key, r)
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .collect()
            .await;
        let mut good = Vec::new();
        let mut damaged = Vec::new();
        for (key, r) in results {
            match r {
                Ok(s) => good.push(s),
                Err(Error::Corrupt { detail, .. }) => damaged.push(Damage { key, detail }),
                Err(Error::NotFound { .. }) => {} // removed concurrently by forget
                Err(e) => return Err(e),
            }
        }
        good.sort_by_key(|s| std::cmp::Reverse((s.snapshot.time, s.id)));
        Ok((good, damaged))
    }

    async fn read_snapshot_key(&self, key: &str) -> Result<SnapshotRef> {
        let id = format::id_from_key(key)
            .ok_or_else(|| Error::corrupt(format!("snapshot object {key}"), "bad name"))?;
        let bytes = self.sink.get(key).await?;
        let snapshot: Snapshot =
            format::open_document(&format!("snapshot {}", id.short()), &id, &bytes)?;
        Ok(SnapshotRef { id, snapshot })
    }

    /// Writes a snapshot: the commit point of a run.
    pub async fn write_snapshot(&self, snapshot: &Snapshot) -> Result<ObjectId> {
        let (id, bytes) = format::seal_document(snapshot)?;
        self.sink
            .put(&format::snapshot_key(&id), sink::once(bytes))
            .await?;
        Ok(id)
    }

    /// Deletes a snapshot object.
    pub async fn delete_snapshot(&self, id: &ObjectId) -> Result<()> {
        self.sink.delete(&format::snapshot_key(id)).await
    }

    /// The plaintext of a list of chunks, in order, fetched `concurrency` at a
    /// time ahead of the consumer.
    pub fn chunk_stream(
        self: &Arc<Self>,
        ids: Vec<ObjectId>,
        concurrency: usize,
    ) -> impl futures::Stream<Item = Result<Bytes>> + Send + 'static {
        let repo = self.clone();
        futures::stream::iter(ids)
            .map(move |id| {
                let repo = repo.clone();
                async move { repo.read_blob(&id).await }
            })
            .buffered(concurrency)
    }

    /// Total size of every object (for stats and warnings).
    pub async fn total_size(&self) -> Result<u64> {
        let mut total = 0;
        for prefix in ["packs/", "index/", "snapshots/"] {
            total += self
                .sink
                .list(prefix)
                .await?
                .iter()
                .map(|o| o.size)
                .sum::<u64>();
        }
        Ok(total)
    }

    /// Reads every chunk of a list into a `Vec` of buffers, for small data.
    pub async fn read_all(self: &Arc<Self>, ids: Vec<ObjectId>) -> Result<Vec<Bytes>> {
        self.chunk_stream(ids, 4).try_collect().await
    }
}
