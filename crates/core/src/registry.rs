//! What a driver crate gives the application: one [`Driver`] entry — its
//! type name, how its configuration table builds a [`Source`], and an example
//! configuration (parsed by a test, shown in the docs). The application
//! keeps one list of them; adding a driver is its crate and one line there.

use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::source::Source;

/// One driver's registry entry.
#[derive(Debug, Clone, Copy)]
pub struct Driver {
    /// The `type = "…"` of its sources.
    pub kind: &'static str,
    /// Builds a source from its configuration table (the keys every source
    /// has, like `type` and `enabled`, already taken out).
    pub build: Build,
    /// A `[sources.NAME]` table that works, for the docs and a test.
    pub example: &'static str,
    /// Reads what its snapshots' metadata says a source held (databases,
    /// tables and their row counts, …) for `ls` and `diff`.
    pub inventory: crate::inventory::Reader,
}

/// How a driver builds a source from its configuration table.
pub type Build = fn(serde_json::Value, &BuildContext<'_>) -> Result<Arc<dyn Source>, ConfigError>;

/// What building a source may need from the rest of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct BuildContext<'a> {
    /// The configuration file's folder: relative paths are relative to it.
    pub base: &'a Path,
    /// The repository's folder when it is local (a files source never
    /// backs it up).
    pub local_repository: Option<&'a Path>,
}

/// A configuration problem: the key path (below the source's table) and
/// what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", keys.join("."))]
pub struct ConfigError {
    /// Keys from the source's table down to the bad one (empty: the table).
    pub keys: Vec<String>,
    /// What is wrong.
    pub message: String,
}

/// Deserializes a driver's configuration type from `value`, naming the key
/// of any error, and builds the source with `new`.
pub fn build_with<C, S, E>(
    value: serde_json::Value,
    new: impl FnOnce(C) -> Result<S, E>,
) -> Result<Arc<dyn Source>, ConfigError>
where
    C: DeserializeOwned,
    S: Source + 'static,
    E: std::fmt::Display,
{
    let config: C = serde_path_to_error::deserialize(value).map_err(|e| {
        let mut keys: Vec<String> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let message = e.inner().to_string();
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            if keys.last().map(String::as_str) != Some(field) {
                keys.push(field.to_string());
            }
        }
        ConfigError { keys, message }
    })?;
    new(config)
        .map(|s| Arc::new(s) as Arc<dyn Source>)
        .map_err(|e| ConfigError {
            keys: Vec::new(),
            message: e.to_string(),
        })
}
