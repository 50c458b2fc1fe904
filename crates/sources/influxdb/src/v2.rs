//! InfluxDB 2.x: organizations, buckets and Flux over the `/api/v2` HTTP API,
//! with an API token.
//!
//! **Export.** One Flux query per bucket,
//! `from(bucket) |> range(all time) |> pivot(rowKey: ["_time"], columnKey:
//! ["_field"], valueColumn: "_value")`: every answer row is one point (a
//! series and a timestamp with its fields), read from the annotated CSV as it
//! arrives and written as one line of line protocol with the field's exact
//! type (`double` → float, `long` → `i`, `unsignedLong` → `u`, `string`
//! quoted, `boolean`). Points are counted per measurement from the same rows,
//! so the count always matches what was exported.
//!
//! Annotated CSV writes a missing value and an empty string the same way, so
//! an empty string cell of a pivoted row is ambiguous. For each measurement
//! and string field where that happened, a second query fetches exactly the
//! empty-string values (`filter(fn: (r) => string(v: r._value) == "")`,
//! unpivoted) and appends them as lines of their own; InfluxDB merges them
//! into their points on restore.
//!
//! **Restore.** The bucket is created with its recorded description and
//! retention rules (or, when it exists and is empty, updated to them); with
//! `--force` an existing bucket's points are deleted first (`/api/v2/delete`,
//! so the bucket keeps its id and the tokens scoped to it). The lines are
//! written with `/api/v2/write` in gzip'd batches; afterwards the points per
//! measurement are counted with the export query and compared with the
//! backup's.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use reqwest::Method;
use respaldo_core::kit::check::compare_counts;
use respaldo_core::source::TargetState;
use respaldo_core::source::{RestoreContext, RestoreReport};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::csv::{AnnotatedCsv, Column};
use crate::http::Http;
use crate::lp::{self, Kind};
use crate::write::{write_lines, Destination};
use crate::InfluxError;

/// The earliest timestamp InfluxDB stores (ns since the epoch).
pub const MIN_NS: i64 = i64::MIN + 2;
/// The end of "all time" for `range` (exclusive; InfluxDB's latest timestamp
/// is `i64::MAX - 1`).
const STOP_NS: i64 = i64::MAX;

/// A bucket's retention rule as the API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRule {
    /// Always `expire`.
    #[serde(rename = "type", default = "expire")]
    pub kind: String,
    /// How long points are kept, in seconds (0 = forever).
    #[serde(rename = "everySeconds", default)]
    pub every_seconds: i64,
    /// The shard group duration, in seconds, when the server reports one.
    #[serde(
        rename = "shardGroupDurationSeconds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub shard_group_duration_seconds: Option<i64>,
}

fn expire() -> String {
    "expire".into()
}

/// What the backup records for one bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BucketMeta {
    /// The artifact holding its points.
    pub artifact: String,
    /// Its description.
    #[serde(default)]
    pub description: Option<String>,
    /// Its retention rules.
    #[serde(default)]
    pub retention_rules: Vec<RetentionRule>,
    /// Points exported per measurement.
    #[serde(default)]
    pub points: BTreeMap<String, u64>,
    /// With `since`: the absolute start of the exported window (ns); a
    /// `--force` restore replaces only the points from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ns: Option<i64>,
}

/// A bucket as `/api/v2/buckets` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Bucket {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `user` or `system` (`_monitoring`, `_tasks`).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Its description.
    #[serde(default)]
    pub description: Option<String>,
    /// Its retention rules.
    #[serde(rename = "retentionRules", default)]
    pub retention_rules: Vec<RetentionRule>,
}

#[derive(Debug, Deserialize)]
struct Buckets {
    #[serde(default)]
    buckets: Vec<Bucket>,
}

