//! The repository: the on-disk [`format`], encryption ([`crypto`]),
//! chunking ([`chunker`]), ids ([`id`]), the [`index`], the write session
//! ([`writer`]), file trees ([`tree`]), [`snapshot`]s, [`lock`]s, and
//! extracting artifacts back into files ([`extract`]). [`Repository`] opens
//! one over a [`Sink`] and reads and writes its objects.

pub mod cache;
pub mod chunker;
pub mod crypto;
pub mod extract;
pub mod fetch;
pub mod format;
pub mod format_error;
pub mod id;
pub mod index;
pub mod lock;
pub mod marks;
pub mod snapshot;
pub mod tar_stream;
pub mod tree;
pub mod writer;

use crate::repo::format::FormatError;
use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::RwLock;

use crate::error::{Error, Result};
use crate::repo::id::ObjectId;
use crate::repo::index::{BlobEntry, BlobTable, Index, IndexFragment, PackEntry};
use crate::repo::snapshot::{Snapshot, SnapshotRef};
use crate::sink::{self, Sink};
use crypto::{Crypto, KeyMaterial};
use format::{BlobHeader, BlobKind, RepoConfig, BLOB_HEADER_LEN};

/// Blobs described per index fragment, at most: fragments stay small to
/// load, cache and rewrite whatever the size of a run or a prune.
pub const FRAGMENT_BLOBS: usize = 50_000;

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
    config_damage: Vec<Damage>,
    legacy_config: std::sync::atomic::AtomicBool,
    scan_lock: tokio::sync::Mutex<()>,
}

/// Where a chunk is (see [`Repository::locate_chunk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkLocation {
    /// In this pack, which an index fragment describes.
    Indexed(ObjectId),
    /// Only in this pack, which no valid index fragment describes.
    Unindexed(ObjectId),
    /// In no pack in storage.
    Missing,
}

/// Why a blob frame of a pack cannot be read.
enum FrameError {
    /// The pack's structure breaks here: nothing after it can be found.
    Structure(FormatError),
    /// This blob is damaged; the next one starts at `end`.
    Content { end: usize, detail: FormatError },
}

/// A config object parsed, checked and opened with the keys.
struct OpenedConfig {
    config: RepoConfig,
    key: [u8; 32],
    crypto: Option<Crypto>,
}

impl OpenedConfig {
    fn parse(raw: &[u8], keys: &KeyMaterial, location: &str) -> Result<OpenedConfig> {
        let config: RepoConfig = serde_json::from_slice(raw)
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
                    Crypto::open(keys, params, sealed).map_err(|e| in_repo(e, location))?;
                (Some(c), k)
            }
            (other, _) => {
                return Err(Error::Unsupported(format!("encryption scheme `{other}`")));
            }
        };
        config
            .check_mac(&key)
            .map_err(|d| Error::corrupt("repository config", d))?;
        Ok(OpenedConfig {
            config,
            key,
            crypto,
        })
    }
}

