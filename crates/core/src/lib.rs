//! # respaldo-core
//!
//! The engine of [respaldo](https://example.invalid/respaldo): everything that is
//! shared by every driver and every repository backend, and nothing that is
//! specific to one of them.
//!
//! * [`Source`](source::Source) — what a driver implements: a cheap `check`, a
//!   `backup` that yields artifacts (byte streams or file trees) and a `restore`.
//! * [`Sink`](sink::Sink) — where repository objects live: atomic streaming put,
//!   get, ranged get, list and delete. A local directory and object stores
//!   implement it.
//! * [`Repository`](repo::Repository) — content-defined chunking (FastCDC), keyed
//!   chunk ids, zstd per chunk, packs, an index of immutable fragments and
//!   snapshots as the commit point. See `docs/format.md` for the on-disk format.
//! * [`retention`], [`verify`](repo::Repository::verify) and
//!   [`prune`](repo::Repository::prune).
//!
//! Data flows one way: a source pushes bytes into a [`BackupContext`](source::BackupContext),
//! the engine chunks, deduplicates, compresses and packs them, and the snapshot
//! written last makes the run visible. A crash at any moment leaves every earlier
//! snapshot intact.

pub mod artifact;
pub mod check;
pub mod chunker;
pub mod copy;
pub mod crypto;
pub mod duration;
pub mod engine;
pub mod error;
pub mod format;
pub mod health;
pub mod id;
pub mod index;
pub mod lock;
pub mod maintenance;
pub mod process;
pub mod progress;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod secret;
pub mod sink;
pub mod snapshot;
pub mod source;
#[cfg(feature = "tls")]
pub mod tls;
pub mod tree;
pub mod verify;
pub mod writer;
pub mod xattr;

pub use error::{Error, Result};
pub use id::ObjectId;
pub use repo::Repository;
pub use sink::Sink;
pub use source::Source;
