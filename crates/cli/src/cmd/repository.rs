//! `config check`, `init`, `copy`, `tag`, `verify` and `key generate`.

use std::path::Path;

use anyhow::Result;
use respaldo_app::ops::repository;
use serde_json::json;

use crate::ctx::Ctx;
use crate::output;

/// `config check`.
pub fn config_check(ctx: &Ctx<'_>) -> Result<u8> {
    let c = &ctx.config;
    if ctx.json() {
        let sources: Vec<_> = c
            .sources
            .iter()
            .map(|s| json!({"name": s.name, "type": s.kind, "enabled": s.enabled}))
            .collect();
        println!(
            "{}",
            json!({"config": c.path, "repository": c.repository.url, "sources": sources})
        );
    } else {
        println!("{}: OK", c.path.display());
        println!("repository: {}", c.repository.url);
        for s in &c.sources {
            println!(
                "source {} ({}){}",
                s.name,
                s.kind,
                if s.enabled { "" } else { " — disabled" }
            );
        }
    }
    Ok(0)
}

/// `init [--repository NAME]`.
pub async fn init(ctx: &Ctx<'_>, named: Option<&str>) -> Result<u8> {
    let (repo, url) = repository::init(ctx, named).await?;
    let (id, encryption) = (&repo.config().id, &repo.config().encryption);
    if ctx.json() {
        println!(
            "{}",
            json!({"repository": url, "id": id, "encryption": encryption})
        );
    } else {
        println!("created repository {id} at {url} (encryption: {encryption})");
    }
    Ok(0)
}

/// `copy --to NAME [SNAPSHOT…]`.
pub async fn copy(ctx: &Ctx<'_>, to: &str, specs: &[String]) -> Result<u8> {
    let report = repository::copy(ctx, to, specs).await?;
    if ctx.json() {
        let copied: Vec<_> = report
            .snapshots_copied
            .iter()
            .map(|(from, to)| json!({"source_id": from.to_hex(), "id": to.to_hex()}))
            .collect();
        println!(
            "{}",
            json!({
                "to": to,
                "copied": copied,
                "already_present": report.snapshots_present,
                "chunks_copied": report.chunks_copied,
                "bytes_copied": report.bytes_copied,
            })
        );
    } else {
        println!(
            "copied {} snapshot(s) to {to} ({} already there): {} chunk(s), {}",
            report.snapshots_copied.len(),
            report.snapshots_present,
            report.chunks_copied,
            output::size(report.bytes_copied)
        );
    }
    Ok(0)
}

/// `tag SNAPSHOT [--add T] [--remove T]`.
pub async fn tag(ctx: &Ctx<'_>, spec: &str, add: &[String], remove: &[String]) -> Result<u8> {
    let (s, id) = repository::tag(ctx, spec, add, remove).await?;
    if ctx.json() {
        println!(
            "{}",
            json!({"id": id.to_hex(), "previous_id": s.id.to_hex()})
        );
    } else if id == s.id {
        println!("snapshot {} unchanged", s.id.short());
    } else {
        println!("snapshot {} is now {id}", s.id.short());
    }
    Ok(0)
}

/// `key generate --output FILE`: prints the new identity's recipient.
pub fn key_generate(output: &Path, as_json: bool) -> Result<u8> {
    let recipient = respaldo_app::keys::generate(output)?;
    if as_json {
        println!(
            "{}",
            json!({"identity_file": output, "recipient": recipient})
        );
    } else {
        println!("{recipient}");
    }
    Ok(0)
}

/// `verify [SNAPSHOT] [--read-data]`.
pub async fn verify(ctx: &Ctx<'_>, spec: Option<&str>, read_data: bool) -> Result<u8> {
    let report = repository::verify(ctx, spec, read_data).await?;
    if ctx.json() {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = report.is_ok().into();
        println!("{v}");
    } else {
        for p in &report.problems {
            println!("DAMAGE: {p}");
        }
        println!(
            "{}: {} snapshot(s), {} chunk(s){}",
            if report.is_ok() {
                "repository OK"
            } else {
                "repository DAMAGED"
            },
            report.snapshots_checked,
            report.chunks_referenced,
            if read_data {
                format!(
                    ", {} pack(s) re-read ({})",
                    report.packs_read,
                    output::size(report.bytes_read)
                )
            } else {
                String::new()
            }
        );
        if !report.damaged_snapshots.is_empty() {
            let ids: Vec<String> = report.damaged_snapshots.iter().map(|i| i.short()).collect();
            println!("damaged snapshots: {}", ids.join(", "));
        }
        for n in &report.notes {
            println!("note: {n}");
        }
        for sug in &report.suggestions {
            println!("to repair: {sug}");
        }
        if report.sealed_snapshots > 0 {
            println!(
                "{} snapshot(s) are sealed: their chunks were not checked \
                 (give the identity: identity_file or $RESPALDO_IDENTITY_FILE)",
                report.sealed_snapshots
            );
        }
    }
    Ok(if report.is_ok() { 0 } else { 1 })
}
