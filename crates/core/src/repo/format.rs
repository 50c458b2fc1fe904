//! The on-disk format: repository config, pack and blob layout, and the envelope
//! around index fragments and snapshots. `docs/format.md` is the prose version.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repo::crypto::EncryptionConfig;
pub use crate::repo::format_error::FormatError;
use crate::repo::id::ObjectId;

/// The repository format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Magic at the start of every pack.
pub const PACK_MAGIC: &[u8; 8] = b"RSPDPACK";
/// Length of the pack header (magic, version, flags, reserved).
pub const PACK_HEADER_LEN: usize = 12;
/// Magic at the start of every blob header inside a pack.
pub const BLOB_MAGIC: &[u8; 4] = b"BLB1";
/// Length of a blob header.
pub const BLOB_HEADER_LEN: usize = 48;
/// Magic of the envelope around index fragments and snapshots.
pub const ENVELOPE_MAGIC: &[u8; 8] = b"RSPDOBJ1";

/// Content-defined chunking parameters, fixed for the life of a repository so
/// that the same data always cuts the same way.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChunkerParams {
    /// Minimum chunk size in bytes.
    pub min: u32,
    /// Average chunk size in bytes.
    pub avg: u32,
    /// Maximum chunk size in bytes.
    pub max: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min: 256 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
        }
    }
}

/// The `config` object of a repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Always `"respaldo"`.
    pub format: String,
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// Random repository id.
    pub id: String,
    /// Chunking parameters.
    pub chunker: ChunkerParams,
    /// Key of the keyed chunk-id hash (hex). In an encrypted repository this is
    /// sealed to the recipients (see docs/format.md); here it is `"plain:<hex>"`.
    pub chunk_id_key: String,
    /// Encryption scheme: `"none"`, or `"age-x25519"` (see docs/format.md).
    pub encryption: String,
    /// Parameters of an encrypted repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_params: Option<EncryptionConfig>,
    /// Creation time.
    pub created: chrono::DateTime<chrono::Utc>,
    /// Integrity check of every other field: `blake3:` and the hex BLAKE3
    /// hash of the config without this field, keyed with the chunk-id key.
    /// An edit of any field (or of the key material, which changes the key)
    /// fails it. Repositories written before it existed have none until
    /// their first write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The object holding the repository config.
pub const CONFIG_KEY: &str = "config";
/// A second copy of the config, written before it: a damaged `config` is
/// read from here (with a warning) until `repair config` rewrites it.
pub const CONFIG_COPY_KEY: &str = "config.copy";

impl RepoConfig {
    /// A new random configuration.
    pub fn generate() -> Self {
        let key: [u8; 32] = rand::random();
        let id: [u8; 16] = rand::random();
        RepoConfig {
            format: "respaldo".into(),
            version: FORMAT_VERSION,
            id: hex::encode(id),
            chunker: ChunkerParams::default(),
            chunk_id_key: format!("plain:{}", hex::encode(key)),
            encryption: "none".into(),
            encryption_params: None,
            created: chrono::Utc::now(),
            mac: None,
        }
    }

    fn compute_mac(&self, key: &[u8; 32]) -> String {
        let unsealed = RepoConfig {
            mac: None,
            ..self.clone()
        };
        let bytes = serde_json::to_vec(&unsealed).expect("a config serializes");
        format!("blake3:{}", blake3::keyed_hash(key, &bytes).to_hex())
    }

    /// Sets [`RepoConfig::mac`] for the current fields.
    pub fn seal(&mut self, key: &[u8; 32]) {
        self.mac = Some(self.compute_mac(key));
    }

    /// Checks [`RepoConfig::mac`]: `Ok(true)` when it matches, `Ok(false)`
    /// when there is none (an older repository), an error naming the config
    /// when any field was changed.
    pub fn check_mac(&self, key: &[u8; 32]) -> std::result::Result<bool, FormatError> {
        match &self.mac {
            None => Ok(false),
            Some(m) if *m == self.compute_mac(key) => Ok(true),
            Some(_) => Err(FormatError::ConfigChanged),
        }
    }

    /// The stored bytes of this config.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec_pretty(self).expect("a config serializes"))
    }

    /// Checks that this build reads the repository's format version.
    pub fn check_version(&self) -> Result<()> {
        if self.format != "respaldo" || self.version != FORMAT_VERSION {
            return Err(Error::Unsupported(format!(
                "repository format {} version {} (this build reads version {FORMAT_VERSION})",
                self.format, self.version
            )));
        }
        Ok(())
    }

    /// The chunk-id key of an unencrypted repository.
    pub fn plain_chunk_key(&self) -> Result<[u8; 32]> {
        let hex_key = self
            .chunk_id_key
            .strip_prefix("plain:")
            .ok_or_else(|| Error::corrupt("repository config", "bad chunk_id_key"))?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(hex_key, &mut key)
            .map_err(|_| Error::corrupt("repository config", "bad chunk_id_key"))?;
        Ok(key)
    }
}

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    /// Artifact or file content.
    Data,
    /// A serialized file-tree listing.
    Tree,
}

