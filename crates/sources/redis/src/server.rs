//! What respaldo asks the server: settings, the last save, the keyspace,
//! the function libraries, and the keys a restore replaces.

use std::collections::BTreeMap;

use bytes::Bytes;
use tokio::io::AsyncRead;

use crate::endpoint::Endpoint;
use crate::resp::{info_fields, Conn, Reply};
use crate::RedisError;

/// `CONFIG GET name`: its value, if the server has it.
pub(crate) async fn config_get(c: &mut Conn, name: &str) -> Result<Option<String>, RedisError> {
    Ok(match c.cmd(&["CONFIG", "GET", name]).await? {
        Reply::Array(Some(v)) => v.get(1).and_then(Reply::text),
        _ => None,
    })
}

/// `LASTSAVE`: when the last successful save finished.
pub(crate) async fn lastsave(c: &mut Conn) -> Result<i64, RedisError> {
    match c.cmd(&["LASTSAVE"]).await? {
        Reply::Int(t) => Ok(t),
        r => Err(RedisError::Protocol {
            addr: c.addr.clone(),
            message: format!("unexpected LASTSAVE reply {r:?}"),
        }),
    }
}

/// The live keys a restore would replace.
pub(crate) struct Scope {
    pub(crate) count: u64,
    pub(crate) summary: String,
    /// With `--keys`: the matching keys (db, name).
    pub(crate) keys: Vec<(u64, Vec<u8>)>,
}

/// The keys of `ep` that a restore with these `--keys` patterns replaces:
/// every key of the server, of its db (`/N`), or those matching.
pub(crate) async fn scope_keys(
    c: &mut Conn,
    ep: &Endpoint,
    selection: &[String],
    patterns: &globset::GlobSet,
) -> Result<Scope, RedisError> {
    let space = keyspace(c).await?;
    let dbs: Vec<u64> = space
        .iter()
        .filter(|(_, n)| **n > 0)
        .filter_map(|(k, _)| k.strip_prefix("db").and_then(|n| n.parse().ok()))
        .filter(|db| ep.db.is_none_or(|d| d == *db))
        .collect();
    if selection.is_empty() {
        let per: BTreeMap<String, u64> = space
            .into_iter()
            .filter(|(k, _)| dbs.iter().any(|d| *k == format!("db{d}")))
            .collect();
        return Ok(Scope {
            count: per.values().sum(),
            summary: summary(&per),
            keys: Vec::new(),
        });
    }
    let mut keys = Vec::new();
    for db in dbs {
        c.cmd(&["SELECT", &db.to_string()]).await?;
        let mut cursor = "0".to_string();
        loop {
            let reply = c.cmd(&["SCAN", &cursor, "COUNT", "1000"]).await?;
            let Reply::Array(Some(mut parts)) = reply else {
                return Err(RedisError::Config(format!("SCAN answered {reply:?}")));
            };
            let batch = parts.pop();
            cursor = match parts.pop() {
                Some(Reply::Bulk(Some(b))) => String::from_utf8_lossy(&b).into_owned(),
                other => return Err(RedisError::Config(format!("SCAN cursor {other:?}"))),
            };
            if let Some(Reply::Array(Some(items))) = batch {
                for it in items {
                    if let Reply::Bulk(Some(k)) = it {
                        if patterns.is_match(key_path(&k)) {
                            keys.push((db, k));
                        }
                    }
                }
            }
            if cursor == "0" {
                break;
            }
        }
    }
    Ok(Scope {
        count: keys.len() as u64,
        summary: format!("{} keys match {}", keys.len(), selection.join(", ")),
        keys,
    })
}

/// Keys per db from `INFO keyspace`.
pub(crate) async fn keyspace(c: &mut Conn) -> Result<BTreeMap<String, u64>, RedisError> {
    let info = c.text(&["INFO", "keyspace"]).await?;
    Ok(info_fields(&info)
        .into_iter()
        .filter(|(k, _)| k.starts_with("db"))
        .map(|(k, v)| {
            let n = v
                .split(',')
                .find_map(|f| f.strip_prefix("keys="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            (k, n)
        })
        .collect())
}

/// How many function libraries the server holds (0 before Redis 7).
pub(crate) async fn function_libraries(c: &mut Conn) -> Result<u64, RedisError> {
    match c.cmd(&["FUNCTION", "LIST"]).await? {
        Reply::Array(Some(libs)) => Ok(libs.len() as u64),
        _ => Ok(0),
    }
}

/// The `--keys` globs.
pub(crate) fn key_patterns(keys: &[String]) -> Result<globset::GlobSet, RedisError> {
    let mut b = globset::GlobSetBuilder::new();
    for p in keys {
        let g = globset::GlobBuilder::new(p)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| RedisError::Config(format!("--keys `{p}`: {e}")))?;
        b.add(g);
    }
    b.build()
        .map_err(|e| RedisError::Config(format!("--keys: {e}")))
}

pub(crate) fn summary(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .filter(|(_, n)| **n > 0)
        .map(|(db, n)| format!("{db}: {n} keys"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn key_path(key: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(key))
}

/// An `AsyncRead` over a channel of byte chunks.
pub(crate) fn channel_reader(
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl AsyncRead + Send + Unpin + 'static {
    let s = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    tokio_util::io::StreamReader::new(Box::pin(s))
}
