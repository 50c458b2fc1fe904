//! Errors of the redis source; messages name the server, never a password.

use crate::rdb::RdbError;

/// Errors of the redis source. Messages name the server, never a password.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// Invalid configuration or target.
    #[error("{0}")]
    Config(String),
    /// The server cannot be reached.
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// Why.
        message: String,
    },
    /// The connection failed.
    #[error("connection to {addr} failed: {message}")]
    Io {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// Why.
        message: String,
    },
    /// The server answered something unexpected.
    #[error("{addr}: {message}")]
    Protocol {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// What.
        message: String,
    },
    /// Authentication failed or is needed.
    #[error("authentication to {addr} failed: {message}")]
    Auth {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// The server's answer.
        message: String,
    },
    /// A command failed.
    #[error("{command} on {addr} failed: {message}")]
    Command {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// The command name.
        command: String,
        /// The server's answer.
        message: String,
    },
    /// The server's snapshot failed.
    #[error("BGSAVE on {addr} failed: {message}")]
    Bgsave {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// What the server reported.
        message: String,
    },
    /// The target holds keys and `--force` was not given.
    #[error("{addr} is not empty ({summary}); nothing was changed (use --force to flush it and restore)")]
    NotEmpty {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// Keys per db.
        summary: String,
    },
    /// The RDB is invalid.
    #[error("RDB from {addr}: {source}")]
    Rdb {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// What is wrong.
        #[source]
        source: RdbError,
    },
    /// A key could not be restored.
    #[error("restoring key `{key}` (db {db}) into {addr} failed: {message}")]
    Restore {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// db
        db: u64,
        /// The key.
        key: String,
        /// The server's answer.
        message: String,
    },
    /// Counts after the restore differ from the backup's.
    #[error("{addr}: {line}")]
    Counts {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// The comparison.
        line: String,
    },
    /// A file-mode restore step failed.
    #[error("file restore into {addr}: {message}")]
    FileRestore {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// What failed.
        message: String,
    },
    /// A throwaway server for test-restore could not be run.
    #[error("test-restore server: {0}")]
    Throwaway(String),
    /// Storing or reading the repository failed.
    #[error(transparent)]
    Core(#[from] respaldo_core::Error),
}
