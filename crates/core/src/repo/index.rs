//! The in-memory index (chunk id → pack, offset, length) and the index
//! fragments it is loaded from.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::repo::format::BlobKind;
use crate::repo::id::ObjectId;

/// One index fragment as stored: the packs written by one run (or one prune).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexFragment {
    /// Packs described by this fragment.
    pub packs: Vec<PackEntry>,
    /// Encrypted repositories: the `kind` and `raw_len` of every blob, in
    /// order, sealed to the recipients (base64); the visible entries then say
    /// `data` and 0. Ids, offsets and lengths stay readable: writers without
    /// the identity need the ids to deduplicate, and the rest is visible in
    /// the packs anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

/// One pack and its blobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackEntry {
    /// Pack id (SHA-256 of the pack object).
    pub id: ObjectId,
    /// Pack size in bytes.
    pub size: u64,
    /// Blobs in the pack.
    pub blobs: Vec<BlobEntry>,
}

/// One blob inside a pack.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobEntry {
    /// Chunk id.
    pub id: ObjectId,
    /// Kind.
    pub kind: BlobKind,
    /// Offset of the blob header in the pack.
    pub offset: u32,
    /// Header plus stored payload length.
    pub length: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// Position of the pack in [`Index::packs`].
    pub pack: u32,
    /// Offset of the blob header.
    pub offset: u32,
    /// Header plus payload length.
    pub length: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// Kind.
    pub kind: BlobKind,
}

/// A pack known to the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackInfo {
    /// Pack id.
    pub id: ObjectId,
    /// Size in bytes.
    pub size: u64,
}

/// One blob in the compact table: 48 bytes (id, pack position with the
/// kind in its top bit, offset, length, plaintext length).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Slot {
    id: ObjectId,
    pack_kind: u32,
    offset: u32,
    length: u32,
    raw_len: u32,
}

const TREE_BIT: u32 = 1 << 31;

impl Slot {
    fn new(id: ObjectId, pack: u32, b: &BlobEntry) -> Slot {
        let kind = match b.kind {
            BlobKind::Data => 0,
            BlobKind::Tree => TREE_BIT,
        };
        Slot {
            id,
            pack_kind: pack | kind,
            offset: b.offset,
            length: b.length,
            raw_len: b.raw_len,
        }
    }

    fn location(&self) -> BlobLocation {
        BlobLocation {
            pack: self.pack_kind & !TREE_BIT,
            offset: self.offset,
            length: self.length,
            raw_len: self.raw_len,
            kind: match self.pack_kind & TREE_BIT {
                0 => BlobKind::Data,
                _ => BlobKind::Tree,
            },
        }
    }
}

/// The blobs of the index fragments, sorted by id: 48 bytes per blob, plus
/// 256 KiB of bucket starts (ids are uniform hashes, so their first two
/// bytes spread them evenly and a lookup searches one small bucket).
#[derive(Debug, Default)]
pub struct BlobTable {
    slots: Vec<Slot>,
    /// `starts[b]`: the first slot whose id begins with the two bytes `b`;
    /// `starts[65536]` = the number of slots.
    starts: Vec<u32>,
}

fn bucket(id: &ObjectId) -> usize {
    (id.0[0] as usize) << 8 | id.0[1] as usize
}

impl BlobTable {
    fn build(mut slots: Vec<Slot>) -> BlobTable {
        // Stable: of the entries for one blob, the first added wins.
        slots.sort_by_key(|s| s.id);
        slots.dedup_by(|later, first| later.id == first.id);
        slots.shrink_to_fit();
        let mut starts = vec![0u32; 65537];
        for s in &slots {
            starts[bucket(&s.id) + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        BlobTable { slots, starts }
    }

    fn get(&self, id: &ObjectId) -> Option<&Slot> {
        if self.slots.is_empty() {
            return None;
        }
        let b = bucket(id);
        let range = &self.slots[self.starts[b] as usize..self.starts[b + 1] as usize];
        range
            .binary_search_by(|s| s.id.cmp(id))
            .ok()
            .map(|i| &range[i])
    }

    /// Whether the blob is in the table.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.get(id).is_some()
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every id in the table.
    pub fn ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.slots.iter().map(|s| s.id)
    }

    /// Bytes of memory the table holds.
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>() + self.starts.capacity() * 4
    }
}

