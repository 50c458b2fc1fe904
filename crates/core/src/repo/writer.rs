//! Writing data: chunk → id → dedup → zstd → pack → upload, with bounded
//! memory and explicit backpressure.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::kit::progress::Progress;
use crate::repo::chunker::Chunker;
use crate::repo::crypto::{self, Crypto};
use crate::repo::format::{self, BlobHeader, BlobKind, Compression, BLOB_HEADER_LEN};
use crate::repo::id::ObjectId;
use crate::repo::index::{BlobEntry, BlobTable, PackEntry};
use crate::repo::Repository;
use crate::sink;

/// Default pack size target.
pub const PACK_TARGET: usize = 16 * 1024 * 1024;
/// Packs uploading at once; the next full pack waits (backpressure).
const UPLOADS_IN_FLIGHT: usize = 1;
/// Chunks hashed and compressed at once per stream.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Chunks up to this size are hashed and compressed on the async worker
/// rather than on the blocking pool.
const INLINE_CHUNK: usize = 64 * 1024;

/// Counters of a write session.
#[derive(Debug, Default)]
pub struct SessionStats {
    /// Pack bytes written.
    pub bytes_added: AtomicU64,
    /// New blobs.
    pub blobs_added: AtomicU64,
    /// Packs written.
    pub packs_added: AtomicU64,
}

struct PackBuf {
    buf: BytesMut,
    blobs: Vec<BlobEntry>,
}

impl PackBuf {
    fn new() -> Self {
        let mut buf = BytesMut::with_capacity(PACK_TARGET + 4 * 1024 * 1024);
        format::pack_header(&mut buf, None);
        PackBuf {
            buf,
            blobs: Vec::new(),
        }
    }
}

/// Whether a large chunk is not worth compressing, judged by compressing a
/// 64 KiB sample from its middle (random, encrypted or already compressed data
/// barely shrinks). Saves CPU on media, archives and compressed dumps.
fn looks_incompressible(data: &[u8], level: i32) -> bool {
    const SAMPLE: usize = 64 * 1024;
    if data.len() < 4 * SAMPLE {
        return false;
    }
    let start = data.len() / 2 - SAMPLE / 2;
    let sample = &data[start..start + SAMPLE];
    match format::compress(sample, level) {
        Ok(c) => c.len() as f64 > SAMPLE as f64 * 0.98,
        Err(_) => false,
    }
}

/// One writer's session: shared by all the sources of a run.
pub struct WriteSession {
    repo: Arc<Repository>,
    key: [u8; 32],
    /// The index's blobs when the session started (shared with the
    /// repository, not copied).
    stored: Option<Arc<BlobTable>>,
    /// Blobs taken as stored beside `stored`: those this session added,
    /// and those it was started with.
    known: Mutex<HashSet<ObjectId>>,
    /// The pack being filled with data blobs, and the one with tree
    /// listings: listings go to packs of their own, so that losing a data
    /// pack never takes a tree's listing with it (and listings, read by
    /// every `ls`, `diff` and backup parent, stay in a few small packs).
    packs: [tokio::sync::Mutex<PackBuf>; 2],
    uploads: Mutex<Vec<JoinHandle<Result<PackEntry>>>>,
    permits: Arc<Semaphore>,
    pack_target: usize,
    /// Packs uploaded and indexed by [`WriteSession::finish`].
    written: Mutex<Vec<ObjectId>>,
    /// Counters.
    pub stats: SessionStats,
}

impl std::fmt::Debug for WriteSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteSession").finish_non_exhaustive()
    }
}

impl WriteSession {
    /// Starts a session, loading the index for deduplication.
    pub async fn new(repo: Arc<Repository>) -> Result<Arc<Self>> {
        let (stored, known) = repo.stored_blobs().await?;
        Ok(Self::start(repo, Some(stored), known))
    }

    /// Starts a session that takes exactly the blobs in `known` as stored
    /// and writes every other blob it is given. Prune uses it with the blobs
    /// of the packs it keeps, so that the live blobs of the packs it rewrites
    /// are really written again before those packs are deleted.
    pub(crate) fn with_known(repo: Arc<Repository>, known: HashSet<ObjectId>) -> Arc<Self> {
        Self::start(repo, None, known)
    }

