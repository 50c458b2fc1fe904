//! The artifact model: what a source yields and a snapshot records.

use serde::{Deserialize, Serialize};

use crate::repo::id::ObjectId;

/// Whether an artifact is one byte stream or a tree of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    /// One byte stream (a pg_dump archive, an RDB file, an export).
    Stream,
    /// A tree of files with metadata (the files source, a Docker volume).
    Tree,
}

impl ArtifactKind {
    /// `stream` or `tree`.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Stream => "stream",
            ArtifactKind::Tree => "tree",
        }
    }
}

/// One artifact of a source in a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Name, unique within the source; also its file name for `restore --to`.
    pub name: String,
    /// Stream or tree.
    pub kind: ArtifactKind,
    /// Plaintext size: the stream's length, or the sum of a tree's file sizes.
    pub size: u64,
    /// SHA-256 of the stream (or of a tree's listing), checkable with `sha256sum`
    /// on the output of `respaldo dump`.
    pub sha256: ObjectId,
    /// The chunks holding the stream, or the tree's listing, in order.
    pub chunks: Vec<ObjectId>,
    /// Tree details (trees only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<TreeSummary>,
}

/// Summary of a tree artifact.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeSummary {
    /// The absolute directory the entries' paths are relative to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Number of entries of every type.
    pub entries: u64,
    /// Number of regular files.
    pub files: u64,
    /// Number of directories.
    pub dirs: u64,
}
