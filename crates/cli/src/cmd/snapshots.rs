//! `snapshots` and `show`: what the repository holds.

use anyhow::Result;
use respaldo_core::repo::snapshot::SnapshotRef;
use serde_json::json;

use crate::ctx::Ctx;
use crate::output;

/// `snapshots [--source N] [--tag T]`.
pub async fn list(ctx: &Ctx<'_>, source: Option<&str>, tag: Option<&str>) -> Result<u8> {
    let repo = ctx.repo().await?;
    let list = ctx.snapshots(&repo).await?;
    let hosts = ctx.hosts();
    let shown: Vec<&SnapshotRef> = list
        .iter()
        .filter(|s| hosts.matches(&s.snapshot.host))
        .filter(|s| source.is_none_or(|n| s.snapshot.sources.contains_key(n)))
        .filter(|s| tag.is_none_or(|t| s.snapshot.tags.iter().any(|x| x == t)))
        .collect();
    if ctx.json() {
        let arr: Vec<_> = shown
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
        println!("{}", serde_json::Value::Array(arr));
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = shown
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
                output::time(&s.snapshot.time),
                s.snapshot.tags.join(","),
                sources.join(" "),
                output::size(s.snapshot.stats.bytes_added),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(&["ID", "TIME", "TAGS", "SOURCES", "ADDED"], &rows)
    );
    println!("{} snapshot(s)", rows.len());
    Ok(0)
}

/// `show SNAPSHOT`.
pub async fn show(ctx: &Ctx<'_>, spec: &str) -> Result<u8> {
    let repo = ctx.repo().await?;
    let list = ctx.snapshots(&repo).await?;
    let s = ctx.resolve(&list, spec, None)?;
    if ctx.json() {
        let mut v = serde_json::to_value(&s.snapshot)?;
        v["id"] = json!(s.id.to_hex());
        if s.snapshot.sealed.is_some() {
            v["sealed"] = json!(true);
        }
        println!("{v}");
        return Ok(0);
    }
    let snap = &s.snapshot;
    let time = output::time(&snap.time);
    let took = output::duration(snap.stats.duration_ms);
    let tags = match snap.tags.as_slice() {
        [] => "-".to_string(),
        t => t.join(", "),
    };
    let added = output::size(snap.stats.bytes_added);
    println!("snapshot {}\ntime     {time} (took {took})", s.id);
    println!("host     {}\ntags     {tags}", snap.host);
    println!("added    {added} in {} pack(s)", snap.stats.packs_added);
    if snap.sealed.is_some() {
        println!("sealed   artifacts, metadata and errors need the identity to be shown");
    }
    for (name, e) in &snap.sources {
        let state = match e.is_ok() {
            true => format!("ok in {}", output::duration(e.duration_ms)),
            false => format!("FAILED: {}", e.error.as_deref().unwrap_or("(sealed)")),
        };
        println!("\nsource {name} ({}): {state}", e.kind);
        for a in &e.artifacts {
            let extra = a.tree.as_ref().map(|t| {
                let (files, dirs, entries) = (t.files, t.dirs, t.entries);
                format!(", {files} files, {dirs} dirs, {entries} entries")
            });
            let (kind, size) = (a.kind.as_str(), output::size(a.size));
            let extra = extra.unwrap_or_default();
            println!(
                "  {} [{kind}] {size}{extra}\n    sha256 {}",
                a.name, a.sha256
            );
        }
        for (k, v) in &e.metadata {
            println!("  {k}: {v}");
        }
        for w in &e.warnings {
            println!("  warning: {w}");
        }
    }
    Ok(0)
}
