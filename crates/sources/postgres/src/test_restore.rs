//! Test restore: each recorded database restored into a scratch database
//! on the same server, checked against the recorded row counts, and
//! dropped whatever happened. csv-mode and data-only backups load rows
//! into existing tables, so they are drilled with `restore --target`
//! instead and refused here.

use respaldo_core::kit::scratch::Scratch;
use respaldo_core::source::{PlanAction, PlanItem, RestoreContext, RestoreReport, TargetState};

use crate::restore::{drop_database, records, side_name, snapshot_mode, Prepare, Step};
use crate::tools::Tools;
use crate::{Content, Mode, PgError, PostgresSource};

impl PostgresSource {
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
        let admin_ep = &self.maintenance();
        let admin = &admin_ep.connect(password.as_deref()).await?;
        let mut report = RestoreReport::default();
        for (src, rec) in &records {
            let scratch = Scratch::named(
                "database",
                side_name(
                    &format!(
                        "respaldo_test_{}",
                        src.chars()
                            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                            .take(30)
                            .collect::<String>()
                    ),
                    "drill",
                ),
            );
            let target = self.endpoint.with_database(scratch.name());
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
            drop_database(admin, admin_ep, scratch.name()).await?;
            let (line, removed) = scratch
                .drill(
                    self.restore_database(ctx, &tools, admin, admin_ep, &step, password.as_deref()),
                    |name| async move { drop_database(admin, admin_ep, &name).await },
                )
                .await?;
            report.lines.push(line);
            report.lines.push(removed);
        }
        Ok(report)
    }
}
