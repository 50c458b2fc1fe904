//! Reading many chunks in order with few requests.
//!
//! A restore asks for chunks in the order of its files, and a backup wrote
//! them into packs in nearly that order (several packs filling at once, so
//! neighbours may alternate between packs). [`ChunkFetcher`] looks ahead
//! over the chunks it is given, joins those that lie close together in one
//! pack into one ranged read (at most [`MAX_RANGE`] bytes, gaps up to
//! [`MAX_GAP`] read through), keeps several reads in flight, and hands the
//! chunks back in the order they were asked for. On an object store with
//! tens of milliseconds per request this turns one request per chunk into
//! one per few megabytes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::repo::id::ObjectId;
use crate::repo::index::{BlobLocation, PackInfo};
use crate::repo::Repository;

/// The largest range read at once.
pub const MAX_RANGE: u64 = 8 << 20;
/// Bytes between two wanted chunks of a pack that are read rather than
/// split into two requests.
pub const MAX_GAP: u64 = 256 << 10;
/// Reads in flight at most.
const MAX_REQUESTS: usize = 16;
/// Bytes (plaintext, or stored if larger) of the chunks requested or
/// fetched and not yet taken, at most (a read for the next chunk is always
/// allowed).
const MAX_HELD_BYTES: u64 = 32 << 20;
/// Plaintext bytes one read decodes, at most (one chunk always).
const MAX_READ_PLAINTEXT: u64 = 16 << 20;
/// Reads kept in flight even when that means starting one that chunks
/// asked for later could have joined.
const KEEP_BUSY: usize = 2;
/// Chunks asked for after a chunk for its read to be planned without
/// waiting for more.
const PLAN_AHEAD: u64 = 1024;
/// Chunks asked for and not yet taken, at most (ids and locations, and
/// the data of those fetched).
const MAX_SLOTS: usize = 16_384;

/// A chunk asked for.
#[derive(Clone, Copy)]
struct Wanted {
    id: ObjectId,
    /// Where the index puts it; `None` when the index does not know it (it
    /// is then read on its own, which looks in unindexed packs too).
    at: Option<(PackInfo, BlobLocation)>,
}

impl Wanted {
    fn stored_len(&self) -> u64 {
        self.at.map_or(0, |(_, l)| u64::from(l.length))
    }

    /// What it costs in memory once read: its plaintext, or its stored
    /// frame if that is larger (a run of zeros compresses to almost
    /// nothing and decodes to megabytes).
    fn held_len(&self) -> u64 {
        self.at
            .map_or(0, |(_, l)| u64::from(l.length).max(u64::from(l.raw_len)))
    }
}

/// One chunk asked for, by its place in the order; with the bytes it
/// counts against [`MAX_HELD_BYTES`] once requested (a chunk asked for
/// several times in one read is decoded once, and counted once).
enum Slot {
    Waiting(Wanted),
    Requested(u64),
    Ready(Bytes, u64),
}

/// One read in flight, yielding chunks by sequence number.
struct InFlight {
    task: JoinHandle<Result<Vec<(u64, Bytes)>>>,
}

/// Chunks in the order asked for, fetched ahead in coalesced ranged reads.
pub struct ChunkFetcher {
    repo: Arc<Repository>,
    /// From the next chunk to hand back (sequence number `front`) on.
    slots: VecDeque<Slot>,
    front: u64,
    /// No slot before this sequence number is waiting.
    scan_from: u64,
    /// [`Wanted::held_len`] of the requested and ready slots.
    held_bytes: u64,
    inflight: VecDeque<InFlight>,
    /// Hand chunks back as stored (header and payload, decrypted), not as
    /// plaintext.
    encoded: bool,
}

impl std::fmt::Debug for ChunkFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkFetcher")
            .field("slots", &self.slots.len())
            .field("inflight", &self.inflight.len())
            .finish_non_exhaustive()
    }
}

impl ChunkFetcher {
    /// A fetcher reading plaintext from `repo`.
    pub fn new(repo: Arc<Repository>) -> Self {
        ChunkFetcher {
            repo,
            slots: VecDeque::new(),
            front: 0,
            scan_from: 0,
            held_bytes: 0,
            inflight: VecDeque::new(),
            encoded: false,
        }
    }

