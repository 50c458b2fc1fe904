//! The application's error: a usage error (exit code 2), the engine's
//! errors (which say whether the repository is missing, locked or the key
//! wrong), failures of files and programs with what was being done, and
//! context added on the way up. The command line picks the exit code from
//! it; nothing here prints.

use crate::config::error::UsageError;

/// An error of an application operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A usage or configuration error: retrying cannot help.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// An error of the repository engine or a driver.
    #[error(transparent)]
    Core(#[from] respaldo_core::Error),
    /// Mounting a repository, or serving the mounted view.
    #[error(transparent)]
    Mount(#[from] respaldo_mount::MountError),
    /// Reading or writing a file, or running a program.
    #[error("{what}")]
    Io {
        /// What was being done (`cannot write /etc/cron.d/respaldo-shop`).
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The operation failed, for this reason.
    #[error("{0}")]
    Failed(String),
    /// An error, with what was being done when it happened.
    #[error("{context}")]
    Context {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: Box<Error>,
    },
}

/// A result of an application operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A usage error with this message.
    pub fn usage(msg: impl Into<String>) -> Error {
        Error::Usage(UsageError(msg.into()))
    }

    /// A failure with this message.
    pub fn failed(msg: impl Into<String>) -> Error {
        Error::Failed(msg.into())
    }

    /// An I/O error, with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// This error, with what was being done.
    pub fn context(self, context: impl Into<String>) -> Error {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// The message, each cause once (`backup of `db` failed: connection
    /// refused`).
    pub fn describe(&self) -> String {
        describe(self)
    }
}

/// The message of an error and its causes, each once.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = String::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let s = c.to_string();
        if !msg.contains(&s) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&s);
        }
        cause = c.source();
    }
    msg
}
