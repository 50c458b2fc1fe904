//! Planning a restore: which recorded database goes where, what state each
//! target is in, and what the restore will do to it (or why it refuses).

use crate::backup::{count_rows, has_user_objects, user_tables};
use crate::conn::query_err;
use crate::restore::{partial, records, selected, snapshot_mode, split, Prepare, Step};
use crate::{Content, DatabaseRecord, Endpoint, Format, Mode, PgError, PostgresSource};
use respaldo_core::source::SelectionPart;
use respaldo_core::source::{
    PlanAction, PlanItem, RestoreContext, RestorePlan, RestoreTarget, TargetState,
};
use std::collections::BTreeMap;
use tokio_postgres::Client;

impl PostgresSource {
    /// Which database goes where, each planned (see the module docs).
    pub(crate) async fn steps<'a>(
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
    pub(crate) async fn decide(
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
    pub(crate) async fn reload_decision(
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
}
