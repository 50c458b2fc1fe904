//! Restores of dump-mode snapshots.
//!
//! Every database is planned before anything changes: its state (absent,
//! empty, holding data) and what the restore does, by what the dump holds:
//!
//! | dump | absent | empty | holds data, `--force` |
//! |---|---|---|---|
//! | full | create | fill | restore beside it, check, swap names |
//! | full, filtered (`schemas`, `tables`) | create | fill | replace the dumped objects only (`--clean --if-exists`, one transaction) |
//! | data only | refuse (the tables must exist) | load | empty and reload every table, one transaction |
//! | schema only, or `--schema-only` | create | fill | refuse (the rows would be lost) |
//! | `--table` / `--schema`, tables absent | create with their definitions, indexes, constraints, sequences, triggers and the foreign keys into them | | |
//! | `--table` / `--schema`, tables exist | | load | empty and reload those tables, one transaction, foreign keys of other tables kept |
//!
//! Without `--force` a target that holds data is refused, naming it. Row
//! counts are checked after every restore.

use std::collections::BTreeMap;
use std::time::Instant;

use respaldo_core::kit::check::compare_counts;
use respaldo_core::kit::process::feed_stdin;
use respaldo_core::source::{
    PlanItem, RestoreContext, RestorePlan, RestoreReport, RestoreTarget, Selection,
};
use tokio_postgres::Client;

use crate::backup::{count_rows, pattern_matches, server_major};
use crate::conn::{ident, query_err};
use crate::tools::Tools;
use crate::{Content, DatabaseRecord, Endpoint, Format, Mode, PgError, PostgresSource};

/// What happens to a target database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Prepare {
    /// It does not exist: create it, then restore.
    Create,
    /// It exists and holds nothing: restore into it.
    UseEmpty,
    /// A full dump over a database that holds data (`--force`): restore into
    /// a new database, check it, then swap the names and drop the old one.
    Swap,
    /// A filtered dump over a database that holds data (`--force`): replace
    /// the dumped objects only, in one transaction.
    Clean,
    /// Existing tables get exactly the backup's rows, in one transaction:
    /// foreign keys of other tables into them are set aside and checked
    /// again at the end.
    Reload {
        /// `(schema, table)`.
        tables: Vec<(String, String)>,
    },
    /// Selected tables that do not exist are created with everything that
    /// belongs to them, then filled.
    AddTables,
}

/// One database's restore: where from, where to, and how.
pub(crate) struct Step<'a> {
    pub(crate) source_db: &'a str,
    pub(crate) record: &'a DatabaseRecord,
    pub(crate) target: Endpoint,
    pub(crate) prepare: Prepare,
    pub(crate) item: PlanItem,
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

pub(crate) fn partial(sel: &Selection) -> bool {
    !sel.tables.is_empty() || !sel.schemas.is_empty()
}

/// Whether `schema.table` is in the selection.
pub(crate) fn selected(sel: &Selection, schema: &str, table: &str) -> bool {
    (sel.schemas.is_empty() || sel.schemas.iter().any(|s| s == schema))
        && (sel.tables.is_empty() || sel.tables.iter().any(|p| pattern_matches(p, schema, table)))
}

pub(crate) fn split(k: &str) -> (String, String) {
    let (s, t) = k.split_once('.').unwrap_or(("public", k));
    (s.to_string(), t.to_string())
}

