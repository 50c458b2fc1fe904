//! Test restore: each database (or bucket) restored into a scratch one
//! with a name no one else uses, checked, and removed whatever happened.

use respaldo_core::source::{RestoreContext, RestoreReport};

use crate::client::ident;
use crate::source::now_ns;
use crate::InfluxError;
use crate::InfluxSource;

impl InfluxSource {
    pub(crate) async fn test_restore_v1(
        &self,
        ctx: &RestoreContext,
    ) -> Result<RestoreReport, InfluxError> {
        let c = self.client(&self.config.url).await?;
        let mut report = RestoreReport::default();
        for meta in Self::plan(ctx)?.into_values() {
            let scratch = scratch_name();
            let plan = [(meta, scratch.clone())];
            let r = self.restore_into(ctx, &c, &plan, false, &mut report).await;
            let dropped = c
                .query(None, &format!("DROP DATABASE {}", ident(&scratch)))
                .await;
            r?;
            dropped?;
            report
                .lines
                .push(format!("scratch database `{scratch}` dropped"));
        }
        Ok(report)
    }

    pub(crate) async fn test_restore_v2(
        &self,
        ctx: &RestoreContext,
    ) -> Result<RestoreReport, InfluxError> {
        let v2 = self.v2(&self.config.url).await?;
        let org_id = v2.org_id().await?;
        let mut report = RestoreReport::default();
        for meta in Self::plan_v2(ctx)?.into_values() {
            let scratch = scratch_name();
            let plan = [(meta, scratch.clone())];
            let r = v2
                .restore(ctx, &plan, false, self.config.batch_lines, &mut report)
                .await;
            // Deleted whether or not the restore worked.
            let deleted = match v2.bucket(&org_id, &scratch).await {
                Ok(Some(b)) => v2.delete_bucket(&b.id).await,
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            r?;
            deleted?;
            report
                .lines
                .push(format!("scratch bucket `{scratch}` deleted"));
        }
        Ok(report)
    }
}

/// A database or bucket name no one else uses.
pub(crate) fn scratch_name() -> String {
    format!("respaldo_test_restore_{}_{}", std::process::id(), now_ns())
}
