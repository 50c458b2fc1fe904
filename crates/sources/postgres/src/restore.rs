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
use respaldo_core::kit::process::{feed_stdin, feed_stdin_capture, feed_through};
use respaldo_core::source::SelectionPart;
use respaldo_core::source::{
    PlanAction, PlanItem, RestoreContext, RestorePlan, RestoreReport, RestoreTarget, Selection,
    TargetState,
};
use tokio_postgres::Client;

use crate::backup::{count_rows, has_user_objects, pattern_matches, server_major, user_tables};
use crate::conn::{ident, qualified, query_err};
use crate::toc::{self, Wanted};
use crate::tools::Tools;
use crate::{Content, DatabaseRecord, Endpoint, Format, Mode, PgError, PostgresSource};

/// What happens to a target database.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Prepare {
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

struct Step<'a> {
    source_db: &'a str,
    record: &'a DatabaseRecord,
    target: Endpoint,
    prepare: Prepare,
    item: PlanItem,
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

fn split(k: &str) -> (String, String) {
    let (s, t) = k.split_once('.').unwrap_or(("public", k));
    (s.to_string(), t.to_string())
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

/// Ends every session on `db`.
async fn end_sessions(admin: &Client, admin_ep: &Endpoint, db: &str) -> Result<(), PgError> {
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
async fn drop_database(admin: &Client, admin_ep: &Endpoint, db: &str) -> Result<(), PgError> {
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
fn side_name(db: &str, what: &str) -> String {
    let suffix = format!("__respaldo_{what}_{}", std::process::id());
    let keep = 63usize.saturating_sub(suffix.len());
    let mut base: String = db.to_string();
    while base.len() > keep {
        base.pop();
    }
    format!("{base}{suffix}")
}

impl PostgresSource {
    /// Which database goes where, each planned (see the module docs).
    async fn steps<'a>(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
        records: &'a BTreeMap<String, DatabaseRecord>,
        password: Option<&str>,
    ) -> Result<(Vec<Step<'a>>, Endpoint, bool), PgError> {
        ctx.refuse_selection(
            "postgres",
            &[
                SelectionPart::Tables,
                SelectionPart::Schemas,
                SelectionPart::SchemaOnly,
                SelectionPart::Databases,
            ],
        )?;
        let sel = &ctx.selection;
        let (server, explicit_db): (Endpoint, Option<String>) = match target {
            RestoreTarget::Live => (self.endpoint.clone(), None),
            RestoreTarget::Other(t) => {
                let ep = Endpoint::parse(t)?;
                let db = ep.database();
                (ep, db)
            }
        };
        if let Some(bad) = sel.databases.iter().find(|d| !records.contains_key(*d)) {
            return Err(PgError::Config(format!(
                "--database `{bad}`: snapshot {} holds no such database (it holds {})",
                ctx.snapshot_id.short(),
                records.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let chosen: Vec<(&str, &DatabaseRecord)> = records
            .iter()
            .filter(|(k, _)| sel.databases.is_empty() || sel.databases.contains(k))
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let mapping: Vec<(&str, &DatabaseRecord, String)> = match &explicit_db {
            Some(dst) => {
                if chosen.len() != 1 {
                    return Err(PgError::Config(format!(
                        "the backup holds {} databases ({}); a --target naming one database \
                         needs one: choose it with --database NAME (or give a server URL \
                         without a database to restore them all under their own names)",
                        chosen.len(),
                        chosen
                            .iter()
                            .map(|(k, _)| *k)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                let (src, rec) = chosen[0];
                vec![(src, rec, dst.clone())]
            }
            None => chosen
                .iter()
                .map(|(s, r)| (*s, *r, s.to_string()))
                .collect(),
        };
        if (partial(sel) || sel.schema_only)
            && mapping.iter().any(|(_, r, _)| r.format == Format::Plain)
        {
            return Err(PgError::Config(
                "--table, --schema and --schema-only need a custom-format dump; this backup is plain SQL"
                    .into(),
            ));
        }
        let admin_ep = server.with_database(&self.config.maintenance_db);
        let admin = admin_ep.connect(password).await?;
        let mut steps = Vec::new();
        for (src, rec, dst) in mapping {
            let ep = server.with_database(&dst);
            let exists = admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dst])
                .await
                .map_err(|e| query_err(&admin_ep, "looking up the target database", e))?
                .is_some();
            let client = if exists {
                Some(ep.connect(password).await?)
            } else {
                None
            };
            let (prepare, item) = self.decide(ctx, rec, &ep, client.as_ref()).await?;
            steps.push(Step {
                source_db: src,
                record: rec,
                target: ep,
                prepare,
                item,
            });
        }
        Ok((steps, admin_ep, explicit_db.is_none()))
    }

    /// One database's state and what the restore does to it.
    async fn decide(
        &self,
        ctx: &RestoreContext,
        rec: &DatabaseRecord,
        ep: &Endpoint,
        client: Option<&Client>,
    ) -> Result<(Prepare, PlanItem), PgError> {
        let sel = &ctx.selection;
        let force = ctx.force;
        let db = ep.database().unwrap_or_default();
        let what = format!("database {db}");
        let target = ep.display();
        let refuse = |state: TargetState, why: String| {
            Ok((
                Prepare::UseEmpty,
                PlanItem::new(what.clone(), target.clone(), state, PlanAction::Refuse(why)),
            ))
        };
        let item = |state: TargetState, action: PlanAction| {
            PlanItem::new(what.clone(), target.clone(), state, action)
        };
        // The tables a partial or data-only restore touches.
        let wanted: Vec<String> = rec
            .rows
            .keys()
            .filter(|k| {
                !partial(sel) || {
                    let (s, t) = split(k);
                    selected(sel, &s, &t)
                }
            })
            .cloned()
            .collect();
        if partial(sel) {
            if rec.content == Content::SchemaOnly || wanted.is_empty() {
                return refuse(
                    TargetState::Absent,
                    format!(
                        "{} matches no table of the backup (its tables: {})",
                        sel.tables
                            .iter()
                            .chain(&sel.schemas)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", "),
                        if rec.rows.is_empty() {
                            "none with data".to_string()
                        } else {
                            rec.rows.keys().cloned().collect::<Vec<_>>().join(", ")
                        }
                    ),
                );
            }
            let Some(c) = client else {
                return Ok((
                    Prepare::Create,
                    item(TargetState::Absent, PlanAction::Create),
                ));
            };
            let live: Vec<String> = user_tables(c, ep)
                .await?
                .into_iter()
                .map(|(s, t)| format!("{s}.{t}"))
                .filter(|k| wanted.contains(k))
                .collect();
            if live.is_empty() {
                return Ok((
                    Prepare::AddTables,
                    item(
                        TargetState::Holds("other tables".into()),
                        PlanAction::Create,
                    ),
                ));
            }
            if live.len() != wanted.len() {
                let missing: Vec<&String> = wanted.iter().filter(|w| !live.contains(w)).collect();
                return refuse(
                    TargetState::Holds(format!("{} of the selected tables", live.len())),
                    format!(
                        "{} exist but {} do not; restore them separately",
                        live.join(", "),
                        missing
                            .iter()
                            .map(|m| m.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            if sel.schema_only {
                return refuse(
                    TargetState::Holds(live.join(", ")),
                    "--schema-only would only re-create tables that exist; drop them first, or restore into another database with --target".into(),
                );
            }
            return self
                .reload_decision(c, ep, &wanted, force, true, item)
                .await;
        }
        if rec.content == Content::DataOnly {
            let Some(c) = client else {
                return refuse(
                    TargetState::Absent,
                    format!(
                        "the backup is data only (`data_only = true`): its rows go into existing tables, so {db} must exist with its schema (restore a schema backup first)"
                    ),
                );
            };
            let live: Vec<String> = user_tables(c, ep)
                .await?
                .into_iter()
                .map(|(s, t)| format!("{s}.{t}"))
                .collect();
            let missing: Vec<&String> = wanted.iter().filter(|w| !live.contains(w)).collect();
            if !missing.is_empty() {
                return refuse(
                    TargetState::Holds(format!("{} tables", live.len())),
                    format!(
                        "the backup is data only and needs tables that {db} lacks: {}; create the schema first",
                        missing
                            .iter()
                            .map(|m| m.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            return self
                .reload_decision(c, ep, &wanted, force, false, item)
                .await;
        }
        let Some(c) = client else {
            return Ok((
                Prepare::Create,
                item(TargetState::Absent, PlanAction::Create),
            ));
        };
        if !has_user_objects(c, ep).await? {
            return Ok((
                Prepare::UseEmpty,
                item(TargetState::Empty, PlanAction::Fill),
            ));
        }
        let n = user_tables(c, ep).await?.len();
        let state = TargetState::Holds(format!("{n} tables"));
        if rec.content == Content::SchemaOnly || sel.schema_only {
            return refuse(
                state,
                format!(
                    "{db} holds data and a schema-only restore would lose it; restore into a new database with --target postgres://…/NEWDB"
                ),
            );
        }
        if !force {
            return refuse(
                state,
                format!(
                    "database {target} is not empty ({n} tables); add --force to replace it (a safety snapshot is taken first), or restore into another database with --target"
                ),
            );
        }
        if rec.filtered {
            if rec.format == Format::Plain {
                return refuse(
                    state,
                    "the dump is filtered (`schemas`/`tables`) and plain SQL: it cannot replace only its own objects; restore into a new database with --target".into(),
                );
            }
            return Ok((Prepare::Clean, item(state, PlanAction::Partial)));
        }
        Ok((Prepare::Swap, item(state, PlanAction::Overwrite)))
    }

    /// Existing tables that get the backup's rows: refused without `force`
    /// when they hold rows.
    async fn reload_decision(
        &self,
        c: &Client,
        ep: &Endpoint,
        tables: &[String],
        force: bool,
        partial: bool,
        item: impl Fn(TargetState, PlanAction) -> PlanItem,
    ) -> Result<(Prepare, PlanItem), PgError> {
        let pairs: Vec<(String, String)> = tables.iter().map(|k| split(k)).collect();
        let rows: u64 = count_rows(c, ep, &pairs, None).await?.values().sum();
        let prepare = Prepare::Reload { tables: pairs };
        if rows == 0 {
            return Ok((prepare, item(TargetState::Empty, PlanAction::Fill)));
        }
        let state = TargetState::Holds(format!("{rows} rows in {}", tables.join(", ")));
        if !force {
            let why = format!(
                "{} already has {} ({rows} rows); add --force to replace their rows (a safety snapshot is taken first)",
                ep.display(),
                tables.join(", ")
            );
            return Ok((prepare, item(state, PlanAction::Refuse(why))));
        }
        let action = if partial {
            PlanAction::Partial
        } else {
            PlanAction::Overwrite
        };
        Ok((prepare, item(state, action)))
    }

    pub(crate) async fn plan_snapshot(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestorePlan, PgError> {
        if snapshot_mode(ctx) == Mode::Csv {
            return self.plan_csv(ctx, target).await;
        }
        let records = records(ctx)?;
        let password = self.password().await?;
        let (steps, _, _) = self
            .steps(ctx, target, &records, password.as_deref())
            .await?;
        Ok(RestorePlan {
            items: steps.into_iter().map(|s| s.item).collect(),
        })
    }

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
    async fn restore_globals(
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
    async fn check_counts(
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
    async fn load_whole(
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

    /// The archive's table of contents.
    async fn toc(
        &self,
        ctx: &RestoreContext,
        tools: &Tools,
        step: &Step<'_>,
    ) -> Result<Vec<toc::TocEntry>, PgError> {
        let artifact = ctx.artifact(&step.record.artifact)?;
        let mut cmd = tools.offline("pg_restore")?;
        cmd.arg("--list");
        let out = feed_stdin_capture(ctx, artifact, cmd, "pg_restore --list", 64 << 20).await?;
        Ok(toc::parse(&String::from_utf8_lossy(&out)))
    }

    /// What the selected tables bring with them (see [`Wanted`]).
    async fn wanted(
        &self,
        ctx: &RestoreContext,
        step: &Step<'_>,
        client: &Client,
    ) -> Result<Wanted, PgError> {
        let sel = &ctx.selection;
        let mut w = Wanted::default();
        for k in step.record.rows.keys() {
            let (s, t) = split(k);
            if selected(sel, &s, &t) {
                w.tables.insert(k.clone());
                if let Some(d) = step.record.dependents.get(k) {
                    w.indexes.extend(d.indexes.iter().cloned());
                    w.sequences.extend(d.sequences.iter().cloned());
                }
            }
        }
        let schemas: Vec<String> = client
            .query("SELECT nspname::text FROM pg_namespace", &[])
            .await
            .map_err(|e| query_err(&step.target, "listing schemas", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for t in &w.tables {
            let (s, _) = split(t);
            if !schemas.contains(&s) {
                w.schemas.insert(s);
            }
        }
        Ok(w)
    }

    /// Creates the selected tables (absent in `ep`) with everything that
    /// belongs to them, and their rows, in one transaction; foreign keys of
    /// existing tables into them come back too.
    async fn add_tables(
        &self,
        ctx: &RestoreContext,
        tools: &Tools,
        ep: &Endpoint,
        step: &Step<'_>,
        password: Option<&str>,
    ) -> Result<(), PgError> {
        let client = ep.connect(password).await?;
        let mut wanted = self.wanted(ctx, step, &client).await?;
        let toc = self.toc(ctx, tools, step).await?;
        // Foreign keys of tables that exist here into the restored ones
        // (dropped with them): added back, unless they still exist.
        let live: Vec<String> = user_tables(&client, ep)
            .await?
            .into_iter()
            .map(|(s, t)| format!("{s}.{t}"))
            .collect();
        let present: Vec<String> = client
            .query(
                "SELECT conrelid::regclass::text || ' ' || conname::text FROM pg_constraint WHERE contype = 'f'",
                &[],
            )
            .await
            .map_err(|e| query_err(ep, "listing foreign keys", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for fk in &step.record.foreign_keys {
            let (cs, ct) = split(&fk.table);
            let shown = format!("{} {}", qualified(&cs, &ct), fk.name);
            let shown_plain = format!("{ct} {}", fk.name);
            if wanted.tables.contains(&fk.references)
                && !wanted.tables.contains(&fk.table)
                && live.contains(&fk.table)
                && !present.contains(&shown)
                && !present.contains(&shown_plain)
            {
                wanted
                    .foreign_keys_in
                    .insert(format!("{cs}.{ct} {}", fk.name));
            }
        }
        let list = wanted.list(&toc, true, !ctx.selection.schema_only);
        let dir = tempfile::tempdir().map_err(|e| PgError::Config(format!("temp dir: {e}")))?;
        let file = dir.path().join("list");
        std::fs::write(&file, list).map_err(|e| PgError::Config(format!("temp file: {e}")))?;
        let artifact = ctx.artifact(&step.record.artifact)?;
        let mut cmd = tools.command("pg_restore", ep, password)?;
        cmd.args(["--exit-on-error", "--single-transaction"])
            .arg(format!("--use-list={}", file.display()));
        feed_stdin(
            ctx,
            artifact,
            cmd,
            &format!("pg_restore into {}", ep.display()),
        )
        .await?;
        Ok(())
    }

    /// Existing tables get exactly the backup's rows: in one transaction,
    /// foreign keys of other tables into them are dropped, the tables
    /// emptied, the rows loaded, the foreign keys added back (and so
    /// checked). Any error rolls everything back.
    async fn reload(
        &self,
        ctx: &RestoreContext,
        tools: &Tools,
        ep: &Endpoint,
        step: &Step<'_>,
        tables: &[(String, String)],
        password: Option<&str>,
    ) -> Result<(), PgError> {
        let client = ep.connect(password).await?;
        let names: Vec<String> = tables.iter().map(|(s, t)| qualified(s, t)).collect();
        let rows = client
            .query(
                "SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid) \
                 FROM pg_constraint WHERE contype = 'f' \
                 AND confrelid = ANY($1::text[]::regclass[]) \
                 AND NOT conrelid = ANY($1::text[]::regclass[])",
                &[&names],
            )
            .await
            .map_err(|e| query_err(ep, "listing foreign keys into the tables", e))?;
        let fks: Vec<(String, String, String)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let superuser: bool = client
            .query_one(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(false);
        let mut prologue = String::from("\\set ON_ERROR_STOP 1\nBEGIN;\n");
        if superuser {
            // Triggers (audit tables, …) do not fire for restored rows.
            prologue.push_str("SET LOCAL session_replication_role = replica;\n");
        }
        for (child, name, _) in &fks {
            prologue.push_str(&format!(
                "ALTER TABLE {child} DROP CONSTRAINT {};\n",
                ident(name)
            ));
        }
        prologue.push_str(&format!("TRUNCATE {};\n", names.join(", ")));
        let mut epilogue = String::from("SET LOCAL session_replication_role = DEFAULT;\n");
        if !superuser {
            epilogue.clear();
        }
        for (child, name, def) in &fks {
            epilogue.push_str(&format!(
                "ALTER TABLE {child} ADD CONSTRAINT {} {def};\n",
                ident(name)
            ));
        }
        epilogue.push_str("COMMIT;\n");
        let artifact = ctx.artifact(&step.record.artifact)?;
        let mut restore = tools.offline("pg_restore")?;
        restore.args(["--data-only", "--file=-"]);
        let _list_dir;
        if step.record.content != Content::DataOnly || partial(&ctx.selection) {
            let mut wanted = Wanted::default();
            for (s, t) in tables {
                let k = format!("{s}.{t}");
                if let Some(d) = step.record.dependents.get(&k) {
                    wanted.sequences.extend(d.sequences.iter().cloned());
                }
                wanted.tables.insert(k);
            }
            let toc = self.toc(ctx, tools, step).await?;
            let dir = tempfile::tempdir().map_err(|e| PgError::Config(format!("temp dir: {e}")))?;
            let file = dir.path().join("list");
            std::fs::write(&file, wanted.list(&toc, false, true))
                .map_err(|e| PgError::Config(format!("temp file: {e}")))?;
            restore.arg(format!("--use-list={}", file.display()));
            _list_dir = dir;
        }
        let mut psql = tools.command("psql", ep, password)?;
        psql.args([
            "--no-psqlrc",
            "--quiet",
            "--set=ON_ERROR_STOP=1",
            "--file=-",
        ]);
        feed_through(
            ctx,
            artifact,
            restore,
            psql,
            prologue.into_bytes(),
            epilogue.into_bytes(),
            &format!("reloading {} on {}", names.join(", "), ep.display()),
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn test_restore_snapshot(
        &self,
        ctx: &RestoreContext,
    ) -> Result<RestoreReport, PgError> {
        if snapshot_mode(ctx) == Mode::Csv {
            return Err(PgError::NotTestable(
                "a csv-mode source puts rows back into existing tables; drill it with `restore --target` into a copy of the database".into(),
            ));
        }
        let records = records(ctx)?;
        if records.values().any(|r| r.content == Content::DataOnly) {
            return Err(PgError::NotTestable(
                "a data-only backup loads rows into existing tables; drill it with `restore --target` into a database that has the schema".into(),
            ));
        }
        let password = self.password().await?;
        let tools = Tools::find(self.config.bin_dir.as_deref())?;
        let admin_ep = self.maintenance();
        let admin = admin_ep.connect(password.as_deref()).await?;
        let mut report = RestoreReport::default();
        for (src, rec) in &records {
            let scratch = side_name(
                &format!(
                    "respaldo_test_{}",
                    src.chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                        .take(30)
                        .collect::<String>()
                ),
                "drill",
            );
            let target = self.endpoint.with_database(&scratch);
            let step = Step {
                source_db: src,
                record: rec,
                item: PlanItem::new(
                    format!("database {src}"),
                    target.display(),
                    TargetState::Absent,
                    PlanAction::Create,
                ),
                target,
                prepare: Prepare::Create,
            };
            drop_database(&admin, &admin_ep, &scratch).await?;
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
