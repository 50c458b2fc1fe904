//! Restores of dump-mode snapshots: planning (which database goes where,
//! what would be overwritten — decided for every database before anything
//! changes), preparing the target database, pg_restore or psql fed from the
//! repository, and the row-count check.

use std::collections::BTreeMap;
use std::time::Instant;

use respaldo_core::check::compare_counts;
use respaldo_core::process::feed_stdin;
use respaldo_core::source::{RestoreContext, RestoreReport, RestoreTarget, Selection};
use tokio_postgres::Client;

use crate::backup::{count_rows, has_user_objects, pattern_matches, server_major, user_tables};
use crate::conn::{ident, qualified, query_err};
use crate::tools::Tools;
use crate::{DatabaseRecord, Endpoint, Format, Mode, PgError, PostgresSource};

/// What happens to a target database before the data goes in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Prepare {
    /// It does not exist: create it.
    Create,
    /// It exists and holds nothing: use it.
    UseEmpty,
    /// It holds data and `--force` was given: drop and recreate it.
    Replace,
    /// Partial restore into an existing database; with `--force`, these
    /// existing tables are emptied and get their rows back (definitions,
    /// and what depends on them, stay).
    Partial {
        /// `(schema, table)` to truncate and reload, data only.
        reload: Vec<(String, String)>,
    },
}

struct Step<'a> {
    source_db: &'a str,
    record: &'a DatabaseRecord,
    target: Endpoint,
    prepare: Prepare,
}

/// The databases recorded in a snapshot's metadata.
pub(crate) fn records(ctx: &RestoreContext) -> Result<BTreeMap<String, DatabaseRecord>, PgError> {
    let v = ctx
        .entry
        .metadata
        .get("databases")
        .cloned()
        .ok_or_else(|| {
            PgError::Config(format!(
                "snapshot {} has no database list for `{}`",
                ctx.snapshot_id.short(),
                ctx.source_name
            ))
        })?;
    serde_json::from_value(v).map_err(|e| {
        PgError::Config(format!(
            "snapshot {}: unreadable database list: {e}",
            ctx.snapshot_id.short()
        ))
    })
}

pub(crate) fn snapshot_mode(ctx: &RestoreContext) -> Mode {
    match ctx.entry.metadata.get("mode").and_then(|m| m.as_str()) {
        Some("csv") => Mode::Csv,
        _ => Mode::Dump,
    }
}

fn partial(sel: &Selection) -> bool {
    !sel.tables.is_empty() || !sel.schemas.is_empty()
}

/// Whether `schema.table` is in the selection.
fn selected(sel: &Selection, schema: &str, table: &str) -> bool {
    (sel.schemas.is_empty() || sel.schemas.iter().any(|s| s == schema))
        && (sel.tables.is_empty() || sel.tables.iter().any(|p| pattern_matches(p, schema, table)))
}

/// Creates `db` (owned by `owner` when that role exists there).
async fn create_database(
    admin: &Client,
    admin_ep: &Endpoint,
    db: &str,
    owner: &str,
) -> Result<(), PgError> {
    let owner_exists = admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&owner])
        .await
        .map_err(|e| query_err(admin_ep, "looking up the owner role", e))?
        .is_some();
    let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", ident(db));
    if owner_exists && !owner.is_empty() {
        sql.push_str(&format!(" OWNER {}", ident(owner)));
    }
    admin
        .batch_execute(&sql)
        .await
        .map_err(|e| query_err(admin_ep, &format!("creating database {db}"), e))
}

/// Ends every session on `db` and drops it.
async fn drop_database(admin: &Client, admin_ep: &Endpoint, db: &str) -> Result<(), PgError> {
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .await
        .map_err(|e| query_err(admin_ep, &format!("ending sessions on {db}"), e))?;
    let force = if server_major(admin, admin_ep).await? >= 13 {
        " WITH (FORCE)"
    } else {
        ""
    };
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {}{force}", ident(db)))
        .await
        .map_err(|e| query_err(admin_ep, &format!("dropping database {db}"), e))
}

