//! `status`: the table (or JSON) of every source's state against its
//! objective, and the stale notification; the evaluation is
//! `respaldo_app::status`.

use std::path::Path;

use anyhow::{Context, Result};
use respaldo_app::notify;
use respaldo_app::status::{human, stale_event, SourceState};

use crate::ctx::Ctx;
use crate::output;

/// `status [--notify] [--prometheus FILE]`.
pub async fn command(ctx: &Ctx<'_>, send_stale: bool, prometheus: Option<&Path>) -> Result<u8> {
    let repo = ctx.repo().await?;
    let states = respaldo_app::status::collect(&ctx.config, &repo, &ctx.hosts()).await?;
    let masker = &ctx.config.masker;
    if let Some(path) = prometheus {
        respaldo_app::metrics::write_status(&ctx.config, &repo, &states, path)
            .await
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if ctx.json() {
        let arr: serde_json::Value = states.iter().map(SourceState::to_json).collect();
        println!("{}", masker.mask(&arr.to_string()));
    } else {
        let dash = || "-".to_string();
        let rows: Vec<Vec<String>> = states
            .iter()
            .map(|s| {
                let good = s.good.as_ref();
                vec![
                    s.name.clone(),
                    s.kind.clone(),
                    good.map(|g| output::time(&g.time))
                        .unwrap_or_else(|| "never".into()),
                    s.age.map(human).unwrap_or_else(dash),
                    good.map(|g| output::size(g.size)).unwrap_or_else(dash),
                    good.map(|g| output::duration(g.duration_ms))
                        .unwrap_or_else(dash),
                    s.rpo
                        .map(|(r, from)| format!("{} ({from})", human(r)))
                        .unwrap_or_else(|| "none".into()),
                    masker.mask(&s.describe()),
                ]
            })
            .collect();
        const HEADER: [&str; 8] = [
            "SOURCE",
            "TYPE",
            "LAST GOOD",
            "AGE",
            "SIZE",
            "TOOK",
            "RPO",
            "STATE",
        ];
        print!("{}", output::table(&HEADER, &rows));
    }
    let stale: Vec<&SourceState> = states.iter().filter(|s| s.stale).collect();
    if send_stale && !stale.is_empty() {
        notify::send(&ctx.config.notify, &stale_event(&ctx.config, &stale)).await;
    }
    Ok(u8::from(!states.iter().all(SourceState::ok)))
}
