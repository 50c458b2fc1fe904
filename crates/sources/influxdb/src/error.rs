//! Errors of the InfluxDB source; messages name the server and database,
//! never a password.

/// Errors of the InfluxDB source. Messages name the server and database,
/// never a password.
#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    /// Invalid configuration or target.
    #[error("{0}")]
    Config(String),
    /// The server cannot be reached.
    #[error("cannot reach InfluxDB at {url}: {message}")]
    Unreachable {
        /// Base URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The server refused the credentials.
    #[error("InfluxDB at {url} refused the credentials: {message}")]
    Auth {
        /// Base URL.
        url: String,
        /// The server's message.
        message: String,
    },
    /// The server answered with an HTTP error.
    #[error("InfluxDB at {url} answered HTTP {status}: {message}")]
    Server {
        /// Base URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// A statement failed.
    #[error("InfluxDB at {url}: `{query}` failed: {message}")]
    Query {
        /// Base URL.
        url: String,
        /// The statement.
        query: String,
        /// The server's message.
        message: String,
    },
    /// The server's answer could not be understood.
    #[error("InfluxDB at {url}: {message}")]
    Protocol {
        /// Base URL.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// A database does not exist.
    #[error("database `{db}` does not exist on InfluxDB at {url}")]
    NoDatabase {
        /// Base URL.
        url: String,
        /// The database.
        db: String,
    },
    /// A 2.x organization does not exist.
    #[error("organization `{org}` does not exist on InfluxDB at {url}")]
    NoOrg {
        /// Base URL.
        url: String,
        /// The organization.
        org: String,
    },
    /// A 2.x bucket does not exist.
    #[error("bucket `{bucket}` does not exist in organization `{org}` on InfluxDB at {url}")]
    NoBucket {
        /// Base URL.
        url: String,
        /// The organization.
        org: String,
        /// The bucket.
        bucket: String,
    },
    /// Restoring would overwrite a 2.x bucket's points.
    #[error("bucket `{bucket}` on InfluxDB at {url} already has points; use --force to delete them first")]
    BucketNotEmpty {
        /// Base URL.
        url: String,
        /// The bucket.
        bucket: String,
    },
    /// Restoring would overwrite data.
    #[error("database `{db}` on InfluxDB at {url} already has measurements; use --force to drop and recreate it")]
    NotEmpty {
        /// Base URL.
        url: String,
        /// The database.
        db: String,
    },
    /// The repository stopped reading the export (its own error is reported).
    #[error("the repository stopped reading the export")]
    StoreClosed,
    /// The snapshot's metadata is not what this driver wrote.
    #[error("snapshot metadata: {0}")]
    Metadata(String),
    /// A secret (`password`, `token`) could not be resolved; names which.
    #[error("{0}")]
    Secret(String),
    /// The repository failed.
    #[error(transparent)]
    Core(#[from] respaldo_core::Error),
    /// Reading an artifact failed.
    #[error("reading artifact `{artifact}`: {source}")]
    Read {
        /// The artifact.
        artifact: String,
        /// The error.
        source: std::io::Error,
    },
}
