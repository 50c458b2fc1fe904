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

mod backup;
mod client;
mod config;
mod csv;
mod error;
mod http;
mod lp;
mod meta;
mod restore;
mod source;
mod test_restore;
mod v2;
mod write;

pub use config::InfluxConfig;
pub use error::InfluxError;
pub use meta::{ContinuousQuery, DatabaseMeta, RetentionPolicy};
pub use source::InfluxSource;

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
    inventory: meta::inventory,
};

#[cfg(test)]
mod tests {
    use crate::restore::cq_for;
    use crate::source::{has_userinfo, parse_target};

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
