//! Why stored bytes do not decode: the typed detail of a corrupt object.

use crate::repo::id::ObjectId;

/// What is wrong with stored bytes that do not decode: the detail of an
/// [`Error::Corrupt`](crate::Error::Corrupt) (which names the object).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Fewer bytes than the structure needs (what was cut short).
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// The magic bytes of a blob or pack are wrong (which).
    #[error("bad {0} magic")]
    BadMagic(&'static str),
    /// A blob header names an unknown kind, compression or flags (which field).
    #[error("unknown blob {0}")]
    Unknown(&'static str),
    /// A pack header of another format version, or unknown flags.
    #[error("unsupported pack version {version} flags {flags}")]
    UnsupportedPack {
        /// The version byte.
        version: u8,
        /// The flags byte.
        flags: u8,
    },
    /// An encrypted pack announces a sealed key longer than any real one.
    #[error("implausible pack key length")]
    ImplausibleKeyLength,
    /// zstd could not decompress the payload.
    #[error("decompression failed: {0}")]
    Decompression(String),
    /// The payload decompressed to another length than its header says.
    #[error("wrong plaintext length")]
    WrongPlaintextLength,
    /// The plaintext's keyed hash is not the chunk id.
    #[error("content does not match its id")]
    IdMismatch,
    /// A pack's SHA-256 is not its name.
    #[error("content does not match its name (SHA-256 mismatch)")]
    NameMismatch,
    /// A blob header names another chunk than the index says.
    #[error("blob header names another chunk")]
    OtherChunk,
    /// A blob's stored length disagrees with its frame.
    #[error("blob has a bad length")]
    BadLength,
    /// A blob runs past the end of its pack.
    #[error("blob runs past the end of the pack")]
    PastEnd,
    /// An encrypted blob does not authenticate with its pack key.
    #[error("authentication failed (damaged or forged)")]
    Authentication,
    /// A pack's encryption does not match the repository's (what it is).
    #[error("{0} pack in an {1} repository")]
    EncryptionMismatch(&'static str, &'static str),
    /// An encrypted pack's key does not open with the identity.
    #[error("pack key: {0}")]
    PackKey(String),
    /// The repository config's MAC does not match its fields.
    #[error("integrity check failed: a field was changed after the repository was created")]
    ConfigChanged,
    /// Which chunk is damaged.
    #[error("chunk {chunk}: {damage}")]
    InChunk {
        /// The chunk id, shortened.
        chunk: String,
        /// What is wrong with it.
        damage: Box<FormatError>,
    },
    /// Where in a pack the damage is.
    #[error("at offset {offset}: {damage}")]
    At {
        /// Byte offset of the blob frame.
        offset: usize,
        /// What is wrong there.
        damage: Box<FormatError>,
    },
}

impl FormatError {
    /// This damage, located at byte `offset` of a pack.
    pub fn at(self, offset: usize) -> FormatError {
        FormatError::At {
            offset,
            damage: Box::new(self),
        }
    }

    /// This damage, in chunk `id`.
    pub fn in_chunk(self, id: &ObjectId) -> FormatError {
        FormatError::InChunk {
            chunk: id.short(),
            damage: Box::new(self),
        }
    }
}