impl BlobKind {
    fn to_u8(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

/// How a blob's payload is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is (it did not shrink).
    None,
    /// zstd frame.
    Zstd,
}

/// A parsed blob header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobHeader {
    /// Blob kind.
    pub kind: BlobKind,
    /// Payload compression.
    pub compression: Compression,
    /// Chunk id (keyed hash of the plaintext).
    pub id: ObjectId,
    /// Plaintext length.
    pub raw_len: u32,
    /// Stored payload length (after the header).
    pub stored_len: u32,
}

impl BlobHeader {
    /// Serializes the header.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_slice(BLOB_MAGIC);
        out.put_u8(self.kind.to_u8());
        out.put_u8(match self.compression {
            Compression::None => 0,
            Compression::Zstd => 1,
        });
        out.put_u16(0);
        out.put_slice(&self.id.0);
        out.put_u32(self.raw_len);
        out.put_u32(self.stored_len);
    }

    /// Parses a header from the first [`BLOB_HEADER_LEN`] bytes of `buf`.
    pub fn decode(buf: &[u8]) -> std::result::Result<Self, FormatError> {
        if buf.len() < BLOB_HEADER_LEN {
            return Err(FormatError::Truncated("blob header"));
        }
        if &buf[..4] != BLOB_MAGIC {
            return Err(FormatError::BadMagic("blob"));
        }
        let kind = BlobKind::from_u8(buf[4]).ok_or(FormatError::Unknown("kind"))?;
        let compression = match buf[5] {
            0 => Compression::None,
            1 => Compression::Zstd,
            _ => return Err(FormatError::Unknown("compression")),
        };
        if buf[6] != 0 || buf[7] != 0 {
            return Err(FormatError::Unknown("flags"));
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&buf[8..40]);
        let raw_len = u32::from_be_bytes(buf[40..44].try_into().expect("4 bytes"));
        let stored_len = u32::from_be_bytes(buf[44..48].try_into().expect("4 bytes"));
        Ok(BlobHeader {
            kind,
            compression,
            id: ObjectId(id),
            raw_len,
            stored_len,
        })
    }
}

/// Writes the 12-byte pack header; an encrypted pack's header goes on with
/// the length (u32 BE) and bytes of its sealed pack key.
pub fn pack_header(out: &mut BytesMut, sealed_key: Option<&[u8]>) {
    out.put_slice(PACK_MAGIC);
    out.put_u8(FORMAT_VERSION as u8);
    out.put_u8(u8::from(sealed_key.is_some())); // flags: bit 0 = encrypted
    out.put_u16(0);
    if let Some(k) = sealed_key {
        out.put_u32(k.len() as u32);
        out.put_slice(k);
    }
}

/// A parsed pack header.
#[derive(Debug)]
pub struct PackHeader<'a> {
    /// Where the first blob starts.
    pub data_start: usize,
    /// The sealed pack key of an encrypted pack.
    pub sealed_key: Option<&'a [u8]>,
}

/// Length of the fixed part of an encrypted pack's header (before the key).
pub const ENCRYPTED_PACK_PREFIX: usize = PACK_HEADER_LEN + 4;

/// Parses a pack header. For an encrypted pack, `buf` must hold the sealed
/// key too (its length is in the first [`ENCRYPTED_PACK_PREFIX`] bytes).
pub fn parse_pack_header(buf: &[u8]) -> std::result::Result<PackHeader<'_>, FormatError> {
    if buf.len() < PACK_HEADER_LEN || &buf[..8] != PACK_MAGIC {
        return Err(FormatError::BadMagic("pack"));
    }
    if buf[8] != FORMAT_VERSION as u8 || buf[9] > 1 {
        return Err(FormatError::UnsupportedPack {
            version: buf[8],
            flags: buf[9],
        });
    }
    if buf[9] == 0 {
        return Ok(PackHeader {
            data_start: PACK_HEADER_LEN,
            sealed_key: None,
        });
    }
    let len = sealed_key_len(buf)?;
    let end = ENCRYPTED_PACK_PREFIX + len;
    if buf.len() < end {
        return Err(FormatError::Truncated("pack key"));
    }
    Ok(PackHeader {
        data_start: end,
        sealed_key: Some(&buf[ENCRYPTED_PACK_PREFIX..end]),
    })
}

