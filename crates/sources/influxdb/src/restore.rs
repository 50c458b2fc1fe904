//! Restore: the databases (or buckets) planned, created with their
//! retention policies and continuous queries, the points written back in
//! batches, and the counts compared.

use std::collections::BTreeMap;

use respaldo_core::kit::check::compare_counts;
use respaldo_core::source::SelectionPart;
use respaldo_core::source::{
    PlanAction, PlanItem, RestoreContext, RestorePlan, RestoreReport, RestoreTarget, TargetState,
};

use crate::backup::count_points;
use crate::client::{ident, Client};
use crate::lp;
use crate::meta::flatten;
use crate::source::parse_target;
use crate::source::str_at;
use crate::v2::BucketMeta;
use crate::write::{write_lines, Destination};
use crate::DatabaseMeta;
use crate::InfluxError;
use crate::InfluxSource;
use crate::RetentionPolicy;

impl InfluxSource {
    pub(crate) async fn restore_into(
        &self,
        ctx: &RestoreContext,
        c: &Client,
        plan: &[(DatabaseMeta, String)],
        force: bool,
        report: &mut RestoreReport,
    ) -> Result<(), InfluxError> {
        let existing = Self::databases(c).await?;
        // Refuse before changing anything.
        for (_, target) in plan {
            if existing.contains(target) && !force {
                let s = c
                    .query(
                        None,
                        &format!("SHOW MEASUREMENTS ON {} LIMIT 1", ident(target)),
                    )
                    .await?;
                if s.iter().any(|s| !s.values.is_empty()) {
                    return Err(InfluxError::NotEmpty {
                        url: c.url().to_string(),
                        db: target.clone(),
                    });
                }
            }
        }
        for (meta, target) in plan {
            let window = existing.contains(target).then_some(meta.since_ns).flatten();
            match window {
                // A `since` backup replaces its window only.
                Some(since) if force => {
                    c.query(
                        Some(target),
                        &format!("DELETE WHERE time >= '{}'", lp::ns_rfc3339(since)),
                    )
                    .await?;
                    report.lines.push(format!(
                        "database `{target}`: points from {} on deleted before restoring (older ones kept)",
                        lp::ns_rfc3339(since)
                    ));
                }
                _ if existing.contains(target) && force => {
                    c.query(None, &format!("DROP DATABASE {}", ident(target)))
                        .await?;
                }
                _ => {}
            }
            create_database(c, target, &meta.retention_policies, window.is_none()).await?;
            let artifact = ctx.artifact(&meta.artifact)?.clone();
            let reader = ctx.open_stream(&artifact);
            let lines = write_lines(
                &c.http,
                &Destination::V1 { db: target.clone() },
                reader,
                self.config.batch_lines,
                &meta.artifact,
            )
            .await?;
            let mut skipped = Vec::new();
            for cq in &meta.continuous_queries {
                if let Some(q) = cq_for(&cq.query, target) {
                    c.query(None, &q).await?;
                } else {
                    skipped.push(cq.name.clone());
                }
            }
            // A `since` backup is checked within its window.
            let restored = count_points(c, target, &meta.retention_policies, meta.since_ns).await?;
            let check = compare_counts(&flatten(&meta.points), &flatten(&restored), |_| true, true);
            let line = check.line("point", "measurements");
            if !check.ok() {
                return Err(InfluxError::Protocol {
                    url: c.url().to_string(),
                    message: format!("database `{target}`: {line}"),
                });
            }
            report.lines.push(format!(
                "database `{target}` on {}: {lines} points written, {} retention policies, {} continuous queries; {line}",
                c.url(),
                meta.retention_policies.len(),
                meta.continuous_queries.len() - skipped.len(),
            ));
            if !skipped.is_empty() {
                report.lines.push(format!(
                    "continuous queries not recreated in `{target}` (they name the original database): {}",
                    skipped.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The databases the snapshot holds, by name.
    pub(crate) fn plan(
        ctx: &RestoreContext,
    ) -> Result<BTreeMap<String, DatabaseMeta>, InfluxError> {
        let dbs = ctx
            .entry
            .metadata
            .get("databases")
            .cloned()
            .ok_or_else(|| InfluxError::Metadata("no `databases`".into()))?;
        let dbs: BTreeMap<String, DatabaseMeta> =
            serde_json::from_value(dbs).map_err(|e| InfluxError::Metadata(e.to_string()))?;
        Ok(dbs)
    }
}

/// The continuous query statement for database `target`: unchanged when it
/// is the database it was defined on, else `None` (its text names the
/// original database throughout).
pub(crate) fn cq_for(query: &str, target: &str) -> Option<String> {
    let on = query.split_whitespace().nth(5)?;
    let db = on.trim_matches('"');
    (db == target).then(|| query.to_string())
}

/// Creates `db` (or keeps it, when it exists and is empty) with exactly the
/// retention policies `rps`.
pub(crate) async fn create_database(
    c: &Client,
    db: &str,
    rps: &[RetentionPolicy],
    drop_others: bool,
) -> Result<(), InfluxError> {
    c.query(None, &format!("CREATE DATABASE {}", ident(db)))
        .await?;
    let present: Vec<String> = c
        .query(None, &format!("SHOW RETENTION POLICIES ON {}", ident(db)))
        .await?
        .iter()
        .flat_map(|s| s.values.iter().map(|r| str_at(r, Some(0))))
        .collect();
    // The default policy last, so it ends up the default.
    let mut ordered: Vec<&RetentionPolicy> = rps.iter().filter(|r| !r.default).collect();
    ordered.extend(rps.iter().filter(|r| r.default));
    for rp in &ordered {
        let verb = if present.contains(&rp.name) {
            "ALTER"
        } else {
            "CREATE"
        };
        c.query(
            None,
            &format!(
                "{verb} RETENTION POLICY {} ON {} DURATION {} REPLICATION {} SHARD DURATION {}{}",
                ident(&rp.name),
                ident(db),
                rp.duration,
                rp.replication,
                rp.shard_duration,
                if rp.default { " DEFAULT" } else { "" }
            ),
        )
        .await?;
    }
    for name in present
        .iter()
        .filter(|p| drop_others && !rps.iter().any(|r| &r.name == *p))
    {
        c.query(
            None,
            &format!("DROP RETENTION POLICY {} ON {}", ident(name), ident(db)),
        )
        .await?;
    }
    Ok(())
}

impl InfluxSource {
    /// The buckets a 2.x snapshot holds, by name.
    pub(crate) fn plan_v2(
        ctx: &RestoreContext,
    ) -> Result<BTreeMap<String, BucketMeta>, InfluxError> {
        let b = ctx
            .entry
            .metadata
            .get("buckets")
            .cloned()
            .ok_or_else(|| InfluxError::Metadata("no `buckets`".into()))?;
        serde_json::from_value(b).map_err(|e| InfluxError::Metadata(e.to_string()))
    }

    /// Pairs each recorded database or bucket with the name it is restored
    /// under (`rename`, which needs a snapshot of exactly one).
    fn targets<M>(
        metas: BTreeMap<String, M>,
        rename: Option<String>,
        what: &str,
    ) -> Result<Vec<(M, String)>, InfluxError> {
        if rename.is_some() && metas.len() != 1 {
            return Err(InfluxError::Config(format!(
                "--target names one {what} but the snapshot has {} (restore without a {what} in --target)",
                metas.len()
            )));
        }
        Ok(metas
            .into_iter()
            .map(|(name, m)| (m, rename.clone().unwrap_or(name)))
            .collect())
    }

    /// Keeps the databases (or buckets) named by `--database`.
    fn only_selected<M>(
        ctx: &RestoreContext,
        metas: BTreeMap<String, M>,
        what: &str,
    ) -> Result<BTreeMap<String, M>, InfluxError> {
        let want = &ctx.selection.databases;
        if want.is_empty() {
            return Ok(metas);
        }
        if let Some(bad) = want.iter().find(|w| !metas.contains_key(*w)) {
            return Err(InfluxError::Config(format!(
                "--database `{bad}`: snapshot {} holds no such {what} (it holds {})",
                ctx.snapshot_id.short(),
                metas.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(metas
            .into_iter()
            .filter(|(k, _)| want.contains(k))
            .collect())
    }

    pub(crate) async fn plan_any(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestorePlan, InfluxError> {
        ctx.refuse_selection("influxdb", &[SelectionPart::Databases])?;
        self.same_version(ctx)?;
        let (url, rename) = match target {
            RestoreTarget::Live => (self.config.url.clone(), None),
            RestoreTarget::Other(t) => parse_target(t, &self.config.url)?,
        };
        let mut plan = RestorePlan::default();
        if self.version == 2 {
            let pairs = Self::targets(
                Self::only_selected(ctx, Self::plan_v2(ctx)?, "bucket")?,
                rename,
                "bucket",
            )?;
            let states = self.v2(&url).await?.states(&pairs).await?;
            for ((meta, name), state) in pairs.iter().zip(states) {
                plan.items.push(window_item(
                    format!("bucket {name}"),
                    format!("{url} bucket {name}"),
                    state,
                    meta.since_ns.is_some(),
                    ctx.force,
                    "points",
                ));
            }
        } else {
            let pairs = Self::targets(
                Self::only_selected(ctx, Self::plan(ctx)?, "database")?,
                rename,
                "database",
            )?;
            let c = self.client(&url).await?;
            let existing = Self::databases(&c).await?;
            for (meta, name) in &pairs {
                let state = if !existing.contains(name) {
                    TargetState::Absent
                } else {
                    let m = c
                        .query(None, &format!("SHOW MEASUREMENTS ON {}", ident(name)))
                        .await?;
                    match m.iter().map(|s| s.values.len()).sum::<usize>() {
                        0 => TargetState::Empty,
                        n => TargetState::Holds(format!("{n} measurements")),
                    }
                };
                plan.items.push(window_item(
                    format!("database {name}"),
                    format!("{url} database {name}"),
                    state,
                    meta.since_ns.is_some(),
                    ctx.force,
                    "measurements",
                ));
            }
        }
        Ok(plan)
    }

    pub(crate) async fn restore_any(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestoreReport, InfluxError> {
        let planned = self.plan_any(ctx, target).await?;
        if let Some(e) = planned.refused(&ctx.source_name) {
            return Err(e.into());
        }
        let (url, rename) = match target {
            RestoreTarget::Live => (self.config.url.clone(), None),
            RestoreTarget::Other(t) => parse_target(t, &self.config.url)?,
        };
        let mut report = RestoreReport::default();
        if self.version == 2 {
            let plan = Self::targets(
                Self::only_selected(ctx, Self::plan_v2(ctx)?, "bucket")?,
                rename,
                "bucket",
            )?;
            let v2 = self.v2(&url).await?;
            v2.restore(ctx, &plan, ctx.force, self.config.batch_lines, &mut report)
                .await?;
        } else {
            let plan = Self::targets(
                Self::only_selected(ctx, Self::plan(ctx)?, "database")?,
                rename,
                "database",
            )?;
            let c = self.client(&url).await?;
            self.restore_into(ctx, &c, &plan, ctx.force, &mut report)
                .await?;
        }
        Ok(report)
    }
}

/// The decision for a database or bucket; one backed up with a `since`
/// window replaces only that window with `--force`.
pub(crate) fn window_item(
    what: String,
    target: String,
    state: TargetState,
    window: bool,
    force: bool,
    has: &str,
) -> PlanItem {
    let mut item = PlanItem::decide(what, target, state, force);
    match &item.action {
        PlanAction::Overwrite if window => item.action = PlanAction::Partial,
        PlanAction::Refuse(_) => {
            item.action = PlanAction::Refuse(format!(
                "{} already has {has}; use --force to replace {}",
                item.target,
                if window {
                    "the backup's time window (older points are kept)"
                } else {
                    "it (a safety snapshot is taken first)"
                }
            ))
        }
        _ => {}
    }
    item
}
