//! dump mode: pg_dump streamed into the repository inside a snapshot the
//! driver exported, with row counts taken in that same snapshot.

use std::collections::BTreeMap;

use respaldo_core::kit::process::store_stdout;
use respaldo_core::source::BackupContext;
use tokio_postgres::Client;

use crate::conn::{qualified, query_err};
use crate::tools::Tools;
use crate::{
    Content, DatabaseRecord, Dependents, Endpoint, ForeignKey, Format, PgError, PostgresSource,
};

/// Schemas that belong to the server, never counted.
const SYSTEM_SCHEMAS: &str =
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

/// The server's major version (`server_version_num / 10000`).
pub(crate) async fn server_major(client: &Client, ep: &Endpoint) -> Result<u32, PgError> {
    let v: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .map_err(|e| query_err(ep, "reading the server version", e))?
        .get(0);
    Ok(v.parse::<u32>().unwrap_or(0) / 10000)
}

/// Every user table (`r`, including partitions) as `(schema, table)`.
pub(crate) async fn user_tables(
    client: &Client,
    ep: &Endpoint,
) -> Result<Vec<(String, String)>, PgError> {
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'r' AND {SYSTEM_SCHEMAS} \
                 AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                   AND d.objid = c.oid AND d.deptype = 'e') \
                 ORDER BY 1, 2"
            ),
            &[],
        )
        .await
        .map_err(|e| query_err(ep, "listing tables", e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Whether the database holds any user object (relation, function, type or
/// large object) — a restore into it would overwrite or mix data.
pub(crate) async fn has_user_objects(client: &Client, ep: &Endpoint) -> Result<bool, PgError> {
    let row = client
        .query_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE {SYSTEM_SCHEMAS}) \
                 OR EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                   WHERE {SYSTEM_SCHEMAS}) \
                 OR EXISTS (SELECT 1 FROM pg_largeobject_metadata)"
            ),
            &[],
        )
        .await
        .map_err(|e| query_err(ep, "checking whether the database is empty", e))?;
    Ok(row.get(0))
}

/// Each table's standalone indexes and owned sequences, keyed `schema.table`.
pub(crate) async fn dependents(
    client: &Client,
    ep: &Endpoint,
) -> Result<BTreeMap<String, Dependents>, PgError> {
    let mut out: BTreeMap<String, Dependents> = BTreeMap::new();
    let indexes = client
        .query(
            &format!(
                "SELECT n.nspname::text, t.relname::text, i.relname::text FROM pg_index x \
                 JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid \
                 JOIN pg_namespace n ON n.oid = t.relnamespace \
                 WHERE {SYSTEM_SCHEMAS} AND NOT EXISTS \
                   (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)"
            ),
            &[],
        )
        .await
        .map_err(|e| query_err(ep, "listing indexes", e))?;
    for r in indexes {
        let (s, t, i): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        out.entry(format!("{s}.{t}"))
            .or_default()
            .indexes
            .push(format!("{s}.{i}"));
    }
    let seqs = client
        .query(
            &format!(
                "SELECT n.nspname::text, t.relname::text, sn.nspname::text, s.relname::text \
                 FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
                 JOIN pg_namespace sn ON sn.oid = s.relnamespace \
                 JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace n ON n.oid = t.relnamespace \
                 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
                   AND d.deptype IN ('a', 'i') AND {SYSTEM_SCHEMAS}"
            ),
            &[],
        )
        .await
        .map_err(|e| query_err(ep, "listing owned sequences", e))?;
    for r in seqs {
        let (s, t, ss, q): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        out.entry(format!("{s}.{t}"))
            .or_default()
            .sequences
            .push(format!("{ss}.{q}"));
    }
    Ok(out)
}

