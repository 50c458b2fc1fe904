//! # respaldo-source-influxdb
//!
//! The `influxdb` source backs up InfluxDB logically, through the HTTP API,
//! while the server keeps running: **1.x** databases (InfluxQL, user and
//! password) and **2.x** buckets (Flux, organization and API token). The
//! version is `version = 1 | 2`, else 2 when `token` or `org` is set.
//!
//! **1.x backup.** For every configured database (or every database but
//! `_internal`), the retention policies (duration, shard group duration,
//! replication, default flag) and continuous queries are recorded in the
//! snapshot metadata. Then, for each retention policy and each measurement
//! in it, `SELECT * FROM "db"."rp"."m"` is read with a chunked response
//! (`epoch=ns`, 10 000 rows a chunk) and every chunk is turned into line
//! protocol as it arrives, so a large measurement never sits in memory.
//! Field types come from `SHOW FIELD KEYS` (integers keep their `i` suffix)
//! and tag keys from `SHOW TAG KEYS`; names, tags and strings are escaped as
//! the line protocol requires. Each database becomes one artifact,
//! `<db>.lp`, in the format of `influx -import`: a `# DML` header, then a
//! `# CONTEXT-RETENTION-POLICY: rp` line before each policy's points. The
//! points per measurement (rows of `SELECT *`: a series and a timestamp) are
//! recorded in the metadata.
//!
//! **1.x restore.** The database is created, its retention policies
//! recreated as they were, the points written back to their own policy with
//! `/write` in gzip'd batches (retried with backoff on server errors,
//! throttling and timeouts), and the continuous queries recreated. A
//! database that has measurements is refused unless `--force`, which drops
//! it first. `--target http://host:8086/db` restores into another server
//! and/or database (`--target db` another database on the same server).
//! Afterwards the points per measurement are counted again (the rows of
//! `SELECT *::field`, read chunked) and compared with the backup's.
//!
//! **2.x** is described in the `v2` module: one pivoted Flux query per
//! bucket, annotated CSV to line protocol, `/api/v2/write`, buckets and
//! retention rules recreated, the same point count check. It is tested
//! against a protocol fake only.
//!
//! Users, privileges, 2.x tasks, dashboards and tokens are not handled.
//!
//! ```toml
//! [sources.metrics]
//! type = "influxdb"
//! url = "http://localhost:8086"
//! databases = ["energy"]          # 1.x; default: all
//! user = "backup"
//! password = { file = "/etc/respaldo/influx.pw" }
//! since = "30d"                   # optional: only the last 30 days
//!
//! [sources.metrics2]
//! type = "influxdb"
//! url = "http://localhost:8086"
//! org = "acme"                    # 2.x
//! token = { env = "INFLUX_TOKEN" }
//! buckets = ["energy"]            # default: every bucket but _monitoring/_tasks
//! ```
#![deny(missing_docs)]

mod client;
mod csv;
mod http;
mod lp;
mod v2;
mod write;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use respaldo_core::error::BoxError;
use respaldo_core::kit::check::compare_counts;
use respaldo_core::kit::duration::parse_duration;
use respaldo_core::kit::secret::Secret;
use respaldo_core::source::{
    BackupContext, PlanAction, PlanItem, RestoreContext, RestorePlan, RestoreReport, RestoreTarget,
    Source, TargetState,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use client::{ident, Client};
use http::{Auth, Http};
use lp::{Column, Kind};
use v2::{BucketMeta, V2};
use write::{write_lines, Destination};

/// Configuration of an `influxdb` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL of the InfluxDB HTTP API, e.g. `http://localhost:8086`.
    pub url: String,
    /// The API: `1` (InfluxQL: `databases`, `user`, `password`) or `2`
    /// (Flux: `org`, `token`, `buckets`). Default: 2 when `token` or `org`
    /// is set, else 1.
    #[serde(default)]
    pub version: Option<u8>,
    /// 1.x: databases to back up. Default: every database except `_internal`.
    #[serde(default)]
    pub databases: Vec<String>,
    /// 1.x: user name, when authentication is enabled. The user needs read
    /// access for backups and admin rights for restores.
    #[serde(default)]
    pub user: Option<String>,
    /// 1.x: the user's password, by reference (`{ env = "…" }`,
    /// `{ file = "…" }`, `{ command = […] }`). Requires `user`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// 2.x: the organization (its name) whose buckets are backed up and
    /// restored.
    #[serde(default)]
    pub org: Option<String>,
    /// 2.x: an API token, by reference (`{ env = "INFLUX_TOKEN" }`,
    /// `{ file = "…" }`, `{ command = […] }`). Backups need read access to
    /// the buckets; restores write access and bucket management (an
    /// all-access token of the organization).
    #[serde(default)]
    pub token: Option<Secret>,
    /// 2.x: buckets to back up. Default: every bucket of `org` except the
    /// system buckets (`_monitoring`, `_tasks`).
    #[serde(default)]
    pub buckets: Vec<String>,
    /// Only export points newer than this (`"30d"`, `"12h"`): a partial
    /// export. Default: every point.
    #[serde(default)]
    pub since: Option<String>,
    /// Lines per write request on restore (each sent gzip'd).
    #[serde(default = "default_batch")]
    pub batch_lines: usize,
}

