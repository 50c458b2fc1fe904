//! The `[sources.NAME]` table of a `postgres` source: what to dump and
//! how (every field is documented for users).

use std::path::PathBuf;

use respaldo_core::kit::secret::Secret;
use serde::{Deserialize, Serialize};

/// Configuration of a `postgres` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// The server and default database: `postgres://user@host:port/db`, with
    /// libpq parameters such as `?sslmode=require` (`disable`, `allow`,
    /// `prefer` — the default —, `require`, `verify-ca`, `verify-full`, with
    /// `sslrootcert=/path/ca.pem`). Never put a password here.
    pub url: String,
    /// The password, by reference (`{ env = "…" }`, `{ file = "…" }`,
    /// `{ command = […] }`). Without it, `PGPASSWORD` and the pgpass file
    /// (`PGPASSFILE`, else `~/.pgpass`) are used, as libpq does.
    #[serde(default)]
    pub password: Option<Secret>,
    /// `dump` (pg_dump, default) or `csv` (chosen tables as CSV files).
    #[serde(default)]
    pub mode: Mode,
    /// Databases to dump: names, or `["*"]` for every database on the server
    /// that accepts connections (templates excluded). Default: the URL's
    /// database.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Also dump roles and tablespaces (`pg_dumpall --globals-only`). Default:
    /// on when `databases = ["*"]`, off otherwise.
    #[serde(default)]
    pub globals: Option<bool>,
    /// `custom` (default; restored with pg_restore, allows table-level
    /// restores) or `plain` (SQL, restored with psql).
    #[serde(default)]
    pub format: Format,
    /// Dump only the definitions, no data.
    #[serde(default)]
    pub schema_only: bool,
    /// Dump only the data, no definitions.
    #[serde(default)]
    pub data_only: bool,
    /// Only these schemas (pg_dump `--schema` patterns).
    #[serde(default)]
    pub schemas: Vec<String>,
    /// Leave out these schemas (pg_dump `--exclude-schema` patterns).
    #[serde(default)]
    pub exclude_schemas: Vec<String>,
    /// dump mode: only these tables (pg_dump `--table` patterns, `table` or
    /// `schema.table`). csv mode: the tables to export, in the order they are
    /// restored (parents before children).
    #[serde(default)]
    pub tables: Vec<String>,
    /// Leave out these tables (pg_dump `--exclude-table` patterns).
    #[serde(default)]
    pub exclude_tables: Vec<String>,
    /// csv mode: the condition rows must meet, e.g. `tenant_id = 42`, applied
    /// to every table (default: every row).
    #[serde(default, rename = "where")]
    pub where_clause: Option<String>,
    /// Folder holding pg_dump, pg_dumpall, pg_restore and psql (default: found
    /// on `PATH`). Their major version must be at least the server's.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// Database used for server-wide work (listing, creating and dropping
    /// databases).
    #[serde(default = "default_maintenance_db")]
    pub maintenance_db: String,
}

fn default_maintenance_db() -> String {
    "postgres".into()
}

/// What the source backs up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// pg_dump of whole databases.
    #[default]
    Dump,
    /// Chosen tables, filtered, as CSV.
    Csv,
}

/// pg_dump output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// pg_dump's custom archive, uncompressed.
    #[default]
    Custom,
    /// Plain SQL.
    Plain,
}