/// Builds an [`Index`] from index fragments as they load: their packs are
/// merged into one table, and each fragment can be dropped once added.
#[derive(Debug, Default)]
pub struct IndexBuilder {
    packs: Vec<PackInfo>,
    pack_pos: HashMap<ObjectId, u32>,
    slots: Vec<Slot>,
}

impl IndexBuilder {
    /// Room for about `blobs` more blobs (avoids growing twice the size).
    pub fn reserve(&mut self, blobs: usize) {
        self.slots.reserve_exact(blobs);
    }

    /// Adds every blob of a pack.
    pub fn add_pack(&mut self, pack: &PackEntry) {
        let pos = pack_position(&mut self.packs, &mut self.pack_pos, pack);
        self.slots
            .extend(pack.blobs.iter().map(|b| Slot::new(b.id, pos, b)));
    }

    /// The index.
    pub fn build(self) -> Index {
        Index {
            packs: self.packs,
            pack_pos: self.pack_pos,
            table: std::sync::Arc::new(BlobTable::build(self.slots)),
            extra: HashMap::new(),
        }
    }
}

fn pack_position(
    packs: &mut Vec<PackInfo>,
    pack_pos: &mut HashMap<ObjectId, u32>,
    pack: &PackEntry,
) -> u32 {
    *pack_pos.entry(pack.id).or_insert_with(|| {
        packs.push(PackInfo {
            id: pack.id,
            size: pack.size,
        });
        (packs.len() - 1) as u32
    })
}

/// The merged index of a repository: the fragments' blobs in a compact
/// sorted table (shared, read-only, see [`Index::table`]), and the blobs
/// added since (packs this process wrote or found by scanning) in a small
/// map that takes precedence.
#[derive(Debug, Default)]
pub struct Index {
    packs: Vec<PackInfo>,
    pack_pos: HashMap<ObjectId, u32>,
    table: std::sync::Arc<BlobTable>,
    extra: HashMap<ObjectId, BlobLocation>,
}

impl Index {
    /// Adds every pack of a fragment. Duplicates (the same pack in two
    /// fragments, the same blob in two packs) are harmless: the first
    /// location of a blob stays.
    pub fn add_pack(&mut self, pack: &PackEntry) {
        let pos = pack_position(&mut self.packs, &mut self.pack_pos, pack);
        for b in &pack.blobs {
            if !self.table.contains(&b.id) {
                self.extra
                    .entry(b.id)
                    .or_insert_with(|| Slot::new(b.id, pos, b).location());
            }
        }
    }

    /// Adds a pack like [`Index::add_pack`], and also moves to it the blobs
    /// whose current pack (by position in [`Index::packs`]) `replace` names.
    pub fn add_pack_replacing(&mut self, pack: &PackEntry, replace: impl Fn(u32) -> bool) {
        self.add_pack(pack);
        let pos = self.pack_pos[&pack.id];
        for b in &pack.blobs {
            if let Some(loc) = self.get_location(&b.id) {
                if loc.pack != pos && replace(loc.pack) {
                    self.extra.insert(b.id, Slot::new(b.id, pos, b).location());
                }
            }
        }
    }

    fn get_location(&self, id: &ObjectId) -> Option<BlobLocation> {
        match self.extra.get(id) {
            Some(l) => Some(*l),
            None => self.table.get(id).map(Slot::location),
        }
    }

    /// Looks a blob up.
    pub fn get(&self, id: &ObjectId) -> Option<(PackInfo, BlobLocation)> {
        let loc = self.get_location(id)?;
        Some((self.packs[loc.pack as usize], loc))
    }

