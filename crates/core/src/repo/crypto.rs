//! Encryption of a repository to age X25519 recipients, or to a passphrase.
//!
//! The design lets a backup host hold only public keys (recipients): it can
//! write, deduplicate, list snapshots and apply retention, but it cannot read
//! any data back. `docs/format.md` ("Encryption") describes the objects and
//! the threat model.
//!
//! * Every pack has its own random 256-bit key, sealed with age to the
//!   recipients and stored in the pack header. Each blob (header and payload)
//!   is encrypted with ChaCha20-Poly1305 under that key and a random nonce.
//! * A snapshot keeps in clear what listing and retention need (times, host,
//!   tags, source names and outcomes, sizes) and seals the rest (artifacts,
//!   chunk lists, driver metadata, errors, warnings) to the recipients.
//! * Chunk ids are BLAKE3 keyed with a key derived from the recipients and a
//!   per-repository salt, so a writer can deduplicate while the storage
//!   provider, who never sees the recipients, cannot tell what content a chunk
//!   id stands for. Readers unseal the same key from the config.
//! * With a passphrase, the repository gets its own X25519 identity, sealed in
//!   the config with age's scrypt mode; everything else is the same.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Mutex;

use age::secrecy::ExposeSecret;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::error::{Error, Result};
use crate::repo::format_error::FormatError;
use crate::repo::id::ObjectId;

/// The `encryption` value of an encrypted repository's config.
pub const SCHEME: &str = "age-x25519";
/// Bytes added to every blob by encryption: length (4), nonce (12), tag (16).
pub const BLOB_OVERHEAD: usize = 4 + 12 + 16;
/// scrypt work factor (log2) for a passphrase-sealed repository identity.
const SCRYPT_WORK_FACTOR: u8 = 16;

/// The keys a command was given: public recipients to write, secret
/// identities (or a passphrase) to read. Secrets are never printed.
#[derive(Clone, Default)]
pub struct KeyMaterial {
    /// age X25519 recipients (`age1…`): enough to write.
    pub recipients: Vec<String>,
    /// age X25519 identities (`AGE-SECRET-KEY-1…`): needed to read.
    pub identities: Vec<String>,
    /// A passphrase (writing and reading).
    pub passphrase: Option<String>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("recipients", &self.recipients)
            .field(
                "identities",
                &format_args!("[{} hidden]", self.identities.len()),
            )
            .field("passphrase", &self.passphrase.as_ref().map(|_| "hidden"))
            .finish()
    }
}

impl KeyMaterial {
    /// Whether any key was given (an encrypted repository is wanted).
    pub fn is_empty(&self) -> bool {
        self.recipients.is_empty() && self.identities.is_empty() && self.passphrase.is_none()
    }
}

/// A new identity and its recipient, as `key generate` writes them.
pub fn generate_identity() -> (String, String) {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    (identity.to_string().expose_secret().to_string(), recipient)
}

/// The public recipient of an identity.
pub fn recipient_of(identity: &str) -> Result<String> {
    Ok(parse_identity(identity)?.to_public().to_string())
}

fn parse_identity(s: &str) -> Result<age::x25519::Identity> {
    s.trim()
        .parse()
        .map_err(|_| Error::Invalid("not an age X25519 identity (AGE-SECRET-KEY-1…)".into()))
}

/// Checks that `s` is an age X25519 recipient.
pub fn check_recipient(s: &str) -> Result<()> {
    parse_recipient(s).map(|_| ())
}

fn parse_recipient(s: &str) -> Result<age::x25519::Recipient> {
    s.trim()
        .parse()
        .map_err(|_| Error::Invalid(format!("`{s}` is not an age X25519 recipient (age1…)")))
}

/// Identities found in an identity file's text (comments and blank lines
/// ignored).
pub fn identities_in(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
        .map(str::to_string)
        .collect()
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn unb64(what: &str, s: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| Error::corrupt(what, "bad base64"))
}

/// The encryption part of a repository config.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// Salt of the chunk-id key derivation (hex).
    pub chunk_key_salt: String,
    /// BLAKE3 of the chunk-id key (hex), so writers with other recipients are
    /// told so instead of silently breaking deduplication.
    pub chunk_key_check: String,
    /// The repository identity sealed with the passphrase (base64 age scrypt),
    /// for passphrase repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_identity: Option<String>,
}

