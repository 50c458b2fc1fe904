//! What a backup records about each database and the accounts (the
//! metadata a restore plans and checks from).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a backup recorded about one database (the `databases` metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseRecord {
    /// The artifact holding its dump.
    pub artifact: String,
    /// Rows per table, counted from the dump itself.
    pub rows: BTreeMap<String, u64>,
    /// Its views.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<String>,
    /// Its default character set.
    pub charset: String,
    /// Its default collation.
    pub collation: String,
    /// Whether the dump holds definitions only.
    #[serde(default)]
    pub schema_only: bool,
}

/// What a backup recorded about the accounts (the `users` metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersRecord {
    /// The artifact holding `CREATE USER` and `GRANT` statements.
    pub artifact: String,
    /// The accounts it creates (`` `name`@`host` ``), the server's own left out.
    pub accounts: Vec<String>,
}