/// Creates `db` (owned by `owner` when that role exists there).
pub(crate) async fn create_database(
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

/// Ends every session on `db`.
pub(crate) async fn end_sessions(
    admin: &Client,
    admin_ep: &Endpoint,
    db: &str,
) -> Result<(), PgError> {
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .await
        .map_err(|e| query_err(admin_ep, &format!("ending sessions on {db}"), e))?;
    Ok(())
}

/// Ends every session on `db` and drops it.
pub(crate) async fn drop_database(
    admin: &Client,
    admin_ep: &Endpoint,
    db: &str,
) -> Result<(), PgError> {
    end_sessions(admin, admin_ep, db).await?;
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

/// A database name derived from `db` that fits PostgreSQL's 63 bytes.
pub(crate) fn side_name(db: &str, what: &str) -> String {
    let suffix = format!("__respaldo_{what}_{}", std::process::id());
    let keep = 63usize.saturating_sub(suffix.len());
    let mut base: String = db.to_string();
    while base.len() > keep {
        base.pop();
    }
    format!("{base}{suffix}")
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
        let records = records(ctx)?;
        let password = self.password().await?;
        let tools = Tools::find(self.config.bin_dir.as_deref())?;
        let (steps, admin_ep, whole_server) = self
            .steps(ctx, target, &records, password.as_deref())
            .await?;
        let plan = RestorePlan {
            items: steps.iter().map(|s| s.item.clone()).collect(),
        };
        if let Some(e) = plan.refused(&ctx.source_name) {
            return Err(PgError::Refused(e.to_string()));
        }
        let admin = admin_ep.connect(password.as_deref()).await?;
        let mut report = RestoreReport::default();
        let sel = &ctx.selection;
        if whole_server && !partial(sel) && sel.databases.is_empty() {
            if let Some(globals) = ctx.entry.artifact("globals.sql") {
                let line = self
                    .restore_globals(ctx, &tools, &admin, &admin_ep, globals, password.as_deref())
                    .await?;
                report.lines.push(line);
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

    /// Roles and tablespaces: those that do not exist are created; existing
    /// roles keep their attributes and passwords unless `--force`.
    pub(crate) async fn restore_globals(
        &self,
        ctx: &RestoreContext,
        tools: &Tools,
        admin: &Client,
        admin_ep: &Endpoint,
        globals: &respaldo_core::artifact::Artifact,
        password: Option<&str>,
    ) -> Result<String, PgError> {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        ctx.open_stream(globals)
            .read_to_string(&mut text)
            .await
            .map_err(|source| PgError::Read {
                artifact: globals.name.clone(),
                source,
            })?;
        let existing: Vec<String> = admin
            .query("SELECT rolname::text FROM pg_roles", &[])
            .await
            .map_err(|e| query_err(admin_ep, "listing roles", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut kept = 0usize;
        let script: String = text
            .lines()
            .filter(|l| {
                let role = ["CREATE ROLE ", "ALTER ROLE "]
                    .iter()
                    .find_map(|p| l.strip_prefix(p))
                    .map(|r| {
                        let r = r.split([' ', ';']).next().unwrap_or("");
                        r.trim_matches('"').to_string()
                    });
                match role {
                    Some(r) if existing.contains(&r) && !ctx.force => {
                        kept += 1;
                        false
                    }
                    _ => true,
                }
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let dir = tempfile::tempdir().map_err(|e| PgError::Config(format!("temp dir: {e}")))?;
        let file = dir.path().join("globals.sql");
        std::fs::write(&file, script).map_err(|e| PgError::Config(format!("temp file: {e}")))?;
        let mut cmd = tools.command("psql", admin_ep, password)?;
        cmd.args(["--no-psqlrc", "--quiet"])
            .arg("--file")
            .arg(&file);
        respaldo_core::kit::process::run_command(
            cmd,
            &format!("psql (roles) on {}", admin_ep.display()),
        )
        .await?;
        Ok(format!(
            "roles and tablespaces restored on {}{}",
            admin_ep.display(),
            if kept > 0 {
                " (existing roles kept as they are; --force resets them to the backup's)"
            } else {
                ""
            }
        ))
    }

    pub(crate) async fn restore_database(
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
        let sel = &ctx.selection;
        let detail = match &step.prepare {
            Prepare::Create => {
                create_database(admin, admin_ep, &db, &step.record.owner).await?;
                if partial(sel) {
                    self.add_tables(ctx, tools, &step.target, step, password)
                        .await?;
                } else {
                    self.load_whole(ctx, tools, &step.target, step, password, false)
                        .await?;
                }
                "created"
            }
            Prepare::UseEmpty => {
                self.load_whole(ctx, tools, &step.target, step, password, false)
                    .await?;
                "into the empty database"
            }
            Prepare::Clean => {
                self.load_whole(ctx, tools, &step.target, step, password, true)
                    .await?;
                "its dumped objects replaced"
            }
            Prepare::AddTables => {
                self.add_tables(ctx, tools, &step.target, step, password)
                    .await?;
                "tables created"
            }
            Prepare::Reload { tables } => {
                self.reload(ctx, tools, &step.target, step, tables, password)
                    .await?;
                "rows replaced"
            }
            Prepare::Swap => {
                let fresh = side_name(&db, "new");
                let old = side_name(&db, "old");
                let fresh_ep = step.target.with_database(&fresh);
                drop_database(admin, admin_ep, &fresh).await?;
                create_database(admin, admin_ep, &fresh, &step.record.owner).await?;
                let loaded: Result<(), PgError> = async {
                    self.load_whole(ctx, tools, &fresh_ep, step, password, false)
                        .await?;
                    self.check_counts(ctx, step, &fresh_ep, password).await?;
                    Ok(())
                }
                .await;
                if let Err(e) = loaded {
                    let _ = drop_database(admin, admin_ep, &fresh).await;
                    return Err(PgError::Config(format!(
                        "{e}; {db} was not changed (the restore went into {fresh}, now dropped)"
                    )));
                }
                end_sessions(admin, admin_ep, &db).await?;
                admin
                    .batch_execute(&format!(
                        "ALTER DATABASE {} RENAME TO {}",
                        ident(&db),
                        ident(&old)
                    ))
                    .await
                    .map_err(|e| query_err(admin_ep, &format!("renaming {db} aside"), e))?;
                if let Err(e) = admin
                    .batch_execute(&format!(
                        "ALTER DATABASE {} RENAME TO {}",
                        ident(&fresh),
                        ident(&db)
                    ))
                    .await
                {
                    // Put the old one back.
                    let _ = admin
                        .batch_execute(&format!(
                            "ALTER DATABASE {} RENAME TO {}",
                            ident(&old),
                            ident(&db)
                        ))
                        .await;
                    return Err(query_err(admin_ep, &format!("renaming {fresh} to {db}"), e));
                }
                drop_database(admin, admin_ep, &old).await?;
                "restored beside the old one, checked, then swapped in"
            }
        };
        let what = format!(
            "{} restored into {} ({detail}) in {:.1}s",
            step.source_db,
            step.target.display(),
            started.elapsed().as_secs_f64()
        );
        if sel.schema_only || step.record.content == Content::SchemaOnly {
            return Ok(format!("{what}; schema only, row counts not checked"));
        }
        let line = self.check_counts(ctx, step, &step.target, password).await?;
        Ok(format!("{what}; {line}"))
    }

    /// The row counts of the restored tables against the backup's.
    pub(crate) async fn check_counts(
        &self,
        ctx: &RestoreContext,
        step: &Step<'_>,
        ep: &Endpoint,
        password: Option<&str>,
    ) -> Result<String, PgError> {
        let sel = &ctx.selection;
        let client = ep.connect(password).await?;
        let tables: Vec<(String, String)> = step
            .record
            .rows
            .keys()
            .map(|k| split(k))
            .filter(|(s, t)| selected(sel, s, t))
            .collect();
        let restored = count_rows(&client, ep, &tables, None).await?;
        let check = compare_counts(
            &step.record.rows,
            &restored,
            |k| {
                let (s, t) = split(k);
                selected(sel, &s, &t)
            },
            false,
        );
        let line = check.line("row", "tables");
        if !check.ok() {
            return Err(PgError::Mismatch(format!(
                "{} restored into {}, but {line}",
                step.source_db,
                ep.display()
            )));
        }
        Ok(line)
    }

    /// The whole dump into `ep` (pg_restore or psql, one transaction); with
    /// `clean`, the dumped objects are dropped first.
    pub(crate) async fn load_whole(
        &self,
        ctx: &RestoreContext,
        tools: &Tools,
        ep: &Endpoint,
        step: &Step<'_>,
        password: Option<&str>,
        clean: bool,
    ) -> Result<(), PgError> {
        let artifact = ctx.artifact(&step.record.artifact)?;
        let sel = &ctx.selection;
        match step.record.format {
            Format::Custom => {
                let mut cmd = tools.command("pg_restore", ep, password)?;
                cmd.args(["--exit-on-error", "--single-transaction"]);
                if sel.schema_only {
                    cmd.arg("--schema-only");
                }
                if clean {
                    cmd.args(["--clean", "--if-exists"]);
                }
                feed_stdin(
                    ctx,
                    artifact,
                    cmd,
                    &format!("pg_restore into {}", ep.display()),
                )
                .await?;
            }
            Format::Plain => {
                let mut cmd = tools.command("psql", ep, password)?;
                cmd.args([
                    "--no-psqlrc",
                    "--quiet",
                    "--set=ON_ERROR_STOP=1",
                    "--single-transaction",
                    "--file=-",
                ]);
                feed_stdin(ctx, artifact, cmd, &format!("psql into {}", ep.display())).await?;
            }
        }
        Ok(())
    }
}
