//! Backup: each database dumped by mariadb-dump/mysqldump in one
//! consistent transaction (`--single-transaction`, with routines, triggers
//! and events), streamed into the repository while its rows are counted
//! from the stream; then, when asked, the accounts and their grants.

use std::collections::BTreeMap;

use respaldo_core::kit::process::store_stdout_observed;
use respaldo_core::source::BackupContext;

use crate::conn::{literal, Client};
use crate::dump::DumpReader;
use crate::record::{DatabaseRecord, UsersRecord};
use crate::{users, MysqlError, MysqlSource};

/// Databases that belong to the server, never dumped as data.
pub(crate) const SYSTEM_DATABASES: &str =
    "'mysql', 'sys', 'information_schema', 'performance_schema'";

/// The largest accounts dump read into memory (it holds statements, not rows).
const USERS_LIMIT: usize = 16 << 20;

/// What one backup dumps.
#[derive(Debug, Clone)]
pub(crate) struct DumpPlan {
    pub databases: Vec<String>,
    pub users: bool,
    pub schema_only: bool,
}

impl MysqlSource {
    /// The databases the configuration names (every user database for `*`).
    pub(crate) async fn database_names(&self, client: &Client) -> Result<Vec<String>, MysqlError> {
        if self.all_databases() {
            let rows = client
                .query(
                    "listing databases",
                    None,
                    &format!(
                        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA \
                         WHERE SCHEMA_NAME NOT IN ({SYSTEM_DATABASES}) ORDER BY 1"
                    ),
                )
                .await?;
            return Ok(rows
                .into_iter()
                .filter_map(|r| r.into_iter().next())
                .collect());
        }
        if self.config.databases.is_empty() {
            return Ok(self
                .endpoint
                .database()
                .map(str::to_string)
                .into_iter()
                .collect());
        }
        Ok(self.config.databases.clone())
    }

    /// Dumps what `plan` names into `ctx`, recording each database and the
    /// accounts.
    pub(crate) async fn dump(
        &self,
        ctx: &mut BackupContext,
        client: &Client,
        plan: &DumpPlan,
    ) -> Result<(), MysqlError> {
        let server = client.check_version().await?;
        ctx.set_metadata("server_version", server);
        let mut records = BTreeMap::new();
        for db in &plan.databases {
            let rec = dump_database(ctx, client, db, plan.schema_only).await?;
            records.insert(db.clone(), rec);
        }
        let value =
            serde_json::to_value(&records).map_err(|e| MysqlError::Config(e.to_string()))?;
        ctx.set_metadata("databases", value);
        if plan.users {
            let rec = dump_users(ctx, client).await?;
            let value =
                serde_json::to_value(&rec).map_err(|e| MysqlError::Config(e.to_string()))?;
            ctx.set_metadata("users", value);
        }
        Ok(())
    }
}

/// Dumps one database as the artifact `DB.sql`.
async fn dump_database(
    ctx: &mut BackupContext,
    client: &Client,
    db: &str,
    schema_only: bool,
) -> Result<DatabaseRecord, MysqlError> {
    let d = literal(db);
    let rows = client
        .query(
            "reading the database's character set and tables",
            None,
            &format!(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME, \
                 (SELECT IFNULL(GROUP_CONCAT(CONCAT(TABLE_NAME, ' (', ENGINE, ')') ORDER BY 1 SEPARATOR ', '), '') \
                  FROM information_schema.TABLES WHERE TABLE_SCHEMA = {d} AND TABLE_TYPE = 'BASE TABLE' \
                  AND ENGINE NOT IN ('InnoDB', 'Aria', 'MEMORY')) \
                 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {d}"
            ),
        )
        .await?;
    let Some([charset, collation, other_engines]) = rows
        .first()
        .filter(|r| r.len() == 3)
        .map(|r| [r[0].clone(), r[1].clone(), r[2].clone()])
    else {
        return Err(MysqlError::Query {
            server: client.endpoint.server(),
            what: format!("dumping database `{db}`"),
            message: "no such database".into(),
        });
    };
    if !other_engines.is_empty() {
        ctx.warn(format!(
            "database `{db}`: {other_engines} not transactional, so the dump is consistent for the other tables only"
        ));
    }
    let mut args: Vec<String> = [
        "--single-transaction",
        "--quick",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--skip-dump-date",
        "--order-by-primary",
        "--default-character-set=utf8mb4",
    ]
    .map(String::from)
    .to_vec();
    if schema_only {
        args.push("--no-data".into());
    }
    args.push(db.to_string());
    let cmd = client.command(&client.dump, &args);
    let artifact = format!("{db}.sql");
    let what = format!(
        "{} of database `{db}` on {}",
        client.dump.name,
        client.endpoint.server()
    );
    let mut scan = DumpReader::scanner();
    let mut none = Vec::new();
    store_stdout_observed(ctx, &artifact, cmd, &what, &mut |b| scan.feed(b, &mut none)).await?;
    scan.finish(&mut none);
    if !scan.completed {
        return Err(MysqlError::Incomplete(db.to_string()));
    }
    for v in &scan.views {
        scan.rows.remove(v);
    }
    Ok(DatabaseRecord {
        artifact,
        rows: scan.rows,
        views: scan.views.into_iter().collect(),
        charset,
        collation,
        schema_only,
    })
}

/// Dumps the accounts and grants as the artifact `users.sql`.
async fn dump_users(ctx: &mut BackupContext, client: &Client) -> Result<UsersRecord, MysqlError> {
    if !client.dump.mariadb {
        return Err(MysqlError::Config(format!(
            "`users = true` needs MariaDB's mariadb-dump (--system=users); {} cannot dump accounts",
            client.dump.name
        )));
    }
    let cmd = client.command(&client.dump, &["--system=users".into()]);
    let what = format!(
        "{} of the accounts on {}",
        client.dump.name,
        client.endpoint.server()
    );
    let mut text = Vec::new();
    let mut too_big = false;
    store_stdout_observed(ctx, "users.sql", cmd, &what, &mut |b| {
        if text.len() + b.len() <= USERS_LIMIT {
            text.extend_from_slice(b);
        } else {
            too_big = true;
        }
    })
    .await?;
    if too_big {
        return Err(MysqlError::Config(format!(
            "the accounts dump is over {} MiB; leave `users` off",
            USERS_LIMIT >> 20
        )));
    }
    Ok(UsersRecord {
        artifact: "users.sql".into(),
        accounts: users::accounts(&String::from_utf8_lossy(&text)),
    })
}