    /// A fetcher handing chunks back as stored (blob header and payload,
    /// decrypted when the repository is encrypted, header checked against
    /// the id), for copies into a repository that shares the chunk keys.
    pub(crate) fn encoded(repo: Arc<Repository>) -> Self {
        let mut f = Self::new(repo);
        f.encoded = true;
        f
    }

    /// Asks for one more chunk (returned by [`next`](Self::next) after those
    /// asked for before it).
    pub async fn push(&mut self, id: ObjectId) -> Result<()> {
        let at = self.repo.locate_indexed(&id).await?;
        self.slots.push_back(Slot::Waiting(Wanted { id, at }));
        self.launch(false);
        Ok(())
    }

    /// Whether enough is looked ahead: callers stop pushing until they have
    /// taken some chunks.
    pub fn is_full(&self) -> bool {
        self.slots.len() >= MAX_SLOTS
    }

    /// The next chunk (its plaintext, or as stored for an
    /// [`encoded`](Self::encoded) fetcher), in the order asked for; `None`
    /// when all asked for are taken.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        loop {
            match self.slots.front() {
                None => return Ok(None),
                Some(Slot::Ready(..)) => {
                    let Some(Slot::Ready(data, held)) = self.slots.pop_front() else {
                        unreachable!("the front slot is ready");
                    };
                    self.front += 1;
                    self.held_bytes -= held;
                    self.launch(false);
                    return Ok(Some(data));
                }
                Some(Slot::Waiting(_)) => self.launch(true),
                Some(Slot::Requested(_)) => {}
            }
            if let Some(f) = self.inflight.pop_front() {
                for (seq, data) in f.task.await?? {
                    let slot = &mut self.slots[(seq - self.front) as usize];
                    let Slot::Requested(held) = *slot else {
                        unreachable!("a read fills its own slots");
                    };
                    *slot = Slot::Ready(data, held);
                }
            }
        }
    }

    /// Starts reads while there is room, planned from the first waiting
    /// chunk on. A read is planned once [`PLAN_AHEAD`] chunks follow its
    /// first (so that those can join it), or at once while fewer than
    /// [`KEEP_BUSY`] are in flight, or when `now` (the next chunk to hand
    /// back is waiting).
    fn launch(&mut self, now: bool) {
        let mut at = self.scan_from.saturating_sub(self.front) as usize;
        loop {
            while at < self.slots.len() && !matches!(self.slots[at], Slot::Waiting(_)) {
                at += 1;
            }
            self.scan_from = self.front + at as u64;
            if at == self.slots.len() || self.inflight.len() >= MAX_REQUESTS {
                return;
            }
            let urgent = now && at == 0;
            let planned_enough = (self.slots.len() - at) as u64 > PLAN_AHEAD || self.is_full();
            let room = self.inflight.is_empty() || self.held_bytes < MAX_HELD_BYTES;
            if !urgent && !(room && (planned_enough || self.inflight.len() < KEEP_BUSY)) {
                return;
            }
            self.start_read(at);
        }
    }

    /// Starts the read of the waiting chunk at `at` and of those around it
    /// in the same pack.
    fn start_read(&mut self, at: usize) {
        let Slot::Waiting(first) = self.slots[at] else {
            unreachable!("reads start at a waiting slot");
        };
        let mut members: Vec<(usize, Wanted)> = vec![(at, first)];
        let mut range = None;
        if let Some((pack, loc)) = first.at {
            // The waiting chunks of the same pack, by offset; the run of
            // them around the first whose gaps and span are small enough.
            let mut same: Vec<(usize, Wanted)> = (at..self.slots.len())
                .filter_map(|i| match self.slots[i] {
                    Slot::Waiting(w) if w.at.is_some_and(|(p, _)| p.id == pack.id) => Some((i, w)),
                    _ => None,
                })
                .collect();
            let offset = |w: &Wanted| w.at.map_or(0, |(_, l)| u64::from(l.offset));
            let end = |w: &Wanted| offset(w) + w.stored_len();
            same.sort_by_key(|(i, w)| (offset(w), *i));
            let me = same.iter().position(|(i, _)| *i == at).unwrap_or(0);
            let (mut lo, mut hi) = (me, me);
            let (mut start, mut stop) = (u64::from(loc.offset), end(&first));
            // Plaintext this read decodes: each distinct chunk once.
            let mut decoded: HashSet<ObjectId> = HashSet::from([first.id]);
            let mut plaintext = first.held_len();
            let mut fits = |w: &Wanted, plaintext: &mut u64| {
                if decoded.contains(&w.id) {
                    return true;
                }
                if *plaintext + w.held_len() > MAX_READ_PLAINTEXT {
                    return false;
                }
                decoded.insert(w.id);
                *plaintext += w.held_len();
                true
            };
            loop {
                let mut grew = false;
                if hi + 1 < same.len() {
                    let w = &same[hi + 1].1;
                    if offset(w) <= stop + MAX_GAP
                        && end(w).max(stop) - start <= MAX_RANGE
                        && fits(w, &mut plaintext)
                    {
                        stop = stop.max(end(w));
                        hi += 1;
                        grew = true;
                    }
                }
                if lo > 0 {
                    let w = &same[lo - 1].1;
                    let e = end(w);
                    if e + MAX_GAP >= start
                        && stop - offset(w).min(start) <= MAX_RANGE
                        && fits(w, &mut plaintext)
                    {
                        start = start.min(offset(w));
                        stop = stop.max(e);
                        lo -= 1;
                        grew = true;
                    }
                }
                if !grew {
                    break;
                }
            }
            members = same[lo..=hi].to_vec();
            range = Some((pack, start, stop));
        }
        let mut run = Vec::with_capacity(members.len());
        let mut counted: HashSet<ObjectId> = HashSet::new();
        for (i, w) in members {
            let held = if counted.insert(w.id) {
                w.held_len()
            } else {
                0
            };
            self.slots[i] = Slot::Requested(held);
            self.held_bytes += held;
            run.push((self.front + i as u64, w));
        }
        let repo = self.repo.clone();
        let encoded = self.encoded;
        let task = tokio::spawn(async move {
            match range {
                Some((pack, start, stop)) => read_run(&repo, pack, start, stop, run, encoded).await,
                None => {
                    let (seq, w) = run[0];
                    Ok(vec![(seq, read_one(&repo, &w.id, encoded).await?)])
                }
            }
        });
        self.inflight.push_back(InFlight { task });
    }
}

