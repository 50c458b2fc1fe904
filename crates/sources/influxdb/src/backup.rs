//! Backup: every retention policy's measurements exported as line
//! protocol (1.x, by InfluxQL) or annotated CSV (2.x), streamed into the
//! repository with the points counted.

use std::collections::BTreeMap;

use bytes::Bytes;
use respaldo_core::kit::duration::parse_duration;
use respaldo_core::source::{BackupContext, RestoreContext};
use serde_json::Value;

use crate::client::{ident, Client};
use crate::lp;
use crate::lp::{Column, Kind};
use crate::meta::flatten;
use crate::meta::Counts;
use crate::source::now_ns;
use crate::source::str_at;
use crate::v2;
use crate::v2::BucketMeta;
use crate::ContinuousQuery;
use crate::DatabaseMeta;
use crate::InfluxError;
use crate::InfluxSource;
use crate::RetentionPolicy;

impl InfluxSource {
    async fn backup_db(
        &self,
        c: &Client,
        ctx: &mut BackupContext,
        db: &str,
        since_ns: Option<i64>,
    ) -> Result<DatabaseMeta, InfluxError> {
        let mut meta = DatabaseMeta {
            artifact: format!("{db}.lp"),
            since_ns,
            ..Default::default()
        };
        for s in c
            .query(None, &format!("SHOW RETENTION POLICIES ON {}", ident(db)))
            .await?
        {
            let (n, d, sd, r, def) = (
                s.col("name"),
                s.col("duration"),
                s.col("shardGroupDuration"),
                s.col("replicaN"),
                s.col("default"),
            );
            for row in &s.values {
                meta.retention_policies.push(RetentionPolicy {
                    name: str_at(row, n),
                    duration: str_at(row, d),
                    shard_duration: str_at(row, sd),
                    replication: r
                        .and_then(|i| row.get(i))
                        .and_then(Value::as_u64)
                        .unwrap_or(1),
                    default: def
                        .and_then(|i| row.get(i))
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                });
            }
        }
        for s in c.query(None, "SHOW CONTINUOUS QUERIES").await? {
            if s.name != db {
                continue;
            }
            let (n, q) = (s.col("name"), s.col("query"));
            for row in &s.values {
                meta.continuous_queries.push(ContinuousQuery {
                    name: str_at(row, n),
                    query: str_at(row, q),
                });
            }
        }

        let rps: Vec<String> = meta
            .retention_policies
            .iter()
            .map(|r| r.name.clone())
            .collect();
        let (points, values) = stream_artifact(ctx, &meta.artifact, |tx| async move {
            export(c, db, &rps, since_ns, &tx).await
        })
        .await?;
        meta.points = points;
        meta.values = values;
        Ok(meta)
    }
}

/// Points per retention policy and measurement: the rows of
/// `SELECT *::field` (one per series and timestamp that has a field value;
/// `SELECT COUNT(*)` would count field values instead, which differ from
/// points as soon as fields are sparse), read chunked.
pub(crate) async fn count_points(
    c: &Client,
    db: &str,
    rps: &[RetentionPolicy],
    since_ns: Option<i64>,
) -> Result<Counts, InfluxError> {
    let mut out = Counts::new();
    for rp in rps {
        let q = format!(
            "SELECT *::field FROM {}.{}./.*/{}",
            ident(db),
            ident(&rp.name),
            since_ns
                .map(|t| format!(" WHERE time >= {t}"))
                .unwrap_or_default()
        );
        let mut chunks = c.query_chunks(db, &q).await?;
        while let Some(s) = chunks.next().await? {
            *out.entry(rp.name.clone())
                .or_default()
                .entry(s.name)
                .or_default() += s.values.len() as u64;
        }
    }
    Ok(out)
}

