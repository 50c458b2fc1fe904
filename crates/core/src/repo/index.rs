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

/// The merged index of a repository.
#[derive(Debug, Default)]
pub struct Index {
    packs: Vec<PackInfo>,
    pack_pos: HashMap<ObjectId, u32>,
    blobs: HashMap<ObjectId, BlobLocation>,
}

impl Index {
    /// Adds every pack of a fragment. Duplicates (the same pack in two
    /// fragments, the same blob in two packs) are harmless.
    pub fn add_pack(&mut self, pack: &PackEntry) {
        let pos = *self.pack_pos.entry(pack.id).or_insert_with(|| {
            self.packs.push(PackInfo {
                id: pack.id,
                size: pack.size,
            });
            (self.packs.len() - 1) as u32
        });
        for b in &pack.blobs {
            self.blobs.entry(b.id).or_insert(BlobLocation {
                pack: pos,
                offset: b.offset,
                length: b.length,
                raw_len: b.raw_len,
                kind: b.kind,
            });
        }
    }

    /// Adds a pack like [`Index::add_pack`], and also moves to it the blobs
    /// whose current pack (by position in [`Index::packs`]) `replace` names.
    pub fn add_pack_replacing(&mut self, pack: &PackEntry, replace: impl Fn(u32) -> bool) {
        self.add_pack(pack);
        let pos = self.pack_pos[&pack.id];
        for b in &pack.blobs {
            if let Some(loc) = self.blobs.get_mut(&b.id) {
                if loc.pack != pos && replace(loc.pack) {
                    *loc = BlobLocation {
                        pack: pos,
                        offset: b.offset,
                        length: b.length,
                        raw_len: b.raw_len,
                        kind: b.kind,
                    };
                }
            }
        }
    }

    /// Looks a blob up.
    pub fn get(&self, id: &ObjectId) -> Option<(PackInfo, BlobLocation)> {
        let loc = *self.blobs.get(id)?;
        Some((self.packs[loc.pack as usize], loc))
    }

    /// Whether the blob is known.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.blobs.contains_key(id)
    }

    /// Whether the pack is known.
    pub fn has_pack(&self, id: &ObjectId) -> bool {
        self.pack_pos.contains_key(id)
    }

    /// All packs.
    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }

    /// All blob ids.
    pub fn blob_ids(&self) -> impl Iterator<Item = &ObjectId> {
        self.blobs.keys()
    }

    /// Every blob with its location.
    pub fn blobs(&self) -> impl Iterator<Item = (&ObjectId, &BlobLocation)> {
        self.blobs.iter()
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
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
        for (id, loc) in &self.blobs {
            packs[loc.pack as usize].blobs.push(BlobEntry {
                id: *id,
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