impl Drop for ChunkFetcher {
    fn drop(&mut self) {
        for f in &self.inflight {
            f.task.abort();
        }
    }
}

/// Reads one chunk on its own (plaintext, or as stored when `encoded`).
async fn read_one(repo: &Repository, id: &ObjectId, encoded: bool) -> Result<Bytes> {
    match encoded {
        true => Ok(repo.read_encoded(id).await?.0),
        false => repo.read_blob(id).await,
    }
}

/// Reads `start..stop` of a pack and decodes the chunks of `run` from it.
/// If the pack is gone (moved by a prune since the index was read), each
/// chunk is read on its own, which looks for it elsewhere.
async fn read_run(
    repo: &Repository,
    pack: PackInfo,
    start: u64,
    stop: u64,
    run: Vec<(u64, Wanted)>,
    encoded: bool,
) -> Result<Vec<(u64, Bytes)>> {
    let range = match repo.read_pack_range(&pack.id, start..stop).await {
        Ok(r) => r,
        Err(Error::NotFound { .. }) => {
            let mut out = Vec::with_capacity(run.len());
            for (seq, w) in &run {
                out.push((*seq, read_one(repo, &w.id, encoded).await?));
            }
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    if (range.len() as u64) < stop - start {
        return Err(Error::corrupt(
            format!("pack {}", pack.id.short()),
            "shorter than its index says",
        ));
    }
    let mut out = Vec::with_capacity(run.len());
    let mut decoded: HashMap<ObjectId, Bytes> = HashMap::new();
    for (seq, w) in run {
        if let Some(b) = decoded.get(&w.id) {
            out.push((seq, b.clone()));
            continue;
        }
        let (_, loc) = w.at.expect("a pack read holds located chunks");
        let from = (u64::from(loc.offset) - start) as usize;
        let frame = range.slice(from..from + loc.length as usize);
        let b = match encoded {
            true => repo.encoded_from_frame(&w.id, &pack, frame).await?,
            false => repo.blob_from_frame(&w.id, &pack, frame).await?,
        };
        decoded.insert(w.id, b.clone());
        out.push((seq, b));
    }
    Ok(out)
}