/// The detail of a config problem, for messages.
fn config_problem(e: &Error) -> String {
    match e {
        Error::Corrupt { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

/// Reads an object, `None` when it does not exist.
async fn read_optional(sink: &Arc<dyn Sink>, key: &str) -> Result<Option<Bytes>> {
    match sink.get(key).await {
        Ok(b) => Ok(Some(b)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the config's copy, then the config.
async fn write_config(sink: &Arc<dyn Sink>, config: &RepoConfig) -> Result<()> {
    let bytes = config.to_bytes();
    sink.put(format::CONFIG_COPY_KEY, sink::once(bytes.clone()))
        .await?;
    sink.put(format::CONFIG_KEY, sink::once(bytes)).await
}

#[derive(Debug, Default)]
struct LoadedIndex {
    index: Index,
    /// Every valid fragment with the ids of the packs it describes.
    fragments: Vec<(ObjectId, Vec<ObjectId>)>,
    damaged: Vec<Damage>,
    loaded: bool,
    scanned_unindexed: bool,
    /// Packs indexed by scanning (no valid fragment describes them).
    scanned: HashSet<ObjectId>,
    /// Fragments in the JSON encoding of earlier versions.
    legacy: HashSet<ObjectId>,
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
        Self::create(sink, keys, like, None).await
    }

    /// Creates a new repository with its own chunking parameters instead of
    /// the defaults (small chunks make small test repositories behave like
    /// large ones).
    pub async fn init_with_chunker(
        sink: Arc<dyn Sink>,
        keys: &KeyMaterial,
        chunker: format::ChunkerParams,
    ) -> Result<Arc<Self>> {
        Self::create(sink, keys, None, Some(chunker)).await
    }

    async fn create(
        sink: Arc<dyn Sink>,
        keys: &KeyMaterial,
        like: Option<&Repository>,
        chunker: Option<format::ChunkerParams>,
    ) -> Result<Arc<Self>> {
        if !sink.list(format::CONFIG_KEY).await?.is_empty() {
            return Err(Error::AlreadyInitialized(sink.location()));
        }
        let mut config = RepoConfig::generate();
        if let Some(c) = chunker {
            config.chunker = c;
        }
        let key = if let Some(other) = like {
            let fresh = config;
            config = other.config.clone();
            config.id = fresh.id;
            config.created = fresh.created;
            other.key
        } else if !keys.is_empty() {
            let (params, sealed_key, key) = Crypto::create(keys)?;
            config.encryption = crypto::SCHEME.into();
            config.encryption_params = Some(params);
            config.chunk_id_key = format!("age:{sealed_key}");
            key
        } else {
            config.plain_chunk_key()?
        };
        config.seal(&key);
        write_config(&sink, &config).await?;
        Self::open_with(sink, keys).await
    }

    /// Opens an existing unencrypted repository.
    pub async fn open(sink: Arc<dyn Sink>) -> Result<Arc<Self>> {
        Self::open_with(sink, &KeyMaterial::default()).await
    }

    /// Opens an existing repository with the given keys (the index is loaded
    /// on first use). An encrypted repository opens with recipients only
    /// (write, list, forget) or with an identity (everything).
    ///
    /// The config is checked against its integrity code; when it is damaged
    /// and its copy is sound the copy is used, with a warning, and the damage
    /// is reported by [`Repository::config_damage`] (and `verify`) until
    /// [`Repository::repair_config`] rewrites it.
    pub async fn open_with(sink: Arc<dyn Sink>, keys: &KeyMaterial) -> Result<Arc<Self>> {
        Self::open_inner(sink, keys, None).await
    }

    /// Like [`Repository::open_with`], keeping index fragments and snapshot
    /// objects in `cache_root/<repository id>` ([`cache::CacheSink`]): a
    /// command against a remote repository downloads each of them once.
    pub async fn open_cached(
        sink: Arc<dyn Sink>,
        keys: &KeyMaterial,
        cache_root: &std::path::Path,
    ) -> Result<Arc<Self>> {
        Self::open_inner(sink, keys, Some(cache_root)).await
    }

    async fn open_inner(
        sink: Arc<dyn Sink>,
        keys: &KeyMaterial,
        cache_root: Option<&std::path::Path>,
    ) -> Result<Arc<Self>> {
        let main = read_optional(&sink, format::CONFIG_KEY).await?;
        let copy = read_optional(&sink, format::CONFIG_COPY_KEY).await?;
        if main.is_none() && copy.is_none() {
            for prefix in ["snapshots/", "packs/", "index/"] {
                if !sink.list(prefix).await?.is_empty() {
                    return Err(Error::corrupt(
                        "repository config",
                        format!(
                            "the `{}` object is missing, but {} holds repository data ({prefix}…); \
                             without it nothing can be read (restore the object from a copy of \
                             the repository)",
                            format::CONFIG_KEY,
                            sink.location()
                        ),
                    ));
                }
            }
            return Err(Error::NotInitialized(sink.location()));
        }
        let location = sink.location();
        let main_parsed = main
            .as_ref()
            .map(|b| OpenedConfig::parse(b, keys, &location));
        let copy_parsed = copy
            .as_ref()
            .map(|b| OpenedConfig::parse(b, keys, &location));
        let mut damage = Vec::new();
        let mut legacy = false;
        let chosen = match (main_parsed, copy_parsed) {
            (Some(Ok(m)), copy_state) => {
                match copy_state {
                    None if m.config.mac.is_none() => legacy = true,
                    None => damage.push(Damage {
                        key: format::CONFIG_COPY_KEY.into(),
                        detail: "missing (`respaldo repair config` writes it again)".into(),
                    }),
                    Some(Ok(_)) if copy == main => {}
                    Some(Ok(_)) => damage.push(Damage {
                        key: format::CONFIG_COPY_KEY.into(),
                        detail: format!(
                            "differs from `{}` (`respaldo repair config` writes it again)",
                            format::CONFIG_KEY
                        ),
                    }),
                    Some(Err(e)) => damage.push(Damage {
                        key: format::CONFIG_COPY_KEY.into(),
                        detail: format!(
                            "{} (`respaldo repair config` writes it again)",
                            config_problem(&e)
                        ),
                    }),
                }
                m
            }
            (main_state, Some(Ok(c))) => {
                let detail = match main_state {
                    None => "missing".to_string(),
                    Some(Err(e)) => config_problem(&e),
                    Some(Ok(_)) => unreachable!("matched above"),
                };
                tracing::warn!(
                    "the repository config `{}` is damaged ({detail}); using its copy `{}` \
                     (run `respaldo repair config` to rewrite it)",
                    format::CONFIG_KEY,
                    format::CONFIG_COPY_KEY
                );
                damage.push(Damage {
                    key: format::CONFIG_KEY.into(),
                    detail: format!(
                        "{detail}; its copy `{}` is sound and was used (`respaldo repair config` rewrites it)",
                        format::CONFIG_COPY_KEY
                    ),
                });
                c
            }
            (Some(Err(e)), Some(Err(_)) | None) => return Err(e),
            (None, Some(Err(e))) => return Err(e),
            (None, None) => unreachable!("handled above"),
        };
        let sink = match cache_root {
            // The id names a folder: only its own characters.
            Some(root) if chosen.config.id.chars().all(|c| c.is_ascii_alphanumeric()) => {
                Arc::new(cache::CacheSink::new(sink, root.join(&chosen.config.id))) as Arc<dyn Sink>
            }
            _ => sink,
        };
        Ok(Arc::new(Repository {
            sink,
            config: chosen.config,
            key: chosen.key,
            crypto: chosen.crypto,
            index: RwLock::new(LoadedIndex::default()),
            config_damage: damage,
            legacy_config: std::sync::atomic::AtomicBool::new(legacy),
            scan_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// Problems found in the config objects when the repository was opened.
    pub fn config_damage(&self) -> &[Damage] {
        &self.config_damage
    }

    /// Writes the config and its copy again from the sound one this
    /// repository was opened with (`respaldo repair config`).
    pub async fn repair_config(&self) -> Result<()> {
        let mut config = self.config.clone();
        config.seal(&self.key);
        write_config(&self.sink, &config).await?;
        self.legacy_config
            .store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Gives a config written before integrity codes existed its code and
    /// copy, once, at the first write (best effort: a failure is a warning).
    pub(crate) async fn upgrade_config(&self) {
        if !self
            .legacy_config
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        match self.repair_config().await {
            Ok(()) => tracing::info!("repository config given its integrity code and copy"),
            Err(e) => tracing::warn!("cannot add the integrity code to the repository config: {e}"),
        }
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
        let mut loaded = LoadedIndex {
            loaded: true,
            ..Default::default()
        };
        // Merged as they arrive: a fragment is dropped once its blobs are in
        // the table, so memory stays near the table's own size.
        let mut builder = crate::repo::index::IndexBuilder::default();
        let mut results = futures::stream::iter(listed)
            .map(|obj| async move {
                let r = self.read_fragment(&obj.key).await;
                (obj.key, r)
            })
            .buffer_unordered(LOAD_CONCURRENCY);
        while let Some((key, r)) = results.next().await {
            match r {
                Ok((id, frag, legacy)) => {
                    if legacy {
                        loaded.legacy.insert(id);
                    }
                    builder.reserve(frag.packs.iter().map(|p| p.blobs.len()).sum());
                    for p in &frag.packs {
                        builder.add_pack(p);
                    }
                    loaded
                        .fragments
                        .push((id, frag.packs.iter().map(|p| p.id).collect()));
                }
                Err(Error::Corrupt { detail, .. }) => {
                    tracing::warn!(
                        "index fragment {key} is damaged ({detail}); its packs will be rescanned"
                    );
                    loaded.damaged.push(Damage { key, detail });
                }
                // Replaced by a prune running beside this command: the
                // fragments that replace it were written before it was
                // deleted, and a chunk missed here is only stored again.
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        drop(results);
        loaded.index = builder.build();
        *guard = loaded;
        Ok(())
    }

    /// Reads one fragment; also says whether it is in the JSON encoding of
    /// earlier versions.
    async fn read_fragment(&self, key: &str) -> Result<(ObjectId, IndexFragment, bool)> {
        let id = format::id_from_key(key)
            .ok_or_else(|| Error::corrupt(format!("index object {key}"), "bad name"))?;
        let bytes = self.sink.get(key).await?;
        let what = format!("index fragment {}", id.short());
        let frag = IndexFragment::open(&what, &id, &bytes)?;
        let legacy = !IndexFragment::is_binary(&bytes);
        Ok((id, self.unseal_fragment(&what, frag)?, legacy))
    }

    /// Opens the sealed part of a fragment (kinds and plaintext lengths in
    /// an encrypted repository), when this process holds the identity.
    pub(crate) fn unseal_fragment(
        &self,
        what: &str,
        mut frag: IndexFragment,
    ) -> Result<IndexFragment> {
        if let (Some(sealed), Some(c)) = (frag.sealed.take(), &self.crypto) {
            if c.can_read() {
                let details: Vec<(BlobKind, u32)> = c.open_json(what, &sealed)?;
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
                        what,
                        format!("sealed part describes {} blobs, not {total}", details.len()),
                    ));
                }
            }
        }
        Ok(frag)
    }

    /// A fragment describing `packs`, as stored: in an encrypted repository
    /// the blobs' kinds and plaintext lengths are sealed.
    pub(crate) fn seal_fragment(&self, packs: &[PackEntry]) -> Result<IndexFragment> {
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
        Ok(fragment)
    }

    /// Stores an index fragment describing `packs`.
    pub(crate) async fn write_fragment(&self, packs: &[PackEntry]) -> Result<ObjectId> {
        let (id, bytes) = self.seal_fragment(packs)?.encode()?;
        self.sink
            .put(&format::index_key(&id), sink::once(bytes))
            .await?;
        Ok(id)
    }

    /// Stores index fragments describing `packs`, each of at most
    /// [`FRAGMENT_BLOBS`] blobs (a pack is never split); returns their ids.
    pub(crate) async fn write_fragments(&self, packs: Vec<PackEntry>) -> Result<Vec<ObjectId>> {
        let written = self.write_fragment_batches(packs).await?;
        Ok(written.into_iter().map(|(f, _)| f).collect())
    }

    /// [`Repository::write_fragments`], with the packs each fragment
    /// describes.
    pub(crate) async fn write_fragment_batches(
        &self,
        mut packs: Vec<PackEntry>,
    ) -> Result<Vec<(ObjectId, Vec<ObjectId>)>> {
        packs.sort_by_key(|p| p.id);
        let mut out = Vec::new();
        let mut batch: Vec<PackEntry> = Vec::new();
        let mut blobs = 0usize;
        for p in packs {
            if blobs + p.blobs.len() > FRAGMENT_BLOBS && !batch.is_empty() {
                let f = self.write_fragment(&batch).await?;
                out.push((f, batch.drain(..).map(|p| p.id).collect()));
                blobs = 0;
            }
            blobs += p.blobs.len();
            batch.push(p);
        }
        if !batch.is_empty() {
            let f = self.write_fragment(&batch).await?;
            out.push((f, batch.iter().map(|p| p.id).collect()));
        }
        Ok(out)
    }

    /// Runs `f` with the loaded index.
    pub async fn with_index<T>(&self, f: impl FnOnce(&Index) -> T) -> Result<T> {
        self.load_index().await?;
        let g = self.index.read().await;
        Ok(f(&g.index))
    }

    /// The loaded (valid) index fragments, each with the ids of the packs it
    /// describes.
    pub async fn index_fragments(&self) -> Result<Vec<(ObjectId, Vec<ObjectId>)>> {
        self.load_index().await?;
        Ok(self.index.read().await.fragments.clone())
    }

    /// The loaded fragments still in the JSON encoding of earlier versions
    /// (prune rewrites them in the binary one).
    pub async fn legacy_fragments(&self) -> Result<HashSet<ObjectId>> {
        self.load_index().await?;
        Ok(self.index.read().await.legacy.clone())
    }

    /// Damage found while loading the index.
    pub async fn index_damage(&self) -> Result<Vec<Damage>> {
        self.load_index().await?;
        Ok(self.index.read().await.damaged.clone())
    }

    /// The blobs a new write may take as stored: those of the packs the
    /// index fragments describe (the loaded table, shared, and the packs
    /// this process wrote since). Packs found only by scanning (left by an
    /// interrupted run, or marked for deletion by a prune) are not counted:
    /// a prune may delete them, so their chunks are stored again instead.
    pub async fn stored_blobs(&self) -> Result<(Arc<BlobTable>, HashSet<ObjectId>)> {
        self.load_index().await?;
        let g = self.index.read().await;
        let scanned: HashSet<u32> = g
            .index
            .packs()
            .iter()
            .enumerate()
            .filter(|(_, p)| g.scanned.contains(&p.id))
            .map(|(pos, _)| pos as u32)
            .collect();
        let added = g
            .index
            .added()
            .filter(|(_, loc)| !scanned.contains(&loc.pack))
            .map(|(id, _)| *id)
            .collect();
        Ok((g.index.table(), added))
    }

    /// [`Repository::stored_blobs`] as one set.
    pub async fn known_blobs(&self) -> Result<HashSet<ObjectId>> {
        let (table, mut added) = self.stored_blobs().await?;
        added.extend(table.ids());
        Ok(added)
    }

    /// Adds freshly written packs to the in-memory index.
    pub(crate) async fn index_add(
        &self,
        packs: &[PackEntry],
        fragments: Vec<(ObjectId, Vec<ObjectId>)>,
    ) {
        let mut g = self.index.write().await;
        for p in packs {
            g.index.add_pack(p);
        }
        g.fragments.extend(fragments);
    }

    /// Forgets the in-memory index so the next use reloads it.
    pub(crate) async fn index_reset(&self) {
        *self.index.write().await = LoadedIndex::default();
    }

    /// Reads and checks one blob's plaintext.
    pub async fn read_blob(&self, id: &ObjectId) -> Result<Bytes> {
        let (encoded, what) = self.read_encoded(id).await?;
        self.plaintext(&encoded, what)
    }

    /// Checks and decodes one blob from its stored frame, read from `pack`
    /// (see [`fetch`]).
    pub(crate) async fn blob_from_frame(
        &self,
        id: &ObjectId,
        pack: &crate::repo::index::PackInfo,
        frame: Bytes,
    ) -> Result<Bytes> {
        let encoded = self.encoded_from_frame(id, pack, frame).await?;
        let what = format!("pack {} (chunk {})", pack.id.short(), id.short());
        self.plaintext(&encoded, what)
    }

    /// Checks one blob's stored frame, read from `pack`, and returns it as
    /// stored (decrypted; see [`fetch`]).
    pub(crate) async fn encoded_from_frame(
        &self,
        id: &ObjectId,
        pack: &crate::repo::index::PackInfo,
        frame: Bytes,
    ) -> Result<Bytes> {
        Ok(self.decode_frame(id, pack, Ok(frame)).await?.0)
    }

    fn plaintext(&self, encoded: &[u8], what: String) -> Result<Bytes> {
        let header = BlobHeader::decode(encoded).map_err(|d| Error::corrupt(what.clone(), d))?;
        format::decode_blob(&header, &encoded[BLOB_HEADER_LEN..], &self.key)
            .map_err(|d| Error::corrupt(what, d))
    }

    /// Where the index puts a chunk, if it knows it.
    pub(crate) async fn locate_indexed(
        &self,
        id: &ObjectId,
    ) -> Result<
        Option<(
            crate::repo::index::PackInfo,
            crate::repo::index::BlobLocation,
        )>,
    > {
        self.load_index().await?;
        Ok(self.index.read().await.index.get(id))
    }

    /// Reads a byte range of a stored pack.
    pub(crate) async fn read_pack_range(
        &self,
        pack: &ObjectId,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes> {
        self.sink.get_range(&format::pack_key(pack), range).await
    }

    /// Reads one blob as encoded (header and stored payload), decrypted when
    /// the repository is encrypted, with its header checked against `id`.
    /// Returns it and a name for errors. A chunk the index does not know, or
    /// whose pack is gone, is looked for in the packs no fragment describes.
    pub(crate) async fn read_encoded(&self, id: &ObjectId) -> Result<(Bytes, String)> {
        self.load_index().await?;
        let missing = || {
            Error::corrupt(
                format!("chunk {}", id.short()),
                "missing from the repository",
            )
        };
        let found = self.index.read().await.index.get(id);
        let (pack, loc) = match found {
            Some(x) => x,
            None => {
                self.scan_unindexed_packs().await?;
                self.index.read().await.index.get(id).ok_or_else(missing)?
            }
        };
        let raw = match self.fetch_frame(&pack.id, &loc).await {
            Err(Error::NotFound { .. }) if !self.index.read().await.scanned_unindexed => {
                // The pack is gone: the chunk may be in another one.
                self.scan_unindexed_packs().await?;
                let (pack2, loc2) = self.index.read().await.index.get(id).ok_or_else(missing)?;
                return self
                    .decode_frame(id, &pack2, self.fetch_frame(&pack2.id, &loc2).await)
                    .await;
            }
            r => r,
        };
        self.decode_frame(id, &pack, raw).await
    }

    async fn fetch_frame(
        &self,
        pack: &ObjectId,
        loc: &crate::repo::index::BlobLocation,
    ) -> Result<Bytes> {
        self.sink
            .get_range(
                &format::pack_key(pack),
                loc.offset as u64..loc.offset as u64 + loc.length as u64,
            )
            .await
    }

    async fn decode_frame(
        &self,
        id: &ObjectId,
        pack: &crate::repo::index::PackInfo,
        raw: Result<Bytes>,
    ) -> Result<(Bytes, String)> {
        let what = format!("pack {} (chunk {})", pack.id.short(), id.short());
        let raw = raw.map_err(|e| match e {
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

    /// Where a chunk is, given the packs in storage (`listed`): in a pack an
    /// index fragment describes, only in a pack none describes (found by
    /// scanning them, once), or nowhere.
    pub async fn locate_chunk(
        &self,
        id: &ObjectId,
        listed: &std::collections::HashMap<ObjectId, u64>,
    ) -> Result<ChunkLocation> {
        self.load_index().await?;
        {
            let g = self.index.read().await;
            if let Some((p, _)) = g.index.get(id) {
                if listed.contains_key(&p.id) {
                    return Ok(if g.scanned.contains(&p.id) {
                        ChunkLocation::Unindexed(p.id)
                    } else {
                        ChunkLocation::Indexed(p.id)
                    });
                }
            }
        }
        self.scan_unindexed_packs().await?;
        let g = self.index.read().await;
        Ok(match g.index.get(id) {
            Some((p, _)) if g.scanned.contains(&p.id) && listed.contains_key(&p.id) => {
                ChunkLocation::Unindexed(p.id)
            }
            _ => ChunkLocation::Missing,
        })
    }

    /// Checks an encoded blob (header and payload, decrypted) against the
    /// chunk id it is stored under: header, lengths and content.
    pub(crate) fn check_encoded(
        &self,
        id: &ObjectId,
        encoded: &[u8],
    ) -> std::result::Result<(), FormatError> {
        let h = BlobHeader::decode(encoded)?;
        if h.id != *id {
            return Err(FormatError::OtherChunk);
        }
        if BLOB_HEADER_LEN + h.stored_len as usize != encoded.len() {
            return Err(FormatError::BadLength);
        }
        format::decode_blob(&h, &encoded[BLOB_HEADER_LEN..], &self.key).map(|_| ())
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
    ) -> std::result::Result<PackEntry, FormatError> {
        if ObjectId::sha256(bytes) != *id {
            return Err(FormatError::NameMismatch);
        }
        let header = format::parse_pack_header(bytes)?;
        let pack_key = self.pack_key_in(id, header.sealed_key)?;
        let mut blobs = Vec::new();
        let mut pos = header.data_start;
        while pos < bytes.len() {
            let (entry, end) = match self.frame(pack_key.as_ref(), bytes, pos, check_data) {
                Ok(x) => x,
                Err(FrameError::Structure(d)) | Err(FrameError::Content { detail: d, .. }) => {
                    return Err(d)
                }
            };
            blobs.push(entry);
            pos = end;
        }
        Ok(PackEntry {
            id: *id,
            size: bytes.len() as u64,
            blobs,
        })
    }

    /// The blob frame at `pos` of a pack that may be damaged: `None` when the
    /// pack's structure breaks there, else the frame's entry (`None` when its
    /// content is damaged) and where the next frame starts. For salvaging
    /// what is intact (`repair index`).
    pub(crate) fn frame_at(
        &self,
        id: &ObjectId,
        bytes: &[u8],
        pos: usize,
    ) -> Option<(Option<BlobEntry>, usize)> {
        let header = format::parse_pack_header(bytes).ok()?;
        let pack_key = self.pack_key_in(id, header.sealed_key).ok()?;
        match self.frame(pack_key.as_ref(), bytes, pos, true) {
            Ok((entry, end)) => Some((Some(entry), end)),
            Err(FrameError::Content { end, .. }) => Some((None, end)),
            Err(FrameError::Structure(_)) => None,
        }
    }

    /// The key of an encrypted pack from its header, `None` for a plain one.
    fn pack_key_in(
        &self,
        id: &ObjectId,
        sealed: Option<&[u8]>,
    ) -> std::result::Result<Option<[u8; 32]>, FormatError> {
        match (sealed, &self.crypto) {
            (None, None) => Ok(None),
            (Some(sealed), Some(c)) => {
                if let Some(k) = c.cached_pack_key(id) {
                    return Ok(Some(k));
                }
                Ok(Some(
                    c.unseal_pack_key(id, sealed)
                        .map_err(|e| FormatError::PackKey(e.to_string()))?,
                ))
            }
            (None, Some(_)) => Err(FormatError::EncryptionMismatch("unencrypted", "encrypted")),
            (Some(_), None) => Err(FormatError::EncryptionMismatch("encrypted", "unencrypted")),
        }
    }

    /// Reads one blob frame at `pos`.
    fn frame(
        &self,
        pack_key: Option<&[u8; 32]>,
        bytes: &[u8],
        pos: usize,
        check_data: bool,
    ) -> std::result::Result<(BlobEntry, usize), FrameError> {
        let structure = |e: FormatError| FrameError::Structure(e.at(pos));
        let decrypted;
        let (encoded, end): (&[u8], usize) = match pack_key {
            None => {
                let h = BlobHeader::decode(&bytes[pos..]).map_err(structure)?;
                let end = pos + BLOB_HEADER_LEN + h.stored_len as usize;
                if end > bytes.len() {
                    return Err(FrameError::Structure(FormatError::PastEnd.at(pos)));
                }
                (&bytes[pos..end], end)
            }
            Some(k) => {
                let end = pos + crypto::frame_len(&bytes[pos..]).map_err(structure)?;
                if end > bytes.len() {
                    return Err(FrameError::Structure(FormatError::PastEnd.at(pos)));
                }
                decrypted =
                    crypto::decrypt_blob(k, &bytes[pos..end]).map_err(|e| FrameError::Content {
                        end,
                        detail: e.at(pos),
                    })?;
                (&decrypted, end)
            }
        };
        let content = |detail: FormatError| FrameError::Content {
            end,
            detail: detail.at(pos),
        };
        let h = BlobHeader::decode(encoded).map_err(content)?;
        if BLOB_HEADER_LEN + h.stored_len as usize != encoded.len() {
            return Err(content(FormatError::BadLength));
        }
        if check_data {
            format::decode_blob(&h, &encoded[BLOB_HEADER_LEN..], &self.key)
                .map_err(|e| content(e.in_chunk(&h.id)))?;
        }
        Ok((
            BlobEntry {
                id: h.id,
                kind: h.kind,
                offset: pos as u32,
                length: (end - pos) as u32,
                raw_len: h.raw_len,
            },
            end,
        ))
    }

    /// Finds packs that no valid index fragment describes (a damaged or
    /// deleted fragment, an interrupted run) and indexes them from their
    /// self-describing headers, in memory only; their chunks take the place
    /// of index entries whose pack is gone. Runs at most once per process.
    async fn scan_unindexed_packs(&self) -> Result<()> {
        let _one_at_a_time = self.scan_lock.lock().await;
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
            let bytes = match self.sink.get(&format::pack_key(&id)).await {
                Ok(b) => b,
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            match self.parse_pack(&id, &bytes, false) {
                Ok(entry) => found.push(entry),
                Err(e) => tracing::warn!("pack {} is damaged: {e}", id.short()),
            }
        }
        let mut g = self.index.write().await;
        let gone: HashSet<u32> = g
            .index
            .packs()
            .iter()
            .enumerate()
            .filter(|(_, p)| !listed.contains_key(&p.id))
            .map(|(i, _)| i as u32)
            .collect();
        for p in &found {
            g.index.add_pack_replacing(p, |pos| gone.contains(&pos));
            g.scanned.insert(p.id);
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
        if snapshot.sealed.is_some() {
            // Read without the identity: its contents are not here.
            return Err(crypto::identity_required("rewriting a sealed snapshot"));
        }
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

    /// The plaintext of a list of chunks, in order, read ahead of the
    /// consumer in coalesced ranges (see [`fetch`]).
    pub fn chunk_stream(
        self: &Arc<Self>,
        ids: Vec<ObjectId>,
    ) -> futures::stream::BoxStream<'static, Result<Bytes>> {
        let fetcher = fetch::ChunkFetcher::new(self.clone());
        futures::stream::try_unfold(
            (fetcher, ids.into_iter()),
            |(mut fetcher, mut ids)| async move {
                while !fetcher.is_full() {
                    let Some(id) = ids.next() else { break };
                    fetcher.push(id).await?;
                }
                Ok(fetcher.next().await?.map(|b| (b, (fetcher, ids))))
            },
        )
        .boxed()
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
        self.chunk_stream(ids).try_collect().await
    }
}

/// Adds the repository location to a key error.
fn in_repo(e: Error, location: &str) -> Error {
    match e {
        Error::KeyRequired(m) => Error::KeyRequired(format!("repository {location}: {m}")),
        e => e,
    }
}
