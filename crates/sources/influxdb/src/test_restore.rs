//! Test restore: each database (or bucket) restored into a scratch one
//! with a name no one else uses, checked, and removed whatever happened.

use respaldo_core::kit::scratch::Scratch;
use respaldo_core::source::{RestoreContext, RestoreReport};

use crate::client::ident;
use crate::InfluxError;
use crate::InfluxSource;

impl InfluxSource {
    pub(crate) async fn test_restore_v1(
        &self,
        ctx: &RestoreContext,
    ) -> Result<RestoreReport, InfluxError> {
        let c = &self.client(&self.config.url).await?;
        let mut report = RestoreReport::default();
        for meta in Self::plan(ctx)?.into_values() {
            let scratch = scratch("database");
            let plan = [(meta, scratch.name().to_string())];
            let ((), line) = scratch
                .drill(
                    self.restore_into(ctx, c, &plan, false, &mut report),
                    |name| async move {
                        c.query(None, &format!("DROP DATABASE {}", ident(&name)))
                            .await
                            .map(drop)
                    },
                )
                .await?;
            report.lines.push(line);
        }
        Ok(report)
    }

    pub(crate) async fn test_restore_v2(
        &self,
        ctx: &RestoreContext,
    ) -> Result<RestoreReport, InfluxError> {
        let v2 = &self.v2(&self.config.url).await?;
        let org_id = &v2.org_id().await?;
        let mut report = RestoreReport::default();
        for meta in Self::plan_v2(ctx)?.into_values() {
            let scratch = scratch("bucket");
            let plan = [(meta, scratch.name().to_string())];
            let ((), line) = scratch
                .drill(
                    v2.restore(ctx, &plan, false, self.config.batch_lines, &mut report),
                    |name| async move {
                        match v2.bucket(org_id, &name).await? {
                            Some(b) => v2.delete_bucket(&b.id).await,
                            None => Ok(()),
                        }
                    },
                )
                .await?;
            report.lines.push(line);
        }
        Ok(report)
    }
}

/// A database or bucket no one else uses.
fn scratch(what: &'static str) -> Scratch {
    Scratch::new(what, "respaldo_test_restore", '_')
}
