//! Restore: plan first (which recorded database goes where, the state of
//! each target, and what the restore does to it), then load each dump
//! through the client — whole, only some tables (with their definitions
//! and triggers), or definitions only — and check every restored table's
//! rows against the counts the backup recorded.
//!
//! | target state          | whole database            | `--table`                      |
//! |-----------------------|---------------------------|--------------------------------|
//! | absent                | created, loaded           | database created, tables loaded|
//! | empty                 | loaded                    | tables loaded                  |
//! | holds data            | refused; `--force`: safety snapshot, dropped, recreated, loaded | refused when a chosen table holds rows; `--force`: safety snapshot, those tables replaced, the rest untouched |

use std::collections::{BTreeMap, BTreeSet};

use respaldo_core::kit::process::{feed_stdin, feed_stdin_filtered, StreamFilter};
use respaldo_core::source::{
    PlanAction, PlanItem, RestoreContext, RestoreReport, RestoreTarget, SelectionPart, TargetState,
};
use tokio::io::AsyncReadExt;

use crate::conn::{ident, literal, Client, Endpoint};
use crate::dump::{DumpReader, Keep};
use crate::record::{DatabaseRecord, UsersRecord};
use crate::{users, MysqlError, MysqlSource};

/// The plan item of the accounts.
pub(crate) const USERS_ITEM: &str = "users and grants";

/// The database a plan item (`database NAME` or `tables … of database NAME`) is about.
pub(crate) fn database_of_item(what: &str) -> Option<String> {
    what.strip_prefix("database ")
        .map(str::to_string)
        .or_else(|| what.split_once(" of database ").map(|(_, d)| d.to_string()))
}

/// What happens to a target database before its dump is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prepare {
    /// It is created.
    Create,
    /// It is dropped and created again (`--force`).
    Recreate,
    /// It is used as it is.
    Keep,
}

/// One recorded database and where it goes.
#[derive(Debug)]
pub(crate) struct Step {
    pub record: DatabaseRecord,
    pub target: Client,
    pub db: String,
    pub prepare: Prepare,
    pub keep: Keep,
    pub item: PlanItem,
}

/// The accounts and where they go.
#[derive(Debug)]
pub(crate) struct UsersStep {
    pub record: UsersRecord,
    pub target: Client,
    pub replace: Vec<String>,
    pub item: PlanItem,
}

/// Everything a restore does.
#[derive(Debug)]
pub(crate) struct Steps {
    pub databases: Vec<Step>,
    pub users: Option<UsersStep>,
}

impl Steps {
    /// The plan items, databases first.
    pub fn items(&self) -> Vec<PlanItem> {
        self.databases
            .iter()
            .map(|s| s.item.clone())
            .chain(self.users.iter().map(|u| u.item.clone()))
            .collect()
    }
}

fn metadata<T: serde::de::DeserializeOwned>(
    ctx: &RestoreContext,
    key: &str,
) -> Result<Option<T>, MysqlError> {
    ctx.entry
        .metadata
        .get(key)
        .cloned()
        .map(|v| {
            serde_json::from_value(v).map_err(|e| {
                MysqlError::Config(format!(
                    "snapshot {}: unreadable `{key}` record: {e}",
                    ctx.snapshot_id.short()
                ))
            })
        })
        .transpose()
}

/// The databases a snapshot recorded.
pub(crate) fn records(
    ctx: &RestoreContext,
) -> Result<BTreeMap<String, DatabaseRecord>, MysqlError> {
    metadata(ctx, "databases")?.ok_or_else(|| {
        MysqlError::Config(format!(
            "snapshot {} has no database list for `{}`",
            ctx.snapshot_id.short(),
            ctx.source_name
        ))
    })
}