/// Every foreign key between user tables.
pub(crate) async fn foreign_keys(
    client: &Client,
    ep: &Endpoint,
) -> Result<Vec<ForeignKey>, PgError> {
    let rows = client
        .query(
            "SELECT cn.nspname::text, c.relname::text, k.conname::text, pn.nspname::text, p.relname::text \
             FROM pg_constraint k \
             JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace \
             JOIN pg_class p ON p.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace \
             WHERE k.contype = 'f' ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .map_err(|e| query_err(ep, "listing foreign keys", e))?;
    Ok(rows
        .iter()
        .map(|r| ForeignKey {
            table: format!("{}.{}", r.get::<_, String>(0), r.get::<_, String>(1)),
            name: r.get(2),
            references: format!("{}.{}", r.get::<_, String>(3), r.get::<_, String>(4)),
        })
        .collect())
}

/// `count(*)` of each table, keyed `schema.table`.
pub(crate) async fn count_rows(
    client: &Client,
    ep: &Endpoint,
    tables: &[(String, String)],
    filter: Option<&str>,
) -> Result<BTreeMap<String, u64>, PgError> {
    let mut out = BTreeMap::new();
    for (schema, table) in tables {
        let sql = match filter {
            Some(w) => format!(
                "SELECT count(*) FROM {} WHERE {w}",
                qualified(schema, table)
            ),
            None => format!("SELECT count(*) FROM {}", qualified(schema, table)),
        };
        let n: i64 = client
            .query_one(&sql, &[])
            .await
            .map_err(|e| query_err(ep, &format!("counting rows of {schema}.{table}"), e))?
            .get(0);
        out.insert(format!("{schema}.{table}"), n as u64);
    }
    Ok(out)
}

/// Shell-style match (`*`, `?`) as pg_dump patterns use; a pattern without
/// a dot matches the table name in any schema.
pub(crate) fn pattern_matches(pattern: &str, schema: &str, table: &str) -> bool {
    match pattern.split_once('.') {
        Some((s, t)) => glob(s, schema) && glob(t, table),
        None => glob(pattern, table),
    }
}

fn glob(p: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (p.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

impl PostgresSource {
    /// The databases this run dumps.
    async fn databases(&self, password: Option<&str>) -> Result<Vec<String>, PgError> {
        if !self.all_databases() {
            return Ok(if self.config.databases.is_empty() {
                vec![self.endpoint.database().expect("checked in new")]
            } else {
                self.config.databases.clone()
            });
        }
        let ep = self.maintenance();
        let client = ep.connect(password).await?;
        let rows = client
            .query(
                "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
                &[],
            )
            .await
            .map_err(|e| query_err(&ep, "listing databases", e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Whether a table is in what pg_dump dumps, by the configured filters.
    fn dumps_table(&self, schema: &str, table: &str) -> bool {
        let c = &self.config;
        (c.schemas.is_empty() || c.schemas.iter().any(|p| glob(p, schema)))
            && !c.exclude_schemas.iter().any(|p| glob(p, schema))
            && (c.tables.is_empty() || c.tables.iter().any(|p| pattern_matches(p, schema, table)))
            && !c
                .exclude_tables
                .iter()
                .any(|p| pattern_matches(p, schema, table))
    }

    pub(crate) async fn backup_dump(&self, ctx: &mut BackupContext) -> Result<(), PgError> {
        let password = self.password().await?;
        let tools = Tools::find(self.config.bin_dir.as_deref())?;
        let dbs = self.databases(password.as_deref()).await?;
        let mut records = BTreeMap::new();
        let mut version = String::new();
        for db in &dbs {
            let (rec, v) = self
                .dump_database(ctx, &tools, db, password.as_deref())
                .await?;
            version = v;
            records.insert(db.clone(), rec);
        }
        if self.dump_globals() {
            let ep = self.maintenance();
            let mut cmd = tools.command("pg_dumpall", &ep, password.as_deref())?;
            cmd.arg("--globals-only");
            store_stdout(
                ctx,
                "globals.sql",
                cmd,
                &format!("pg_dumpall of {}", ep.display()),
            )
            .await?;
        }
        let rows: u64 = records.values().flat_map(|r| r.rows.values()).sum();
        ctx.set_metadata("server_version", version);
        ctx.set_metadata("mode", "dump");
        ctx.set_metadata("globals", self.dump_globals());
        ctx.set_metadata("total_rows", rows);
        ctx.set_metadata(
            "databases",
            serde_json::to_value(&records).expect("plain data serializes"),
        );
        Ok(())
    }

    async fn dump_database(
        &self,
        ctx: &mut BackupContext,
        tools: &Tools,
        db: &str,
        password: Option<&str>,
    ) -> Result<(DatabaseRecord, String), PgError> {
        let ep = self.endpoint.with_database(db);
        let client = ep.connect(password).await?;
        let major = server_major(&client, &ep).await?;
        tools.check_version(major, &ep.display()).await?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| query_err(&ep, "starting the snapshot transaction", e))?;
        let row = client
            .query_one(
                "SELECT pg_export_snapshot(), current_setting('server_version'), \
                 pg_database_size(current_database()), \
                 (SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .await
            .map_err(|e| query_err(&ep, "exporting a snapshot", e))?;
        let snapshot: String = row.get(0);
        let version: String = row.get(1);
        let size: i64 = row.get(2);
        let owner: String = row.get(3);
        let tables: Vec<(String, String)> = if self.config.schema_only {
            Vec::new()
        } else {
            user_tables(&client, &ep)
                .await?
                .into_iter()
                .filter(|(s, t)| self.dumps_table(s, t))
                .collect()
        };
        let c = &self.config;
        let (artifact, fmt_args): (String, &[&str]) = match c.format {
            Format::Custom => (format!("{db}.dump"), &["--format=custom", "--compress=0"]),
            Format::Plain => (format!("{db}.sql"), &["--format=plain"]),
        };
        let mut cmd = tools.command("pg_dump", &ep, password)?;
        cmd.args(fmt_args).arg(format!("--snapshot={snapshot}"));
        if c.schema_only {
            cmd.arg("--schema-only");
        }
        if c.data_only {
            cmd.arg("--data-only");
        }
        for (flag, list) in [
            ("--schema", &c.schemas),
            ("--exclude-schema", &c.exclude_schemas),
            ("--table", &c.tables),
            ("--exclude-table", &c.exclude_tables),
        ] {
            for v in list {
                cmd.arg(format!("{flag}={v}"));
            }
        }
        // The dump and the counts run at once, in the same snapshot.
        let what = format!("pg_dump of {}", ep.display());
        let (stored, counted) = tokio::join!(store_stdout(ctx, &artifact, cmd, &what), async {
            let rows = count_rows(&client, &ep, &tables, None).await?;
            let deps = dependents(&client, &ep).await?;
            let fks = foreign_keys(&client, &ep).await?;
            Ok::<_, PgError>((rows, deps, fks))
        });
        stored?;
        let (rows, mut deps, fks) = counted?;
        deps.retain(|k, _| {
            k.split_once('.')
                .is_some_and(|(s, t)| self.dumps_table(s, t))
        });
        let _ = client.batch_execute("COMMIT").await;
        let content = if c.data_only {
            Content::DataOnly
        } else if c.schema_only {
            Content::SchemaOnly
        } else {
            Content::Full
        };
        let filtered = !(c.schemas.is_empty()
            && c.exclude_schemas.is_empty()
            && c.tables.is_empty()
            && c.exclude_tables.is_empty());
        Ok((
            DatabaseRecord {
                artifact,
                format: c.format,
                size_bytes: size.max(0) as u64,
                owner,
                rows,
                content,
                filtered,
                dependents: deps,
                foreign_keys: fks,
            },
            version,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("orders", "public", "orders"));
        assert!(pattern_matches("sales.*", "sales", "orders"));
        assert!(!pattern_matches("sales.*", "public", "orders"));
        assert!(pattern_matches("order?", "x", "orders"));
        assert!(pattern_matches("*log*", "x", "audit_log_2024"));
        assert!(!pattern_matches("log", "x", "logs"));
    }
}
