//! `forget`, `prune` and `unlock`.

use anyhow::Result;
use respaldo_app::ops::maintenance::{self, parse_max_unused};
use serde_json::json;

use crate::ctx::Ctx;
use crate::output;

/// `forget [ID…] [--prune] [--dry-run] [--max-unused P]`.
pub async fn forget(
    ctx: &Ctx<'_>,
    ids: &[String],
    and_prune: bool,
    dry_run: bool,
    max_unused: Option<&str>,
) -> Result<u8> {
    let max_unused = parse_max_unused(max_unused)?;
    if !ids.is_empty() {
        let chosen = maintenance::forget_ids(ctx, ids, dry_run).await?;
        if ctx.json() {
            let arr: Vec<_> = chosen
                .iter()
                .map(|s| {
                    json!({"id": s.id.to_hex(), "time": s.snapshot.time, "host": s.snapshot.host,
                           "tags": s.snapshot.tags, "keep": false, "reasons": ["named by id"]})
                })
                .collect();
            println!("{}", serde_json::Value::Array(arr));
        }
        for s in chosen.iter().filter(|_| !ctx.json()) {
            let tags = match s.snapshot.tags.as_slice() {
                [] => String::new(),
                t => format!(", tags {}", t.join(",")),
            };
            let action = if dry_run { "would remove" } else { "removed" };
            let time = output::time(&s.snapshot.time);
            println!("{action} {} ({time}{tags})", s.id.short());
        }
    } else {
        policy(ctx, and_prune, dry_run).await?;
    }
    if and_prune {
        return prune_with(ctx, dry_run, max_unused).await;
    }
    Ok(0)
}

/// `forget` by the retention policy: the decisions as a table (or JSON).
async fn policy(ctx: &Ctx<'_>, and_prune: bool, dry_run: bool) -> Result<()> {
    let (decisions, hosts) = maintenance::forget(ctx, dry_run).await?;
    let removed = decisions.iter().filter(|d| !d.keep).count();
    let several_hosts = decisions
        .iter()
        .any(|d| decisions.first().is_some_and(|f| f.host != d.host));
    if ctx.json() {
        if !and_prune {
            let arr: Vec<_> = decisions
                .iter()
                .map(|d| json!({"id": d.id.to_hex(), "time": d.time, "host": d.host, "tags": d.tags, "keep": d.keep, "reasons": d.reasons}))
                .collect();
            println!("{}", serde_json::Value::Array(arr));
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = decisions
        .iter()
        .map(|d| {
            let mut row = vec![d.id.short(), output::time(&d.time)];
            if several_hosts {
                row.push(d.host.clone());
            }
            let action = match (d.keep, dry_run) {
                (true, _) => "keep",
                (false, true) => "would remove",
                (false, false) => "removed",
            };
            row.extend([d.tags.join(","), action.into(), d.reasons.join("; ")]);
            row
        })
        .collect();
    let headers: &[&str] = if several_hosts {
        &["ID", "TIME", "HOST", "TAGS", "ACTION", "REASONS"]
    } else {
        &["ID", "TIME", "TAGS", "ACTION", "REASONS"]
    };
    print!("{}", output::table(headers, &rows));
    let verb = if dry_run {
        "would be removed"
    } else {
        "removed"
    };
    println!(
        "{} kept, {removed} {verb} ({hosts})",
        decisions.len() - removed
    );
    Ok(())
}

/// `prune [--dry-run] [--max-unused P]`.
pub async fn prune(ctx: &Ctx<'_>, dry_run: bool, max_unused: Option<&str>) -> Result<u8> {
    prune_with(ctx, dry_run, parse_max_unused(max_unused)?).await
}

async fn prune_with(ctx: &Ctx<'_>, dry_run: bool, max_unused: f64) -> Result<u8> {
    let r = maintenance::prune(ctx, dry_run, max_unused).await?;
    if ctx.json() {
        let mut v = serde_json::to_value(&r).expect("a report serializes");
        v["dry_run"] = dry_run.into();
        println!("{v}");
        return Ok(0);
    }
    println!(
        "{}{} unused pack(s), {} partly used pack(s) rewritten ({} chunk(s), {}), {} pack(s) from interrupted runs; {} freed{}",
        if dry_run { "would remove " } else { "removed " },
        r.packs_deleted,
        r.packs_repacked,
        r.blobs_rewritten,
        output::size(r.bytes_rewritten),
        r.packs_unindexed,
        output::size(r.bytes_freed + r.bytes_incomplete),
        if dry_run { " (dry run: nothing changed)" } else { "" }
    );
    if r.packs_recovered > 0 {
        println!(
            "{} pack(s) no index fragment described are in use and were indexed again",
            r.packs_recovered
        );
    }
    if r.packs_waiting > 0 {
        println!(
            "{} pack(s) ({}) are marked for deletion and wait for the commands running beside \
             this prune; the next prune deletes them",
            r.packs_waiting,
            output::size(r.bytes_waiting)
        );
    }
    Ok(0)
}

/// `unlock [--remove-all]`.
pub async fn unlock(ctx: &Ctx<'_>, remove_all: bool) -> Result<u8> {
    let r = ctx.repo().await?.unlock(remove_all).await?;
    if ctx.json() {
        println!("{}", json!({"removed": r.removed, "kept": r.kept}));
        return Ok(0);
    }
    r.removed.iter().for_each(|l| println!("removed {l}"));
    let kept = |l| println!("kept {l} (in use; --remove-all removes it)");
    r.kept.iter().for_each(kept);
    if r.removed.is_empty() && r.kept.is_empty() {
        println!("no locks");
    }
    Ok(0)
}
