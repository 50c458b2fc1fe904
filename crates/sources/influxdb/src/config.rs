//! The `[sources.NAME]` table of an `influxdb` source.

use respaldo_core::kit::secret::Secret;
use serde::Deserialize;

/// Configuration of an `influxdb` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL of the InfluxDB HTTP API, e.g. `http://localhost:8086`.
    pub url: String,
    /// The API: `1` (InfluxQL: `databases`, `user`, `password`) or `2`
    /// (Flux: `org`, `token`, `buckets`). Default: 2 when `token` or `org`
    /// is set, else 1.
    #[serde(default)]
    pub version: Option<u8>,
    /// 1.x: databases to back up. Default: every database except `_internal`.
    #[serde(default)]
    pub databases: Vec<String>,
    /// 1.x: user name, when authentication is enabled. The user needs read
    /// access for backups and admin rights for restores.
    #[serde(default)]
    pub user: Option<String>,
    /// 1.x: the user's password, by reference (`{ env = "…" }`,
    /// `{ file = "…" }`, `{ command = […] }`). Requires `user`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// 2.x: the organization (its name) whose buckets are backed up and
    /// restored.
    #[serde(default)]
    pub org: Option<String>,
    /// 2.x: an API token, by reference (`{ env = "INFLUX_TOKEN" }`,
    /// `{ file = "…" }`, `{ command = […] }`). Backups need read access to
    /// the buckets; restores write access and bucket management (an
    /// all-access token of the organization).
    #[serde(default)]
    pub token: Option<Secret>,
    /// 2.x: buckets to back up. Default: every bucket of `org` except the
    /// system buckets (`_monitoring`, `_tasks`).
    #[serde(default)]
    pub buckets: Vec<String>,
    /// Only export points newer than this (`"30d"`, `"12h"`): a partial
    /// export. Default: every point.
    #[serde(default)]
    pub since: Option<String>,
    /// Lines per write request on restore (each sent gzip'd).
    #[serde(default = "default_batch")]
    pub batch_lines: usize,
}

pub(crate) fn default_batch() -> usize {
    5000
}
