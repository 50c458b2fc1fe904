//! # respaldo-core
//!
//! The engine of [respaldo](https://example.invalid/respaldo): everything that is
//! shared by every driver and every repository backend, and nothing that is
//! specific to one of them. It knows no driver and no command line.
//!
//! * [`Source`] — what a driver implements: a cheap `check`, a `backup` that
//!   yields artifacts (byte streams or file trees), a `plan` and a `restore`.
//! * [`Sink`] — where repository objects live: atomic streaming put, get,
//!   ranged get, list and delete. A local directory and object stores
//!   implement it.
//! * [`repo`] — the repository: content-defined chunking (FastCDC), keyed
//!   chunk ids, zstd per chunk, packs, an index of immutable fragments,
//!   snapshots as the commit point, locks. See `docs/format.md`.
//! * [`ops`] — the operations on it: backup, restore, verify, retention,
//!   forget and prune, copy, repair.
//! * [`inventory`] — what a source held (tables and row counts, keys,
//!   points), read from its snapshot metadata by its driver.
//! * [`kit`] — what drivers share: running programs, secrets, durations,
//!   TLS, health checks, count checks.
//!
//! Data flows one way: a source pushes bytes into a
//! [`BackupContext`](source::BackupContext), the engine chunks, deduplicates,
//! compresses and packs them, and the snapshot written last makes the run
//! visible. A crash at any moment leaves every earlier snapshot intact.
//!
//! ```
//! # async fn demo() -> respaldo_core::Result<()> {
//! use std::sync::Arc;
//! use respaldo_core::{ops, Repository, Sink};
//! # let sink: Arc<dyn Sink> = unimplemented!();
//! let repo = Repository::open(sink).await?;
//! let (snapshots, _damaged) = repo.snapshots().await?;
//! let report = ops::verify::verify(
//!     &repo,
//!     &ops::verify::VerifyOptions::default(),
//!     &Default::default(),
//! )
//! .await?;
//! assert!(report.is_ok() || !snapshots.is_empty());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod artifact;
pub mod error;
pub mod inventory;
pub mod kit;
pub mod ops;
pub mod registry;
pub mod repo;
pub mod sink;
pub mod source;

pub use error::{Error, Result};
pub use repo::id::ObjectId;
pub use repo::Repository;
pub use sink::Sink;
pub use source::Source;
