//! Configuration errors: the usage error (exit code 2) and a key path with
//! what is wrong with it, which every settings parser returns.

use serde::de::DeserializeOwned;

/// A configuration or usage error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A key path and what is wrong with it.
pub type KeyError = (Vec<String>, String);

/// Deserializes with the path of the failing key.
pub fn typed<T: DeserializeOwned>(value: toml::Value, prefix: &[String]) -> Result<T, KeyError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut keys: Vec<String> = prefix.to_vec();
        keys.extend(e.path().iter().filter_map(|s| match s {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
            _ => None,
        }));
        let msg = e.inner().to_string();
        // The TOML deserializer appends "in `table`"; the key path says it already.
        let msg = msg.lines().next().unwrap_or("").trim_end().to_string();
        if let Some(field) = msg
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            if keys.last().map(String::as_str) != Some(field) {
                keys.push(field.to_string());
            }
        }
        (keys, msg)
    })
}
