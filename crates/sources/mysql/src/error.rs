//! Errors of the mysql source, each naming the server, database or program
//! it concerns.

/// Errors of the mysql source.
#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    /// Invalid configuration.
    #[error("{0}")]
    Config(String),
    /// The client program failed to run a query (cannot connect, access
    /// denied, SQL error): its own message.
    #[error("{server}: {what}: {message}")]
    Query {
        /// `host:port` or the socket.
        server: String,
        /// What the driver was doing.
        what: String,
        /// The client's message.
        message: String,
    },
    /// A client program is missing.
    #[error("`{0}` not found (install the MariaDB or MySQL client programs, or set `dump_bin` and `client_bin`)")]
    NotFound(String),
    /// The dump program is older than the server.
    #[error("{program} {client} is older than the server {server}, which runs {server_version}; install a client at least as new or set `dump_bin`")]
    TooOld {
        /// The program.
        program: String,
        /// Its version (`major.minor`).
        client: String,
        /// `host:port` or the socket.
        server: String,
        /// The server's version.
        server_version: String,
    },
    /// The dump ended before its last line: the program was killed or the
    /// stream cut.
    #[error("the dump of database `{0}` is incomplete (no `-- Dump completed` line); nothing was recorded for it")]
    Incomplete(String),
    /// The source cannot be drilled by test-restore (why).
    #[error("{0}")]
    NotTestable(String),
    /// Rows counted after the restore differ from the backup's.
    #[error("{0}")]
    Mismatch(String),
    /// A client program failed.
    #[error(transparent)]
    Process(#[from] respaldo_core::kit::process::ProcessError),
    /// The repository failed.
    #[error(transparent)]
    Core(#[from] respaldo_core::Error),
}
