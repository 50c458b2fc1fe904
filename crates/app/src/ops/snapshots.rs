//! `snapshots` and `show`: the snapshots of the selected hosts, and what
//! one of them holds, as reports that serialize to the commands' JSON and
//! display as their text.

use respaldo_core::repo::snapshot::SnapshotRef;
use serde::Serialize;
use serde_json::json;

use crate::error::Result;
use crate::stack::Stack;
use crate::units;

/// The snapshots `snapshots` shows, newest first.
#[derive(Debug, Clone)]
pub struct SnapshotList(pub Vec<SnapshotRef>);

/// `snapshots [--source N] [--tag T]`: the selected hosts' snapshots,
/// with the source or tag if one is given.
pub async fn list(ctx: &Stack, source: Option<&str>, tag: Option<&str>) -> Result<SnapshotList> {
    let repo = ctx.repo().await?;
    let list = ctx.snapshots(&repo).await?;
    let hosts = ctx.hosts();
    Ok(SnapshotList(
        list.into_iter()
            .filter(|s| hosts.matches(&s.snapshot.host))
            .filter(|s| source.is_none_or(|n| s.snapshot.sources.contains_key(n)))
            .filter(|s| tag.is_none_or(|t| s.snapshot.tags.iter().any(|x| x == t)))
            .collect(),
    ))
}

impl Serialize for SnapshotList {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let arr: Vec<_> = self
            .0
            .iter()
            .map(|s| {
                let sources: serde_json::Map<String, serde_json::Value> = s
                    .snapshot
                    .sources
                    .iter()
                    .map(|(n, e)| {
                        (
                            n.clone(),
                            json!({"type": e.kind, "status": e.status, "error": e.error,
                                   "size": e.stats.bytes_total, "added": e.stats.bytes_added}),
                        )
                    })
                    .collect();
                json!({"id": s.id.to_hex(), "time": s.snapshot.time, "tags": s.snapshot.tags,
                       "host": s.snapshot.host, "sources": sources,
                       "bytes_added": s.snapshot.stats.bytes_added})
            })
            .collect();
        serde_json::Value::Array(arr).serialize(serializer)
    }
}

impl std::fmt::Display for SnapshotList {
    /// A table, oldest first, and the count.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows: Vec<Vec<String>> = self
            .0
            .iter()
            .rev()
            .map(|s| {
                let sources: Vec<String> = s
                    .snapshot
                    .sources
                    .iter()
                    .map(|(n, e)| {
                        if e.is_ok() {
                            n.clone()
                        } else {
                            format!("{n}(FAILED)")
                        }
                    })
                    .collect();
                vec![
                    s.id.short(),
                    units::time(&s.snapshot.time),
                    s.snapshot.tags.join(","),
                    sources.join(" "),
                    units::size(s.snapshot.stats.bytes_added),
                ]
            })
            .collect();
        let header = ["ID", "TIME", "TAGS", "SOURCES", "ADDED"];
        write!(f, "{}", units::table(&header, &rows))?;
        writeln!(f, "{} snapshot(s)", rows.len())
    }
}

/// The snapshot `show` shows.
#[derive(Debug, Clone)]
pub struct Shown(pub SnapshotRef);

/// `show SNAPSHOT`.
pub async fn show(ctx: &Stack, spec: &str) -> Result<Shown> {
    let repo = ctx.repo().await?;
    let list = ctx.snapshots(&repo).await?;
    Ok(Shown(ctx.resolve(&list, spec, None)?.clone()))
}

impl Serialize for Shown {
    /// The snapshot object with its `id` (and `sealed: true` when its
    /// details need the identity).
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let s = &self.0;
        let mut v = serde_json::to_value(&s.snapshot).map_err(serde::ser::Error::custom)?;
        v["id"] = json!(s.id.to_hex());
        if s.snapshot.sealed.is_some() {
            v["sealed"] = json!(true);
        }
        v.serialize(serializer)
    }
}

impl std::fmt::Display for Shown {
    /// Times, host, tags, what was added, then each source with its
    /// artifacts, metadata and warnings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.0;
        let snap = &s.snapshot;
        let time = units::time(&snap.time);
        let took = units::duration(snap.stats.duration_ms);
        let tags = match snap.tags.as_slice() {
            [] => "-".to_string(),
            t => t.join(", "),
        };
        let added = units::size(snap.stats.bytes_added);
        writeln!(f, "snapshot {}\ntime     {time} (took {took})", s.id)?;
        writeln!(f, "host     {}\ntags     {tags}", snap.host)?;
        writeln!(f, "added    {added} in {} pack(s)", snap.stats.packs_added)?;
        if snap.sealed.is_some() {
            writeln!(
                f,
                "sealed   artifacts, metadata and errors need the identity to be shown"
            )?;
        }
        for (name, e) in &snap.sources {
            let state = match e.is_ok() {
                true => format!("ok in {}", units::duration(e.duration_ms)),
                false => format!("FAILED: {}", e.error.as_deref().unwrap_or("(sealed)")),
            };
            writeln!(f, "\nsource {name} ({}): {state}", e.kind)?;
            for a in &e.artifacts {
                let extra = a.tree.as_ref().map(|t| {
                    let (files, dirs, entries) = (t.files, t.dirs, t.entries);
                    format!(", {files} files, {dirs} dirs, {entries} entries")
                });
                let (kind, size) = (a.kind.as_str(), units::size(a.size));
                let extra = extra.unwrap_or_default();
                writeln!(
                    f,
                    "  {} [{kind}] {size}{extra}\n    sha256 {}",
                    a.name, a.sha256
                )?;
            }
            for (k, v) in &e.metadata {
                writeln!(f, "  {k}: {v}")?;
            }
            for w in &e.warnings {
                writeln!(f, "  warning: {w}")?;
            }
        }
        Ok(())
    }
}