/// Exports every retention policy's measurements of `db` as line protocol
/// into `tx`; returns points and field values per policy and measurement.
pub(crate) async fn export(
    c: &Client,
    db: &str,
    rps: &[String],
    since_ns: Option<i64>,
    tx: &Sender,
) -> Result<(Counts, Counts), InfluxError> {
    let closed = || InfluxError::StoreClosed;
    let mut points = Counts::new();
    let mut values = Counts::new();
    let mut header = b"# DML\n# CONTEXT-DATABASE: ".to_vec();
    header.extend_from_slice(db.as_bytes());
    header.push(b'\n');
    tx.send(Ok(header.into())).await.map_err(|_| closed())?;
    for rp in rps {
        let from = format!("{}./.*/", ident(rp));
        let mut fields: BTreeMap<String, BTreeMap<String, Column>> = BTreeMap::new();
        for s in c
            .query(
                Some(db),
                &format!("SHOW FIELD KEYS ON {} FROM {from}", ident(db)),
            )
            .await?
        {
            let m = fields.entry(s.name.clone()).or_default();
            let (k, t) = (s.col("fieldKey"), s.col("fieldType"));
            for row in &s.values {
                let key = str_at(row, k);
                let ty = str_at(row, t);
                let kind = Kind::from_influxql_type(&ty)
                    .map(Column::Field)
                    .ok_or_else(|| InfluxError::Protocol {
                        url: c.url().to_string(),
                        message: format!("field `{key}` of `{}`: unknown type `{ty}`", s.name),
                    })?;
                m.entry(key).or_insert(kind);
            }
        }
        let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in c
            .query(
                Some(db),
                &format!("SHOW TAG KEYS ON {} FROM {from}", ident(db)),
            )
            .await?
        {
            tags.insert(
                s.name,
                s.values.iter().map(|r| str_at(r, Some(0))).collect(),
            );
        }
        let section = format!("# CONTEXT-RETENTION-POLICY: {rp}\n");
        tx.send(Ok(section.into_bytes().into()))
            .await
            .map_err(|_| closed())?;
        for (m, fkinds) in &fields {
            let mut q = format!("SELECT * FROM {}.{}.{}", ident(db), ident(rp), ident(m));
            if let Some(t) = since_ns {
                q.push_str(&format!(" WHERE time >= {t}"));
            }
            let mut head = Vec::new();
            lp::push_measurement(&mut head, m);
            let mtags = tags.get(m).cloned().unwrap_or_default();
            let (mut np, mut nv) = (0u64, 0u64);
            let mut chunks = c.query_chunks(db, &q).await?;
            while let Some(s) = chunks.next().await? {
                let kinds = s
                    .columns
                    .iter()
                    .map(|col| {
                        if col == "time" {
                            Ok(Column::Time)
                        } else if let Some(k) = fkinds.get(col) {
                            Ok(*k)
                        } else if mtags.contains(col) {
                            Ok(Column::Tag)
                        } else {
                            Err(InfluxError::Protocol {
                                url: c.url().to_string(),
                                message: format!(
                                    "`{db}.{rp}.{m}`: column `{col}` is neither a tag nor a field"
                                ),
                            })
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let mut out = Vec::with_capacity(s.values.len() * 64);
                for row in &s.values {
                    let n =
                        lp::push_row(&mut out, &head, &s.columns, &kinds, row).map_err(|e| {
                            InfluxError::Protocol {
                                url: c.url().to_string(),
                                message: format!("`{db}.{rp}.{m}`: {e}"),
                            }
                        })?;
                    if n > 0 {
                        np += 1;
                        nv += n;
                    }
                }
                tx.send(Ok(out.into())).await.map_err(|_| closed())?;
            }
            points.entry(rp.clone()).or_default().insert(m.clone(), np);
            values.entry(rp.clone()).or_default().insert(m.clone(), nv);
        }
    }
    Ok((points, values))
}

/// Streams what `produce` sends into the artifact `name` while it is stored;
/// returns what `produce` returns. A failure of either side fails both.
pub(crate) async fn stream_artifact<T, F, Fut>(
    ctx: &mut BackupContext,
    name: &str,
    produce: F,
) -> Result<T, InfluxError>
where
    F: FnOnce(Sender) -> Fut,
    Fut: std::future::Future<Output = Result<T, InfluxError>>,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let reader = tokio_util::io::StreamReader::new(Box::pin(stream));
    let on_error = tx.clone();
    let producer = async move {
        let r = produce(tx).await;
        if let Err(e) = &r {
            let _ = on_error
                .send(Err(std::io::Error::other(e.to_string())))
                .await;
        }
        drop(on_error);
        r
    };
    let (produced, stored) = tokio::join!(producer, ctx.add_stream(name, reader));
    match (produced, stored) {
        (Err(InfluxError::StoreClosed), Err(e)) | (Ok(_), Err(e)) => Err(e.into()),
        (Err(e), _) => Err(e),
        (Ok(v), Ok(_)) => Ok(v),
    }
}

/// The sending side of an export.
pub(crate) type Sender = tokio::sync::mpsc::Sender<std::io::Result<Bytes>>;

/// The API version a snapshot was taken with (1 for snapshots from before
/// 2.x support).
pub(crate) fn snapshot_version(ctx: &RestoreContext) -> u64 {
    ctx.entry
        .metadata
        .get("version")
        .and_then(Value::as_u64)
        .unwrap_or(1)
}

impl InfluxSource {
    fn since_ns(&self) -> Result<Option<i64>, InfluxError> {
        self.config
            .since
            .as_deref()
            .map(|s| parse_duration(s).map(|d| now_ns() - d.as_nanos() as i64))
            .transpose()
            .map_err(|e| InfluxError::Config(e.to_string()))
    }

    /// Refuses a snapshot of the other API version.
    pub(crate) fn same_version(&self, ctx: &RestoreContext) -> Result<(), InfluxError> {
        let v = snapshot_version(ctx);
        if v != u64::from(self.version) {
            return Err(InfluxError::Config(format!(
                "the snapshot holds InfluxDB {v}.x data but the source is configured for {}.x",
                self.version
            )));
        }
        Ok(())
    }

    pub(crate) async fn backup_v1(&self, ctx: &mut BackupContext) -> Result<(), InfluxError> {
        let c = self.client(&self.config.url).await?;
        let dbs = self.selected(&c).await?;
        let since_ns = self.since_ns()?;
        let mut all = serde_json::Map::new();
        let mut total = 0u64;
        for db in &dbs {
            let meta = self.backup_db(&c, ctx, db, since_ns).await?;
            total += flatten(&meta.points).values().sum::<u64>();
            all.insert(
                db.clone(),
                serde_json::to_value(&meta).map_err(|e| InfluxError::Metadata(e.to_string()))?,
            );
        }
        ctx.set_metadata("url", self.config.url.clone());
        ctx.set_metadata("databases", Value::Object(all));
        ctx.set_metadata("points", total);
        Ok(())
    }

    pub(crate) async fn backup_v2(&self, ctx: &mut BackupContext) -> Result<(), InfluxError> {
        let v2 = self.v2(&self.config.url).await?;
        let org_id = v2.org_id().await?;
        let buckets = v2.selected(&org_id, &self.config.buckets).await?;
        let start = self.since_ns()?.unwrap_or(v2::MIN_NS);
        let mut all = serde_json::Map::new();
        let mut total = 0u64;
        for b in &buckets {
            let mut meta = BucketMeta {
                artifact: format!("{}.lp", b.name),
                description: b.description.clone(),
                retention_rules: b.retention_rules.clone(),
                points: BTreeMap::new(),
                since_ns: self.since_ns()?,
            };
            let (v2, org_id, name) = (&v2, &org_id, &b.name);
            meta.points = stream_artifact(ctx, &meta.artifact, |tx| async move {
                v2.export(org_id, name, start, &tx).await
            })
            .await?;
            total += meta.points.values().sum::<u64>();
            all.insert(
                b.name.clone(),
                serde_json::to_value(&meta).map_err(|e| InfluxError::Metadata(e.to_string()))?,
            );
        }
        ctx.set_metadata("version", 2);
        ctx.set_metadata("url", self.config.url.clone());
        ctx.set_metadata("org", v2.org.clone());
        ctx.set_metadata("buckets", Value::Object(all));
        ctx.set_metadata("points", total);
        Ok(())
    }
}
