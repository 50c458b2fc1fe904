//! `backup [--source N] [--type T] [--tag T] [--dry-run]`.

use anyhow::Result;
use respaldo_app::ops::backup::{self, BackupRequest};
use serde_json::json;

use crate::ctx::Ctx;
use crate::{exit, output};

/// `backup`.
pub async fn command(
    ctx: &Ctx<'_>,
    sources: &[String],
    types: &[String],
    tags: &[String],
    dry_run: bool,
) -> Result<u8> {
    let req = BackupRequest {
        sources: sources.to_vec(),
        types: types.to_vec(),
        tags: tags.to_vec(),
    };
    if dry_run {
        let r = backup::dry_run(ctx, &req).await?;
        for (name, check) in &r.checks {
            match check {
                Ok(()) => println!("would back up `{name}`: check passed"),
                Err(e) => println!("would back up `{name}`: CHECK FAILED: {e}"),
            }
        }
        for line in &r.hooks {
            println!("run {line}");
        }
        println!(
            "repository: {} ({} free; nothing written)",
            ctx.config.repository.url,
            r.free_space
                .map(output::size)
                .unwrap_or_else(|| "unknown".into())
        );
        return Ok(if r.checks.iter().any(|(_, c)| c.is_err()) {
            exit::FAILED
        } else {
            exit::OK
        });
    }
    let outcome = backup::backup(ctx, &req, &respaldo_app::signals::shutdown()).await?;
    let s = &outcome.snapshot;
    if ctx.json() {
        let sources: serde_json::Map<String, serde_json::Value> = s
            .sources
            .iter()
            .map(|(n, e)| {
                (
                    n.clone(),
                    json!({
                        "type": e.kind, "status": e.status, "error": e.error,
                        "bytes_total": e.stats.bytes_total, "bytes_read": e.stats.bytes_read,
                        "bytes_added": e.stats.bytes_added, "files_read": e.stats.files_read,
                        "files_unchanged": e.stats.files_unchanged, "duration_ms": e.duration_ms,
                        "warnings": e.warnings,
                    }),
                )
            })
            .collect();
        println!(
            "{}",
            json!({
                "id": outcome.snapshot_id.map(|i| i.to_hex()),
                "time": s.time, "tags": s.tags, "sources": sources,
                "bytes_added": s.stats.bytes_added, "duration_ms": s.stats.duration_ms,
                "host": s.host,
            })
        );
    } else {
        for (n, e) in &s.sources {
            if e.is_ok() {
                let unchanged = match e.stats.files_unchanged {
                    0 => String::new(),
                    n => format!(", {n} files unchanged"),
                };
                ctx.say(format!(
                    "{n}: ok, {} ({} new) in {}{unchanged}",
                    output::size(e.stats.bytes_total),
                    output::size(e.stats.bytes_added),
                    output::duration(e.duration_ms),
                ));
            } else {
                let error = e.error.as_deref().unwrap_or("unknown error");
                eprintln!("{n}: FAILED: {error}");
            }
            for w in &e.warnings {
                eprintln!("{n}: warning: {w}");
            }
        }
        match outcome.snapshot_id {
            Some(id) => println!("{id}"),
            None => eprintln!("every source failed; no snapshot was written"),
        }
    }
    Ok(exit::for_sources(outcome.failures().len(), s.sources.len()))
}