/// `SELECT COUNT(*)` of every table in `tables` that exists in `db`.
pub(crate) async fn count_rows(
    client: &Client,
    db: &str,
    tables: &[&String],
) -> Result<BTreeMap<String, u64>, MysqlError> {
    let existing: BTreeSet<String> = client
        .query(
            "listing tables",
            None,
            &format!(
                "SELECT TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = {} AND TABLE_TYPE = 'BASE TABLE'",
                literal(db)
            ),
        )
        .await?
        .into_iter()
        .flatten()
        .collect();
    let present: Vec<&&String> = tables.iter().filter(|t| existing.contains(**t)).collect();
    let mut out = BTreeMap::new();
    for batch in present.chunks(200) {
        let sql = batch
            .iter()
            .map(|t| format!("SELECT {}, COUNT(*) FROM {}", literal(t), ident(t)))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        for r in client.query("counting rows", Some(db), &sql).await? {
            out.insert(r[0].clone(), r[1].parse().unwrap_or(0));
        }
    }
    Ok(out)
}

/// How many objects `db` holds (tables, views, routines, events), or
/// `None` when it does not exist.
async fn objects(client: &Client, db: &str) -> Result<Option<u64>, MysqlError> {
    let d = literal(db);
    let rows = client
        .query(
            "looking up the target database",
            None,
            &format!(
                "SELECT (SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {d}), \
                 (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {d}) + \
                 (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {d}) + \
                 (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {d})"
            ),
        )
        .await?;
    let r = rows.first().cloned().unwrap_or_default();
    if r.first().map(String::as_str) != Some("1") {
        return Ok(None);
    }
    Ok(Some(r.get(1).and_then(|n| n.parse().ok()).unwrap_or(0)))
}

/// The accounts of `wanted` that exist on the server.
async fn existing_accounts(client: &Client, wanted: &[String]) -> Result<Vec<String>, MysqlError> {
    let all: BTreeSet<String> = client
        .query(
            "listing accounts",
            None,
            "SELECT CONCAT('`', REPLACE(User, '`', '``'), '`@`', REPLACE(Host, '`', '``'), '`') FROM mysql.user",
        )
        .await?
        .into_iter()
        .flatten()
        .collect();
    Ok(wanted
        .iter()
        .filter(|a| all.contains(*a))
        .cloned()
        .collect())
}

/// `n` with thin thousands separators (`1 000 000`).
fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

