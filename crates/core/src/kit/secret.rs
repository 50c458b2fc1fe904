//! Secrets by reference: a value from the environment, a file or a command,
//! never printed.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A secret in configuration. Forms:
/// * `"${VAR}"` — a string (after `${ENV}` interpolation by the config loader);
/// * `{ env = "VAR" }` — read from an environment variable when needed;
/// * `{ file = "path" }` — the file's content, trailing newline removed
///   (relative paths are resolved against the config file's folder);
/// * `{ command = ["pass", "show", "db"] }` — the command's standard output.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum Secret {
    /// An inline (usually interpolated) value.
    Value(String),
    /// From the environment.
    Env {
        /// Variable name.
        env: String,
    },
    /// From a file.
    File {
        /// Path to the file.
        file: PathBuf,
    },
    /// From a command's stdout.
    Command {
        /// The command and its arguments.
        command: Vec<String>,
    },
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Value(_) => f.write_str("Secret(<redacted>)"),
            Secret::Env { env } => write!(f, "Secret(env {env})"),
            Secret::File { file } => write!(f, "Secret(file {})", file.display()),
            Secret::Command { command } => write!(
                f,
                "Secret(command {})",
                command.first().map(String::as_str).unwrap_or("")
            ),
        }
    }
}

/// A resolved secret value; its `Debug` never shows the value.
#[derive(Clone)]
pub struct SecretValue(String);

impl SecretValue {
    /// The value, for handing to a client library or a child's environment.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Secret {
    /// Resolves relative file paths against `base`.
    pub fn rebase(&mut self, base: &Path) {
        if let Secret::File { file } = self {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
    }

    /// Reads the secret. Errors say where it was looked for, never the value.
    pub async fn resolve(&self) -> Result<SecretValue, SecretError> {
        match self {
            Secret::Value(v) => Ok(SecretValue(v.clone())),
            Secret::Env { env } => std::env::var(env)
                .map(SecretValue)
                .map_err(|_| SecretError::EnvUnset(env.clone())),
            Secret::File { file } => tokio::fs::read_to_string(file)
                .await
                .map(|s| SecretValue(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| SecretError::File {
                    path: file.clone(),
                    error: e.to_string(),
                }),
            Secret::Command { command } => {
                let (prog, args) = command.split_first().ok_or(SecretError::EmptyCommand)?;
                let out = tokio::process::Command::new(prog)
                    .args(args)
                    .stdin(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .output()
                    .await
                    .map_err(|e| SecretError::CommandStart {
                        program: prog.clone(),
                        error: e.to_string(),
                    })?;
                if !out.status.success() {
                    return Err(SecretError::CommandFailed {
                        program: prog.clone(),
                        status: out.status.to_string(),
                    });
                }
                let s = String::from_utf8(out.stdout)
                    .map_err(|_| SecretError::CommandNotUtf8(prog.clone()))?;
                Ok(SecretValue(s.trim_end_matches(['\n', '\r']).to_string()))
            }
        }
    }
}

/// A secret that could not be read: where it was looked for, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// `{ env = "NAME" }` names a variable that is not set.
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    /// `{ file = "PATH" }` could not be read.
    #[error("cannot read secret file {}: {error}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why (the I/O error's text).
        error: String,
    },
    /// `{ command = [] }`.
    #[error("empty secret command")]
    EmptyCommand,
    /// The secret command could not be started.
    #[error("cannot run secret command `{program}`: {error}")]
    CommandStart {
        /// The program.
        program: String,
        /// Why (the I/O error's text).
        error: String,
    },
    /// The secret command exited unsuccessfully (its output is not shown).
    #[error("secret command `{program}` failed ({status})")]
    CommandFailed {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
    },
    /// The secret command printed bytes that are not UTF-8.
    #[error("secret command `{0}` printed non-UTF-8")]
    CommandNotUtf8(String),
}
