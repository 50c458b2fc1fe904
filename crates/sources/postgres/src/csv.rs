//! csv mode: chosen tables, filtered by a `WHERE` clause, exported with
//! `COPY … TO STDOUT (FORMAT csv, HEADER)` in one consistent transaction,
//! one artifact per table, and restored with `COPY … FROM STDIN` in one
//! transaction (with `--force`, the matching rows are deleted first).

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::{SinkExt, TryStreamExt};
use respaldo_core::kit::check::compare_counts;
use respaldo_core::source::SelectionPart;
use respaldo_core::source::{
    BackupContext, PlanAction, PlanItem, RestoreContext, RestorePlan, RestoreReport, RestoreTarget,
    TargetState,
};
use tokio::io::AsyncReadExt;
use tokio_postgres::Client;
use tokio_util::io::StreamReader;

use crate::conn::{ident, qualified, query_err};
use crate::{Endpoint, PgError, PostgresSource};

/// `schema.table` or `table` as SQL.
fn table_sql(spec: &str) -> String {
    match spec.split_once('.') {
        Some((s, t)) => qualified(s, t),
        None => ident(spec),
    }
}

fn condition(where_clause: Option<&str>) -> String {
    match where_clause {
        Some(w) => format!(" WHERE {w}"),
        None => String::new(),
    }
}

async fn count(
    client: &Client,
    ep: &Endpoint,
    spec: &str,
    where_clause: Option<&str>,
) -> Result<u64, PgError> {
    let n: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {}{}",
                table_sql(spec),
                condition(where_clause)
            ),
            &[],
        )
        .await
        .map_err(|e| query_err(ep, &format!("counting rows of {spec}"), e))?
        .get(0);
    Ok(n as u64)
}

