//! Deletion marks: the packs a prune decided to delete, waiting for the
//! commands that could still use them.
//!
//! A prune runs beside backups (see `ops::prune`). A backup that loaded the
//! index before the prune replaced it may still store references to chunks
//! in the packs the prune found unused, so those packs are not deleted at
//! once: they leave the index and are listed in a mark object
//! (`marks/<sha256>`) together with the lock objects that were held when the
//! mark was written. A later prune (or the same one, when no such lock was
//! held) deletes them once every one of those locks is gone, except the
//! packs a snapshot written meanwhile needs, which it indexes again.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repo::format;
use crate::repo::id::ObjectId;
use crate::repo::index::{IndexFragment, PackEntry};
use crate::repo::{Damage, Repository};
use crate::sink;

/// Where marks are stored.
pub const MARKS_PREFIX: &str = "marks/";

/// A mark as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkDocument {
    /// Keys of the lock objects (under `locks/`) held when the mark was
    /// written, prunes' own excepted.
    waits_for: Vec<String>,
    /// The packs to delete with their blobs, encoded like an index
    /// fragment (so that one a newer snapshot needs can be indexed again).
    packs: IndexFragment,
}

/// A deletion mark found in the repository.
#[derive(Debug, Clone)]
pub struct DeletionMark {
    /// Its object id.
    pub id: ObjectId,
    /// When the storage wrote it (its own clock), if known: a listed pack
    /// written at or after this time was stored again after the mark (by a
    /// copy, or a backup producing the very same pack) and is not deleted.
    pub modified: Option<DateTime<Utc>>,
    /// Lock objects held when it was written.
    pub waits_for: Vec<String>,
    /// The packs it marks, with their blobs.
    pub packs: Vec<PackEntry>,
    /// The same, as stored (sealed in an encrypted repository): what a copy
    /// without the identity sends as the packs' index fragment.
    pub stored: IndexFragment,
}

impl Repository {
    /// Writes a mark for `packs`, waiting for the locks `waits_for`;
    /// returns its id and the packs as stored.
    pub async fn write_mark(
        &self,
        waits_for: Vec<String>,
        packs: &[PackEntry],
    ) -> Result<(ObjectId, IndexFragment)> {
        let doc = MarkDocument {
            waits_for,
            packs: self.seal_fragment(packs)?,
        };
        let (id, bytes) = format::seal_document(&doc)?;
        self.sink().put(&mark_key(&id), sink::once(bytes)).await?;
        Ok((id, doc.packs))
    }

    /// Every mark, and the mark objects that cannot be read (their packs
    /// are then unindexed packs like any other, marked again by the next
    /// prune, so a damaged mark loses nothing).
    pub async fn marks(&self) -> Result<(Vec<DeletionMark>, Vec<Damage>)> {
        let mut marks = Vec::new();
        let mut damaged = Vec::new();
        for obj in self.sink().list(MARKS_PREFIX).await? {
            match self.read_mark(&obj.key).await {
                Ok((id, doc, stored)) => marks.push(DeletionMark {
                    id,
                    modified: obj.modified,
                    waits_for: doc.waits_for,
                    packs: doc.packs.packs,
                    stored,
                }),
                Err(Error::NotFound { .. }) => {} // swept meanwhile
                Err(Error::Corrupt { detail, .. }) => damaged.push(Damage {
                    key: obj.key,
                    detail,
                }),
                Err(e) => return Err(e),
            }
        }
        Ok((marks, damaged))
    }

    async fn read_mark(&self, key: &str) -> Result<(ObjectId, MarkDocument, IndexFragment)> {
        let id = format::id_from_key(key)
            .ok_or_else(|| Error::corrupt(format!("mark object {key}"), "bad name"))?;
        let bytes = self.sink().get(key).await?;
        let what = format!("deletion mark {}", id.short());
        let mut doc: MarkDocument = format::open_document(&what, &id, &bytes)?;
        let stored = doc.packs.clone();
        doc.packs = self.unseal_fragment(&what, doc.packs)?;
        Ok((id, doc, stored))
    }

    /// Removes a mark object (by key, for damaged ones too).
    pub async fn delete_mark(&self, key: &str) -> Result<()> {
        self.sink().delete(key).await
    }
}

/// The key of a mark object.
pub fn mark_key(id: &ObjectId) -> String {
    format!("{MARKS_PREFIX}{id}")
}
