//! Partial restores into a database that exists: selected tables added
//! when missing, or reloaded with exactly the backup's rows in one
//! transaction (foreign keys into them set aside and checked again).

use crate::backup::user_tables;
use crate::conn::{ident, qualified, query_err};
use crate::restore::{partial, selected, split, Step};
use crate::toc::{self, Wanted};
use crate::tools::Tools;
use crate::{Content, Endpoint, PgError, PostgresSource};
use respaldo_core::kit::process::{feed_stdin, feed_stdin_capture, feed_through};
use respaldo_core::source::RestoreContext;
use tokio_postgres::Client;

impl PostgresSource {
    /// The archive's table of contents.
    pub(crate) async fn toc(
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
    pub(crate) async fn wanted(
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
    pub(crate) async fn add_tables(
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
    pub(crate) async fn reload(
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
}
