//! Reading an open file at any offset: the chunk holding an offset found by
//! the chunks' plaintext lengths (from the index), a few decoded chunks kept,
//! the next one fetched ahead. Memory per open file is bounded by
//! [`KEPT_CHUNKS`] chunks, whatever the file's size.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use respaldo_core::{ObjectId, Repository};
use tokio::sync::OnceCell;

use crate::MountError;

/// Decoded chunks kept per open file (the one being read, the one fetched
/// ahead, and two behind for readers that go back a little).
pub(crate) const KEPT_CHUNKS: usize = 4;

type Slot = Arc<OnceCell<Result<Bytes, String>>>;

/// An open file's content.
pub(crate) struct OpenFile {
    repo: Arc<Repository>,
    chunks: Arc<Vec<ObjectId>>,
    /// Where each chunk ends in the file.
    ends: Vec<u64>,
    kept: Mutex<VecDeque<(usize, Slot)>>,
}

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFile")
            .field("chunks", &self.chunks.len())
            .finish_non_exhaustive()
    }
}

impl OpenFile {
    /// Opens content made of `chunks`, in order.
    pub(crate) async fn open(
        repo: &Arc<Repository>,
        chunks: Arc<Vec<ObjectId>>,
    ) -> Result<OpenFile, MountError> {
        let lens = repo
            .with_index(|index| {
                chunks
                    .iter()
                    .map(|c| {
                        index
                            .get(c)
                            .map(|(_, loc)| u64::from(loc.raw_len))
                            .ok_or(*c)
                    })
                    .collect::<Result<Vec<u64>, ObjectId>>()
            })
            .await
            .map_err(MountError::Repository)?
            .map_err(|c| MountError::MissingChunk(c.short()))?;
        let mut end = 0;
        let ends = lens
            .into_iter()
            .map(|l| {
                end += l;
                end
            })
            .collect();
        Ok(OpenFile {
            repo: repo.clone(),
            chunks,
            ends,
            kept: Mutex::new(VecDeque::new()),
        })
    }

    /// The content's length.
    pub(crate) fn len(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Up to `size` bytes from `offset` (fewer at the end).
    pub(crate) async fn read(&self, offset: u64, size: u32) -> Result<Vec<u8>, MountError> {
        let end = self.len().min(offset.saturating_add(u64::from(size)));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        let mut i = self.ends.partition_point(|&e| e <= offset);
        while at < end && i < self.chunks.len() {
            let data = self.chunk(i).await?;
            if i + 1 < self.chunks.len() {
                self.prefetch(i + 1);
            }
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            let from = (at - start) as usize;
            let to = ((end - start) as usize).min(data.len());
            if from >= to {
                return Err(MountError::ShortChunk(self.chunks[i].short()));
            }
            out.extend_from_slice(&data[from..to]);
            at = start + to as u64;
            i += 1;
        }
        Ok(out)
    }

    /// The slot of chunk `i`, kept (the oldest dropped past the bound).
    fn slot(&self, i: usize) -> Slot {
        let mut kept = self.kept.lock().expect("kept chunks");
        if let Some((_, s)) = kept.iter().find(|(n, _)| *n == i) {
            return s.clone();
        }
        let s: Slot = Arc::new(OnceCell::new());
        kept.push_back((i, s.clone()));
        while kept.len() > KEPT_CHUNKS {
            kept.pop_front();
        }
        s
    }

    async fn fill(repo: Arc<Repository>, id: ObjectId, slot: Slot) -> Result<Bytes, String> {
        slot.get_or_init(|| async move { repo.read_blob(&id).await.map_err(|e| e.to_string()) })
            .await
            .clone()
    }

    async fn chunk(&self, i: usize) -> Result<Bytes, MountError> {
        Self::fill(self.repo.clone(), self.chunks[i], self.slot(i))
            .await
            .map_err(|detail| MountError::Chunk {
                chunk: self.chunks[i].short(),
                detail,
            })
    }

    /// Starts fetching chunk `i` unless it is kept already.
    fn prefetch(&self, i: usize) {
        let slot = self.slot(i);
        if slot.initialized() {
            return;
        }
        let (repo, id) = (self.repo.clone(), self.chunks[i]);
        tokio::spawn(async move {
            let _ = Self::fill(repo, id, slot).await;
        });
    }
}
