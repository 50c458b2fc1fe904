//! The repository: opening, the index, snapshots and reading blobs.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::RwLock;

use crate::crypto::{self, Crypto, KeyMaterial};
use crate::error::{Error, Result};
use crate::format::{self, BlobHeader, BlobKind, RepoConfig, BLOB_HEADER_LEN};
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
    crypto: Option<Crypto>,
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
    /// Creates a new unencrypted repository in an empty location.
    pub async fn init(sink: Arc<dyn Sink>) -> Result<Arc<Self>> {
        Self::init_with(sink, &KeyMaterial::default(), None).await
    }

    /// Creates a new repository in an empty location, encrypted when `keys`
    /// has recipients or a passphrase. With `like`, the new repository shares
    /// that one's chunking parameters, chunk-id key and encryption, so that
    /// snapshots can be copied between them chunk by chunk.
    pub async fn init_with(
        sink: Arc<dyn Sink>,
        keys: &KeyMaterial,
        like: Option<&Repository>,
    ) -> Result<Arc<Self>> {
        if !sink.list("config").await?.is_empty() {
            return Err(Error::AlreadyInitialized(sink.location()));
        }
        let mut config = RepoConfig::generate();
        if let Some(other) = like {
            let fresh = config;
            config = other.config.clone();
            config.id = fresh.id;
            config.created = fresh.created;
        } else if !keys.is_empty() {
            let (params, sealed_key, _) = Crypto::create(keys)?;
            config.encryption = crypto::SCHEME.into();
            config.encryption_params = Some(params);
            config.chunk_id_key = format!("age:{sealed_key}");
        }
        let bytes = serde_json::to_vec_pretty(&config).map_err(|e| Error::Task(e.to_string()))?;
        sink.put("config", sink::once(Bytes::from(bytes))).await?;
        Self::open_with(sink, keys).await
    }

    /// Opens an existing unencrypted repository.
    pub async fn open(sink: Arc<dyn Sink>) -> Result<Arc<Self>> {
        Self::open_with(sink, &KeyMaterial::default()).await
    }

    /// Opens an existing repository with the given keys (the index is loaded
    /// on first use). An encrypted repository opens with recipients only
    /// (write, list, forget) or with an identity (everything).
    pub async fn open_with(sink: Arc<dyn Sink>, keys: &KeyMaterial) -> Result<Arc<Self>> {
        let raw = match sink.get("config").await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => return Err(Error::NotInitialized(sink.location())),
            Err(e) => return Err(e),
        };
        let config: RepoConfig = serde_json::from_slice(&raw)
            .map_err(|e| Error::corrupt("repository config", e.to_string()))?;
        config.check_version()?;
        let (crypto, key) = match (config.encryption.as_str(), &config.encryption_params) {
            ("none", None) => (None, config.plain_chunk_key()?),
            (crypto::SCHEME, Some(params)) => {
                let sealed = config
                    .chunk_id_key
                    .strip_prefix("age:")
                    .ok_or_else(|| Error::corrupt("repository config", "bad chunk_id_key"))?;
                let (c, k) =
                    Crypto::open(keys, params, sealed).map_err(|e| in_repo(e, &sink.location()))?;
                (Some(c), k)
            }
            (other, _) => {
                return Err(Error::Unsupported(format!("encryption scheme `{other}`")));
            }
        };
        Ok(Arc::new(Repository {
            sink,
            config,
            key,
            crypto,
            index: RwLock::new(LoadedIndex::default()),
        }))
    }

    /// Whether the repository is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.crypto.is_some()
    }

    /// Fails with a clear message when the repository is encrypted and no
    /// identity was given: `what` is the operation (e.g. "restore").
    pub fn require_readable(&self, what: &str) -> Result<()> {
        match &self.crypto {
            Some(c) if !c.can_read() => Err(in_repo(
                crypto::identity_required(&format!("data ({what})")),
                &self.sink.location(),
            )),
            _ => Ok(()),
        }
    }

    /// Whether this repository can exchange chunks with `other` as they are:
    /// same chunking parameters and chunk-id key.
    pub fn shares_chunks_with(&self, other: &Repository) -> bool {
        self.config.chunker == other.config.chunker && self.key == other.key
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

    /// The keys of an encrypted repository.
    pub(crate) fn crypto(&self) -> Option<&Crypto> {
        self.crypto.as_ref()
    }

    /// The key of an encrypted pack (cached; read from the pack header once).
    async fn pack_key(&self, crypto: &Crypto, pack: &ObjectId) -> Result<[u8; 32]> {
        if let Some(k) = crypto.cached_pack_key(pack) {
            return Ok(k);
        }
        if !crypto.can_read() {
            return Err(crypto::identity_required(&format!("pack {}", pack.short())));
        }
        let key = format::pack_key(pack);
        let what = || format!("pack {}", pack.short());
        let prefix = self
            .sink
            .get_range(&key, 0..format::ENCRYPTED_PACK_PREFIX as u64)
            .await?;
        let len = format::sealed_key_len(&prefix).map_err(|d| Error::corrupt(what(), d))?;
        let start = format::ENCRYPTED_PACK_PREFIX as u64;
        let sealed = self.sink.get_range(&key, start..start + len as u64).await?;
        crypto.unseal_pack_key(pack, &sealed)
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
        let what = format!("index fragment {}", id.short());
        let mut frag: IndexFragment = format::open_document(&what, &id, &bytes)?;
        if let (Some(sealed), Some(c)) = (frag.sealed.take(), &self.crypto) {
            if c.can_read() {
                let details: Vec<(BlobKind, u32)> = c.open_json(&what, &sealed)?;
                let blobs = frag.packs.iter_mut().flat_map(|p| p.blobs.iter_mut());
                let mut n = 0usize;
                for (b, (kind, raw_len)) in blobs.zip(&details) {
                    b.kind = *kind;
                    b.raw_len = *raw_len;
                    n += 1;
                }
                let total: usize = frag.packs.iter().map(|p| p.blobs.len()).sum();
                if n != total || details.len() != total {
                    return Err(Error::corrupt(
                        &what,
                        format!("sealed part describes {} blobs, not {total}", details.len()),
                    ));
                }
            }
        }
        Ok((id, frag))
    }

    /// Stores an index fragment describing `packs`; in an encrypted
    /// repository the blobs' kinds and plaintext lengths are sealed.
    pub(crate) async fn write_fragment(&self, packs: &[PackEntry]) -> Result<ObjectId> {
        let mut fragment = IndexFragment {
            packs: packs.to_vec(),
            sealed: None,
        };
        if let Some(c) = &self.crypto {
            let details: Vec<(BlobKind, u32)> = fragment
                .packs
                .iter_mut()
                .flat_map(|p| p.blobs.iter_mut())
                .map(|b| {
                    let d = (b.kind, b.raw_len);
                    b.kind = BlobKind::Data;
                    b.raw_len = 0;
                    d
                })
                .collect();
            fragment.sealed = Some(c.seal_json(&details)?);
        }
        let (id, bytes) = format::seal_document(&fragment)?;
        self.sink
            .put(&format::index_key(&id), sink::once(bytes))
            .await?;
        Ok(id)
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
        let (encoded, what) = self.read_encoded(id).await?;
        let header = BlobHeader::decode(&encoded).map_err(|d| Error::corrupt(what.clone(), d))?;
        format::decode_blob(&header, &encoded[BLOB_HEADER_LEN..], &self.key)
            .map_err(|d| Error::corrupt(what, d))
    }

    /// Reads one blob as encoded (header and stored payload), decrypted when
    /// the repository is encrypted, with its header checked against `id`.
    /// Returns it and a name for errors.
    pub(crate) async fn read_encoded(&self, id: &ObjectId) -> Result<(Bytes, String)> {
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
        let what = format!("pack {} (chunk {})", pack.id.short(), id.short());
        let raw = self
            .sink
            .get_range(
                &key,
                loc.offset as u64..loc.offset as u64 + loc.length as u64,
            )
            .await
            .map_err(|e| match e {
                Error::NotFound { .. } => Error::corrupt(what.clone(), "pack is missing"),
                e => e,
            })?;
        let encoded = match &self.crypto {
            None => raw,
            Some(c) => {
                let k = self.pack_key(c, &pack.id).await?;
                Bytes::from(
                    crypto::decrypt_blob(&k, &raw).map_err(|d| Error::corrupt(what.clone(), d))?,
                )
            }
        };
        let header = BlobHeader::decode(&encoded).map_err(|d| Error::corrupt(what.clone(), d))?;
        if header.id != *id {
            return Err(Error::corrupt(what, "blob header names another chunk"));
        }
        Ok((encoded, what))
    }

    /// The encoded blob (header and payload) stored as `frame` in pack `pack`,
    /// whose whole bytes are `pack_bytes`: decrypted in an encrypted repository.
    pub(crate) fn open_frame(
        &self,
        pack: &ObjectId,
        pack_bytes: &[u8],
        frame: Bytes,
    ) -> Result<Bytes> {
        let Some(c) = &self.crypto else {
            return Ok(frame);
        };
        let what = || format!("pack {}", pack.short());
        let key = match c.cached_pack_key(pack) {
            Some(k) => k,
            None => {
                let header =
                    format::parse_pack_header(pack_bytes).map_err(|d| Error::corrupt(what(), d))?;
                let sealed = header
                    .sealed_key
                    .ok_or_else(|| Error::corrupt(what(), "unencrypted pack"))?;
                c.unseal_pack_key(pack, sealed)?
            }
        };
        Ok(Bytes::from(
            crypto::decrypt_blob(&key, &frame).map_err(|d| Error::corrupt(what(), d))?,
        ))
    }

    /// Parses a whole pack into its index entry, checking every blob when
    /// `check_data` is set. Used by verify and by index recovery. An
    /// encrypted pack needs the identity.
    pub fn parse_pack(
        &self,
        id: &ObjectId,
        bytes: &[u8],
        check_data: bool,
    ) -> std::result::Result<PackEntry, String> {
        if ObjectId::sha256(bytes) != *id {
            return Err("content does not match its name (SHA-256 mismatch)".into());
        }
        let header = format::parse_pack_header(bytes)?;
        let pack_key = match (header.sealed_key, &self.crypto) {
            (None, None) => None,
            (Some(sealed), Some(c)) => {
                Some(c.unseal_pack_key(id, sealed).map_err(|e| e.to_string())?)
            }
            (None, Some(_)) => return Err("unencrypted pack in an encrypted repository".into()),
            (Some(_), None) => return Err("encrypted pack in an unencrypted repository".into()),
        };
        let mut blobs = Vec::new();
        let mut pos = header.data_start;
        while pos < bytes.len() {
            let decrypted;
            let (encoded, end): (&[u8], usize) = match &pack_key {
                None => {
                    let h = BlobHeader::decode(&bytes[pos..])
                        .map_err(|e| format!("at offset {pos}: {e}"))?;
                    let end = pos + BLOB_HEADER_LEN + h.stored_len as usize;
                    if end > bytes.len() {
                        return Err(format!("blob at offset {pos} runs past the end"));
                    }
                    (&bytes[pos..end], end)
                }
                Some(k) => {
                    let end = pos
                        + crypto::frame_len(&bytes[pos..])
                            .map_err(|e| format!("at offset {pos}: {e}"))?;
                    if end > bytes.len() {
                        return Err(format!("blob at offset {pos} runs past the end"));
                    }
                    decrypted = crypto::decrypt_blob(k, &bytes[pos..end])
                        .map_err(|e| format!("blob at offset {pos}: {e}"))?;
                    (&decrypted, end)
                }
            };
            let h = BlobHeader::decode(encoded).map_err(|e| format!("at offset {pos}: {e}"))?;
            if BLOB_HEADER_LEN + h.stored_len as usize != encoded.len() {
                return Err(format!("blob at offset {pos} has a bad length"));
            }
            if check_data {
                format::decode_blob(&h, &encoded[BLOB_HEADER_LEN..], &self.key)
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
        let what = format!("snapshot {}", id.short());
        let mut snapshot: Snapshot = format::open_document(&what, &id, &bytes)?;
        if let (Some(sealed), Some(c)) = (&snapshot.sealed, &self.crypto) {
            if c.can_read() {
                snapshot = c.open_json(&what, sealed)?;
            }
        }
        Ok(SnapshotRef { id, snapshot })
    }

    /// Writes a snapshot: the commit point of a run. In an encrypted
    /// repository only what listing and retention need stays readable; the
    /// rest is sealed to the recipients.
    pub async fn write_snapshot(&self, snapshot: &Snapshot) -> Result<ObjectId> {
        let stored = match &self.crypto {
            None => std::borrow::Cow::Borrowed(snapshot),
            Some(c) => {
                let mut full = snapshot.clone();
                full.sealed = None;
                let mut visible = full.redacted();
                visible.sealed = Some(c.seal_json(&full)?);
                std::borrow::Cow::Owned(visible)
            }
        };
        let (id, bytes) = format::seal_document(stored.as_ref())?;
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

/// Adds the repository location to a key error.
fn in_repo(e: Error, location: &str) -> Error {
    match e {
        Error::KeyRequired(m) => Error::KeyRequired(format!("repository {location}: {m}")),
        e => e,
    }
}
