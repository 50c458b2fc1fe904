//! The `[sources.NAME]` table of a `mysql` source: what to dump and how
//! (every field is documented for users).

use std::path::PathBuf;

use respaldo_core::kit::secret::Secret;
use serde::{Deserialize, Serialize};

/// Configuration of a `mysql` source (MariaDB or MySQL).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// The server and default database: `mysql://user@host:port/db` (TCP;
    /// `mariadb://` works too), or `mysql://user@localhost/db?socket=/run/mysqld/mysqld.sock`
    /// for a Unix socket. Never put a password here.
    pub url: String,
    /// The password, by reference (`{ env = "…" }`, `{ file = "…" }`,
    /// `{ command = […] }`). It reaches the client programs through a
    /// private option file, never their command line.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Databases to dump: names, or `["*"]` for every database on the server
    /// (the server's own `mysql`, `sys`, `information_schema` and
    /// `performance_schema` left out). Default: the URL's database.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Also back up user accounts and their grants (`mariadb-dump
    /// --system=users`; MariaDB clients only). The server's own accounts
    /// (`root`, `mariadb.sys`, `mysql`) are never restored over a target's.
    /// Default: on when `databases = ["*"]`, off otherwise.
    #[serde(default)]
    pub users: Option<bool>,
    /// Dump only the definitions (tables, views, routines, triggers,
    /// events), no rows.
    #[serde(default)]
    pub schema_only: bool,
    /// TLS to the server: `prefer` (default: what the client does by
    /// itself, encrypted when the server offers it), `disable` (never),
    /// `require` (encrypted, the certificate not checked) or `verify`
    /// (encrypted, the certificate checked against `ca_file` and the host
    /// name).
    #[serde(default)]
    pub tls: Tls,
    /// The CA certificate (PEM) that signs the server's certificate, for
    /// `tls = "verify"`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The dump program (default: `mariadb-dump`, else `mysqldump`, on `PATH`).
    /// It must not be older than the server.
    #[serde(default)]
    pub dump_bin: Option<PathBuf>,
    /// The client program used for queries and restores (default:
    /// `mariadb`, else `mysql`, on `PATH`).
    #[serde(default)]
    pub client_bin: Option<PathBuf>,
}

/// TLS to the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// The client's own default (encrypted when the server offers it).
    #[default]
    Prefer,
    /// Plain connections.
    Disable,
    /// Encrypted; the certificate is not checked.
    Require,
    /// Encrypted; the certificate is checked (`ca_file`, host name).
    Verify,
}
