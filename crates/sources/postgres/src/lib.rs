//! # respaldo-source-postgres
//!
//! The `postgres` source. Two modes:
//!
//! * **dump** (default): `pg_dump` of one database, a list, or every database
//!   on the server (plus roles and tablespaces from
//!   `pg_dumpall --globals-only`), streamed straight into the repository —
//!   custom format written uncompressed so day-over-day dumps deduplicate, or
//!   plain SQL. pg_dump runs inside a snapshot exported from the driver's own
//!   `REPEATABLE READ` transaction, in which the driver also counts every
//!   table's rows: the counts recorded describe exactly the data dumped, and
//!   every restore is checked against them.
//! * **csv**: chosen tables, filtered by a `WHERE` clause (one tenant, say),
//!   exported as one CSV file per table with `COPY … TO STDOUT` in one
//!   consistent transaction, and restored with `COPY … FROM STDIN`.
//!
//! Restores go through `pg_restore` or `psql`, streamed from the repository:
//! into the configured database (replacing it only with `--force`), into
//! another database or server (`--target postgres://host/newdb`), or only
//! some tables or schemas, or only the schema.
//!
//! ```toml
//! [sources.shop]
//! type = "postgres"
//! url = "postgres://backup@localhost:5432/shop"
//! password = { env = "SHOP_DB_PASSWORD" }
//! ```
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use respaldo_core::error::BoxError;
use respaldo_core::kit::secret::{Secret, SecretValue};
use respaldo_core::source::{
    BackupContext, RestoreContext, RestorePlan, RestoreReport, RestoreTarget, Source,
};
use serde::{Deserialize, Serialize};

mod backup;
mod conn;
mod csv;
mod restore;
mod tls;
mod tools;

pub use conn::Endpoint;

mod toc;

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

/// What a backup recorded about one database (the `databases` metadata).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DatabaseRecord {
    /// The artifact holding its dump (or, in csv mode, unused).
    pub artifact: String,
    /// Format of the dump.
    pub format: Format,
    /// `pg_database_size` at backup time.
    pub size_bytes: u64,
    /// The database owner.
    pub owner: String,
    /// Rows per `schema.table`, counted in the dump's snapshot.
    pub rows: BTreeMap<String, u64>,
    /// What the dump holds (`full`, `data_only`, `schema_only`).
    #[serde(default)]
    pub content: Content,
    /// Whether `schemas`/`tables` filters limited the dump: a `--force`
    /// restore then replaces only the dumped objects, never the database.
    #[serde(default)]
    pub filtered: bool,
    /// Per table (`schema.table`), the objects a single-table restore brings
    /// back with it that pg_restore does not name after the table.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dependents: BTreeMap<String, Dependents>,
    /// Foreign keys between the dumped tables, so that a table restored on
    /// its own gets back the keys other tables had into it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_keys: Vec<ForeignKey>,
}

/// A foreign key: `table`'s constraint `name` references `references`
/// (both `schema.table`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKey {
    /// The referencing table.
    pub table: String,
    /// The constraint's name.
    pub name: String,
    /// The referenced table.
    pub references: String,
}

/// What a dump holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// Definitions and data.
    #[default]
    Full,
    /// Rows only (`data_only`): restored into existing tables.
    DataOnly,
    /// Definitions only (`schema_only`).
    SchemaOnly,
}

/// A table's standalone indexes and owned sequences (`schema.name`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependents {
    /// Indexes that are not constraints (those come as constraints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<String>,
    /// Sequences owned by its columns (serial, identity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<String>,
}

/// The `postgres` source.
#[derive(Debug)]
pub struct PostgresSource {
    config: PostgresConfig,
    endpoint: Endpoint,
}

impl PostgresSource {
    /// Checks and builds the source; `base` is the configuration file's folder.
    pub fn new(mut config: PostgresConfig, base: &std::path::Path) -> Result<Self, PgError> {
        let endpoint = Endpoint::parse(&config.url)?;
        if let Some(p) = config.password.as_mut() {
            p.rebase(base);
        }
        if let Some(b) = config.bin_dir.as_mut() {
            *b = base.join(&*b);
        }
        if config.schema_only && config.data_only {
            return Err(PgError::Config(
                "`schema_only` and `data_only` exclude each other".into(),
            ));
        }
        let all = config.databases.iter().any(|d| d == "*");
        if all && config.databases.len() > 1 {
            return Err(PgError::Config(
                "`databases = [\"*\"]` means every database; list names or use \"*\" alone".into(),
            ));
        }
        if config.databases.is_empty() && endpoint.database().is_none() {
            return Err(PgError::Config(
                "name a database in `url` (postgres://host/db) or set `databases`".into(),
            ));
        }
        if config.mode == Mode::Csv {
            if config.tables.is_empty() {
                return Err(PgError::Config(
                    "csv mode needs `tables` (the tables to export)".into(),
                ));
            }
            if !config.databases.is_empty() || config.globals == Some(true) {
                return Err(PgError::Config(
                    "csv mode exports from the URL's database; `databases` and `globals` do not apply"
                        .into(),
                ));
            }
            if endpoint.database().is_none() {
                return Err(PgError::Config("csv mode needs a database in `url`".into()));
            }
        } else if config.where_clause.is_some() {
            return Err(PgError::Config("`where` applies to csv mode only".into()));
        }
        Ok(PostgresSource { config, endpoint })
    }

