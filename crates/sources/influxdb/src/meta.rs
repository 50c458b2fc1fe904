//! What a backup records of each database: its retention policies,
//! continuous queries and point counts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
pub(crate) type Counts = BTreeMap<String, BTreeMap<String, u64>>;

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

pub(crate) fn flatten(c: &Counts) -> BTreeMap<String, u64> {
    c.iter()
        .flat_map(|(rp, ms)| ms.iter().map(move |(m, n)| (format!("{rp}.{m}"), *n)))
        .collect()
}

/// What a snapshot's metadata says the server held: each database (1.x,
/// measurements as `retention_policy.measurement`) or bucket (2.x) with its
/// measurements and their points.
pub(crate) fn inventory(
    m: &respaldo_core::inventory::Metadata,
) -> Vec<respaldo_core::inventory::Item> {
    use respaldo_core::inventory::{field, nested_counts};
    #[derive(Deserialize)]
    struct V1 {
        #[serde(default)]
        points: Counts,
    }
    #[derive(Deserialize)]
    struct V2 {
        #[serde(default)]
        points: BTreeMap<String, u64>,
    }
    let counts: BTreeMap<String, BTreeMap<String, u64>> =
        match field::<BTreeMap<String, V2>>(m, "buckets") {
            Some(buckets) => buckets.into_iter().map(|(b, v)| (b, v.points)).collect(),
            None => field::<BTreeMap<String, V1>>(m, "databases")
                .unwrap_or_default()
                .into_iter()
                .map(|(db, v)| (db, flatten(&v.points)))
                .collect(),
        };
    nested_counts(&counts, "measurements", "points")
}
