//! `snapshots` and `show`: what the repository holds.

use anyhow::Result;
use respaldo_app::ops::snapshots;

use crate::ctx::Ctx;
use crate::output;

/// `snapshots [--source N] [--tag T]`.
pub async fn list(ctx: &Ctx<'_>, source: Option<&str>, tag: Option<&str>) -> Result<u8> {
    output::render(ctx.json(), &snapshots::list(ctx, source, tag).await?)
}

/// `show SNAPSHOT`.
pub async fn show(ctx: &Ctx<'_>, spec: &str) -> Result<u8> {
    output::render(ctx.json(), &snapshots::show(ctx, spec).await?)
}