    /// Whether the blob is known.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.extra.contains_key(id) || self.table.contains(id)
    }

    /// Whether the pack is known.
    pub fn has_pack(&self, id: &ObjectId) -> bool {
        self.pack_pos.contains_key(id)
    }

    /// All packs.
    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }

    /// The blobs the index fragments describe, as loaded: shared, so that
    /// a write session can deduplicate against them without a copy.
    pub fn table(&self) -> std::sync::Arc<BlobTable> {
        self.table.clone()
    }

    /// The blobs added after loading (not in [`Index::table`]), with their
    /// locations.
    pub fn added(&self) -> impl Iterator<Item = (&ObjectId, &BlobLocation)> {
        self.extra.iter()
    }

    /// All blob ids.
    pub fn blob_ids(&self) -> impl Iterator<Item = &ObjectId> {
        self.table
            .slots
            .iter()
            .map(|s| &s.id)
            .filter(|id| !self.extra.contains_key(*id))
            .chain(self.extra.keys())
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.table.len()
            + self
                .extra
                .keys()
                .filter(|id| !self.table.contains(id))
                .count()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty() && self.extra.is_empty()
    }

    /// Every blob with its location (each blob once).
    fn locations(&self) -> impl Iterator<Item = (ObjectId, BlobLocation)> + '_ {
        self.table
            .slots
            .iter()
            .filter(|s| !self.extra.contains_key(&s.id))
            .map(|s| (s.id, s.location()))
            .chain(self.extra.iter().map(|(id, l)| (*id, *l)))
    }
}

impl Index {
    /// Every pack with its blobs, as they would be written to a fragment.
    pub fn pack_entries(&self) -> Vec<PackEntry> {
        let mut packs: Vec<PackEntry> = self
            .packs
            .iter()
            .map(|p| PackEntry {
                id: p.id,
                size: p.size,
                blobs: Vec::new(),
            })
            .collect();
        for (id, loc) in self.locations() {
            packs[loc.pack as usize].blobs.push(BlobEntry {
                id,
                kind: loc.kind,
                offset: loc.offset,
                length: loc.length,
                raw_len: loc.raw_len,
            });
        }
        for p in &mut packs {
            p.blobs.sort_by_key(|b| b.offset);
        }
        packs
    }
}

/// The envelope version byte of a binary index fragment (version 1 holds
/// JSON, as every other document does).
const BINARY_FRAGMENT: u8 = 2;

/// Bytes per blob in the binary encoding: id, kind, offset, length,
/// plaintext length.
const BLOB_RECORD: usize = 32 + 1 + 4 + 4 + 4;

impl IndexFragment {
    /// Encodes the fragment for storage (see docs/format.md, "Index
    /// fragments"): the envelope with version 2, then a zstd frame holding
    /// the packs as fixed-size little-endian records and the sealed part.
    /// Returns its id (the SHA-256 of the bytes) and the bytes.
    pub fn encode(&self) -> crate::error::Result<(ObjectId, bytes::Bytes)> {
        use bytes::BufMut;
        let blobs: usize = self.packs.iter().map(|p| p.blobs.len()).sum();
        let sealed = self.sealed.as_deref().unwrap_or("").as_bytes();
        let mut body =
            Vec::with_capacity(8 + self.packs.len() * 44 + blobs * BLOB_RECORD + sealed.len());
        body.put_u32_le(self.packs.len() as u32);
        for p in &self.packs {
            body.put_slice(&p.id.0);
            body.put_u64_le(p.size);
            body.put_u32_le(p.blobs.len() as u32);
            for b in &p.blobs {
                body.put_slice(&b.id.0);
                body.put_u8(match b.kind {
                    BlobKind::Data => 0,
                    BlobKind::Tree => 1,
                });
                body.put_u32_le(b.offset);
                body.put_u32_le(b.length);
                body.put_u32_le(b.raw_len);
            }
        }
        body.put_u32_le(sealed.len() as u32);
        body.put_slice(sealed);
        let compressed = zstd::bulk::compress(&body, 1)
            .map_err(|e| crate::error::Error::Task(format!("zstd: {e}")))?;
        let mut out = bytes::BytesMut::with_capacity(compressed.len() + 12);
        out.put_slice(crate::repo::format::ENVELOPE_MAGIC);
        out.put_u8(BINARY_FRAGMENT);
        out.put_u8(0);
        out.put_u16(0);
        out.put_slice(&compressed);
        let bytes = out.freeze();
        Ok((ObjectId::sha256(&bytes), bytes))
    }