fn default_batch() -> usize {
    5000
}

/// Errors of the InfluxDB source. Messages name the server and database,
/// never a password.
#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    /// Invalid configuration or target.
    #[error("{0}")]
    Config(String),
    /// The server cannot be reached.
    #[error("cannot reach InfluxDB at {url}: {message}")]
    Unreachable {
        /// Base URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The server refused the credentials.
    #[error("InfluxDB at {url} refused the credentials: {message}")]
    Auth {
        /// Base URL.
        url: String,
        /// The server's message.
        message: String,
    },
    /// The server answered with an HTTP error.
    #[error("InfluxDB at {url} answered HTTP {status}: {message}")]
    Server {
        /// Base URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// A statement failed.
    #[error("InfluxDB at {url}: `{query}` failed: {message}")]
    Query {
        /// Base URL.
        url: String,
        /// The statement.
        query: String,
        /// The server's message.
        message: String,
    },
    /// The server's answer could not be understood.
    #[error("InfluxDB at {url}: {message}")]
    Protocol {
        /// Base URL.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// A database does not exist.
    #[error("database `{db}` does not exist on InfluxDB at {url}")]
    NoDatabase {
        /// Base URL.
        url: String,
        /// The database.
        db: String,
    },
    /// A 2.x organization does not exist.
    #[error("organization `{org}` does not exist on InfluxDB at {url}")]
    NoOrg {
        /// Base URL.
        url: String,
        /// The organization.
        org: String,
    },
    /// A 2.x bucket does not exist.
    #[error("bucket `{bucket}` does not exist in organization `{org}` on InfluxDB at {url}")]
    NoBucket {
        /// Base URL.
        url: String,
        /// The organization.
        org: String,
        /// The bucket.
        bucket: String,
    },
    /// Restoring would overwrite a 2.x bucket's points.
    #[error("bucket `{bucket}` on InfluxDB at {url} already has points; use --force to delete them first")]
    BucketNotEmpty {
        /// Base URL.
        url: String,
        /// The bucket.
        bucket: String,
    },
    /// Restoring would overwrite data.
    #[error("database `{db}` on InfluxDB at {url} already has measurements; use --force to drop and recreate it")]
    NotEmpty {
        /// Base URL.
        url: String,
        /// The database.
        db: String,
    },
    /// The repository stopped reading the export (its own error is reported).
    #[error("the repository stopped reading the export")]
    StoreClosed,
    /// The snapshot's metadata is not what this driver wrote.
    #[error("snapshot metadata: {0}")]
    Metadata(String),
    /// A secret (`password`, `token`) could not be resolved; names which.
    #[error("{0}")]
    Secret(String),
    /// The repository failed.
    #[error(transparent)]
    Core(#[from] respaldo_core::Error),
    /// Reading an artifact failed.
    #[error("reading artifact `{artifact}`: {source}")]
    Read {
        /// The artifact.
        artifact: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A retention policy as `SHOW RETENTION POLICIES` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Name.
    pub name: String,
    /// Duration (`0s` = infinite).
    pub duration: String,
    /// Shard group duration.
    pub shard_duration: String,
    /// Replication factor.
    pub replication: u64,
    /// The database's default policy.
    pub default: bool,
}

/// A continuous query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinuousQuery {
    /// Name.
    pub name: String,
    /// The full `CREATE CONTINUOUS QUERY` statement.
    pub query: String,
}

/// Per retention policy, per measurement counts.
type Counts = BTreeMap<String, BTreeMap<String, u64>>;

/// What the backup records for one database.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DatabaseMeta {
    /// The artifact holding its points.
    pub artifact: String,
    /// Its retention policies.
    pub retention_policies: Vec<RetentionPolicy>,
    /// Its continuous queries.
    pub continuous_queries: Vec<ContinuousQuery>,
    /// Points exported, per retention policy and measurement.
    pub points: Counts,
    /// Field values exported (what `SELECT COUNT(*)` sums to), per retention
    /// policy and measurement; for information (the restore checks points).
    pub values: Counts,
    /// With `since`: the absolute start of the exported window (ns); a
    /// `--force` restore replaces only the points from then on and keeps the
    /// older ones (and the retention policies the backup does not name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ns: Option<i64>,
}

/// The `influxdb` source.
#[derive(Debug)]
pub struct InfluxSource {
    config: InfluxConfig,
    /// 1 or 2.
    version: u8,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn str_at(row: &[Value], i: Option<usize>) -> String {
    i.and_then(|i| row.get(i))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn flatten(c: &Counts) -> BTreeMap<String, u64> {
    c.iter()
        .flat_map(|(rp, ms)| ms.iter().map(move |(m, n)| (format!("{rp}.{m}"), *n)))
        .collect()
}

impl InfluxSource {
    /// Builds the source; `base` is the configuration file's folder.
    pub fn new(mut config: InfluxConfig, base: &Path) -> Result<Self, InfluxError> {
        if !config.url.starts_with("http://") && !config.url.starts_with("https://") {
            return Err(InfluxError::Config(format!(
                "`url` must start with http:// or https://, not `{}`",
                config.url
            )));
        }
        if has_userinfo(&config.url) {
            return Err(InfluxError::Config(
                "`url` must not hold credentials; use `user` and `password`".into(),
            ));
        }
        let v2_keys = config.token.is_some() || config.org.is_some() || !config.buckets.is_empty();
        let version = config
            .version
            .unwrap_or(if config.token.is_some() || config.org.is_some() {
                2
            } else {
                1
            });
        match version {
            1 if v2_keys => {
                return Err(InfluxError::Config(
                    "`token`, `org` and `buckets` are for InfluxDB 2.x (`version = 2`)".into(),
                ))
            }
            1 => {}
            2 => {
                if config.user.is_some()
                    || config.password.is_some()
                    || !config.databases.is_empty()
                {
                    return Err(InfluxError::Config(
                        "`user`, `password` and `databases` are for InfluxDB 1.x; 2.x uses `token`, `org` and `buckets`".into(),
                    ));
                }
                if config.token.is_none() || config.org.is_none() {
                    return Err(InfluxError::Config(
                        "InfluxDB 2.x needs `org` and `token`".into(),
                    ));
                }
            }
            v => {
                return Err(InfluxError::Config(format!(
                    "`version` must be 1 or 2, not {v}"
                )))
            }
        }
        if config.password.is_some() && config.user.is_none() {
            return Err(InfluxError::Config("`password` requires `user`".into()));
        }
        if let Some(s) = &config.since {
            parse_duration(s).map_err(|e| InfluxError::Config(format!("`since`: {e}")))?;
        }
        if config.batch_lines == 0 {
            return Err(InfluxError::Config(
                "`batch_lines` must be at least 1".into(),
            ));
        }
        if let Some(p) = &mut config.password {
            p.rebase(base);
        }
        if let Some(t) = &mut config.token {
            t.rebase(base);
        }
        Ok(InfluxSource { config, version })
    }

    /// A 1.x client for `url`.
    async fn client(&self, url: &str) -> Result<Client, InfluxError> {
        let auth = match (&self.config.user, &self.config.password) {
            (Some(u), Some(p)) => Auth::Basic(
                u.clone(),
                Some(
                    p.resolve()
                        .await
                        .map_err(|e| InfluxError::Secret(format!("password: {e}")))?,
                ),
            ),
            (Some(u), None) => Auth::Basic(u.clone(), None),
            (None, _) => Auth::None,
        };
        Ok(Client {
            http: Http::new(url, auth)?,
        })
    }

    /// A 2.x client for `url`.
    async fn v2(&self, url: &str) -> Result<V2, InfluxError> {
        let token = match &self.config.token {
            Some(t) => t
                .resolve()
                .await
                .map_err(|e| InfluxError::Secret(format!("token: {e}")))?,
            None => return Err(InfluxError::Config("InfluxDB 2.x needs `token`".into())),
        };
        Ok(V2 {
            http: Http::new(url, Auth::Token(token))?,
            org: self.config.org.clone().unwrap_or_default(),
        })
    }

    /// The databases on the server (without `_internal`).
    async fn databases(c: &Client) -> Result<Vec<String>, InfluxError> {
        let series = c.query(None, "SHOW DATABASES").await?;
        Ok(series
            .iter()
            .flat_map(|s| s.values.iter().map(|r| str_at(r, Some(0))))
            .filter(|d| d != "_internal")
            .collect())
    }

    async fn selected(&self, c: &Client) -> Result<Vec<String>, InfluxError> {
        let all = Self::databases(c).await?;
        if self.config.databases.is_empty() {
            return Ok(all);
        }
        for db in &self.config.databases {
            if !all.contains(db) {
                return Err(InfluxError::NoDatabase {
                    url: c.url().to_string(),
                    db: db.clone(),
                });
            }
        }
        Ok(self.config.databases.clone())
    }

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

    async fn restore_into(
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
    fn plan(ctx: &RestoreContext) -> Result<BTreeMap<String, DatabaseMeta>, InfluxError> {
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
fn cq_for(query: &str, target: &str) -> Option<String> {
    let on = query.split_whitespace().nth(5)?;
    let db = on.trim_matches('"');
    (db == target).then(|| query.to_string())
}

/// Creates `db` (or keeps it, when it exists and is empty) with exactly the
/// retention policies `rps`.
async fn create_database(
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

/// Points per retention policy and measurement: the rows of
/// `SELECT *::field` (one per series and timestamp that has a field value;
/// `SELECT COUNT(*)` would count field values instead, which differ from
/// points as soon as fields are sparse), read chunked.
async fn count_points(
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
async fn export(
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

/// Whether an `http(s)://` URL carries `user[:password]@`.
fn has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/')
        .next()
        .is_some_and(|host| host.contains('@'))
}

/// Where `--target` points: a server URL and an optional database.
fn parse_target(t: &str, live: &str) -> Result<(String, Option<String>), InfluxError> {
    if let Some(rest) = t
        .strip_prefix("http://")
        .map(|r| ("http://", r))
        .or_else(|| t.strip_prefix("https://").map(|r| ("https://", r)))
    {
        let (scheme, rest) = rest;
        let (host, db) = rest.split_once('/').unwrap_or((rest, ""));
        let db = db.trim_matches('/');
        if host.is_empty() || host.contains('@') {
            return Err(InfluxError::Config(
                "--target: expected http://host:port[/database], without credentials".into(),
            ));
        }
        return Ok((
            format!("{scheme}{host}"),
            (!db.is_empty()).then(|| db.to_string()),
        ));
    }
    if t.is_empty() || t.contains('/') {
        return Err(InfluxError::Config(format!(
            "--target `{t}`: expected http://host:8086[/database] or a database name"
        )));
    }
    Ok((live.to_string(), Some(t.to_string())))
}

/// Streams what `produce` sends into the artifact `name` while it is stored;
/// returns what `produce` returns. A failure of either side fails both.
async fn stream_artifact<T, F, Fut>(
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
type Sender = tokio::sync::mpsc::Sender<std::io::Result<Bytes>>;

/// The API version a snapshot was taken with (1 for snapshots from before
/// 2.x support).
fn snapshot_version(ctx: &RestoreContext) -> u64 {
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
            .map_err(InfluxError::Config)
    }

    /// Refuses a snapshot of the other API version.
    fn same_version(&self, ctx: &RestoreContext) -> Result<(), InfluxError> {
        let v = snapshot_version(ctx);
        if v != u64::from(self.version) {
            return Err(InfluxError::Config(format!(
                "the snapshot holds InfluxDB {v}.x data but the source is configured for {}.x",
                self.version
            )));
        }
        Ok(())
    }

    async fn backup_v1(&self, ctx: &mut BackupContext) -> Result<(), InfluxError> {
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

    async fn backup_v2(&self, ctx: &mut BackupContext) -> Result<(), InfluxError> {
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

    /// The buckets a 2.x snapshot holds, by name.
    fn plan_v2(ctx: &RestoreContext) -> Result<BTreeMap<String, BucketMeta>, InfluxError> {
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

    async fn plan_any(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestorePlan, InfluxError> {
        ctx.refuse_selection("influxdb", &["--database"])?;
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

    async fn restore_any(
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

    async fn test_restore_v1(&self, ctx: &RestoreContext) -> Result<RestoreReport, InfluxError> {
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

    async fn test_restore_v2(&self, ctx: &RestoreContext) -> Result<RestoreReport, InfluxError> {
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
/// The decision for a database or bucket; one backed up with a `since`
/// window replaces only that window with `--force`.
fn window_item(
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

fn scratch_name() -> String {
    format!("respaldo_test_restore_{}_{}", std::process::id(), now_ns())
}

/// The driver's registry entry: what the application's one list of
/// drivers holds. It builds a source from the `[sources.NAME]` table (as
/// JSON, `type` taken out), naming the key of any error:
///
/// ```
/// use respaldo_core::registry::BuildContext;
/// let ctx = BuildContext { base: std::path::Path::new("/srv/app"), local_repository: None };
/// let table = serde_json::json!({"url": "http://localhost:8086", "databases": ["energy"]});
/// let source = (respaldo_source_influxdb::DRIVER.build)(table, &ctx).unwrap();
/// assert_eq!(source.kind(), "influxdb");
///
/// let bad = serde_json::json!({"no_such_key": 1});
/// let err = (respaldo_source_influxdb::DRIVER.build)(bad, &ctx).err().unwrap();
/// assert!(err.to_string().contains("no_such_key"), "{err}");
/// ```
pub const DRIVER: respaldo_core::registry::Driver = respaldo_core::registry::Driver {
    kind: "influxdb",
    build: |value, cx| {
        respaldo_core::registry::build_with(value, |c| InfluxSource::new(c, cx.base))
    },
    example: "type = \"influxdb\"\nurl = \"http://localhost:8086\"\ndatabases = [\"energy\"]\n",
};

#[async_trait]
impl Source for InfluxSource {
    fn kind(&self) -> &'static str {
        "influxdb"
    }

    async fn check(&self) -> Result<(), BoxError> {
        if self.version == 2 {
            let v2 = self.v2(&self.config.url).await?;
            let org_id = v2.org_id().await?;
            v2.selected(&org_id, &self.config.buckets).await?;
        } else {
            let c = self.client(&self.config.url).await?;
            self.selected(&c).await?;
        }
        Ok(())
    }

    async fn backup(&self, ctx: &mut BackupContext) -> Result<(), BoxError> {
        if self.version == 2 {
            self.backup_v2(ctx).await?;
        } else {
            self.backup_v1(ctx).await?;
        }
        if let Some(s) = &self.config.since {
            ctx.set_metadata("since", s.clone());
        }
        Ok(())
    }

    async fn plan(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestorePlan, BoxError> {
        Ok(self.plan_any(ctx, target).await?)
    }

    async fn restore(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestoreReport, BoxError> {
        Ok(self.restore_any(ctx, target).await?)
    }

    /// A full export (no `since` window) of the databases that exist: what a
    /// `--force` restore may replace.
    async fn safety_backup(
        &self,
        ctx: &mut BackupContext,
        _plan: &RestorePlan,
    ) -> Result<(), BoxError> {
        let mut config = self.config.clone();
        config.since = None;
        if self.version == 1 {
            let c = self.client(&self.config.url).await?;
            let existing = Self::databases(&c).await?;
            let wanted: Vec<String> = if config.databases.is_empty() {
                existing.clone()
            } else {
                config
                    .databases
                    .iter()
                    .filter(|d| existing.contains(d))
                    .cloned()
                    .collect()
            };
            if wanted.is_empty() {
                return Ok(());
            }
            config.databases = wanted;
        }
        // Paths in `config` were made absolute when this source was built.
        InfluxSource::new(config, Path::new("/"))?.backup(ctx).await
    }

    async fn test_restore(&self, ctx: &RestoreContext) -> Result<RestoreReport, BoxError> {
        self.same_version(ctx)?;
        Ok(if self.version == 2 {
            self.test_restore_v2(ctx).await?
        } else {
            self.test_restore_v1(ctx).await?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let live = "http://a:8086";
        assert_eq!(
            parse_target("http://b:9999/other", live).unwrap(),
            ("http://b:9999".into(), Some("other".into()))
        );
        assert_eq!(
            parse_target("http://b:9999", live).unwrap(),
            ("http://b:9999".into(), None)
        );
        assert_eq!(
            parse_target("copy", live).unwrap(),
            (live.into(), Some("copy".into()))
        );
        assert!(parse_target("a/b", live).is_err());
        assert!(parse_target("http://u:pw@b:1/x", live)
            .unwrap_err()
            .to_string()
            .contains("without credentials"));
        assert!(has_userinfo("http://u:pw@h:8086"));
        assert!(!has_userinfo("http://h:8086/a@b"));
    }

    #[test]
    fn continuous_queries_keep_their_database() {
        let q = "CREATE CONTINUOUS QUERY cq1 ON d1 BEGIN SELECT mean(x) INTO d1.short.m FROM d1.autogen.cpu GROUP BY time(1h) END";
        assert_eq!(cq_for(q, "d1").as_deref(), Some(q));
        assert_eq!(cq_for(q, "d2"), None);
    }
}