    fn start(
        repo: Arc<Repository>,
        stored: Option<Arc<BlobTable>>,
        known: HashSet<ObjectId>,
    ) -> Arc<Self> {
        Arc::new(WriteSession {
            key: *repo.chunk_key(),
            repo,
            stored,
            known: Mutex::new(known),
            packs: [
                tokio::sync::Mutex::new(PackBuf::new()),
                tokio::sync::Mutex::new(PackBuf::new()),
            ],
            uploads: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(UPLOADS_IN_FLIGHT)),
            pack_target: PACK_TARGET,
            written: Mutex::new(Vec::new()),
            stats: SessionStats::default(),
        })
    }

    /// Whether the blob is stored (in the index when the session started, or
    /// written by it). A backup reuses a parent's chunk list only when every
    /// chunk passes this check.
    pub fn is_stored(&self, id: &ObjectId) -> bool {
        self.stored.as_ref().is_some_and(|t| t.contains(id))
            || self.known.lock().is_ok_and(|k| k.contains(id))
    }

    /// The repository written to.
    pub fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// Hashes a chunk, and if it is new claims it and encodes the blob.
    fn prepare(
        &self,
        kind: BlobKind,
        data: &[u8],
        level: i32,
    ) -> Result<(ObjectId, Option<Bytes>)> {
        let id = ObjectId::keyed(&self.key, data);
        // Only a look: the id becomes known once its blob is in a pack
        // buffer (add_encoded), never before it is stored.
        if self.is_stored(&id) {
            return Ok((id, None));
        }
        let compressed = if looks_incompressible(data, level) {
            Vec::new()
        } else {
            format::compress(data, level).map_err(|e| Error::Task(format!("zstd: {e}")))?
        };
        let (compression, payload): (Compression, &[u8]) =
            if !compressed.is_empty() && compressed.len() < data.len() {
                (Compression::Zstd, &compressed)
            } else {
                (Compression::None, data)
            };
        let mut blob = BytesMut::with_capacity(BLOB_HEADER_LEN + payload.len());
        BlobHeader {
            kind,
            compression,
            id,
            raw_len: data.len() as u32,
            stored_len: payload.len() as u32,
        }
        .encode(&mut blob);
        blob.extend_from_slice(payload);
        Ok((id, Some(blob.freeze())))
    }

    /// Stores one chunk (deduplicated). Returns its id and the bytes it added.
    pub async fn store(
        self: Arc<Self>,
        kind: BlobKind,
        data: Bytes,
        level: i32,
    ) -> Result<(ObjectId, u64)> {
        let (id, blob) = if data.len() <= INLINE_CHUNK {
            self.prepare(kind, &data, level)?
        } else {
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.prepare(kind, &data, level)).await??
        };
        let Some(blob) = blob else { return Ok((id, 0)) };
        let added = blob.len() as u64;
        self.add_encoded(id, kind, blob).await?;
        Ok((id, added))
    }

    /// Appends an already encoded blob (header and payload) to the current pack.
    pub(crate) async fn add_encoded(
        &self,
        id: ObjectId,
        kind: BlobKind,
        blob: Bytes,
    ) -> Result<()> {
        let mut pack = self.packs[usize::from(kind == BlobKind::Tree)].lock().await;
        if self.stored.as_ref().is_some_and(|t| t.contains(&id))
            || !self
                .known
                .lock()
                .map_err(|_| Error::Task("poisoned".into()))?
                .insert(id)
        {
            return Ok(()); // stored meanwhile by another task
        }
        let offset = pack.buf.len() as u32;
        let header = BlobHeader::decode(&blob).map_err(|e| Error::Task(e.to_string()))?;
        pack.buf.extend_from_slice(&blob);
        pack.blobs.push(BlobEntry {
            id,
            kind,
            offset,
            length: blob.len() as u32,
            raw_len: header.raw_len,
        });
        self.stats.blobs_added.fetch_add(1, Ordering::Relaxed);
        if pack.buf.len() >= self.pack_target {
            // Wait for an upload slot before taking the pack out, so nothing
            // awaits while a full pack is held outside the session.
            let permit = self.permit().await?;
            let full = std::mem::replace(&mut *pack, PackBuf::new());
            self.upload(full, permit)?;
        }
        Ok(())
    }

    /// Starts uploading a full pack; waits while too many are in flight.
    async fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Task("upload semaphore closed".into()))
    }

    fn upload(&self, pack: PackBuf, permit: tokio::sync::OwnedSemaphorePermit) -> Result<()> {
        let repo = self.repo.clone();
        let overhead = if repo.is_encrypted() {
            pack.blobs.len() * crypto::BLOB_OVERHEAD
        } else {
            0
        };
        self.stats
            .bytes_added
            .fetch_add((pack.buf.len() + overhead) as u64, Ordering::Relaxed);
        self.stats.packs_added.fetch_add(1, Ordering::Relaxed);
        let handle = tokio::spawn(async move {
            let _permit = permit;
            let (bytes, blobs, id) = tokio::task::spawn_blocking({
                let repo = repo.clone();
                move || -> Result<(Bytes, Vec<BlobEntry>, ObjectId)> {
                    let (bytes, blobs) = match repo.crypto() {
                        None => (pack.buf.freeze(), pack.blobs),
                        Some(c) => seal_pack(c, &pack)?,
                    };
                    let id = ObjectId::sha256(&bytes);
                    Ok((bytes, blobs, id))
                }
            })
            .await??;
            let size = bytes.len() as u64;
            repo.sink()
                .put(&format::pack_key(&id), sink::once(bytes))
                .await?;
            Ok(PackEntry { id, size, blobs })
        });
        self.uploads
            .lock()
            .map_err(|_| Error::Task("poisoned".into()))?
            .push(handle);
        Ok(())
    }

    /// Flushes the last pack, waits for every upload, and writes the index
    /// fragments describing the new packs (of bounded size each; returns
    /// their ids). After this returns, every chunk
    /// stored in the session is durable and indexed: a snapshot may refer to it.
    pub async fn finish(&self) -> Result<Vec<ObjectId>> {
        for slot in &self.packs {
            let mut pack = slot.lock().await;
            if !pack.blobs.is_empty() {
                let permit = self.permit().await?;
                let full = std::mem::replace(&mut *pack, PackBuf::new());
                self.upload(full, permit)?;
            }
        }
        let handles = std::mem::take(
            &mut *self
                .uploads
                .lock()
                .map_err(|_| Error::Task("poisoned".into()))?,
        );
        let mut packs = Vec::new();
        let mut first_err = None;
        for h in handles {
            match h.await {
                Ok(Ok(p)) => packs.push(p),
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    first_err.get_or_insert(Error::from(e));
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if packs.is_empty() {
            return Ok(Vec::new());
        }
        let fragments = self.repo.write_fragment_batches(packs.clone()).await?;
        let ids = fragments.iter().map(|(f, _)| *f).collect();
        self.repo.index_add(&packs, fragments).await;
        self.written
            .lock()
            .map_err(|_| Error::Task("poisoned".into()))?
            .extend(packs.iter().map(|p| p.id));
        Ok(ids)
    }

    /// The packs this session wrote and indexed. Pack names are the SHA-256
    /// of their bytes, so one may be the very name of an older pack with the
    /// same content: prune never deletes a pack it has just written.
    pub fn written_packs(&self) -> HashSet<ObjectId> {
        self.written
            .lock()
            .map(|w| w.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// Encrypts a finished pack: a header with the pack key sealed to the
/// recipients, then every blob encrypted under that key. Returns the bytes
/// and the blob entries at their new offsets.
fn seal_pack(crypto: &Crypto, pack: &PackBuf) -> Result<(Bytes, Vec<BlobEntry>)> {
    let (key, sealed) = crypto::new_pack_key(crypto)?;
    let mut head = BytesMut::new();
    format::pack_header(&mut head, Some(&sealed));
    let mut out =
        Vec::with_capacity(head.len() + pack.buf.len() + pack.blobs.len() * crypto::BLOB_OVERHEAD);
    out.extend_from_slice(&head);
    let mut blobs = Vec::with_capacity(pack.blobs.len());
    for b in &pack.blobs {
        let start = out.len();
        let plain = &pack.buf[b.offset as usize..(b.offset + b.length) as usize];
        crypto::encrypt_blob(&key, plain, &mut out)?;
        blobs.push(BlobEntry {
            offset: start as u32,
            length: (out.len() - start) as u32,
            ..b.clone()
        });
    }
    Ok((Bytes::from(out), blobs))
}

/// The result of writing one stream.
#[derive(Debug, Clone)]
pub struct StreamSummary {
    /// Chunk ids in order.
    pub chunks: Vec<ObjectId>,
    /// Plaintext length.
    pub size: u64,
    /// SHA-256 of the plaintext.
    pub sha256: ObjectId,
    /// Bytes newly stored.
    pub added: u64,
}

/// Writes one byte stream as chunks, several chunks in flight at a time.
pub struct StreamWriter {
    session: Arc<WriteSession>,
    kind: BlobKind,
    level: i32,
    chunker: Chunker,
    sha: Sha256,
    size: u64,
    chunks: Vec<ObjectId>,
    added: u64,
    inflight: VecDeque<JoinHandle<Result<(ObjectId, u64)>>>,
    progress: Option<Arc<Progress>>,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl StreamWriter {
    /// A writer for blobs of `kind` compressed at zstd `level`.
    pub fn new(
        session: Arc<WriteSession>,
        kind: BlobKind,
        level: i32,
        progress: Option<Arc<Progress>>,
    ) -> Self {
        let params = session.repo().config().chunker;
        StreamWriter {
            session,
            kind,
            level,
            chunker: Chunker::new(params),
            sha: Sha256::new(),
            size: 0,
            chunks: Vec::new(),
            added: 0,
            inflight: VecDeque::new(),
            progress,
        }
    }

    /// Appends data.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.sha.update(data);
        self.size += data.len() as u64;
        if let Some(p) = &self.progress {
            p.add_bytes(data.len() as u64);
        }
        for chunk in self.chunker.push(data) {
            self.submit(chunk).await?;
        }
        Ok(())
    }

    async fn submit(&mut self, chunk: Bytes) -> Result<()> {
        let fut = self.session.clone().store(self.kind, chunk, self.level);
        self.inflight.push_back(tokio::spawn(fut));
        while self.inflight.len() >= CHUNKS_IN_FLIGHT {
            self.drain_one().await?;
        }
        Ok(())
    }

    fn record(&mut self, id: ObjectId, added: u64) {
        self.chunks.push(id);
        self.added += added;
        if let Some(p) = &self.progress {
            p.stored.fetch_add(added, Ordering::Relaxed);
        }
    }

    async fn drain_one(&mut self) -> Result<()> {
        if let Some(h) = self.inflight.pop_front() {
            let (id, added) = h.await??;
            self.record(id, added);
        }
        Ok(())
    }

    /// Ends the stream.
    pub async fn finish(self) -> Result<StreamSummary> {
        self.finish_deferred().await?.resolve().await
    }

    /// Ends the stream without waiting for the last chunks to be stored, so
    /// the caller can go on (e.g. with the next small file) meanwhile.
    pub async fn finish_deferred(mut self) -> Result<Deferred> {
        for chunk in self.chunker.finish() {
            self.submit(chunk).await?;
        }
        let sha = std::mem::take(&mut self.sha);
        Ok(Deferred {
            chunks: std::mem::take(&mut self.chunks),
            size: self.size,
            sha256: ObjectId(sha.finalize().into()),
            added: self.added,
            inflight: std::mem::take(&mut self.inflight),
            progress: self.progress.take(),
        })
    }
}

/// A finished stream whose last chunks may still be being stored.
#[derive(Debug)]
pub struct Deferred {
    chunks: Vec<ObjectId>,
    size: u64,
    sha256: ObjectId,
    added: u64,
    inflight: VecDeque<JoinHandle<Result<(ObjectId, u64)>>>,
    progress: Option<Arc<Progress>>,
}

impl Deferred {
    /// Plaintext length.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether every chunk is stored.
    pub fn is_ready(&self) -> bool {
        self.inflight.iter().all(|h| h.is_finished())
    }

    /// Waits for the remaining chunks.
    pub async fn resolve(mut self) -> Result<StreamSummary> {
        while let Some(h) = self.inflight.pop_front() {
            let (id, added) = h.await??;
            self.chunks.push(id);
            self.added += added;
            if let Some(p) = &self.progress {
                p.stored.fetch_add(added, Ordering::Relaxed);
            }
        }
        Ok(StreamSummary {
            chunks: std::mem::take(&mut self.chunks),
            size: self.size,
            sha256: self.sha256,
            added: self.added,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::looks_incompressible;

    #[test]
    fn incompressible_detection() {
        let mut x: u64 = 1;
        let random: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(looks_incompressible(&random, 3));
        let text = b"the quick brown fox jumps over the lazy dog ".repeat(30_000);
        assert!(!looks_incompressible(&text, 3));
        assert!(
            !looks_incompressible(&random[..1000], 3),
            "small chunks are always tried"
        );
    }
}