    /// Checks and decodes a stored fragment, binary (version 2) or JSON
    /// (version 1, written before 0.2 and read forever; prune rewrites
    /// them). `what` names it in errors; `expected` is the id from its key.
    pub fn open(
        what: &str,
        expected: &ObjectId,
        bytes: &[u8],
    ) -> crate::error::Result<IndexFragment> {
        use crate::error::Error;
        if bytes.len() < 12 || bytes[8] != BINARY_FRAGMENT {
            return crate::repo::format::open_document(what, expected, bytes);
        }
        if ObjectId::sha256(bytes) != *expected {
            return Err(Error::corrupt(
                what,
                "content does not match its name (SHA-256 mismatch)",
            ));
        }
        if &bytes[..8] != crate::repo::format::ENVELOPE_MAGIC || bytes[9] != 0 {
            return Err(Error::corrupt(what, "bad magic or flags"));
        }
        let body = zstd::stream::decode_all(&bytes[12..])
            .map_err(|e| Error::corrupt(what, format!("zstd: {e}")))?;
        decode_body(&body).ok_or_else(|| Error::corrupt(what, "truncated or malformed records"))
    }

    /// Whether stored bytes hold the binary encoding (fragments in JSON are
    /// rewritten by prune).
    pub fn is_binary(bytes: &[u8]) -> bool {
        bytes.len() >= 12 && bytes[8] == BINARY_FRAGMENT
    }
}