impl MysqlSource {
    /// Which database goes where, each planned.
    pub(crate) async fn steps(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<Steps, MysqlError> {
        ctx.refuse_selection(
            "mysql",
            &[
                SelectionPart::Tables,
                SelectionPart::SchemaOnly,
                SelectionPart::Databases,
            ],
        )?;
        let records = records(ctx)?;
        let sel = &ctx.selection;
        let (server, explicit_db) = match target {
            RestoreTarget::Live => (self.endpoint.clone(), None),
            RestoreTarget::Other(t) => {
                let ep = self.endpoint.with_user_of(&Endpoint::parse(t)?);
                let db = ep.database().map(str::to_string);
                (ep, db)
            }
        };
        let base = self.client_at(server.clone()).await?;
        if let Some(bad) = sel.databases.iter().find(|d| !records.contains_key(*d)) {
            return Err(MysqlError::Config(format!(
                "--database `{bad}`: snapshot {} holds no such database (it holds {})",
                ctx.snapshot_id.short(),
                records.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let chosen: Vec<(&String, &DatabaseRecord)> = records
            .iter()
            .filter(|(k, _)| sel.databases.is_empty() || sel.databases.contains(k))
            .collect();
        if explicit_db.is_some() && chosen.len() != 1 {
            return Err(MysqlError::Config(format!(
                "the backup holds {} databases ({}); a --target naming one database needs one: \
                 choose it with --database NAME (or give a server URL without a database to \
                 restore them all under their own names)",
                chosen.len(),
                chosen
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut databases = Vec::new();
        for (src, rec) in chosen {
            let db = explicit_db.clone().unwrap_or_else(|| src.clone());
            let client = base.at(server.with_database(&db));
            databases.push(self.decide(ctx, src, rec, client, db).await?);
        }
        let whole = sel.tables.is_empty() && sel.databases.is_empty() && !sel.schema_only;
        let users = match metadata::<UsersRecord>(ctx, "users")? {
            Some(u) if whole && explicit_db.is_none() => {
                let existing = existing_accounts(&base, &u.accounts).await?;
                let state = if existing.is_empty() {
                    TargetState::Absent
                } else {
                    TargetState::Holds(format!(
                        "{} of its {} accounts exist: {}",
                        existing.len(),
                        u.accounts.len(),
                        existing.join(", ")
                    ))
                };
                let item = PlanItem::decide(USERS_ITEM, server.server(), state, ctx.force);
                Some(UsersStep {
                    record: u,
                    target: base.clone(),
                    replace: existing,
                    item,
                })
            }
            _ => None,
        };
        Ok(Steps { databases, users })
    }

    /// One database's state and what the restore does to it.
    async fn decide(
        &self,
        ctx: &RestoreContext,
        src: &str,
        rec: &DatabaseRecord,
        client: Client,
        db: String,
    ) -> Result<Step, MysqlError> {
        let sel = &ctx.selection;
        let target = client.endpoint.display();
        let objects = objects(&client, &db).await?;
        let mut keep = Keep {
            tables: None,
            schema_only: sel.schema_only,
        };
        if sel.tables.is_empty() {
            let state = match objects {
                None => TargetState::Absent,
                Some(0) => TargetState::Empty,
                Some(n) => TargetState::Holds(format!("{n} tables, views, routines or events")),
            };
            let what = format!("database {db}");
            let definitions_only = sel.schema_only || rec.schema_only;
            let item = match state {
                TargetState::Holds(_) if definitions_only && ctx.force => PlanItem::new(
                    what,
                    target,
                    state,
                    PlanAction::Refuse(
                        "restoring definitions only over a database that holds data would lose \
                         its rows; restore into a new or empty database with --target"
                            .into(),
                    ),
                ),
                state => PlanItem::decide(what, target, state, ctx.force),
            };
            let prepare = match item.action {
                PlanAction::Create => Prepare::Create,
                PlanAction::Overwrite => Prepare::Recreate,
                _ => Prepare::Keep,
            };
            return Ok(Step {
                record: rec.clone(),
                target: client,
                db,
                prepare,
                keep,
                item,
            });
        }
        let mut tables = BTreeSet::new();
        for t in &sel.tables {
            let name = t.strip_prefix(&format!("{src}.")).unwrap_or(t).to_string();
            if !rec.rows.contains_key(&name) {
                return Err(MysqlError::Config(format!(
                    "--table `{t}`: database `{src}` of snapshot {} has no such table (it has {})",
                    ctx.snapshot_id.short(),
                    rec.rows.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            tables.insert(name);
        }
        let what = format!(
            "tables {} of database {db}",
            tables.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        let (state, prepare) = match objects {
            None => (TargetState::Absent, Prepare::Create),
            Some(_) => {
                let names: Vec<&String> = tables.iter().collect();
                let held: Vec<String> = count_rows(&client, &db, &names)
                    .await?
                    .into_iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(t, n)| format!("{t}: {} rows", count(n)))
                    .collect();
                let state = if held.is_empty() {
                    TargetState::Empty
                } else {
                    TargetState::Holds(held.join(", "))
                };
                (state, Prepare::Keep)
            }
        };
        let action = match &state {
            TargetState::Absent => PlanAction::Create,
            TargetState::Empty => PlanAction::Partial,
            TargetState::Holds(_) if ctx.force => PlanAction::Partial,
            TargetState::Holds(h) => PlanAction::Refuse(format!(
                "{target} holds rows in the chosen tables ({h}); add --force to replace those \
                 tables (the rest of the database is left as it is), or restore somewhere else \
                 with --target"
            )),
        };
        keep.tables = Some(tables);
        Ok(Step {
            record: rec.clone(),
            target: client,
            db,
            prepare,
            keep,
            item: PlanItem::new(what, target, state, action),
        })
    }

    pub(crate) async fn restore_snapshot(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestoreReport, MysqlError> {
        let steps = self.steps(ctx, target).await?;
        let plan = respaldo_core::source::RestorePlan {
            items: steps.items(),
        };
        if let Some(e) = plan.refused(&ctx.source_name) {
            return Err(e.into());
        }
        let mut report = RestoreReport::default();
        if let Some(u) = &steps.users {
            report.lines.push(restore_users(ctx, u).await?);
        }
        for step in &steps.databases {
            report.lines.push(restore_database(ctx, step).await?);
        }
        Ok(report)
    }
}

/// Prepares the target database, loads the dump (filtered), checks rows.
pub(crate) async fn restore_database(
    ctx: &RestoreContext,
    step: &Step,
) -> Result<String, MysqlError> {
    let c = &step.target;
    let db = ident(&step.db);
    let create = format!(
        "CREATE DATABASE {db} CHARACTER SET {} COLLATE {}",
        step.record.charset, step.record.collation
    );
    match step.prepare {
        Prepare::Create => c
            .query("creating the database", None, &create)
            .await
            .map(drop)?,
        Prepare::Recreate => c
            .query(
                "replacing the database",
                None,
                &format!("DROP DATABASE {db}; {create}"),
            )
            .await
            .map(drop)?,
        Prepare::Keep => {}
    }
    let artifact = ctx.artifact(&step.record.artifact)?.clone();
    let what = format!("{} loading into {}", c.client.name, c.endpoint.display());
    if step.keep == Keep::all() {
        feed_stdin(ctx, &artifact, c.loader(&step.db), &what).await?;
    } else {
        let mut filter = Filter(DumpReader::filter(step.keep.clone()));
        feed_stdin_filtered(ctx, &artifact, c.loader(&step.db), &what, &mut filter).await?;
    }
    check_rows(step).await
}

/// The restored tables' rows against the recorded counts.
async fn check_rows(step: &Step) -> Result<String, MysqlError> {
    let names: Vec<&String> = step
        .record
        .rows
        .keys()
        .filter(|t| step.keep.tables.as_ref().is_none_or(|s| s.contains(*t)))
        .collect();
    let found = count_rows(&step.target, &step.db, &names).await?;
    let no_rows = step.keep.schema_only || step.record.schema_only;
    let mut wrong = Vec::new();
    let mut total = 0;
    for t in &names {
        let want = if no_rows { 0 } else { step.record.rows[*t] };
        match found.get(*t) {
            Some(&n) if n == want => total += n,
            Some(&n) => wrong.push(format!("`{t}` has {n} rows, the backup recorded {want}")),
            None => wrong.push(format!("`{t}` is missing")),
        }
    }
    if !wrong.is_empty() {
        return Err(MysqlError::Mismatch(format!(
            "after restoring into {}: {}",
            step.target.endpoint.display(),
            wrong.join("; ")
        )));
    }
    Ok(format!(
        "{} restored into {}: {} tables, {} rows, row counts match the backup",
        step.item.what,
        step.target.endpoint.display(),
        names.len(),
        count(total)
    ))
}

/// Runs the accounts dump (the server's own accounts left out), dropping
/// the accounts it replaces first.
async fn restore_users(ctx: &RestoreContext, u: &UsersStep) -> Result<String, MysqlError> {
    let artifact = ctx.artifact(&u.record.artifact)?.clone();
    let mut text = Vec::new();
    ctx.open_stream(&artifact)
        .read_to_end(&mut text)
        .await
        .map_err(|e| respaldo_core::Error::io("reading", &u.record.artifact, e))?;
    let script = users::restore_script(&String::from_utf8_lossy(&text), &u.replace);
    let c = &u.target;
    c.query("restoring accounts and grants", None, &script)
        .await?;
    c.query("reloading privileges", None, "FLUSH PRIVILEGES")
        .await?;
    Ok(format!(
        "{USERS_ITEM} restored into {}: {} accounts",
        c.endpoint.server(),
        u.record.accounts.len()
    ))
}

/// The dump filter as the process kit's [`StreamFilter`].
struct Filter(DumpReader);

impl StreamFilter for Filter {
    fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.0.feed(input, out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.0.finish(out)
    }
}
