//! Test restore: each recorded database restored into a scratch database
//! on the same server, checked against the recorded row counts, and
//! dropped whatever happened. Accounts are not drilled (they would change
//! the server's own).

use respaldo_core::kit::scratch::{unique_suffix, Scratch};
use respaldo_core::source::{PlanAction, PlanItem, RestoreContext, RestoreReport, TargetState};

use crate::conn::ident;
use crate::dump::Keep;
use crate::restore::{records, restore_database, Prepare, Step};
use crate::{MysqlError, MysqlSource};

/// A scratch database's name: at most 64 characters, letters, digits and `_`.
fn scratch_name(db: &str) -> String {
    let suffix = format!("_{}", unique_suffix('_'));
    let base: String = db
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(64 - "respaldo_test_".len() - suffix.len())
        .collect();
    format!("respaldo_test_{base}{suffix}")
}

impl MysqlSource {
    pub(crate) async fn test_restore_snapshot(
        &self,
        ctx: &RestoreContext,
    ) -> Result<RestoreReport, MysqlError> {
        let records = records(ctx)?;
        if records.is_empty() {
            return Err(MysqlError::NotTestable(
                "the backup holds no database (accounts only)".into(),
            ));
        }
        let base = self.client_at(self.endpoint.clone()).await?;
        let mut report = RestoreReport::default();
        for (src, rec) in &records {
            let scratch = Scratch::named("database", scratch_name(src));
            let db = scratch.name().to_string();
            let target = base.at(self.endpoint.with_database(&db));
            let step = Step {
                record: rec.clone(),
                item: PlanItem::new(
                    format!("database {src}"),
                    target.endpoint.display(),
                    TargetState::Absent,
                    PlanAction::Create,
                ),
                target,
                db,
                prepare: Prepare::Create,
                keep: Keep::all(),
            };
            let admin = &base;
            let (line, removed) = scratch
                .drill(restore_database(ctx, &step), |name| async move {
                    admin
                        .query(
                            "dropping the scratch database",
                            None,
                            &format!("DROP DATABASE IF EXISTS {}", ident(&name)),
                        )
                        .await
                        .map(drop)
                })
                .await?;
            report.lines.push(line);
            report.lines.push(removed);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn scratch_names_fit_the_servers_limit() {
        let n = super::scratch_name(&"ü".repeat(80));
        assert!(n.len() <= 64 && n.starts_with("respaldo_test_"), "{n}");
    }
}
