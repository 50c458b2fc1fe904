//! Errors of the docker source.

/// Errors of the docker source.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// Invalid configuration.
    #[error("{0}")]
    Config(String),
    /// The engine cannot be reached.
    #[error("cannot reach the Docker engine at {host}: {source}")]
    Unreachable {
        /// `DOCKER_HOST` or the default socket.
        host: String,
        /// Why.
        #[source]
        source: bollard::errors::Error,
    },
    /// An engine API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: bollard::errors::Error,
    },
    /// A volume does not exist.
    #[error("volume `{0}` does not exist")]
    NoVolume(String),
    /// A tar stream could not be read or written.
    #[error("{0}")]
    Archive(String),
    /// Containers could not be started again.
    #[error("cannot start containers again: {0}")]
    Restart(String),
    /// The process is being terminated.
    #[error("interrupted")]
    Interrupted,
    /// A check after a restore failed.
    #[error("{0}")]
    Check(String),
    /// An exec hook exited non-zero.
    #[error("`{command}` in container {container} exited with {code}: {output}")]
    Hook {
        /// The container.
        container: String,
        /// The program run.
        command: String,
        /// Its exit status.
        code: i64,
        /// The end of its output.
        output: String,
    },
    /// Repository error.
    #[error(transparent)]
    Core(#[from] respaldo_core::Error),
}

impl DockerError {
    pub(crate) fn api(what: String, source: bollard::errors::Error) -> Self {
        DockerError::Api { what, source }
    }
}