#[derive(Debug, Deserialize)]
struct Org {
    id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct Orgs {
    #[serde(default)]
    orgs: Vec<Org>,
}

/// A Flux string literal.
pub fn flux_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' if chars.peek() == Some(&'{') => out.push_str("\\$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `from(bucket) |> range(start, end of time)`.
fn from_range(bucket: &str, start_ns: i64) -> String {
    format!(
        "from(bucket: {}) |> range(start: time(v: {start_ns}), stop: time(v: {STOP_NS}))",
        flux_str(bucket)
    )
}

/// The export query: one row per point.
pub fn export_query(bucket: &str, start_ns: i64) -> String {
    format!(
        "{} |> pivot(rowKey: [\"_time\"], columnKey: [\"_field\"], valueColumn: \"_value\")",
        from_range(bucket, start_ns)
    )
}

/// The query for the empty-string values of one field.
pub fn empty_strings_query(bucket: &str, start_ns: i64, m: &str, field: &str) -> String {
    format!(
        "{} |> filter(fn: (r) => r._measurement == {} and r._field == {}) |> filter(fn: (r) => string(v: r._value) == \"\")",
        from_range(bucket, start_ns),
        flux_str(m),
        flux_str(field)
    )
}

/// How the columns of one table of an answer are turned into a line.
struct Roles {
    time: usize,
    measurement: usize,
    /// Tag columns, sorted by key.
    tags: Vec<usize>,
    /// Pivoted: field columns, sorted by key, with their kinds.
    fields: Vec<(usize, Kind)>,
    /// Unpivoted: the `_field` and `_value` columns and the value's kind.
    field_value: Option<(usize, usize, Kind)>,
}

/// Columns that are neither tags nor fields.
const RESERVED: [&str; 6] = ["", "result", "table", "_start", "_stop", "_time"];

impl Roles {
    fn new(cols: &[Column], http: &Http) -> Result<Roles, InfluxError> {
        let bad = |m: String| InfluxError::Protocol {
            url: http.url.clone(),
            message: m,
        };
        let pos = |name: &str| cols.iter().position(|c| c.name == name);
        let time = pos("_time").ok_or_else(|| bad("an answer table has no `_time`".into()))?;
        let measurement = pos("_measurement")
            .ok_or_else(|| bad("an answer table has no `_measurement`".into()))?;
        let kind = |c: &Column| {
            Kind::from_flux_type(&c.datatype).ok_or_else(|| {
                bad(format!(
                    "field `{}` has the unsupported type `{}`",
                    c.name, c.datatype
                ))
            })
        };
        let field_value = match (pos("_field"), pos("_value")) {
            (Some(f), Some(v)) => Some((f, v, kind(&cols[v])?)),
            _ => None,
        };
        let mut tags = Vec::new();
        let mut fields = Vec::new();
        for (i, c) in cols.iter().enumerate() {
            let name = c.name.as_str();
            if RESERVED.contains(&name) || name == "_measurement" {
                continue;
            }
            if field_value.is_some() && (name == "_field" || name == "_value") {
                continue;
            }
            if c.group {
                tags.push(i);
            } else if field_value.is_none() {
                fields.push((i, kind(c)?));
            }
        }
        tags.sort_by(|a, b| cols[*a].name.cmp(&cols[*b].name));
        fields.sort_by(|a, b| cols[a.0].name.cmp(&cols[b.0].name));
        Ok(Roles {
            time,
            measurement,
            tags,
            fields,
            field_value,
        })
    }
}

/// Appends the line for one answer row to `out` (nothing when the row has
/// no field value that can be told apart from a missing one); string cells
/// of pivoted rows that are empty go into `ambiguous`.
fn push_line(
    out: &mut Vec<u8>,
    cols: &[Column],
    roles: &Roles,
    row: &[String],
    ambiguous: &mut BTreeSet<(String, String)>,
) -> Result<(), lp::ValueError> {
    let start = out.len();
    let m = &row[roles.measurement];
    lp::push_measurement(out, m);
    for &t in &roles.tags {
        if !row[t].is_empty() {
            out.push(b',');
            lp::push_key(out, &cols[t].name);
            out.push(b'=');
            lp::push_key(out, &row[t]);
        }
    }
    let mut n = 0;
    let mut field = |out: &mut Vec<u8>, name: &str, kind: Kind, v: &str| {
        out.push(if n == 0 { b' ' } else { b',' });
        lp::push_key(out, name);
        out.push(b'=');
        n += 1;
        lp::push_text_value(out, kind, v).map_err(|e| lp::ValueError::Field {
            field: name.to_string(),
            error: Box::new(e),
        })
    };
    if let Some((f, v, kind)) = roles.field_value {
        // Unpivoted: a row exists only for a value, so an empty string is one.
        if !row[v].is_empty() || kind == Kind::String {
            field(out, &row[f], kind, &row[v])?;
        }
    } else {
        for &(i, kind) in &roles.fields {
            if row[i].is_empty() {
                if kind == Kind::String {
                    ambiguous.insert((m.clone(), cols[i].name.clone()));
                }
                continue;
            }
            field(out, &cols[i].name, kind, &row[i])?;
        }
    }
    if n == 0 {
        out.truncate(start);
        return Ok(());
    }
    let t = lp::rfc3339_ns(&row[roles.time])?;
    out.extend_from_slice(format!(" {t}\n").as_bytes());
    Ok(())
}

/// A 2.x server and the organization whose buckets are backed up.
#[derive(Debug, Clone)]
pub struct V2 {
    /// The server.
    pub http: Http,
    /// The organization's name.
    pub org: String,
}

impl V2 {
    /// The organization's id.
    pub async fn org_id(&self) -> Result<String, InfluxError> {
        let rb = self
            .http
            .request(Method::GET, "/api/v2/orgs")
            .query(&[("org", &self.org)]);
        let missing = || InfluxError::NoOrg {
            url: self.http.url.clone(),
            org: self.org.clone(),
        };
        match self.http.json::<Orgs>(rb, "GET /api/v2/orgs").await {
            Ok(o) => o
                .orgs
                .into_iter()
                .find(|o| o.name == self.org)
                .map(|o| o.id)
                .ok_or_else(missing),
            Err(InfluxError::Server { status: 404, .. }) => Err(missing()),
            Err(e) => Err(e),
        }
    }

    /// The bucket `name`, if it exists.
    pub async fn bucket(&self, org_id: &str, name: &str) -> Result<Option<Bucket>, InfluxError> {
        let rb = self
            .http
            .request(Method::GET, "/api/v2/buckets")
            .query(&[("orgID", org_id), ("name", name)]);
        match self.http.json::<Buckets>(rb, "GET /api/v2/buckets").await {
            Ok(b) => Ok(b.buckets.into_iter().find(|b| b.name == name)),
            Err(InfluxError::Server { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every bucket of the organization, system buckets included.
    async fn all_buckets(&self, org_id: &str) -> Result<Vec<Bucket>, InfluxError> {
        const PAGE: usize = 100;
        let mut out = Vec::new();
        loop {
            let offset = out.len().to_string();
            let limit = PAGE.to_string();
            let rb = self.http.request(Method::GET, "/api/v2/buckets").query(&[
                ("orgID", org_id),
                ("limit", &limit),
                ("offset", &offset),
            ]);
            let page = self
                .http
                .json::<Buckets>(rb, "GET /api/v2/buckets")
                .await?
                .buckets;
            let n = page.len();
            out.extend(page);
            if n < PAGE {
                return Ok(out);
            }
        }
    }

    /// The buckets to back up: `names`, or every user bucket.
    pub async fn selected(
        &self,
        org_id: &str,
        names: &[String],
    ) -> Result<Vec<Bucket>, InfluxError> {
        if names.is_empty() {
            return Ok(self
                .all_buckets(org_id)
                .await?
                .into_iter()
                .filter(|b| b.kind != "system" && !b.name.starts_with('_'))
                .collect());
        }
        let mut out = Vec::new();
        for name in names {
            match self.bucket(org_id, name).await? {
                Some(b) => out.push(b),
                None => {
                    return Err(InfluxError::NoBucket {
                        url: self.http.url.clone(),
                        org: self.org.clone(),
                        bucket: name.clone(),
                    })
                }
            }
        }
        Ok(out)
    }

    /// Runs a Flux query; its answer is read as it arrives.
    async fn query(&self, org_id: &str, flux: &str) -> Result<AnnotatedCsv, InfluxError> {
        let body = json!({
            "query": flux,
            "type": "flux",
            "dialect": {
                "header": true,
                "delimiter": ",",
                "annotations": ["datatype", "group", "default"],
                "dateTimeFormat": "RFC3339Nano",
            },
        });
        let rb = self
            .http
            .request(Method::POST, "/api/v2/query")
            .query(&[("orgID", org_id)])
            .header("Accept", "application/csv")
            .header("Content-Type", "application/json")
            .body(body.to_string());
        let resp = self.http.send(rb).await.map_err(|e| match e {
            InfluxError::Server { url, message, .. } => InfluxError::Query {
                url,
                query: flux.to_string(),
                message,
            },
            e => e,
        })?;
        Ok(AnnotatedCsv::new(&self.http, flux, resp))
    }

    /// Reads the answer to `flux`; with `tx`, sends its rows as lines.
    /// Returns the rows per measurement and the ambiguous string fields.
    async fn scan(
        &self,
        org_id: &str,
        flux: &str,
        tx: Option<&tokio::sync::mpsc::Sender<std::io::Result<Bytes>>>,
    ) -> Result<(BTreeMap<String, u64>, BTreeSet<(String, String)>), InfluxError> {
        const SEND_AT: usize = 256 * 1024;
        let mut csv = self.query(org_id, flux).await?;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut ambiguous = BTreeSet::new();
        let mut row = Vec::new();
        let mut out = Vec::with_capacity(SEND_AT + 4096);
        let mut schema = 0;
        let mut roles = None;
        let mut last_m = String::new();
        let mut last_n = 0u64;
        while csv.next_row(&mut row).await? {
            if csv.schema() != schema || roles.is_none() {
                schema = csv.schema();
                roles = Some(Roles::new(csv.columns(), &self.http)?);
            }
            let r = roles.as_ref().expect("set above");
            let m = &row[r.measurement];
            if *m != last_m {
                if last_n > 0 {
                    *counts.entry(std::mem::take(&mut last_m)).or_default() += last_n;
                }
                last_m.clone_from(m);
                last_n = 0;
            }
            last_n += 1;
            if let Some(tx) = tx {
                push_line(&mut out, csv.columns(), r, &row, &mut ambiguous).map_err(|e| {
                    InfluxError::Protocol {
                        url: self.http.url.clone(),
                        message: format!("measurement `{m}`: {e}"),
                    }
                })?;
                if out.len() >= SEND_AT {
                    let full = std::mem::replace(&mut out, Vec::with_capacity(SEND_AT + 4096));
                    tx.send(Ok(full.into()))
                        .await
                        .map_err(|_| InfluxError::StoreClosed)?;
                }
            }
        }
        if last_n > 0 {
            *counts.entry(last_m).or_default() += last_n;
        }
        if let Some(tx) = tx {
            if !out.is_empty() {
                tx.send(Ok(out.into()))
                    .await
                    .map_err(|_| InfluxError::StoreClosed)?;
            }
        }
        Ok((counts, ambiguous))
    }

    /// Exports `bucket` (points from `start_ns` on) as line protocol into
    /// `tx`; returns the points per measurement.
    pub async fn export(
        &self,
        org_id: &str,
        bucket: &str,
        start_ns: i64,
        tx: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    ) -> Result<BTreeMap<String, u64>, InfluxError> {
        let head = format!("# InfluxDB 2.x bucket {bucket}: line protocol, precision ns\n");
        tx.send(Ok(head.into_bytes().into()))
            .await
            .map_err(|_| InfluxError::StoreClosed)?;
        let (points, ambiguous) = self
            .scan(org_id, &export_query(bucket, start_ns), Some(tx))
            .await?;
        for (m, field) in &ambiguous {
            let q = empty_strings_query(bucket, start_ns, m, field);
            self.scan(org_id, &q, Some(tx)).await?;
        }
        Ok(points)
    }

    /// Points per measurement in `bucket`, counted from the export query.
    pub async fn count(
        &self,
        org_id: &str,
        bucket: &str,
    ) -> Result<BTreeMap<String, u64>, InfluxError> {
        Ok(self
            .scan(org_id, &export_query(bucket, MIN_NS), None)
            .await?
            .0)
    }

    /// Whether `bucket` holds any point.
    async fn is_empty(&self, org_id: &str, bucket: &str) -> Result<bool, InfluxError> {
        let q = format!("{} |> limit(n: 1)", from_range(bucket, MIN_NS));
        let mut csv = self.query(org_id, &q).await?;
        Ok(!csv.next_row(&mut Vec::new()).await?)
    }

    fn rules(meta: &BucketMeta) -> Vec<RetentionRule> {
        if meta.retention_rules.is_empty() {
            // No rule means forever; PATCH takes an empty list as "no change".
            vec![RetentionRule {
                kind: expire(),
                every_seconds: 0,
                shard_group_duration_seconds: None,
            }]
        } else {
            meta.retention_rules.clone()
        }
    }

    async fn create_bucket(
        &self,
        org_id: &str,
        name: &str,
        meta: &BucketMeta,
    ) -> Result<Bucket, InfluxError> {
        let body = json!({
            "orgID": org_id,
            "name": name,
            "description": meta.description,
            "retentionRules": meta.retention_rules,
        });
        let rb = self
            .http
            .request(Method::POST, "/api/v2/buckets")
            .header("Content-Type", "application/json")
            .body(body.to_string());
        self.http.json(rb, "POST /api/v2/buckets").await
    }

    async fn update_bucket(&self, id: &str, meta: &BucketMeta) -> Result<(), InfluxError> {
        let body = json!({
            "description": meta.description.clone().unwrap_or_default(),
            "retentionRules": Self::rules(meta),
        });
        let rb = self
            .http
            .request(Method::PATCH, &format!("/api/v2/buckets/{id}"))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        self.http.send(rb).await.map(drop)
    }

    /// Deletes the bucket with id `id`.
    pub async fn delete_bucket(&self, id: &str) -> Result<(), InfluxError> {
        let rb = self
            .http
            .request(Method::DELETE, &format!("/api/v2/buckets/{id}"));
        self.http.send(rb).await.map(drop)
    }

    /// Deletes every point of a bucket (the bucket stays).
    async fn delete_points(
        &self,
        org_id: &str,
        bucket_id: &str,
        start: i64,
    ) -> Result<(), InfluxError> {
        let body = json!({
            "start": lp::ns_rfc3339(start),
            "stop": lp::ns_rfc3339(i64::MAX - 1),
        });
        let rb = self
            .http
            .request(Method::POST, "/api/v2/delete")
            .query(&[("orgID", org_id), ("bucketID", bucket_id)])
            .header("Content-Type", "application/json")
            .body(body.to_string());
        self.http.send(rb).await.map(drop)
    }

    /// The state of each target bucket: absent, empty, or holding points.
    pub async fn states(
        &self,
        plan: &[(BucketMeta, String)],
    ) -> Result<Vec<TargetState>, InfluxError> {
        let org_id = self.org_id().await?;
        let mut out = Vec::new();
        for (_, target) in plan {
            out.push(match self.bucket(&org_id, target).await? {
                None => TargetState::Absent,
                Some(b) if self.is_empty(&org_id, &b.name).await? => TargetState::Empty,
                Some(_) => TargetState::Holds("points".into()),
            });
        }
        Ok(out)
    }

    /// Restores each `(bucket, target name)` of `plan`. Existing buckets
    /// that hold points are refused, before anything changes, unless
    /// `force`.
    pub async fn restore(
        &self,
        ctx: &RestoreContext,
        plan: &[(BucketMeta, String)],
        force: bool,
        batch: usize,
        report: &mut RestoreReport,
    ) -> Result<(), InfluxError> {
        let org_id = self.org_id().await?;
        let mut existing = Vec::new();
        for (_, target) in plan {
            let b = self.bucket(&org_id, target).await?;
            if let Some(b) = &b {
                if !force && !self.is_empty(&org_id, &b.name).await? {
                    return Err(InfluxError::BucketNotEmpty {
                        url: self.http.url.clone(),
                        bucket: target.clone(),
                    });
                }
            }
            existing.push(b);
        }
        for ((meta, target), old) in plan.iter().zip(existing) {
            match old {
                Some(b) => {
                    if force {
                        let start = meta.since_ns.unwrap_or(MIN_NS);
                        self.delete_points(&org_id, &b.id, start).await?;
                    }
                    self.update_bucket(&b.id, meta).await?;
                }
                None => {
                    self.create_bucket(&org_id, target, meta).await?;
                }
            }
            let artifact = ctx.artifact(&meta.artifact)?.clone();
            let reader = ctx.open_stream(&artifact);
            let dest = Destination::V2 {
                org_id: org_id.clone(),
                bucket: target.clone(),
            };
            let lines = write_lines(&self.http, &dest, reader, batch, &meta.artifact).await?;
            let restored = self.count(&org_id, target).await?;
            let check = compare_counts(&meta.points, &restored, |_| true, true);
            let line = check.line("point", "measurements");
            if !check.ok() {
                return Err(InfluxError::Protocol {
                    url: self.http.url.clone(),
                    message: format!("bucket `{target}`: {line}"),
                });
            }
            report.lines.push(format!(
                "bucket `{target}` on {} (organization {}): {lines} lines written, retention {}; {line}",
                self.http.url,
                self.org,
                describe_rules(&meta.retention_rules),
            ));
        }
        Ok(())
    }
}

/// `forever` or `604800 s`.
fn describe_rules(rules: &[RetentionRule]) -> String {
    match rules.iter().find(|r| r.every_seconds > 0) {
        Some(r) => format!("{} s", r.every_seconds),
        None => "forever".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, datatype: &str, group: bool) -> Column {
        Column {
            name: name.into(),
            datatype: datatype.into(),
            group,
            default: String::new(),
        }
    }

    #[test]
    fn flux_strings_are_escaped() {
        assert_eq!(flux_str("a\"b\\c${d}$e"), "\"a\\\"b\\\\c\\${d}$e\"");
        assert!(export_query("x", MIN_NS).starts_with(
            "from(bucket: \"x\") |> range(start: time(v: -9223372036854775806), stop: time(v: 9223372036854775807)) |> pivot("
        ));
    }

    #[test]
    fn pivoted_and_unpivoted_rows_become_lines() {
        let cols = vec![
            col("", "", false),
            col("result", "string", false),
            col("table", "long", false),
            col("_start", "dateTime:RFC3339", true),
            col("_stop", "dateTime:RFC3339", true),
            col("_time", "dateTime:RFC3339", false),
            col("_measurement", "string", true),
            col("site name", "string", true),
            col("u", "unsignedLong", false),
            col("s", "string", false),
            col("f", "double", false),
            col("i", "long", false),
            col("b", "boolean", false),
        ];
        let http = Http::new("http://x", crate::http::Auth::None).unwrap();
        let roles = Roles::new(&cols, &http).unwrap();
        let row = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut out = Vec::new();
        let mut amb = BTreeSet::new();
        let r = row(&[
            "",
            "",
            "0",
            "x",
            "y",
            "1970-01-01T00:00:00.000000001Z",
            "cpu load",
            "a=b, c",
            "18446744073709551615",
            "say \"hi\"",
            "1e-300",
            "-9223372036854775808",
            "true",
        ]);
        push_line(&mut out, &cols, &roles, &r, &mut amb).unwrap();
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "cpu\\ load,site\\ name=a\\=b\\,\\ c b=true,f=1e-300,i=-9223372036854775808i,\
             s=\"say \\\"hi\\\"\",u=18446744073709551615u 1\n"
        );
        assert!(amb.is_empty());
        // A missing string and float: the string is ambiguous.
        out.clear();
        let r = row(&[
            "",
            "",
            "0",
            "x",
            "y",
            "1677-09-21T00:12:43.145224194Z",
            "m",
            "",
            "",
            "",
            "",
            "1",
            "",
        ]);
        push_line(&mut out, &cols, &roles, &r, &mut amb).unwrap();
        assert_eq!(out, b"m i=1i -9223372036854775806\n");
        assert!(amb.contains(&("m".to_string(), "s".to_string())));
        // Unpivoted rows carry an empty string as a value.
        let cols = vec![
            col("", "", false),
            col("result", "string", false),
            col("table", "long", false),
            col("_time", "dateTime:RFC3339", false),
            col("_value", "string", false),
            col("_field", "string", true),
            col("_measurement", "string", true),
            col("t", "string", true),
        ];
        let roles = Roles::new(&cols, &http).unwrap();
        out.clear();
        let r = row(&["", "", "0", "2020-09-13T12:26:40Z", "", "s", "m", "v"]);
        push_line(&mut out, &cols, &roles, &r, &mut amb).unwrap();
        assert_eq!(out, b"m,t=v s=\"\" 1600000000000000000\n");
    }
}
