//! The error type of respaldo-core.

use std::path::PathBuf;

/// A boxed error from a driver or a backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias for respaldo-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine, each with the context needed to
/// act on it (which object, which source, which file).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A repository object is absent.
    #[error("object `{key}` not found in {location}")]
    NotFound {
        /// The object key.
        key: String,
        /// The repository location.
        location: String,
    },
    /// The storage backend failed.
    #[error("storage error at {location} on `{key}`: {source}")]
    Storage {
        /// The repository location.
        location: String,
        /// The object key.
        key: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The repository is not initialized at this location.
    #[error("no repository at {0}; run `respaldo init` first")]
    NotInitialized(String),
    /// A repository already exists at this location.
    #[error("a repository already exists at {0}")]
    AlreadyInitialized(String),
    /// A repository object failed an integrity check.
    #[error("{what} is damaged: {detail}")]
    Corrupt {
        /// The object (e.g. `pack 1a2b…`).
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// A key is missing or wrong (encrypted repository).
    #[error("{0}")]
    KeyRequired(String),
    /// The repository was written by an incompatible version.
    #[error("unsupported repository format: {0}")]
    Unsupported(String),
    /// A source (driver) failed.
    #[error("source `{name}` ({kind}): {source}")]
    Source {
        /// The source's name in the configuration.
        name: String,
        /// The driver type.
        kind: String,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// A local file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot reference did not resolve.
    #[error(transparent)]
    SnapshotNotFound(#[from] crate::repo::snapshot::LookupError),
    /// A restore would overwrite existing data without `--force`.
    #[error("{0}; nothing was changed (use --force to overwrite)")]
    TargetNotEmpty(String),
    /// A request that cannot be honoured (bad argument or unsupported combination).
    #[error("{0}")]
    Invalid(String),
    /// A restore was refused before anything changed (the plan's reasons).
    #[error("{0}")]
    Refused(String),
    /// A source cannot be drilled by `test-restore` (why): reported as not
    /// testable, not as a failure.
    #[error("not testable: {0}")]
    NotTestable(String),
    /// The repository is locked by another process.
    #[error("{0}")]
    Locked(String),
    /// The operation was cancelled (SIGINT or SIGTERM): it stopped cleanly
    /// and wrote nothing that refers to unfinished work.
    #[error("interrupted by a signal")]
    Interrupted,
    /// A background task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl Error {
    /// Wraps a local I/O error with the operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A corruption error.
    pub fn corrupt(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Error::Corrupt {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Task(e.to_string())
    }
}
