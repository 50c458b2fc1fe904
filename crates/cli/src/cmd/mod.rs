//! One file per command (or family): parse what the command line gives,
//! call one application operation, render its report, pick the exit code.

use anyhow::{Context, Result};
use respaldo_app::config::Config;

use crate::args::{Cli, Command, ConfigAction, KeyAction};
use crate::ctx::Ctx;
use crate::exit;

mod backup;
mod browse;
mod maintenance;
mod repair;
mod repository;
mod restore;
mod schedule;
mod snapshots;
mod status;
mod test_restore;

/// Runs the command; returns the exit code.
pub async fn run(cli: &Cli) -> Result<u8> {
    match &cli.command {
        Command::Key {
            action: KeyAction::Generate { output },
        } => return repository::key_generate(output, cli.json),
        Command::Completions { shell } => {
            crate::terminal::completions(*shell).context("writing the completion script")?;
            return Ok(exit::OK);
        }
        Command::Man => {
            crate::terminal::man().context("writing the man page")?;
            return Ok(exit::OK);
        }
        _ => {}
    }
    let path = Config::locate(cli.config.as_deref());
    let mut config = Config::load(&path, cli.env.as_deref())?;
    config.warnings.iter().for_each(|w| tracing::warn!("{w}"));
    if let Command::Backup {
        no_verify: true, ..
    } = &cli.command
    {
        config.repository.verify_after_backup = false;
    }
    if !matches!(cli.command, Command::Init) {
        config.use_repository(cli.repository.as_deref())?;
    }
    let ctx = Ctx::new(cli, config);
    match &cli.command {
        Command::Config {
            action: ConfigAction::Check,
        } => repository::config_check(&ctx),
        Command::Init => repository::init(&ctx, cli.repository.as_deref()).await,
        Command::Backup {
            sources,
            types,
            tags,
            dry_run,
            no_verify: _,
        } => backup::command(&ctx, sources, types, tags, *dry_run).await,
        Command::Snapshots { source, tag } => {
            snapshots::list(&ctx, source.as_deref(), tag.as_deref()).await
        }
        Command::Show { snapshot } => snapshots::show(&ctx, snapshot).await,
        Command::Restore { .. } => restore::command(&ctx, &cli.command).await,
        Command::TestRestore { sources } => test_restore::command(&ctx, sources).await,
        Command::Dump { .. }
        | Command::Ls { .. }
        | Command::Find { .. }
        | Command::Diff { .. }
        | Command::Stats { .. }
        | Command::Mount { .. } => browse::command(&ctx, &cli.command).await,
        Command::Verify {
            snapshot,
            read_data,
        } => repository::verify(&ctx, snapshot.as_deref(), *read_data).await,
        Command::Forget {
            ids,
            prune,
            dry_run,
            max_unused,
        } => maintenance::forget(&ctx, ids, *prune, *dry_run, max_unused.as_deref()).await,
        Command::Prune {
            dry_run,
            max_unused,
        } => maintenance::prune(&ctx, *dry_run, max_unused.as_deref()).await,
        Command::Unlock { remove_all } => maintenance::unlock(&ctx, *remove_all).await,
        Command::Repair { action } => repair::command(&ctx, action).await,
        Command::Tag {
            snapshot,
            add,
            remove,
        } => repository::tag(&ctx, snapshot, add, remove).await,
        Command::Copy { to, snapshots } => repository::copy(&ctx, to, snapshots).await,
        Command::Status { notify, prometheus } => {
            status::command(&ctx, *notify, prometheus.as_deref()).await
        }
        Command::Schedule { action } => schedule::command(&ctx, action).await,
        Command::Daemon { dry_run } => schedule::daemon(ctx, *dry_run).await,
        Command::Key { .. } | Command::Completions { .. } | Command::Man => {
            unreachable!("handled before the configuration is loaded")
        }
    }
}
