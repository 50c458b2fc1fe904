//! What a source held at backup time, as its driver recorded it in the
//! snapshot's metadata: databases and tables with their row counts, Redis
//! databases with their key counts, InfluxDB measurements with their point
//! counts. Each driver reads its own metadata into [`Item`]s (its registry
//! entry's `inventory`), so `ls`, `diff` and the dashboard show every kind of
//! source the same way without knowing any of them.

use std::collections::BTreeMap;

use serde::Serialize;

/// A source's metadata, as a snapshot holds it.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// How a driver reads its metadata into items (an empty list: the driver
/// records nothing countable, like a file tree, whose listing is its
/// inventory).
pub type Reader = fn(&Metadata) -> Vec<Item>;

/// One thing a source held, and how many of what it contained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Where it is, outermost first: `["shop", "public.orders"]` for a
    /// table of the database `shop`, `["db0"]` for a Redis database.
    pub path: Vec<String>,
    /// How many `unit`s it held.
    pub count: u64,
    /// What `count` counts: `rows`, `keys`, `points`, `tables`, …
    pub unit: &'static str,
}

impl Item {
    /// An item at `path` holding `count` `unit`s.
    pub fn new(path: Vec<String>, count: u64, unit: &'static str) -> Self {
        Item { path, count, unit }
    }

    /// The path as one string, its parts joined with `/`.
    pub fn name(&self) -> String {
        self.path.join("/")
    }
}

/// For drivers whose metadata holds nothing countable.
pub fn nothing(_: &Metadata) -> Vec<Item> {
    Vec::new()
}

/// The items of a two-level map `{outer: {inner: count}}` found under `key`:
/// one item per outer name (counting its inner names as `outer_unit`) and
/// one per inner name (counting `unit`). The shape every database driver
/// records (`{database: {table: rows}}`) comes through here.
pub fn nested_counts(
    map: &BTreeMap<String, BTreeMap<String, u64>>,
    outer_unit: &'static str,
    unit: &'static str,
) -> Vec<Item> {
    let mut out = Vec::new();
    for (outer, inner) in map {
        out.push(Item::new(
            vec![outer.clone()],
            inner.len() as u64,
            outer_unit,
        ));
        for (name, n) in inner {
            out.push(Item::new(vec![outer.clone(), name.clone()], *n, unit));
        }
    }
    out
}

/// The items of `{"databases": {NAME: {"rows": {TABLE: N}, …}}}`, what the
/// PostgreSQL and MySQL drivers record: each database with its table count,
/// each table with its rows.
pub fn database_rows(metadata: &Metadata) -> Vec<Item> {
    #[derive(serde::Deserialize)]
    struct Database {
        #[serde(default)]
        rows: BTreeMap<String, u64>,
    }
    let dbs: BTreeMap<String, Database> = field(metadata, "databases").unwrap_or_default();
    let rows = dbs.into_iter().map(|(name, db)| (name, db.rows)).collect();
    nested_counts(&rows, "tables", "rows")
}

/// Reads `metadata[key]` as `T`, or `None` when it is absent or has another
/// shape (an older snapshot, another driver version).
pub fn field<T: serde::de::DeserializeOwned>(metadata: &Metadata, key: &str) -> Option<T> {
    metadata
        .get(key)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// The change of one item between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The item's path.
    pub path: Vec<String>,
    /// What is counted.
    pub unit: &'static str,
    /// The count in the older snapshot (`None`: absent there).
    pub before: Option<u64>,
    /// The count in the newer snapshot (`None`: absent there).
    pub after: Option<u64>,
}

impl Change {
    /// `after − before`, absent counting as zero.
    pub fn delta(&self) -> i128 {
        i128::from(self.after.unwrap_or(0)) - i128::from(self.before.unwrap_or(0))
    }
}

/// The items that differ between `before` and `after` (added, removed, or
/// with another count), in path order.
pub fn changes(before: &[Item], after: &[Item]) -> Vec<Change> {
    let key = |i: &Item| (i.path.clone(), i.unit);
    let old: BTreeMap<_, u64> = before.iter().map(|i| (key(i), i.count)).collect();
    let new: BTreeMap<_, u64> = after.iter().map(|i| (key(i), i.count)).collect();
    let mut keys: Vec<_> = old.keys().chain(new.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (b, a) = (old.get(&k).copied(), new.get(&k).copied());
            (b != a).then_some(Change {
                path: k.0,
                unit: k.1,
                before: b,
                after: a,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_what_was_added_removed_and_recounted() {
        let before = vec![
            Item::new(vec!["a".into()], 3, "rows"),
            Item::new(vec!["b".into()], 1, "rows"),
            Item::new(vec!["c".into()], 5, "rows"),
        ];
        let after = vec![
            Item::new(vec!["a".into()], 3, "rows"),
            Item::new(vec!["c".into()], 2, "rows"),
            Item::new(vec!["d".into()], 7, "rows"),
        ];
        let c = changes(&before, &after);
        let got: Vec<_> = c
            .iter()
            .map(|c| (c.path[0].as_str(), c.before, c.after, c.delta()))
            .collect();
        assert_eq!(
            got,
            [
                ("b", Some(1), None, -1),
                ("c", Some(5), Some(2), -3),
                ("d", None, Some(7), 7)
            ]
        );
    }

    #[test]
    fn nested_counts_list_each_outer_name_then_its_inner_names() {
        let mut m = BTreeMap::new();
        m.insert(
            "shop".to_string(),
            BTreeMap::from([("t1".to_string(), 4), ("t2".to_string(), 0)]),
        );
        let items = nested_counts(&m, "tables", "rows");
        let names: Vec<_> = items.iter().map(|i| (i.name(), i.count, i.unit)).collect();
        assert_eq!(
            names,
            [
                ("shop".to_string(), 2, "tables"),
                ("shop/t1".to_string(), 4, "rows"),
                ("shop/t2".to_string(), 0, "rows")
            ]
        );
    }
}
