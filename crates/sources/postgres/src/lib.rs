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

mod backup;
mod config;
mod conn;
mod csv;
mod error;
mod partial;
mod plan;
mod record;
mod restore;
mod source;
mod test_restore;
mod tls;
mod toc;
mod tools;

pub use config::{Format, Mode, PostgresConfig};
pub use conn::Endpoint;
pub use error::PgError;
pub use record::{Content, DatabaseRecord, Dependents, ForeignKey};
pub use source::PostgresSource;

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
    inventory: record::inventory,
};