/// The keys of an open encrypted repository.
pub(crate) struct Crypto {
    recipients: Vec<age::x25519::Recipient>,
    identities: Vec<age::x25519::Identity>,
    pack_keys: Mutex<HashMap<ObjectId, [u8; 32]>>,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto")
            .field("recipients", &self.recipients.len())
            .field("can_read", &!self.identities.is_empty())
            .finish()
    }
}

fn chunk_key_from(recipients: &[age::x25519::Recipient], salt: &[u8]) -> [u8; 32] {
    let mut list: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
    list.sort();
    list.dedup();
    let mut material = salt.to_vec();
    material.extend_from_slice(list.join("\n").as_bytes());
    blake3::derive_key("respaldo 2026-11 chunk-id key", &material)
}

fn key_check(key: &[u8; 32]) -> String {
    blake3::keyed_hash(key, b"respaldo chunk-id key check")
        .to_hex()
        .to_string()
}

impl Crypto {
    fn from_keys(keys: &KeyMaterial) -> Result<Self> {
        Ok(Crypto {
            recipients: keys
                .recipients
                .iter()
                .map(|r| parse_recipient(r))
                .collect::<Result<_>>()?,
            identities: keys
                .identities
                .iter()
                .map(|i| parse_identity(i))
                .collect::<Result<_>>()?,
            pack_keys: Mutex::new(HashMap::new()),
        })
    }

    /// New encryption settings for `init`: returns the config part, the
    /// sealed chunk key (for `chunk_id_key`) and the chunk key.
    pub(crate) fn create(keys: &KeyMaterial) -> Result<(EncryptionConfig, String, [u8; 32])> {
        let mut crypto = Crypto::from_keys(keys)?;
        let mut passphrase_identity = None;
        if let Some(pass) = &keys.passphrase {
            let identity = age::x25519::Identity::generate();
            let mut r = age::scrypt::Recipient::new(pass.clone().into());
            r.set_work_factor(SCRYPT_WORK_FACTOR);
            let sealed = seal_to(
                &[&r as &dyn age::Recipient],
                identity.to_string().expose_secret().as_bytes(),
            )?;
            passphrase_identity = Some(b64(&sealed));
            crypto.recipients.push(identity.to_public());
            crypto.identities.push(identity);
        }
        if crypto.recipients.is_empty() {
            return Err(Error::Invalid(
                "an encrypted repository needs `recipients` (age1… public keys) or a `passphrase`"
                    .into(),
            ));
        }
        let salt: [u8; 16] = rand::random();
        let key = chunk_key_from(&crypto.recipients, &salt);
        let sealed = b64(&crypto.seal(&key)?);
        Ok((
            EncryptionConfig {
                chunk_key_salt: hex::encode(salt),
                chunk_key_check: key_check(&key),
                passphrase_identity,
            },
            sealed,
            key,
        ))
    }

    /// Opens the keys of an existing encrypted repository: returns them and
    /// the chunk-id key.
    pub(crate) fn open(
        keys: &KeyMaterial,
        config: &EncryptionConfig,
        sealed_chunk_key: &str,
    ) -> Result<(Self, [u8; 32])> {
        let mut crypto = Crypto::from_keys(keys)?;
        if let Some(sealed) = &config.passphrase_identity {
            let Some(pass) = &keys.passphrase else {
                return Err(Error::KeyRequired(
                    "this repository is encrypted with a passphrase; set `passphrase`".into(),
                ));
            };
            let identity = age::scrypt::Identity::new(pass.clone().into());
            let text = open_with(
                &[&identity as &dyn age::Identity],
                &unb64("repository config", sealed)?,
            )
            .map_err(|_| Error::KeyRequired("wrong passphrase for this repository".into()))?;
            let identity = parse_identity(&String::from_utf8_lossy(&text))?;
            crypto.recipients.push(identity.to_public());
            crypto.identities.push(identity);
        }
        let key = if !crypto.identities.is_empty() {
            let bytes = crypto
                .open_sealed(
                    "the repository's chunk-id key",
                    &unb64("repository config", sealed_chunk_key)?,
                )
                .map_err(|_| {
                    Error::KeyRequired(
                        "none of the given identities can open this repository".into(),
                    )
                })?;
            <[u8; 32]>::try_from(bytes.as_slice())
                .map_err(|_| Error::corrupt("repository config", "bad chunk-id key"))?
        } else if !crypto.recipients.is_empty() {
            let salt = hex::decode(&config.chunk_key_salt)
                .map_err(|_| Error::corrupt("repository config", "bad chunk_key_salt"))?;
            chunk_key_from(&crypto.recipients, &salt)
        } else {
            return Err(Error::KeyRequired(
                "the repository is encrypted: set `recipients` (to back up) or \
                 `identity_file` / $RESPALDO_IDENTITY_FILE (to read)"
                    .into(),
            ));
        };
        if key_check(&key) != config.chunk_key_check {
            return Err(Error::KeyRequired(
                "the configured `recipients` are not the ones this repository was created \
                 with (its chunk ids would not match); use the same recipients"
                    .into(),
            ));
        }
        Ok((crypto, key))
    }