    fn all_databases(&self) -> bool {
        self.config.databases.iter().any(|d| d == "*")
    }

    fn dump_globals(&self) -> bool {
        self.config.globals.unwrap_or_else(|| self.all_databases())
    }

    async fn password(&self) -> Result<Option<String>, PgError> {
        let configured: Option<SecretValue> = match &self.config.password {
            Some(s) => Some(
                s.resolve()
                    .await
                    .map_err(|m| PgError::Config(format!("password: {m}")))?,
            ),
            None => None,
        };
        Ok(self.endpoint.password(configured.as_ref()))
    }

    fn maintenance(&self) -> Endpoint {
        self.endpoint.with_database(&self.config.maintenance_db)
    }
}

/// The driver's registry entry: what the application's one list of
/// drivers holds. It builds a source from the `[sources.NAME]` table (as
/// JSON, `type` taken out), naming the key of any error:
///
/// ```
/// use respaldo_core::registry::BuildContext;
/// let ctx = BuildContext { base: std::path::Path::new("/srv/app"), local_repository: None };
/// let table = serde_json::json!({"url": "postgres://backup@localhost:5432/shop", "password": {"env": "PGPASSWORD"}});
/// let source = (respaldo_source_postgres::DRIVER.build)(table, &ctx).unwrap();
/// assert_eq!(source.kind(), "postgres");
///
/// let bad = serde_json::json!({"no_such_key": 1});
/// let err = (respaldo_source_postgres::DRIVER.build)(bad, &ctx).err().unwrap();
/// assert!(err.to_string().contains("no_such_key"), "{err}");
/// ```
pub const DRIVER: respaldo_core::registry::Driver = respaldo_core::registry::Driver {
    kind: "postgres",
    build: |value, cx| respaldo_core::registry::build_with(value, |c| PostgresSource::new(c, cx.base)),
    example: "type = \"postgres\"\nurl = \"postgres://backup@localhost:5432/shop\"\npassword = { env = \"PGPASSWORD\" }\n",
};

#[async_trait]
impl Source for PostgresSource {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn check(&self) -> Result<(), BoxError> {
        let password = self.password().await?;
        let ep = match self.endpoint.database() {
            Some(_) if !self.all_databases() => self.endpoint.clone(),
            _ => self.maintenance(),
        };
        let client = ep.connect(password.as_deref()).await?;
        if self.config.mode == Mode::Dump {
            let server = backup::server_major(&client, &ep).await?;
            let tools = tools::Tools::find(self.config.bin_dir.as_deref())?;
            tools.check_version(server, &ep.display()).await?;
        }
        Ok(())
    }

    async fn backup(&self, ctx: &mut BackupContext) -> Result<(), BoxError> {
        match self.config.mode {
            Mode::Dump => self.backup_dump(ctx).await?,
            Mode::Csv => self.backup_csv(ctx).await?,
        }
        Ok(())
    }

    async fn plan(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestorePlan, BoxError> {
        Ok(self.plan_snapshot(ctx, target).await?)
    }

    async fn restore(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestoreReport, BoxError> {
        Ok(self.restore_snapshot(ctx, target).await?)
    }

    /// A full, unfiltered dump of the target databases that exist: what a
    /// `--force` restore may replace (a data-only or filtered backup does not
    /// hold all of it). csv mode: the same rows the restore deletes.
    async fn safety_backup(
        &self,
        ctx: &mut BackupContext,
        plan: &RestorePlan,
    ) -> Result<(), BoxError> {
        if self.config.mode == Mode::Csv {
            return self.backup(ctx).await;
        }
        let dbs: Vec<String> = plan
            .items
            .iter()
            .filter(|i| i.overwrites_data())
            .filter_map(|i| i.what.strip_prefix("database ").map(str::to_string))
            .collect();
        if dbs.is_empty() {
            return Ok(());
        }
        let config = PostgresConfig {
            databases: dbs,
            globals: Some(false),
            format: Format::Custom,
            schema_only: false,
            data_only: false,
            schemas: Vec::new(),
            exclude_schemas: Vec::new(),
            tables: Vec::new(),
            exclude_tables: Vec::new(),
            ..self.config.clone()
        };
        let whole = PostgresSource {
            config,
            endpoint: self.endpoint.clone(),
        };
        Ok(whole.backup_dump(ctx).await?)
    }

    async fn test_restore(&self, ctx: &RestoreContext) -> Result<RestoreReport, BoxError> {
        match self.test_restore_snapshot(ctx).await {
            Err(PgError::NotTestable(why)) => Err(respaldo_core::Error::NotTestable(why).into()),
            r => Ok(r?),
        }
    }
}
