//! # respaldo-source-mysql
//!
//! The `mysql` source, for MariaDB and MySQL: each database dumped by
//! `mariadb-dump` (or `mysqldump`) in one consistent transaction
//! (`--single-transaction`, with routines, triggers and events; BLOBs as
//! hex), streamed straight into the repository. The rows of every table
//! are counted from the dump stream itself, so the counts describe exactly
//! the data dumped; every restore is checked against them. Accounts and
//! their grants are dumped too when asked (`users`, MariaDB's
//! `--system=users`).
//!
//! Restores go through the client, streamed from the repository: into the
//! configured database (replacing it only with `--force`, after the safety
//! snapshot), into another database or server (`--target
//! mysql://host/newdb`), only some tables (`--table`, with their
//! definitions, indexes, constraints and triggers; the rest of the database
//! untouched), or only the definitions (`--schema-only`). `test-restore`
//! loads each database into a scratch database on the same server, checks
//! the rows and drops it.
//!
//! ```toml
//! [sources.shop]
//! type = "mysql"
//! url = "mysql://backup@localhost:3306/shop"
//! password = { env = "SHOP_DB_PASSWORD" }
//! ```
#![deny(missing_docs)]

mod backup;
mod config;
mod conn;
mod dump;
mod error;
mod record;
mod restore;
mod source;
mod test_restore;
mod users;

pub use config::{MysqlConfig, Tls};
pub use conn::Endpoint;
pub use error::MysqlError;
pub use record::{DatabaseRecord, UsersRecord};
pub use source::MysqlSource;

/// The driver's registry entry: what the application's one list of
/// drivers holds. It builds a source from the `[sources.NAME]` table (as
/// JSON, `type` taken out), naming the key of any error:
///
/// ```
/// use respaldo_core::registry::BuildContext;
/// let ctx = BuildContext { base: std::path::Path::new("/srv/app"), local_repository: None };
/// let table = serde_json::json!({"url": "mysql://backup@localhost:3306/shop", "password": {"env": "MYSQL_PASSWORD"}});
/// let source = (respaldo_source_mysql::DRIVER.build)(table, &ctx).unwrap();
/// assert_eq!(source.kind(), "mysql");
///
/// let bad = serde_json::json!({"url": "mysql://h/db", "no_such_key": 1});
/// let err = (respaldo_source_mysql::DRIVER.build)(bad, &ctx).err().unwrap();
/// assert!(err.to_string().contains("no_such_key"), "{err}");
/// ```
pub const DRIVER: respaldo_core::registry::Driver = respaldo_core::registry::Driver {
    kind: "mysql",
    build: |value, cx| respaldo_core::registry::build_with(value, |c| MysqlSource::new(c, cx.base)),
    example: "type = \"mysql\"\nurl = \"mysql://backup@localhost:3306/shop\"\npassword = { env = \"MYSQL_PASSWORD\" }\n",
    inventory: respaldo_core::inventory::database_rows,
};