    /// Whether data can be decrypted (an identity is loaded).
    pub(crate) fn can_read(&self) -> bool {
        !self.identities.is_empty()
    }

    /// Seals `plaintext` to the recipients (age binary format).
    pub(crate) fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        if self.recipients.is_empty() {
            return Err(Error::KeyRequired(
                "writing to an encrypted repository needs `recipients`".into(),
            ));
        }
        let rs: Vec<&dyn age::Recipient> = self
            .recipients
            .iter()
            .map(|r| r as &dyn age::Recipient)
            .collect();
        seal_to(&rs, plaintext)
    }

    /// Opens something sealed by [`Crypto::seal`]; `what` names it in errors.
    pub(crate) fn open_sealed(&self, what: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        if self.identities.is_empty() {
            return Err(identity_required(what));
        }
        let ids: Vec<&dyn age::Identity> = self
            .identities
            .iter()
            .map(|i| i as &dyn age::Identity)
            .collect();
        open_with(&ids, sealed).map_err(|e| Error::corrupt(what, e))
    }

    /// `value` as JSON sealed to the recipients, in base64: the `sealed`
    /// member of a stored document.
    pub(crate) fn seal_json<T: serde::Serialize>(&self, value: &T) -> Result<String> {
        let json = serde_json::to_vec(value).map_err(|e| Error::Task(e.to_string()))?;
        Ok(b64(&self.seal(&json)?))
    }

    /// Opens a `sealed` member written by [`Crypto::seal_json`]; `what` names
    /// the document in errors.
    pub(crate) fn open_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        sealed: &str,
    ) -> Result<T> {
        let json = self.open_sealed(what, &unb64(what, sealed)?)?;
        serde_json::from_slice(&json)
            .map_err(|e| Error::corrupt(what, format!("bad sealed part: {e}")))
    }

    /// A pack key from the cache.
    pub(crate) fn cached_pack_key(&self, pack: &ObjectId) -> Option<[u8; 32]> {
        self.pack_keys.lock().ok()?.get(pack).copied()
    }

    /// Unseals a pack key and caches it.
    pub(crate) fn unseal_pack_key(&self, pack: &ObjectId, sealed: &[u8]) -> Result<[u8; 32]> {
        let what = format!("pack {}", pack.short());
        let bytes = self.open_sealed(&what, sealed)?;
        let key = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| Error::corrupt(&what, "bad pack key"))?;
        if let Ok(mut cache) = self.pack_keys.lock() {
            cache.insert(*pack, key);
        }
        Ok(key)
    }
}

/// The error for an operation that needs to decrypt without an identity.
pub fn identity_required(what: &str) -> Error {
    Error::KeyRequired(format!(
        "reading {what} needs the identity: the repository is encrypted and this host has \
         only public recipients; set `identity_file` or $RESPALDO_IDENTITY_FILE"
    ))
}

fn seal_to(recipients: &[&dyn age::Recipient], plaintext: &[u8]) -> Result<Vec<u8>> {
    let enc = age::Encryptor::with_recipients(recipients.iter().copied())
        .map_err(|e| Error::Task(format!("age: {e}")))?;
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut w = enc
        .wrap_output(&mut out)
        .map_err(|e| Error::Task(format!("age: {e}")))?;
    w.write_all(plaintext)
        .and_then(|_| w.finish().map(|_| ()))
        .map_err(|e| Error::Task(format!("age: {e}")))?;
    Ok(out)
}

