//! `test-restore [--source N]…`: every drill, and the whole stack's RTO.

use anyhow::Result;
use respaldo_app::ops::test_restore;
use respaldo_app::units::duration;

use crate::ctx::Ctx;
use crate::exit;

/// `test-restore`.
pub async fn command(ctx: &Ctx<'_>, names: &[String]) -> Result<u8> {
    let report = test_restore::test_restore(ctx, names).await?;
    let (failures, tested) = report.failures();
    for d in report.sources.iter().filter(|d| !d.ok) {
        eprintln!(
            "{}: TEST RESTORE FAILED after {}: {}",
            d.source,
            duration(d.duration_ms.unwrap_or(0)),
            d.error.as_deref().unwrap_or("failed")
        );
    }
    if ctx.json() {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let untestable = match report.not_testable {
            0 => String::new(),
            n => format!(" ({n} more not testable)"),
        };
        println!(
            "test restore: {} of {tested} sources ok{untestable}, total time {} (RTO) for a whole-stack restore on this host; the drills took {}",
            tested - failures,
            duration(report.rto_ms),
            duration(report.duration_ms)
        );
    }
    Ok(exit::for_sources(failures, tested))
}
