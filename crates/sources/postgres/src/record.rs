//! What a backup records about each database (the artifact metadata a
//! restore plans and checks from).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Format;

/// What a backup recorded about one database (the `databases` metadata).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DatabaseRecord {
    /// The artifact holding its dump (or, in csv mode, unused).
    pub artifact: String,
    /// Format of the dump.
    pub format: Format,
    /// `pg_database_size` at backup time.
    pub size_bytes: u64,
    /// The database owner.
    pub owner: String,
    /// Rows per `schema.table`, counted in the dump's snapshot.
    pub rows: BTreeMap<String, u64>,
    /// What the dump holds (`full`, `data_only`, `schema_only`).
    #[serde(default)]
    pub content: Content,
    /// Whether `schemas`/`tables` filters limited the dump: a `--force`
    /// restore then replaces only the dumped objects, never the database.
    #[serde(default)]
    pub filtered: bool,
    /// Per table (`schema.table`), the objects a single-table restore brings
    /// back with it that pg_restore does not name after the table.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dependents: BTreeMap<String, Dependents>,
    /// Foreign keys between the dumped tables, so that a table restored on
    /// its own gets back the keys other tables had into it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_keys: Vec<ForeignKey>,
}

/// A foreign key: `table`'s constraint `name` references `references`
/// (both `schema.table`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKey {
    /// The referencing table.
    pub table: String,
    /// The constraint's name.
    pub name: String,
    /// The referenced table.
    pub references: String,
}

/// What a dump holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// Definitions and data.
    #[default]
    Full,
    /// Rows only (`data_only`): restored into existing tables.
    DataOnly,
    /// Definitions only (`schema_only`).
    SchemaOnly,
}

/// A table's standalone indexes and owned sequences (`schema.name`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependents {
    /// Indexes that are not constraints (those come as constraints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<String>,
    /// Sequences owned by its columns (serial, identity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<String>,
}

/// What a snapshot's metadata says the source held: each database with its
/// tables and their rows (a `csv` mode backup: its one database's tables).
pub(crate) fn inventory(
    m: &respaldo_core::inventory::Metadata,
) -> Vec<respaldo_core::inventory::Item> {
    use respaldo_core::inventory::{database_rows, field, nested_counts};
    match field::<BTreeMap<String, u64>>(m, "tables") {
        Some(tables) => {
            let db = field::<String>(m, "database").unwrap_or_default();
            nested_counts(&BTreeMap::from([(db, tables)]), "tables", "rows")
        }
        None => database_rows(m),
    }
}
