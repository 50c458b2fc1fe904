//! Errors of the postgres source, each naming the server, database or
//! program it concerns.

/// Errors of the postgres source.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// Invalid configuration.
    #[error("{0}")]
    Config(String),
    /// The server refused or could not be reached.
    #[error("cannot connect to {server} as {user}: {message}")]
    Connect {
        /// `host:port/db`.
        server: String,
        /// The login user.
        user: String,
        /// Why.
        message: String,
    },
    /// A query failed.
    #[error("{server}: {what}: {message}")]
    Query {
        /// `host:port/db`.
        server: String,
        /// What the driver was doing.
        what: String,
        /// The server's message.
        message: String,
    },
    /// A client program is missing.
    #[error("`{0}` not found (install the PostgreSQL client programs or set `bin_dir`)")]
    NotFound(String),
    /// The client programs are older than the server.
    #[error("{program} is version {client} but the server {server} runs {server_version}; a pg_dump older than the server cannot dump it (install PostgreSQL {server_version} client programs or set `bin_dir`)")]
    TooOld {
        /// The program.
        program: String,
        /// Its major version.
        client: u32,
        /// `host:port/db`.
        server: String,
        /// The server's major version.
        server_version: u32,
    },
    /// The restore would overwrite data.
    #[error("{0}")]
    Refused(String),
    /// The source cannot be drilled by test-restore (why).
    #[error("{0}")]
    NotTestable(String),
    /// Rows counted after the restore differ from the backup's.
    #[error("{0}")]
    Mismatch(String),
    /// Reading an artifact back from the repository failed.
    #[error("reading {artifact} from the repository: {source}")]
    Read {
        /// The artifact.
        artifact: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A client program failed.
    #[error(transparent)]
    Process(#[from] respaldo_core::kit::process::ProcessError),
    /// The repository failed.
    #[error(transparent)]
    Core(#[from] respaldo_core::Error),
}