/// The sealed key length of an encrypted pack, from its first
/// [`ENCRYPTED_PACK_PREFIX`] bytes.
pub fn sealed_key_len(buf: &[u8]) -> std::result::Result<usize, FormatError> {
    if buf.len() < ENCRYPTED_PACK_PREFIX {
        return Err(FormatError::Truncated("pack header"));
    }
    let len = u32::from_be_bytes(
        buf[PACK_HEADER_LEN..ENCRYPTED_PACK_PREFIX]
            .try_into()
            .expect("4 bytes"),
    );
    if len > 64 * 1024 {
        return Err(FormatError::ImplausibleKeyLength);
    }
    Ok(len as usize)
}

/// Decodes one blob payload (given the header and the stored bytes) into
/// plaintext and checks it against its id.
pub fn decode_blob(
    header: &BlobHeader,
    stored: &[u8],
    key: &[u8; 32],
) -> std::result::Result<Bytes, FormatError> {
    if stored.len() != header.stored_len as usize {
        return Err(FormatError::Truncated("blob"));
    }
    let raw: Bytes = match header.compression {
        Compression::None => Bytes::copy_from_slice(stored),
        Compression::Zstd => {
            let v = with_decompressor(|d| d.decompress(stored, header.raw_len as usize))
                .map_err(|e| FormatError::Decompression(e.to_string()))?;
            Bytes::from(v)
        }
    };
    if raw.len() != header.raw_len as usize {
        return Err(FormatError::WrongPlaintextLength);
    }
    if ObjectId::keyed(key, &raw) != header.id {
        return Err(FormatError::IdMismatch);
    }
    Ok(raw)
}

thread_local! {
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses with this thread's reusable zstd context at `level` (creating
/// a context per chunk costs time and churns memory).
pub fn compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        c.as_mut().expect("set above").1.compress(data)
    })
}

fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        f(d.as_mut().expect("set above"))
    })
}

/// Wraps a JSON document (index fragment or snapshot) for storage: magic,
/// version, flags, then a zstd frame. The object's key is the SHA-256 of the
/// returned bytes.
pub fn seal_document<T: Serialize>(doc: &T) -> Result<(ObjectId, Bytes)> {
    let json = serde_json::to_vec(doc).map_err(|e| Error::Task(format!("serialize: {e}")))?;
    let compressed =
        zstd::bulk::compress(&json, 3).map_err(|e| Error::Task(format!("zstd: {e}")))?;
    let mut out = BytesMut::with_capacity(compressed.len() + 12);
    out.put_slice(ENVELOPE_MAGIC);
    out.put_u8(FORMAT_VERSION as u8);
    out.put_u8(0); // flags: bit 0 = encrypted (reserved)
    out.put_u16(0);
    out.put_slice(&compressed);
    let bytes = out.freeze();
    Ok((ObjectId::sha256(&bytes), bytes))
}

/// Checks and opens a document sealed by [`seal_document`]. `what` names the
/// object in errors; `expected` is the id from its key.
pub fn open_document<T: for<'de> Deserialize<'de>>(
    what: &str,
    expected: &ObjectId,
    bytes: &[u8],
) -> Result<T> {
    if ObjectId::sha256(bytes) != *expected {
        return Err(Error::corrupt(
            what,
            "content does not match its name (SHA-256 mismatch)",
        ));
    }
    if bytes.len() < 12 || &bytes[..8] != ENVELOPE_MAGIC {
        return Err(Error::corrupt(what, "bad magic"));
    }
    if bytes[8] != FORMAT_VERSION as u8 || bytes[9] != 0 {
        return Err(Error::Unsupported(format!(
            "{what}: version {} flags {}",
            bytes[8], bytes[9]
        )));
    }
    let json = zstd::stream::decode_all(&bytes[12..])
        .map_err(|e| Error::corrupt(what, format!("zstd: {e}")))?;
    serde_json::from_slice(&json).map_err(|e| Error::corrupt(what, format!("bad document: {e}")))
}

/// The key of a pack object.
pub fn pack_key(id: &ObjectId) -> String {
    let h = id.to_hex();
    format!("packs/{}/{}", &h[..2], h)
}

/// The key of an index fragment.
pub fn index_key(id: &ObjectId) -> String {
    format!("index/{id}")
}

/// The key of a snapshot.
pub fn snapshot_key(id: &ObjectId) -> String {
    format!("snapshots/{id}")
}

/// Extracts the id from the last path segment of a key.
pub fn id_from_key(key: &str) -> Option<ObjectId> {
    key.rsplit('/').next()?.parse().ok()
}
