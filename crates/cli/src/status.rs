//! `status`: the table (or JSON) of every source's state against its
//! objective, and the stale notification; the evaluation is
//! `respaldo_app::status`.

use anyhow::Result;
use serde_json::json;

pub use respaldo_app::status::{human, stale_event, SourceState};

use crate::ctx::Ctx;
use crate::notify;
use crate::output;

/// Every source's state, for this command's hosts.
pub async fn collect(ctx: &Ctx<'_>) -> Result<Vec<SourceState>> {
    let repo = ctx.repo().await?;
    Ok(respaldo_app::status::collect(&ctx.config, &repo, &ctx.hosts()).await?)
}

fn to_json(s: &SourceState) -> serde_json::Value {
    json!({
        "source": s.name,
        "type": s.kind,
        "ok": s.ok(),
        "stale": s.stale,
        "failed": s.failed,
        "state": s.describe(),
        "last_good": s.good.as_ref().map(|g| json!({
            "time": g.time, "snapshot": g.snapshot, "size": g.size,
            "bytes_added": g.bytes_added, "duration_ms": g.duration_ms,
        })),
        "age_seconds": s.age.map(|a| a.as_secs()),
        "rpo_seconds": s.rpo.map(|r| r.0.as_secs()),
        "rpo_from": s.rpo.map(|r| r.1),
        "last_run": s.last_run.as_ref().map(|r| json!({
            "time": r.time, "ok": r.ok, "error": r.error,
        })),
        "failures": s.failures,
    })
}

/// `status [--notify]`.
pub async fn command(ctx: &Ctx<'_>, send_stale: bool) -> Result<u8> {
    let states = collect(ctx).await?;
    let masker = &ctx.config.masker;
    if ctx.cli.json {
        let arr: Vec<serde_json::Value> = states.iter().map(to_json).collect();
        println!(
            "{}",
            masker.mask(&serde_json::Value::Array(arr).to_string())
        );
    } else {
        let rows: Vec<Vec<String>> = states
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.kind.clone(),
                    s.good
                        .as_ref()
                        .map(|g| output::time(&g.time))
                        .unwrap_or_else(|| "never".into()),
                    s.age.map(human).unwrap_or_else(|| "-".into()),
                    s.good
                        .as_ref()
                        .map(|g| output::size(g.size))
                        .unwrap_or_else(|| "-".into()),
                    s.good
                        .as_ref()
                        .map(|g| output::duration(g.duration_ms))
                        .unwrap_or_else(|| "-".into()),
                    s.rpo
                        .map(|(r, from)| format!("{} ({from})", human(r)))
                        .unwrap_or_else(|| "none".into()),
                    masker.mask(&s.describe()),
                ]
            })
            .collect();
        print!(
            "{}",
            output::table(
                &[
                    "SOURCE",
                    "TYPE",
                    "LAST GOOD",
                    "AGE",
                    "SIZE",
                    "TOOK",
                    "RPO",
                    "STATE"
                ],
                &rows
            )
        );
    }
    let stale: Vec<&SourceState> = states.iter().filter(|s| s.stale).collect();
    if send_stale && !stale.is_empty() {
        notify::send(&ctx.config.notify, &stale_event(&ctx.config, &stale)).await;
    }
    Ok(if states.iter().all(SourceState::ok) {
        0
    } else {
        1
    })
}
