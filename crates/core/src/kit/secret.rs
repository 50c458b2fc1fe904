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
        self.read().await.map_err(SecretError)
    }

    async fn read(&self) -> Result<SecretValue, String> {
        match self {
            Secret::Value(v) => Ok(SecretValue(v.clone())),
            Secret::Env { env } => std::env::var(env)
                .map(SecretValue)
                .map_err(|_| format!("environment variable {env} is not set")),
            Secret::File { file } => tokio::fs::read_to_string(file)
                .await
                .map(|s| SecretValue(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| format!("cannot read secret file {}: {e}", file.display())),
            Secret::Command { command } => {
                let (prog, args) = command.split_first().ok_or("empty secret command")?;
                let out = tokio::process::Command::new(prog)
                    .args(args)
                    .stdin(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .output()
                    .await
                    .map_err(|e| format!("cannot run secret command `{prog}`: {e}"))?;
                if !out.status.success() {
                    return Err(format!("secret command `{prog}` failed ({})", out.status));
                }
                let s = String::from_utf8(out.stdout)
                    .map_err(|_| format!("secret command `{prog}` printed non-UTF-8"))?;
                Ok(SecretValue(s.trim_end_matches(['\n', '\r']).to_string()))
            }
        }
    }
}

/// A secret that could not be read: where it was looked for, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(pub String);
