//! The table of contents of a custom-format archive (`pg_restore --list`),
//! and the entries a single-table or single-schema restore needs: the
//! table, its data, and everything pg_restore would leave out when selecting
//! by `--table` — its constraints, defaults, triggers, policies, comments,
//! grants, standalone indexes and owned sequences, and the foreign keys of
//! other tables that point at it.

use std::collections::BTreeSet;

/// One line of `pg_restore --list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TocEntry {
    /// The line as pg_restore printed it (given back in `--use-list`).
    pub line: String,
    /// Object type (`TABLE`, `TABLE DATA`, `FK CONSTRAINT`, …).
    pub kind: String,
    /// Schema (`None` for `-`).
    pub schema: Option<String>,
    /// The tag: the object's name; for table parts, `table part`.
    pub name: String,
}

/// Types, longest first so that `TABLE DATA` is not read as `TABLE`.
const KINDS: &[&str] = &[
    "MATERIALIZED VIEW DATA",
    "SEQUENCE OWNED BY",
    "MATERIALIZED VIEW",
    "FK CONSTRAINT",
    "SEQUENCE SET",
    "ROW SECURITY",
    "TABLE ATTACH",
    "INDEX ATTACH",
    "DEFAULT ACL",
    "TABLE DATA",
    "CONSTRAINT",
    "SEQUENCE",
    "TRIGGER",
    "COMMENT",
    "DEFAULT",
    "POLICY",
    "SCHEMA",
    "INDEX",
    "TABLE",
    "VIEW",
    "ACL",
];

/// Parses `pg_restore --list` output (comments and unknown types skipped).
pub(crate) fn parse(text: &str) -> Vec<TocEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with(';') || line.trim().is_empty() {
            continue;
        }
        // `ID; CATALOG-OID OID TYPE SCHEMA NAME OWNER`
        let Some((_, rest)) = line.split_once("; ") else {
            continue;
        };
        let mut parts = rest.splitn(3, ' ');
        let (Some(_), Some(_), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Some(kind) = KINDS
            .iter()
            .find(|k| rest.starts_with(*k) && rest.as_bytes().get(k.len()) == Some(&b' '))
        else {
            continue;
        };
        let rest = &rest[kind.len() + 1..];
        let Some((schema, rest)) = rest.split_once(' ') else {
            continue;
        };
        // The owner is the last word (absent for some types: keep it all then).
        let name = match rest.rsplit_once(' ') {
            Some((n, _owner)) => n,
            None => rest,
        };
        out.push(TocEntry {
            line: line.to_string(),
            kind: kind.to_string(),
            schema: (schema != "-").then(|| schema.to_string()),
            name: name.to_string(),
        });
    }
    out
}

/// What one restore selects: `schema.table` names, and qualified names of
/// their standalone indexes and owned sequences.
#[derive(Debug, Default)]
pub(crate) struct Wanted {
    /// `schema.table`.
    pub tables: BTreeSet<String>,
    /// `schema.index`.
    pub indexes: BTreeSet<String>,
    /// `schema.sequence`.
    pub sequences: BTreeSet<String>,
    /// Foreign keys of other tables into the selected ones, as
    /// `schema.table constraint` (only those whose table exists where the
    /// restore goes).
    pub foreign_keys_in: BTreeSet<String>,
    /// Schemas to create (absent where the restore goes).
    pub schemas: BTreeSet<String>,
}