impl PostgresSource {
    pub(crate) async fn restore_snapshot(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestoreReport, PgError> {
        if snapshot_mode(ctx) == Mode::Csv {
            return self.restore_csv(ctx, target).await;
        }
        ctx.refuse_selection("postgres", &["--table", "--schema", "--schema-only"])?;
        let records = records(ctx)?;
        let password = self.password().await?;
        let tools = Tools::find(self.config.bin_dir.as_deref())?;
        // Which database goes where.
        let (server, explicit_db): (Endpoint, Option<String>) = match target {
            RestoreTarget::Live => (self.endpoint.clone(), None),
            RestoreTarget::Other(t) => {
                let ep = Endpoint::parse(t)?;
                let db = ep.database();
                (ep, db)
            }
        };
        let mapping: Vec<(&str, &DatabaseRecord, String)> = match &explicit_db {
            Some(dst) => {
                if records.len() != 1 {
                    return Err(PgError::Config(format!(
                        "the backup holds {} databases ({}); a --target naming one database \
                         needs a single-database backup (give a server URL without a database \
                         to restore them all under their own names)",
                        records.len(),
                        records.keys().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
                let (src, rec) = records.iter().next().expect("one");
                vec![(src.as_str(), rec, dst.clone())]
            }
            None => records
                .iter()
                .map(|(s, r)| (s.as_str(), r, s.clone()))
                .collect(),
        };
        let sel = &ctx.selection;
        if (partial(sel) || sel.schema_only)
            && mapping.iter().any(|(_, r, _)| r.format == Format::Plain)
        {
            return Err(PgError::Config(
                "--table, --schema and --schema-only need a custom-format dump; this backup is plain SQL"
                    .into(),
            ));
        }
        // Decide for every database before changing anything.
        let admin_ep = server.with_database(&self.config.maintenance_db);
        let admin = admin_ep.connect(password.as_deref()).await?;
        let mut steps = Vec::new();
        let mut refusals = Vec::new();
        for (src, rec, dst) in mapping {
            let ep = server.with_database(&dst);
            let exists = admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dst])
                .await
                .map_err(|e| query_err(&admin_ep, "looking up the target database", e))?
                .is_some();
            let prepare = if !exists {
                Prepare::Create
            } else {
                let client = ep.connect(password.as_deref()).await?;
                if partial(sel) {
                    let clash: Vec<(String, String)> = user_tables(&client, &ep)
                        .await?
                        .into_iter()
                        .filter(|(s, t)| selected(sel, s, t))
                        .collect();
                    let names: Vec<String> =
                        clash.iter().map(|(s, t)| format!("{s}.{t}")).collect();
                    let missing: Vec<&String> = rec
                        .rows
                        .keys()
                        .filter(|k| {
                            k.split_once('.').is_some_and(|(s, t)| selected(sel, s, t))
                                && !names.contains(k)
                        })
                        .collect();
                    if !clash.is_empty() && !ctx.force {
                        refusals.push(format!(
                            "{} already has {}; use --force to replace their rows",
                            ep.display(),
                            names.join(", ")
                        ));
                    } else if !clash.is_empty() && !missing.is_empty() {
                        refusals.push(format!(
                            "on {}, {} exist but {} do not; restore them separately",
                            ep.display(),
                            names.join(", "),
                            missing
                                .iter()
                                .map(|m| m.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    Prepare::Partial { reload: clash }
                } else if has_user_objects(&client, &ep).await? {
                    if !ctx.force {
                        refusals.push(format!(
                            "database {} is not empty; use --force to replace it \
                             (a safety snapshot is taken first), or --target another database",
                            ep.display()
                        ));
                    }
                    Prepare::Replace
                } else {
                    Prepare::UseEmpty
                }
            };
            steps.push(Step {
                source_db: src,
                record: rec,
                target: ep,
                prepare,
            });
        }
        if !refusals.is_empty() {
            return Err(PgError::Refused(format!(
                "nothing was restored: {}",
                refusals.join("; ")
            )));
        }
        let mut report = RestoreReport::default();
        if explicit_db.is_none() && !partial(sel) {
            if let Some(globals) = ctx.entry.artifact("globals.sql") {
                let mut cmd = tools.command("psql", &admin_ep, password.as_deref())?;
                cmd.args(["--no-psqlrc", "--quiet"]);
                feed_stdin(
                    ctx,
                    globals,
                    cmd,
                    &format!("psql (roles) on {}", admin_ep.display()),
                )
                .await?;
                report.lines.push(format!(
                    "roles and tablespaces restored on {} (existing ones kept)",
                    admin_ep.display()
                ));
            }
        }
        for step in &steps {
            let line = self
                .restore_database(ctx, &tools, &admin, &admin_ep, step, password.as_deref())
                .await?;
            report.lines.push(line);
        }
        Ok(report)
    }

    async fn restore_database(
        &self,
        ctx: &RestoreContext,
        tools: &Tools,
        admin: &Client,
        admin_ep: &Endpoint,
        step: &Step<'_>,
        password: Option<&str>,
    ) -> Result<String, PgError> {
        let started = Instant::now();
        let db = step.target.database().expect("targets name a database");
        match &step.prepare {
            Prepare::Create => create_database(admin, admin_ep, &db, &step.record.owner).await?,
            Prepare::Replace => {
                drop_database(admin, admin_ep, &db).await?;
                create_database(admin, admin_ep, &db, &step.record.owner).await?;
            }
            Prepare::Partial { reload } if !reload.is_empty() => {
                let list: Vec<String> = reload.iter().map(|(s, t)| qualified(s, t)).collect();
                let client = step.target.connect(password).await?;
                client
                    .batch_execute(&format!("TRUNCATE {}", list.join(", ")))
                    .await
                    .map_err(|e| query_err(&step.target, "emptying the tables to replace", e))?;
            }
            Prepare::UseEmpty | Prepare::Partial { .. } => {}
        }
        let data_only = matches!(&step.prepare, Prepare::Partial { reload } if !reload.is_empty());
        let artifact = ctx.artifact(&step.record.artifact)?;
        let sel = &ctx.selection;
        let cmd = match step.record.format {
            Format::Custom => {
                let mut cmd = tools.command("pg_restore", &step.target, password)?;
                cmd.args(["--exit-on-error", "--single-transaction"]);
                if sel.schema_only {
                    cmd.arg("--schema-only");
                }
                let mut schemas = sel.schemas.clone();
                for t in &sel.tables {
                    match t.split_once('.') {
                        Some((s, name)) => {
                            schemas.push(s.to_string());
                            cmd.arg(format!("--table={name}"));
                        }
                        None => {
                            cmd.arg(format!("--table={t}"));
                        }
                    }
                }
                schemas.sort();
                schemas.dedup();
                for s in schemas {
                    cmd.arg(format!("--schema={s}"));
                }
                if data_only {
                    cmd.arg("--data-only");
                }
                cmd
            }
            Format::Plain => {
                let mut cmd = tools.command("psql", &step.target, password)?;
                cmd.args([
                    "--no-psqlrc",
                    "--quiet",
                    "--set=ON_ERROR_STOP=1",
                    "--single-transaction",
                ]);
                cmd
            }
        };
        let program = match step.record.format {
            Format::Custom => "pg_restore",
            Format::Plain => "psql",
        };
        feed_stdin(
            ctx,
            artifact,
            cmd,
            &format!("{program} into {}", step.target.display()),
        )
        .await?;
        let what = format!(
            "{} restored into {} in {:.1}s",
            step.source_db,
            step.target.display(),
            started.elapsed().as_secs_f64()
        );
        if sel.schema_only {
            return Ok(format!("{what}; schema only, row counts not checked"));
        }
        let client = step.target.connect(password).await?;
        let tables: Vec<(String, String)> = step
            .record
            .rows
            .keys()
            .filter_map(|k| k.split_once('.'))
            .filter(|(s, t)| selected(sel, s, t))
            .map(|(s, t)| (s.to_string(), t.to_string()))
            .collect();
        let restored = count_rows(&client, &step.target, &tables, None).await?;
        let check = compare_counts(
            &step.record.rows,
            &restored,
            |k| k.split_once('.').is_some_and(|(s, t)| selected(sel, s, t)),
            false,
        );
        let line = check.line("row", "tables");
        if !check.ok() {
            return Err(PgError::Mismatch(format!("{what}, but {line}")));
        }
        Ok(format!("{what}; {line}"))
    }

    pub(crate) async fn test_restore_snapshot(
        &self,
        ctx: &RestoreContext,
    ) -> Result<RestoreReport, PgError> {
        if snapshot_mode(ctx) == Mode::Csv {
            return Err(PgError::Config(
                "test-restore of a csv-mode source is not supported: its rows go back into existing tables"
                    .into(),
            ));
        }
        let records = records(ctx)?;
        let password = self.password().await?;
        let tools = Tools::find(self.config.bin_dir.as_deref())?;
        let admin_ep = self.maintenance();
        let admin = admin_ep.connect(password.as_deref()).await?;
        let mut report = RestoreReport::default();
        for (src, rec) in &records {
            let scratch = format!(
                "respaldo_test_{}_{}",
                src.chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .take(30)
                    .collect::<String>(),
                std::process::id()
            );
            let step = Step {
                source_db: src,
                record: rec,
                target: self.endpoint.with_database(&scratch),
                prepare: Prepare::Replace,
            };
            let result = self
                .restore_database(ctx, &tools, &admin, &admin_ep, &step, password.as_deref())
                .await;
            let dropped = drop_database(&admin, &admin_ep, &scratch).await;
            report.lines.push(result?);
            dropped?;
            report
                .lines
                .push(format!("scratch database {scratch} dropped"));
        }
        Ok(report)
    }
}