impl PostgresSource {
    pub(crate) async fn backup_csv(&self, ctx: &mut BackupContext) -> Result<(), PgError> {
        let password = self.password().await?;
        let ep = &self.endpoint;
        let client = ep.connect(password.as_deref()).await?;
        let cond = self.config.where_clause.as_deref();
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| query_err(ep, "starting the export transaction", e))?;
        let mut rows = BTreeMap::new();
        for spec in &self.config.tables {
            rows.insert(spec.clone(), count(&client, ep, spec, cond).await?);
            let sql = format!(
                "COPY (SELECT * FROM {}{}) TO STDOUT WITH (FORMAT csv, HEADER)",
                table_sql(spec),
                condition(cond)
            );
            let stream = client
                .copy_out(&sql)
                .await
                .map_err(|e| query_err(ep, &format!("exporting {spec}"), e))?;
            let reader = StreamReader::new(Box::pin(stream.map_err(std::io::Error::other)));
            ctx.add_stream(&format!("{spec}.csv"), reader).await?;
        }
        let _ = client.batch_execute("COMMIT").await;
        ctx.set_metadata("mode", "csv");
        ctx.set_metadata("database", ep.database().unwrap_or_default());
        ctx.set_metadata("where", cond.map(str::to_string));
        ctx.set_metadata("tables", serde_json::to_value(&rows).expect("plain data"));
        Ok(())
    }

    /// Per table: the rows the restore would replace (those matching the
    /// backup's `where`).
    pub(crate) async fn plan_csv(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestorePlan, PgError> {
        ctx.refuse_selection("postgres (csv mode)", &[SelectionPart::Tables])?;
        let (ep, tables, cond) = self.csv_scope(ctx, target)?;
        let password = self.password().await?;
        let client = ep.connect(password.as_deref()).await?;
        let mut plan = RestorePlan::default();
        for t in &tables {
            let n = count(&client, &ep, t, cond.as_deref()).await?;
            let state = if n == 0 {
                TargetState::Empty
            } else {
                TargetState::Holds(format!("{n} matching rows"))
            };
            let what = format!("table {t}{}", condition(cond.as_deref()));
            let mut item = PlanItem::decide(what, ep.display(), state, ctx.force);
            match &item.action {
                PlanAction::Overwrite => item.action = PlanAction::Partial,
                PlanAction::Refuse(_) => {
                    item.action = PlanAction::Refuse(format!(
                        "{} already has matching rows in {t} ({n}); use --force to replace them",
                        ep.display()
                    ))
                }
                _ => {}
            }
            plan.items.push(item);
        }
        Ok(plan)
    }

    /// The endpoint, the tables (parents first) and the `where` of a csv
    /// restore.
    fn csv_scope(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<(Endpoint, Vec<String>, Option<String>), PgError> {
        let meta = &ctx.entry.metadata;
        let recorded: BTreeMap<String, u64> = meta
            .get("tables")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| PgError::Config("the snapshot has no table list".into()))?;
        let cond = meta
            .get("where")
            .and_then(|w| w.as_str())
            .map(str::to_string);
        let ep = match target {
            RestoreTarget::Live => self.endpoint.clone(),
            RestoreTarget::Other(t) => {
                let ep = Endpoint::parse(t)?;
                if ep.database().is_none() {
                    return Err(PgError::Config(
                        "--target must name a database: postgres://host/db".into(),
                    ));
                }
                ep
            }
        };
        let tables: Vec<String> = ctx
            .entry
            .artifacts
            .iter()
            .filter_map(|a| a.name.strip_suffix(".csv"))
            .filter(|t| recorded.contains_key(*t))
            .filter(|t| {
                ctx.selection.tables.is_empty() || ctx.selection.tables.iter().any(|s| s == t)
            })
            .map(str::to_string)
            .collect();
        if tables.is_empty() {
            return Err(PgError::Config(format!(
                "none of {} is in this backup (it has {})",
                ctx.selection.tables.join(", "),
                recorded.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok((ep, tables, cond))
    }

    pub(crate) async fn restore_csv(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestoreReport, PgError> {
        ctx.refuse_selection("postgres (csv mode)", &[SelectionPart::Tables])?;
        let meta = &ctx.entry.metadata;
        let recorded: BTreeMap<String, u64> = meta
            .get("tables")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| PgError::Config("the snapshot has no table list".into()))?;
        let (ep, tables, cond) = self.csv_scope(ctx, target)?;
        let cond = cond.as_deref();
        let password = self.password().await?;
        let client = ep.connect(password.as_deref()).await?;
        let mut present = Vec::new();
        for t in &tables {
            let n = count(&client, &ep, t, cond).await?;
            if n > 0 {
                present.push(format!("{t} ({n} rows)"));
            }
        }
        if !present.is_empty() && !ctx.force {
            return Err(PgError::Refused(format!(
                "nothing was restored: {} already has matching rows in {}; use --force to replace them",
                ep.display(),
                present.join(", ")
            )));
        }
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| query_err(&ep, "starting the restore transaction", e))?;
        let result = self.copy_tables_in(ctx, &client, &ep, &tables, cond).await;
        if let Err(e) = result {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| query_err(&ep, "committing the restore", e))?;
        let mut restored = BTreeMap::new();
        for t in &tables {
            restored.insert(t.clone(), count(&client, &ep, t, cond).await?);
        }
        let check = compare_counts(
            &recorded,
            &restored,
            |t| tables.iter().any(|x| x == t),
            false,
        );
        let line = check.line("row", "tables");
        let what = format!("{} tables restored into {}", tables.len(), ep.display());
        if !check.ok() {
            return Err(PgError::Mismatch(format!("{what}, but {line}")));
        }
        Ok(RestoreReport {
            lines: vec![format!("{what}; {line}")],
        })
    }

    async fn copy_tables_in(
        &self,
        ctx: &RestoreContext,
        client: &Client,
        ep: &Endpoint,
        tables: &[String],
        cond: Option<&str>,
    ) -> Result<(), PgError> {
        if ctx.force {
            for t in tables.iter().rev() {
                client
                    .batch_execute(&format!("DELETE FROM {}{}", table_sql(t), condition(cond)))
                    .await
                    .map_err(|e| query_err(ep, &format!("deleting the rows of {t}"), e))?;
            }
        }
        for t in tables {
            let artifact = ctx.artifact(&format!("{t}.csv"))?;
            let sink = client
                .copy_in::<_, Bytes>(&format!(
                    "COPY {} FROM STDIN WITH (FORMAT csv, HEADER)",
                    table_sql(t)
                ))
                .await
                .map_err(|e| query_err(ep, &format!("importing {t}"), e))?;
            futures::pin_mut!(sink);
            let mut reader = ctx.open_stream(artifact);
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = reader
                    .read(&mut buf)
                    .await
                    .map_err(|source| PgError::Read {
                        artifact: format!("{t}.csv"),
                        source,
                    })?;
                if n == 0 {
                    break;
                }
                sink.send(Bytes::copy_from_slice(&buf[..n]))
                    .await
                    .map_err(|e| query_err(ep, &format!("importing {t}"), e))?;
            }
            sink.as_mut()
                .finish()
                .await
                .map_err(|e| query_err(ep, &format!("importing {t}"), e))?;
        }
        Ok(())
    }
}