impl Wanted {
    /// Whether the entry belongs to the selection; `data` chooses between
    /// the data entries and the definitions.
    pub fn selects(&self, e: &TocEntry, definitions: bool, data: bool) -> bool {
        let Some(schema) = e.schema.as_deref() else {
            return false;
        };
        let q = |n: &str| format!("{schema}.{n}");
        let first = e.name.split(' ').next().unwrap_or("");
        match e.kind.as_str() {
            "TABLE DATA" => data && self.tables.contains(&q(&e.name)),
            "SEQUENCE SET" => data && self.sequences.contains(&q(&e.name)),
            "SCHEMA" => definitions && self.schemas.contains(&e.name),
            "TABLE" => definitions && self.tables.contains(&q(&e.name)),
            "SEQUENCE" | "SEQUENCE OWNED BY" => definitions && self.sequences.contains(&q(&e.name)),
            "INDEX" => definitions && self.indexes.contains(&q(&e.name)),
            "CONSTRAINT" | "DEFAULT" | "TRIGGER" | "POLICY" | "ROW SECURITY" => {
                definitions && self.tables.contains(&q(first))
            }
            "FK CONSTRAINT" => {
                definitions
                    && (self.tables.contains(&q(first))
                        || self
                            .foreign_keys_in
                            .contains(&format!("{schema}.{}", e.name)))
            }
            "COMMENT" | "ACL" => {
                // `TABLE t`, `COLUMN t.c`, `SEQUENCE s`, `INDEX i`.
                definitions
                    && match e.name.split_once(' ') {
                        Some(("TABLE", t)) => self.tables.contains(&q(t)),
                        Some(("COLUMN", c)) => c
                            .split_once('.')
                            .is_some_and(|(t, _)| self.tables.contains(&q(t))),
                        Some(("SEQUENCE", n)) => self.sequences.contains(&q(n)),
                        Some(("INDEX", n)) => self.indexes.contains(&q(n)),
                        _ => false,
                    }
            }
            _ => false,
        }
    }

    /// The `--use-list` text for the selected entries, in archive order.
    pub fn list(&self, toc: &[TocEntry], definitions: bool, data: bool) -> String {
        let mut s = String::new();
        for e in toc.iter().filter(|e| self.selects(e, definitions, data)) {
            s.push_str(&e.line);
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "\
;
; Archive created at 2026-12-01 10:00:00 UTC
;
215; 1259 16390 TABLE public settings app
216; 1259 16389 SEQUENCE public settings_id_seq app
217; 0 0 SEQUENCE OWNED BY public settings_id_seq app
3350; 2604 16393 DEFAULT public settings id app
218; 1259 16400 TABLE public products app
3500; 0 16390 TABLE DATA public settings app
3501; 0 16400 TABLE DATA public products app
3502; 0 0 SEQUENCE SET public settings_id_seq app
3210; 2606 16395 CONSTRAINT public settings settings_pkey app
3211; 1259 16396 INDEX public settings_name_idx app
3212; 2606 16401 FK CONSTRAINT public products products_setting_fkey app
3213; 2620 16402 TRIGGER public settings audit app
3214; 0 0 COMMENT public TABLE settings app
3215; 0 0 ACL public TABLE products app
";

    #[test]
    fn selects_a_table_with_everything_that_belongs_to_it() {
        let toc = parse(LIST);
        assert_eq!(toc.len(), 14);
        assert_eq!(toc[6].kind, "TABLE DATA");
        assert_eq!(toc[8].name, "settings settings_pkey");
        let w = Wanted {
            tables: ["public.settings".to_string()].into(),
            indexes: ["public.settings_name_idx".to_string()].into(),
            sequences: ["public.settings_id_seq".to_string()].into(),
            foreign_keys_in: ["public.products products_setting_fkey".to_string()].into(),
            schemas: Default::default(),
        };
        let all = w.list(&toc, true, true);
        for want in [
            "TABLE public settings",
            "SEQUENCE public settings_id_seq",
            "SEQUENCE OWNED BY",
            "DEFAULT public settings id",
            "TABLE DATA public settings",
            "SEQUENCE SET public settings_id_seq",
            "settings_pkey",
            "INDEX public settings_name_idx",
            "products_setting_fkey",
            "TRIGGER public settings audit",
            "COMMENT public TABLE settings",
        ] {
            assert!(all.contains(want), "{want} missing from:\n{all}");
        }
        assert!(!all.contains("TABLE public products"));
        assert!(!all.contains("TABLE DATA public products"));
        assert!(!all.contains("ACL public TABLE products"));
        let data = w.list(&toc, false, true);
        assert_eq!(data.lines().count(), 2, "{data}");
    }
}
