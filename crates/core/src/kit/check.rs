//! Comparing what a backup recorded (rows per table, keys per database,
//! points per measurement, files per volume) with what a restore produced.
//! Every driver reports its post-restore check through this one function, so
//! the wording and the rules are the same everywhere.

use std::collections::BTreeMap;

/// The outcome of comparing recorded and restored counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountCheck {
    /// Items compared.
    pub compared: usize,
    /// Sum of the recorded counts.
    pub total: u64,
    /// `name: recorded R, restored A` for every difference.
    pub mismatches: Vec<String>,
}

impl CountCheck {
    /// True when every count matched.
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// One line for the user: `row counts match (12 tables, 1000042 rows)`
    /// or `row counts differ: …`.
    pub fn line(&self, what: &str, items: &str) -> String {
        if self.ok() {
            format!(
                "{what} counts match ({} {items}, {} in all)",
                self.compared, self.total
            )
        } else {
            format!("{what} counts differ: {}", self.mismatches.join("; "))
        }
    }
}

/// Compares `restored` with `recorded`, limited to the names `keep` accepts
/// (a partial restore checks only what it restored). A name recorded but
/// missing after the restore counts as 0; a name that appears only after the
/// restore is ignored unless `strict` (a restore into an emptied target).
pub fn compare_counts(
    recorded: &BTreeMap<String, u64>,
    restored: &BTreeMap<String, u64>,
    keep: impl Fn(&str) -> bool,
    strict: bool,
) -> CountCheck {
    let mut c = CountCheck {
        compared: 0,
        total: 0,
        mismatches: Vec::new(),
    };
    for (name, &want) in recorded.iter().filter(|(n, _)| keep(n)) {
        c.compared += 1;
        c.total += want;
        let got = restored.get(name).copied().unwrap_or(0);
        if got != want {
            c.mismatches
                .push(format!("{name}: recorded {want}, restored {got}"));
        }
    }
    if strict {
        for (name, &got) in restored.iter().filter(|(n, _)| keep(n)) {
            if !recorded.contains_key(name) && got != 0 {
                c.mismatches
                    .push(format!("{name}: not in the backup, restored {got}"));
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(v: &[(&str, u64)]) -> BTreeMap<String, u64> {
        v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    #[test]
    fn counts() {
        let rec = m(&[("a", 3), ("b", 0), ("c", 5)]);
        let c = compare_counts(&rec, &m(&[("a", 3), ("c", 5)]), |_| true, true);
        assert!(c.ok(), "{c:?}");
        assert_eq!(
            c.line("row", "tables"),
            "row counts match (3 tables, 8 in all)"
        );
        let c = compare_counts(&rec, &m(&[("a", 2), ("c", 5), ("d", 1)]), |_| true, true);
        assert_eq!(
            c.mismatches,
            vec![
                "a: recorded 3, restored 2",
                "d: not in the backup, restored 1"
            ]
        );
        let c = compare_counts(&rec, &m(&[("a", 2), ("d", 1)]), |n| n == "c", false);
        assert_eq!(c.mismatches, vec!["c: recorded 5, restored 0"]);
    }
}