fn decode_body(mut b: &[u8]) -> Option<IndexFragment> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head)
    }
    fn u32_le(b: &mut &[u8]) -> Option<u32> {
        Some(u32::from_le_bytes(take(b, 4)?.try_into().ok()?))
    }
    fn id(b: &mut &[u8]) -> Option<ObjectId> {
        Some(ObjectId(take(b, 32)?.try_into().ok()?))
    }
    let packs = u32_le(&mut b)? as usize;
    // Every pack takes at least 44 bytes: a count beyond that is damage.
    if packs > b.len() / 44 {
        return None;
    }
    let mut out = Vec::with_capacity(packs);
    for _ in 0..packs {
        let pid = id(&mut b)?;
        let size = u64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?);
        let n = u32_le(&mut b)? as usize;
        if n > b.len() / BLOB_RECORD {
            return None;
        }
        let mut blobs = Vec::with_capacity(n);
        for _ in 0..n {
            let bid = id(&mut b)?;
            let kind = match take(&mut b, 1)?[0] {
                0 => BlobKind::Data,
                1 => BlobKind::Tree,
                _ => return None,
            };
            blobs.push(BlobEntry {
                id: bid,
                kind,
                offset: u32_le(&mut b)?,
                length: u32_le(&mut b)?,
                raw_len: u32_le(&mut b)?,
            });
        }
        out.push(PackEntry {
            id: pid,
            size,
            blobs,
        });
    }
    let sealed_len = u32_le(&mut b)? as usize;
    let sealed = std::str::from_utf8(take(&mut b, sealed_len)?).ok()?;
    if !b.is_empty() {
        return None;
    }
    Some(IndexFragment {
        packs: out,
        sealed: (!sealed.is_empty()).then(|| sealed.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ObjectId {
        ObjectId::sha256(&n.to_le_bytes())
    }

    fn fragment(packs: u32, blobs: u32) -> IndexFragment {
        IndexFragment {
            packs: (0..packs)
                .map(|p| PackEntry {
                    id: id(1_000_000 + p),
                    size: 4096 + p as u64,
                    blobs: (0..blobs)
                        .map(|b| BlobEntry {
                            id: id(p * blobs + b),
                            kind: if b % 7 == 0 {
                                BlobKind::Tree
                            } else {
                                BlobKind::Data
                            },
                            offset: b * 100,
                            length: 100,
                            raw_len: 90 + b,
                        })
                        .collect(),
                })
                .collect(),
            sealed: Some("c2VhbGVk".into()),
        }
    }

    #[test]
    fn binary_fragments_round_trip_and_damage_is_named() {
        let f = fragment(3, 50);
        let (key, bytes) = f.encode().unwrap();
        assert!(IndexFragment::is_binary(&bytes));
        let back = IndexFragment::open("f", &key, &bytes).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&f).unwrap()
        );
        // Smaller than the JSON encoding.
        let (_, json) = crate::repo::format::seal_document(&f).unwrap();
        assert!(
            bytes.len() < json.len(),
            "{} vs {}",
            bytes.len(),
            json.len()
        );
        // A JSON fragment still opens.
        let json_key = ObjectId::sha256(&json);
        let old = IndexFragment::open("f", &json_key, &json).unwrap();
        assert_eq!(old.packs.len(), 3);
        // Any flipped byte is detected.
        let mut bad = bytes.to_vec();
        bad[20] ^= 1;
        assert!(IndexFragment::open("f", &key, &bad).is_err());
        let bad_key = ObjectId::sha256(&bad);
        assert!(IndexFragment::open("f", &bad_key, &bad).is_err());
    }

    #[test]
    fn the_index_holds_at_most_48_bytes_per_blob() {
        assert_eq!(std::mem::size_of::<Slot>(), 48);
        let mut b = IndexBuilder::default();
        let f = fragment(200, 5_000);
        b.reserve(1_000_000);
        for p in &f.packs {
            b.add_pack(p);
        }
        let index = b.build();
        assert_eq!(index.len(), 1_000_000);
        let table = index.table();
        let per_blob = table.heap_bytes() as f64 / table.len() as f64;
        assert!(per_blob <= 48.3, "{per_blob} bytes per blob");
        // Every blob is found where its fragment put it; others are not.
        for p in f.packs.iter().step_by(17) {
            for bl in p.blobs.iter().step_by(101) {
                let (pack, loc) = index.get(&bl.id).unwrap();
                assert_eq!(pack.id, p.id);
                assert_eq!(
                    (loc.offset, loc.length, loc.raw_len, loc.kind),
                    (bl.offset, bl.length, bl.raw_len, bl.kind)
                );
            }
        }
        assert!(!index.contains(&id(2_000_000)));
    }

    #[test]
    fn the_first_location_of_a_blob_wins_and_later_packs_add_to_it() {
        let f = fragment(2, 3);
        let mut dup = f.packs[1].clone();
        dup.id = id(9_999_999);
        dup.blobs[0] = f.packs[0].blobs[0].clone();
        let mut b = IndexBuilder::default();
        b.add_pack(&f.packs[0]);
        b.add_pack(&dup);
        let mut index = b.build();
        assert_eq!(
            index.get(&f.packs[0].blobs[0].id).unwrap().0.id,
            f.packs[0].id
        );
        index.add_pack(&f.packs[1]);
        assert_eq!(index.get(&f.packs[1].blobs[1].id).unwrap().0.id, dup.id);
        let mut fresh = f.packs[0].clone();
        fresh.id = id(7_777_777);
        fresh.blobs[0].id = id(8_888_888);
        index.add_pack(&fresh);
        assert_eq!(index.get(&fresh.blobs[0].id).unwrap().0.id, fresh.id);
        let entries = index.pack_entries();
        let blobs: usize = entries.iter().map(|p| p.blobs.len()).sum();
        assert_eq!(blobs, index.len());
    }
}
