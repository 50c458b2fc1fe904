//! `repair index | snapshots | config`.

use std::sync::Arc;

use anyhow::Result;
use respaldo_core::kit::progress::Progress;
use respaldo_core::ops::repair;
use respaldo_core::repo::lock::LockMode;
use serde_json::json;

use crate::args::RepairAction;
use crate::ctx::Ctx;

/// Runs one `repair` subcommand under an exclusive lock.
pub async fn command(ctx: &Ctx<'_>, action: &RepairAction) -> Result<u8> {
    let repo = ctx.repo().await?;
    let progress = Arc::new(Progress::default());
    match action {
        RepairAction::Index => {
            let view = ctx.progress("reading packs", &progress);
            let r = ctx
                .with_lock(&repo, LockMode::Exclusive, "repair", async {
                    Ok(repair::repair_index(&repo, &progress).await?)
                })
                .await;
            drop(view);
            r.map(|r| {
                if ctx.json() {
                    println!(
                        "{}",
                        json!({"packs_read": r.packs_read, "blobs_indexed": r.blobs_indexed,
                               "damaged_packs": r.damaged_packs, "fragments_written": r.fragments_written,
                               "fragments_removed": r.fragments_removed})
                    );
                } else {
                    for d in &r.damaged_packs {
                        println!("damaged: {d}");
                    }
                    println!(
                        "index rebuilt from {} pack(s): {} chunk(s) in {} fragment(s); {} old fragment(s) removed",
                        r.packs_read, r.blobs_indexed, r.fragments_written, r.fragments_removed
                    );
                    if !r.damaged_packs.is_empty() {
                        println!(
                            "snapshots that used the damaged chunks: see `respaldo verify`, then `respaldo repair snapshots`"
                        );
                    }
                }
            })
        }
        RepairAction::Snapshots { dry_run } => {
            ctx.with_lock(&repo, LockMode::Exclusive, "repair", async {
                Ok(repair::repair_snapshots(&repo, *dry_run, &progress).await?)
            })
            .await
            .map(|r| {
                if ctx.json() {
                    let arr: Vec<_> = r
                        .replaced
                        .iter()
                        .map(|x| {
                            json!({"original": x.original.to_hex(),
                                   "replacement": x.replacement.map(|i| i.to_hex()),
                                   "kept_as": x.kept_as.map(|i| i.to_hex()), "lost": x.lost})
                        })
                        .collect();
                    println!(
                        "{}",
                        json!({"dry_run": dry_run, "checked": r.checked, "replaced": arr,
                               "packs_forgotten": r.packs_forgotten})
                    );
                } else {
                    if r.packs_forgotten > 0 {
                        println!(
                            "{} pack(s) gone from storage taken out of the index",
                            r.packs_forgotten
                        );
                    }
                    for x in &r.replaced {
                        match (x.replacement, x.kept_as) {
                            (Some(new), Some(kept)) => println!(
                                "snapshot {} replaced by {} (original kept as {}, tag `damaged`):",
                                x.original.short(),
                                new.short(),
                                kept.short()
                            ),
                            _ => println!("snapshot {} would be replaced:", x.original.short()),
                        }
                        const SHOWN: usize = 20;
                        for l in x.lost.iter().take(SHOWN) {
                            println!("  dropped {l}");
                        }
                        if x.lost.len() > SHOWN {
                            println!("  … and {} more", x.lost.len() - SHOWN);
                        }
                    }
                    println!(
                        "{} snapshot(s) checked, {} {}",
                        r.checked,
                        r.replaced.len(),
                        if *dry_run {
                            "would be replaced (dry run: nothing changed)"
                        } else {
                            "replaced"
                        }
                    );
                    if !dry_run && !r.replaced.is_empty() {
                        println!(
                            "remove the originals with `respaldo forget ID` once you no longer need them"
                        );
                    }
                }
            })
        }
        RepairAction::Config => ctx
            .with_lock(&repo, LockMode::Exclusive, "repair", async {
                Ok(repo.repair_config().await?)
            })
            .await
            .map(|()| {
                if ctx.json() {
                    println!("{}", json!({"repaired": true}));
                } else {
                    println!("repository config and its copy written again");
                }
            }),
    }?;
    Ok(0)
}