fn open_with(
    identities: &[&dyn age::Identity],
    sealed: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    let dec = age::Decryptor::new(sealed).map_err(|e| e.to_string())?;
    let mut r = dec
        .decrypt(identities.iter().copied())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// A new random pack key and its sealed form.
pub(crate) fn new_pack_key(crypto: &Crypto) -> Result<([u8; 32], Vec<u8>)> {
    let key: [u8; 32] = rand::random();
    let sealed = crypto.seal(&key)?;
    Ok((key, sealed))
}

/// Encrypts one blob (header and payload) into `out` as
/// `length (u32 BE) ‖ nonce ‖ ciphertext+tag`.
pub(crate) fn encrypt_blob(key: &[u8; 32], blob: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let nonce: [u8; 12] = rand::random();
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), blob)
        .map_err(|_| Error::Task("encryption failed".into()))?;
    out.extend_from_slice(&(ct.len() as u32).to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(())
}

/// The length of the encrypted blob frame starting at `frame` (from its
/// length prefix).
pub(crate) fn frame_len(frame: &[u8]) -> std::result::Result<usize, FormatError> {
    if frame.len() < 16 {
        return Err(FormatError::Truncated("encrypted blob"));
    }
    let ct = u32::from_be_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
    Ok(16 + ct)
}

/// Decrypts one blob frame written by [`encrypt_blob`].
pub(crate) fn decrypt_blob(
    key: &[u8; 32],
    frame: &[u8],
) -> std::result::Result<Vec<u8>, FormatError> {
    let len = frame_len(frame)?;
    if frame.len() != len {
        return Err(FormatError::Truncated("encrypted blob"));
    }
    ChaCha20Poly1305::new(Key::from_slice(key))
        .decrypt(Nonce::from_slice(&frame[4..16]), &frame[16..])
        .map_err(|_| FormatError::Authentication)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_only_keys_derive_the_readers_chunk_key() {
        let (identity, recipient) = generate_identity();
        let writer = KeyMaterial {
            recipients: vec![recipient.clone()],
            ..Default::default()
        };
        let (config, sealed, key) = Crypto::create(&writer).unwrap();
        let (w, wkey) = Crypto::open(&writer, &config, &sealed).unwrap();
        assert_eq!(wkey, key);
        assert!(!w.can_read());
        let reader = KeyMaterial {
            identities: vec![identity],
            ..Default::default()
        };
        let (r, rkey) = Crypto::open(&reader, &config, &sealed).unwrap();
        assert_eq!(rkey, key);
        let sealed_msg = w.seal(b"secret").unwrap();
        assert!(matches!(
            w.open_sealed("x", &sealed_msg),
            Err(Error::KeyRequired(_))
        ));
        assert_eq!(r.open_sealed("x", &sealed_msg).unwrap(), b"secret");
        let (_, other) = generate_identity();
        let wrong = KeyMaterial {
            recipients: vec![other],
            ..Default::default()
        };
        assert!(matches!(
            Crypto::open(&wrong, &config, &sealed),
            Err(Error::KeyRequired(_))
        ));
    }

    #[test]
    fn blob_frames_round_trip_and_detect_tampering() {
        let key: [u8; 32] = rand::random();
        let mut out = Vec::new();
        encrypt_blob(&key, b"hello blob", &mut out).unwrap();
        assert_eq!(out.len(), 10 + BLOB_OVERHEAD);
        assert_eq!(decrypt_blob(&key, &out).unwrap(), b"hello blob");
        out[20] ^= 1;
        assert!(decrypt_blob(&key, &out).is_err());
    }

    #[test]
    fn passphrase_repositories_open_with_the_passphrase_only() {
        let keys = KeyMaterial {
            passphrase: Some("correct horse".into()),
            ..Default::default()
        };
        let (config, sealed, key) = Crypto::create(&keys).unwrap();
        let (c, k) = Crypto::open(&keys, &config, &sealed).unwrap();
        assert_eq!(k, key);
        assert!(c.can_read());
        let wrong = KeyMaterial {
            passphrase: Some("wrong".into()),
            ..Default::default()
        };
        assert!(matches!(
            Crypto::open(&wrong, &config, &sealed),
            Err(Error::KeyRequired(_))
        ));
    }
}
