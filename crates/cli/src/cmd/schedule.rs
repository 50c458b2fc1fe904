//! `schedule install|uninstall|status|run` and `daemon`.

use anyhow::Result;
use respaldo_app::install::{Installer, Target};
use respaldo_app::runner::{self, Outcome};

use crate::args::{InstallTarget, ScheduleAction};
use crate::ctx::Ctx;
use crate::{exit, output};

/// A `schedule` subcommand.
pub async fn command(ctx: &Ctx<'_>, action: &ScheduleAction) -> Result<u8> {
    let installer = |t: &InstallTarget| {
        let target = Target {
            cron: t.cron,
            user: t.user,
            root: t.root.clone(),
            name: t.name.clone(),
            env_file: t.env_file.clone(),
        };
        Installer::new(&ctx.config, &target)
    };
    let done = match action {
        ScheduleAction::Run { entry, dry_run } => return run(ctx, entry, *dry_run).await,
        ScheduleAction::Install(t) => installer(t)?.install()?,
        ScheduleAction::Uninstall(t) => installer(t)?.uninstall()?,
        ScheduleAction::Status(t) => {
            let states = installer(t)?.status()?;
            if ctx.json() {
                println!("{}", serde_json::to_string(&states)?);
                return Ok(exit::OK);
            }
            let rows: Vec<Vec<String>> = states
                .iter()
                .map(|e| {
                    let last = e.last.as_ref().map(|r| {
                        let ok = if r.ok { "ok" } else { "FAILED" };
                        format!("{} {ok}", output::time(&r.time))
                    });
                    vec![
                        e.entry.clone(),
                        e.action.to_string(),
                        e.schedule.clone(),
                        e.next.map(|t| output::time(&t)).unwrap_or("-".into()),
                        last.unwrap_or_else(|| "never".into()),
                        if e.installed { "yes" } else { "no" }.to_string(),
                    ]
                })
                .collect();
            let header = ["ENTRY", "ACTION", "SCHEDULE", "NEXT", "LAST", "INSTALLED"];
            print!("{}", output::table(&header, &rows));
            return Ok(exit::OK);
        }
    };
    for line in done {
        println!("{line}");
    }
    Ok(exit::OK)
}

/// `schedule run ENTRY [--dry-run]`.
async fn run(ctx: &Ctx<'_>, name: &str, dry_run: bool) -> Result<u8> {
    let schedule = &ctx.config.schedule;
    let Some(entry) = schedule.iter().find(|e| e.name == name) else {
        let known: Vec<&str> = schedule.iter().map(|e| e.name.as_str()).collect();
        let known = if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        };
        return Err(respaldo_app::Error::usage(format!(
            "no [schedule] entry `{name}` in {} (entries: {known})",
            ctx.config.path.display()
        ))
        .into());
    };
    if dry_run {
        for s in runner::describe(entry) {
            println!("would run: {s}");
        }
        return Ok(exit::OK);
    }
    let token = respaldo_app::signals::shutdown();
    let outcome = runner::run_entry(&ctx.config, &ctx.step_flags(), entry, &token).await?;
    Ok(match outcome {
        Outcome::Ok => exit::OK,
        _ => exit::FAILED,
    })
}

/// `daemon [--dry-run]`.
pub async fn daemon(ctx: Ctx<'_>, dry_run: bool) -> Result<u8> {
    if dry_run {
        let next = respaldo_app::daemon::next_runs(&ctx.config);
        for (e, next) in ctx.config.schedule.iter().zip(next) {
            let next = next.map(|t| output::time(&t));
            let next = next.unwrap_or_else(|| "never".into());
            println!("{}: {} — next {next}", e.name, e.describe());
            for s in runner::describe(e) {
                println!("  {s}");
            }
        }
        if let Some(a) = ctx.config.daemon.listen {
            println!("would serve /metrics and /healthz on http://{a}");
        }
        return Ok(exit::OK);
    }
    let flags = ctx.step_flags();
    let token = respaldo_app::signals::shutdown();
    respaldo_app::daemon::run(ctx.stack, &flags, token).await?;
    Ok(exit::OK)
}
