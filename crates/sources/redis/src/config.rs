//! The `[sources.NAME]` table of a `redis` source: the server, how the
//! RDB travels (`transfer`), and file-mode restores.

use std::path::PathBuf;

use respaldo_core::kit::secret::Secret;
use serde::Deserialize;

/// The artifact name.
pub(crate) const ARTIFACT: &str = "dump.rdb";

/// How the RDB gets from the server to respaldo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transfer {
    /// The dump file when the server runs on this host and the file is
    /// readable, else replication.
    #[default]
    Auto,
    /// `BGSAVE`, then read the server's dump file (`dir`/`dbfilename`).
    File,
    /// Stream the RDB over the replication protocol (`SYNC`).
    Replication,
}

/// Configuration of a `redis` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The server: `redis://[user@]host[:port]`, or `rediss://…` for TLS.
    /// A password must not be written here: use `password`.
    pub url: String,
    /// ACL user name (overrides a user in `url`); default: the default user.
    #[serde(default)]
    pub username: Option<String>,
    /// The password (`requirepass` or the ACL user's), by reference:
    /// `{ env = "REDIS_PASSWORD" }`, `{ file = "…" }`, `{ command = […] }`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// TLS (`rediss://`): the CA certificates (PEM) the server's certificate
    /// must chain to. Default: the system's trusted roots.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// TLS: a client certificate (PEM), for servers that require one
    /// (`tls-auth-clients yes`). Needs `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// TLS: the client certificate's private key (PEM).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// TLS: the name the server's certificate must carry, when it is not
    /// the host in `url` (for example when connecting by IP address to a
    /// certificate issued for a DNS name). Default: the host in `url`.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// TLS: encrypt but **do not check the server's certificate at all**.
    /// Insecure: anyone who can intercept the connection can pose as the
    /// server and read the backup and the password. Only for a test setup.
    #[serde(default)]
    pub tls_insecure_skip_verify: bool,
    /// `auto` (default), `file` or `replication`; see the crate docs.
    #[serde(default)]
    pub transfer: Transfer,
    /// How long to wait for the server's `BGSAVE` or replication snapshot,
    /// in seconds (default 3600).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Keys sent per pipelined batch of `RESTORE` commands (default 1000).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Restore into the configured server by replacing its dump file
    /// (stop, place the RDB atomically, start, check it loaded) instead of
    /// replaying keys. Used by `restore` without `--target` and `--keys`.
    #[serde(default)]
    pub file_restore: Option<FileRestore>,
}

/// How to restore by file into a server this host manages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRestore {
    /// Program and arguments that stop the server, e.g.
    /// `["systemctl", "stop", "redis-server"]` or `["docker", "stop", "redis"]`.
    pub stop: Vec<String>,
    /// Program and arguments that start it again.
    pub start: Vec<String>,
    /// The server's data directory as seen from this host (default: its
    /// `dir`, from `CONFIG GET`; set it for a server in a container).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Seconds to wait for the server to stop, and to start and load the
    /// snapshot (default 300 each).
    #[serde(default = "default_start_timeout")]
    pub timeout: u64,
}

pub(crate) fn default_start_timeout() -> u64 {
    300
}

pub(crate) fn default_timeout() -> u64 {
    3600
}

pub(crate) fn default_batch() -> usize {
    1000
}
