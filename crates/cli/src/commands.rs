//! The commands.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use respaldo_core::kit::progress::Progress;
use respaldo_core::ops::backup::{self, BackupJob, BackupOptions};
use respaldo_core::ops::maintenance;
use respaldo_core::ops::verify::{self, VerifyOptions};
use respaldo_core::repo::extract;
use respaldo_core::repo::snapshot::{self, Hosts, SnapshotRef};
use respaldo_core::source::Selection;
use respaldo_core::{Error, Repository};
use serde_json::json;

use crate::config::Config;
use crate::ctx::{load_snapshots, resolve, usage, Ctx};
use crate::exit;
use crate::keys;
use crate::output;
use crate::{Cli, Command, ConfigAction, KeyAction};

/// Runs the command; returns the exit code.
pub async fn run(cli: &Cli) -> Result<u8> {
    match &cli.command {
        Command::Key {
            action: KeyAction::Generate { output },
        } => return keys::generate(output, cli.json),
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
    let config = Config::load(&path, cli.env.as_deref())?;
    if let Command::Daemon { dry_run } = &cli.command {
        return crate::daemon::command(cli, config, *dry_run).await;
    }
    let mut config = config;
    if let Command::Backup {
        no_verify: true, ..
    } = &cli.command
    {
        config.repository.verify_after_backup = false;
    }
    let ctx = Ctx { cli, config };
    match &cli.command {
        Command::Config {
            action: ConfigAction::Check,
        } => config_check(&ctx),
        Command::Init { repository } => init(&ctx, repository.as_deref()).await,
        Command::Backup {
            sources,
            types,
            tags,
            dry_run,
            no_verify: _,
        } => backup(&ctx, sources, types, tags, *dry_run).await,
        Command::Snapshots { source, tag } => {
            snapshots(&ctx, source.as_deref(), tag.as_deref()).await
        }
        Command::Show { snapshot } => show(&ctx, snapshot).await,
        Command::Restore {
            snapshot,
            sources,
            target,
            to,
            paths,
            selection,
            force,
            no_safety_snapshot,
            dry_run,
        } => {
            let req = crate::restore::RestoreRequest {
                spec: snapshot,
                sources,
                target: target.as_deref(),
                to: to.as_deref(),
                paths,
                selection: Selection {
                    tables: selection.tables.clone(),
                    schemas: selection.schemas.clone(),
                    schema_only: selection.schema_only,
                    keys: selection.keys.clone(),
                    databases: selection.databases.clone(),
                    volumes: selection.volumes.clone(),
                },
                force: *force,
                safety_snapshot: !*no_safety_snapshot,
                dry_run: *dry_run,
            };
            crate::restore::command(&ctx, req).await
        }
        Command::TestRestore { sources } => crate::test_restore::command(&ctx, sources).await,
        Command::Dump { snapshot, what } => dump(&ctx, snapshot, what).await,
        Command::Verify {
            snapshot,
            read_data,
        } => verify_cmd(&ctx, snapshot.as_deref(), *read_data).await,
        Command::Forget {
            ids,
            prune,
            dry_run,
            max_unused,
        } => forget(&ctx, ids, *prune, *dry_run, max_unused.as_deref()).await,
        Command::Prune {
            dry_run,
            max_unused,
        } => prune(&ctx, *dry_run, max_unused.as_deref()).await,
        Command::Unlock { remove_all } => unlock(&ctx, *remove_all).await,
        Command::Repair { action } => crate::repair::command(&ctx, action).await,
        Command::Tag {
            snapshot,
            add,
            remove,
        } => tag(&ctx, snapshot, add, remove).await,
        Command::Copy { to, snapshots } => copy_cmd(&ctx, to, snapshots).await,
        Command::Key { .. } | Command::Completions { .. } | Command::Man => {
            unreachable!("handled before the configuration is loaded")
        }
        Command::Status { notify } => crate::status::command(&ctx, *notify).await,
        Command::Schedule { action } => crate::install::command(&ctx, action).await,
        Command::Daemon { .. } => unreachable!("handled above"),
    }
}

fn config_check(ctx: &Ctx<'_>) -> Result<u8> {
    let c = &ctx.config;
    if ctx.cli.json {
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

async fn init(ctx: &Ctx<'_>, named: Option<&str>) -> Result<u8> {
    let keys = keys::material(&ctx.config.repository).await?;
    let (repo, url) = match named {
        None => (
            Repository::init_with(ctx.sink().await?, &keys, None).await?,
            ctx.config.repository.url.clone(),
        ),
        Some(name) => {
            let sink = ctx.named_sink(name).await?;
            let main = ctx.repo().await?;
            (
                Repository::init_with(sink, &keys, Some(&main)).await?,
                ctx.config.repositories[name].url.clone(),
            )
        }
    };
    let encryption = &repo.config().encryption;
    if ctx.cli.json {
        println!(
            "{}",
            json!({"repository": url, "id": repo.config().id, "encryption": encryption})
        );
    } else {
        println!(
            "created repository {} at {url} (encryption: {encryption})",
            repo.config().id,
        );
    }
    Ok(0)
}

async fn copy_cmd(ctx: &Ctx<'_>, to: &str, specs: &[String]) -> Result<u8> {
    let src = ctx.repo().await?;
    src.require_readable("copy")?;
    let keys = keys::material(&ctx.config.repository).await?;
    let dst = Repository::open_with(ctx.named_sink(to).await?, &keys).await?;
    let src_lock = src.lock(false, "copy", ctx.lock_wait()).await?;
    let dst_lock = dst.lock(false, "copy", ctx.lock_wait()).await?;
    let all = load_snapshots(ctx, &src).await?;
    let selected: Vec<SnapshotRef> = if specs.is_empty() {
        all.clone()
    } else {
        specs
            .iter()
            .map(|spec| {
                snapshot::resolve(&all, spec, None, &ctx.hosts())
                    .cloned()
                    .map_err(usage)
            })
            .collect::<Result<_>>()?
    };
    let progress = Arc::new(Progress::default());
    let view = ctx.progress(&progress, "copied");
    let result = dst_lock
        .while_held(src_lock.while_held(respaldo_core::ops::copy::copy(
            &src, &dst, &selected, &progress,
        )))
        .await;
    view.finish();
    dst_lock.release().await?;
    src_lock.release().await?;
    let report = result?;
    if ctx.cli.json {
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

async fn backup(
    ctx: &Ctx<'_>,
    names: &[String],
    types: &[String],
    tags: &[String],
    dry_run: bool,
) -> Result<u8> {
    let c = &ctx.config;
    for n in names {
        match c.source(n) {
            None => {
                let known: Vec<&str> = c.sources.iter().map(|s| s.name.as_str()).collect();
                return Err(usage(format!(
                    "no source named `{n}` in {} (sources: {})",
                    c.path.display(),
                    known.join(", ")
                )));
            }
            Some(s) if !s.enabled => {
                return Err(usage(format!("source `{n}` is disabled (enabled = false)")))
            }
            _ => {}
        }
    }
    for t in types {
        if crate::registry::driver(t).is_none() {
            return Err(usage(format!(
                "unknown source type `{t}` (known: {})",
                crate::registry::kinds().join(", ")
            )));
        }
    }
    for t in tags {
        if t.is_empty() || t.contains(char::is_whitespace) || t.contains(',') {
            return Err(usage(format!("invalid tag `{t}`: no spaces or commas")));
        }
    }
    let jobs: Vec<BackupJob> = c
        .sources
        .iter()
        .filter(|s| s.enabled)
        .filter(|s| names.is_empty() || names.contains(&s.name))
        .filter(|s| types.is_empty() || types.contains(&s.kind))
        .map(|s| BackupJob::new(s.name.clone(), s.source.clone(), s.compression_level))
        .collect();
    if jobs.is_empty() {
        return Err(usage(
            "no source selected (check --source/--type and `enabled`)",
        ));
    }
    if dry_run {
        let _repo = ctx.repo().await?; // it must exist
        let checks = backup::check_sources(&jobs).await;
        let mut failed = 0;
        for (name, r) in &checks {
            match r {
                Ok(()) => println!("would back up `{name}`: check passed"),
                Err(e) => {
                    failed += 1;
                    println!("would back up `{name}`: CHECK FAILED: {e}");
                }
            }
        }
        for line in c.hooks.describe() {
            println!("run {line}");
        }
        println!(
            "repository: {} ({} free; nothing written)",
            c.repository.url,
            crate::precheck::free_space(Path::new(&c.repository.url))
                .map(output::size)
                .unwrap_or_else(|_| "unknown".into())
        );
        return Ok(if failed > 0 { 1 } else { 0 });
    }
    let selected: Vec<String> = jobs.iter().map(|j| j.name.clone()).collect();
    let outcome = crate::run::tracked(c, &selected, tags, backup_jobs(ctx, jobs, tags)).await?;
    let s = &outcome.snapshot;
    if ctx.cli.json {
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
                ctx.say(format!(
                    "{n}: ok, {} ({} new) in {}{}",
                    output::size(e.stats.bytes_total),
                    output::size(e.stats.bytes_added),
                    output::duration(e.duration_ms),
                    if e.stats.files_unchanged > 0 {
                        format!(", {} files unchanged", e.stats.files_unchanged)
                    } else {
                        String::new()
                    }
                ));
            } else {
                eprintln!(
                    "{n}: FAILED: {}",
                    e.error.as_deref().unwrap_or("unknown error")
                );
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
    Ok(exit::for_sources(
        outcome.failures().len(),
        outcome.snapshot.sources.len(),
    ))
}

/// Locks the repository and backs `jobs` up (verifying the new snapshot
/// before it is written when configured); SIGTERM/SIGINT stop it cleanly (no
/// snapshot, lock released).
async fn backup_jobs(
    ctx: &Ctx<'_>,
    jobs: Vec<BackupJob>,
    tags: &[String],
) -> Result<backup::BackupOutcome> {
    let c = &ctx.config;
    let names_run: Vec<String> = jobs.iter().map(|j| format!("`{}`", j.name)).collect();
    let repo = ctx.repo().await?;
    let stop = crate::signals::shutdown();
    let lock = tokio::select! {
        l = repo.lock(false, "backup", ctx.lock_wait()) => l?,
        () = stop.cancelled() => return Err(crate::signals::interrupted()),
    };
    let cancel = stop.child_token();
    let progress = Arc::new(Progress::default());
    let view = ctx.progress(&progress, "backing up");
    let opts = BackupOptions {
        tags: tags.to_vec(),
        concurrency: c.backup.concurrency,
        host: c.host.clone(),
        redact: Some(ctx.config.masker.redactor()),
        verify: c.repository.verify_after_backup,
        cancel: Some(cancel.clone()),
    };
    // A signal or a lost lock stops the backup cleanly (its sources' tasks
    // awaited, their guards cleaned up), never by dropping it midway.
    let watch = lock.cancel_when_lost(cancel);
    let outcome = backup::backup(&repo, jobs, &opts, progress).await;
    watch.abort();
    let outcome = match outcome {
        Err(Error::Interrupted) if lock.is_lost() => Err(lock.lost_error()),
        o => o,
    }
    .map_err(anyhow::Error::from);
    view.finish();
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let _ = lock.release().await;
            return Err(e.context(format!(
                "backup of {} failed, no snapshot was written",
                names_run.join(", ")
            )));
        }
    };
    lock.release().await?;
    Ok(outcome)
}

async fn snapshots(ctx: &Ctx<'_>, source: Option<&str>, tag: Option<&str>) -> Result<u8> {
    let repo = ctx.repo().await?;
    let list = load_snapshots(ctx, &repo).await?;
    let hosts = ctx.hosts();
    let shown: Vec<&SnapshotRef> = list
        .iter()
        .filter(|s| hosts.matches(&s.snapshot.host))
        .filter(|s| source.is_none_or(|n| s.snapshot.sources.contains_key(n)))
        .filter(|s| tag.is_none_or(|t| s.snapshot.tags.iter().any(|x| x == t)))
        .collect();
    if ctx.cli.json {
        let arr: Vec<_> = shown
            .iter()
            .map(|s| {
                let sources: serde_json::Map<String, serde_json::Value> = s
                    .snapshot
                    .sources
                    .iter()
                    .map(|(n, e)| {
                        (
                            n.clone(),
                            json!({"type": e.kind, "status": e.status, "error": e.error,
                                   "size": e.stats.bytes_total, "added": e.stats.bytes_added}),
                        )
                    })
                    .collect();
                json!({"id": s.id.to_hex(), "time": s.snapshot.time, "tags": s.snapshot.tags,
                       "host": s.snapshot.host, "sources": sources,
                       "bytes_added": s.snapshot.stats.bytes_added})
            })
            .collect();
        println!("{}", serde_json::Value::Array(arr));
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = shown
        .iter()
        .rev()
        .map(|s| {
            let sources: Vec<String> = s
                .snapshot
                .sources
                .iter()
                .map(|(n, e)| {
                    if e.is_ok() {
                        n.clone()
                    } else {
                        format!("{n}(FAILED)")
                    }
                })
                .collect();
            vec![
                s.id.short(),
                output::time(&s.snapshot.time),
                s.snapshot.tags.join(","),
                sources.join(" "),
                output::size(s.snapshot.stats.bytes_added),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(&["ID", "TIME", "TAGS", "SOURCES", "ADDED"], &rows)
    );
    println!("{} snapshot(s)", rows.len());
    Ok(0)
}

async fn show(ctx: &Ctx<'_>, spec: &str) -> Result<u8> {
    let repo = ctx.repo().await?;
    let list = load_snapshots(ctx, &repo).await?;
    let s = resolve(ctx, &list, spec, None)?;
    if ctx.cli.json {
        let mut v = serde_json::to_value(&s.snapshot)?;
        v["id"] = json!(s.id.to_hex());
        if s.snapshot.sealed.is_some() {
            v["sealed"] = json!(true);
        }
        println!("{v}");
        return Ok(0);
    }
    let snap = &s.snapshot;
    println!("snapshot {}", s.id);
    println!(
        "time     {} (took {})",
        output::time(&snap.time),
        output::duration(snap.stats.duration_ms)
    );
    println!("host     {}", snap.host);
    println!(
        "tags     {}",
        if snap.tags.is_empty() {
            "-".into()
        } else {
            snap.tags.join(", ")
        }
    );
    println!(
        "added    {} in {} pack(s)",
        output::size(snap.stats.bytes_added),
        snap.stats.packs_added
    );
    if snap.sealed.is_some() {
        println!("sealed   artifacts, metadata and errors need the identity to be shown");
    }
    for (name, e) in &snap.sources {
        println!();
        if e.is_ok() {
            println!(
                "source {name} ({}): ok in {}",
                e.kind,
                output::duration(e.duration_ms)
            );
        } else {
            println!(
                "source {name} ({}): FAILED: {}",
                e.kind,
                e.error.as_deref().unwrap_or("(sealed)")
            );
        }
        for a in &e.artifacts {
            let extra = a
                .tree
                .as_ref()
                .map(|t| {
                    format!(
                        ", {} files, {} dirs, {} entries",
                        t.files, t.dirs, t.entries
                    )
                })
                .unwrap_or_default();
            println!(
                "  {} [{}] {}{extra}",
                a.name,
                a.kind.as_str(),
                output::size(a.size)
            );
            println!("    sha256 {}", a.sha256);
        }
        for (k, v) in &e.metadata {
            println!("  {k}: {v}");
        }
        for w in &e.warnings {
            println!("  warning: {w}");
        }
    }
    Ok(0)
}

async fn dump(ctx: &Ctx<'_>, spec: &str, what: &str) -> Result<u8> {
    use tokio::io::AsyncWriteExt;
    let (source, artifact) = match what.split_once('/') {
        Some((s, a)) => (s, Some(a)),
        None => (what, None),
    };
    let repo = ctx.repo().await?;
    repo.require_readable("dump")?;
    let list = load_snapshots(ctx, &repo).await?;
    let s = resolve(ctx, &list, spec, Some(source))?;
    let entry = s.good(source).ok_or_else(|| {
        usage(format!(
            "snapshot {} has no good backup of `{source}`",
            s.id.short()
        ))
    })?;
    let a = match artifact {
        Some(name) => entry
            .artifact(name)
            .ok_or_else(|| usage(format!("source `{source}` has no artifact `{name}`")))?,
        None => match entry.artifacts.as_slice() {
            [one] => one,
            many => {
                let names: Vec<&str> = many.iter().map(|a| a.name.as_str()).collect();
                return Err(usage(format!(
                    "source `{source}` has several artifacts; name one: {}",
                    names.join(", ")
                )));
            }
        },
    };
    if a.kind.as_str() != "stream" {
        return Err(usage(format!(
            "`{source}/{}` is a file tree; use `restore --to DIR` (or --path for single files)",
            a.name
        )));
    }
    let mut reader = extract::stream_reader(&repo, a);
    let mut out = tokio::io::stdout();
    let copied = match tokio::io::copy(&mut reader, &mut out).await {
        Ok(_) => out.flush().await,
        Err(e) => Err(e),
    };
    match copied {
        // `dump … | head`: the reader has what it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::OK),
        r => {
            r.context("writing to stdout")?;
            Ok(exit::OK)
        }
    }
}

async fn verify_cmd(ctx: &Ctx<'_>, spec: Option<&str>, read_data: bool) -> Result<u8> {
    let repo = ctx.repo().await?;
    let snapshots = match spec {
        Some(sp) => {
            let (list, _) = repo.snapshots().await?;
            Some(vec![resolve(ctx, &list, sp, None)?.id])
        }
        None => None,
    };
    // Shared, so that no prune removes what is being checked. A host that
    // may only read still verifies, with a warning.
    let lock = match repo.lock(false, "verify", ctx.lock_wait()).await {
        Ok(l) => Some(l),
        Err(e @ respaldo_core::Error::Locked(_)) => return Err(e.into()),
        Err(e) => {
            tracing::warn!(
                "verifying without a lock ({e}); a prune running meanwhile would show up as damage"
            );
            None
        }
    };
    let progress = Arc::new(Progress::default());
    let view = ctx.progress(&progress, "verifying");
    let opts = VerifyOptions {
        read_data,
        snapshots,
    };
    let report = verify::verify(&repo, &opts, &progress);
    let report = match &lock {
        Some(l) => l.while_held(report).await,
        None => report.await,
    };
    view.finish();
    if let Some(l) = lock {
        l.release().await?;
    }
    let report = report?;
    if ctx.cli.json {
        println!(
            "{}",
            json!({"ok": report.is_ok(), "problems": report.problems,
                   "suggestions": report.suggestions, "notes": report.notes,
                   "damaged_snapshots": report.damaged_snapshots.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
                   "snapshots_checked": report.snapshots_checked, "packs_read": report.packs_read,
                   "chunks_referenced": report.chunks_referenced, "bytes_read": report.bytes_read,
                   "sealed_snapshots": report.sealed_snapshots})
        );
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

async fn forget(
    ctx: &Ctx<'_>,
    ids: &[String],
    and_prune: bool,
    dry_run: bool,
    max_unused: Option<&str>,
) -> Result<u8> {
    let max_unused = parse_max_unused(max_unused)?;
    if !ids.is_empty() {
        forget_ids(ctx, ids, dry_run).await?;
    } else {
        forget_policy(ctx, and_prune, dry_run).await?;
    }
    if and_prune {
        return prune_with(ctx, dry_run, max_unused).await;
    }
    Ok(0)
}

/// `forget ID…`: removes exactly those snapshots, whatever their host or tags.
async fn forget_ids(ctx: &Ctx<'_>, specs: &[String], dry_run: bool) -> Result<()> {
    let repo = ctx.repo().await?;
    let lock = repo.lock(false, "forget", ctx.lock_wait()).await?;
    let result = async {
        let list = load_snapshots(ctx, &repo).await?;
        let mut chosen: Vec<SnapshotRef> = Vec::new();
        for spec in specs {
            if spec == "latest" {
                return Err(usage(
                    "`forget` takes snapshot ids, not `latest` (name the snapshot to remove)",
                ));
            }
            let s = snapshot::resolve(&list, spec, None, &Hosts::All).map_err(usage)?;
            if !chosen.iter().any(|c| c.id == s.id) {
                chosen.push(s.clone());
            }
        }
        let ids: Vec<_> = chosen.iter().map(|s| s.id).collect();
        lock.while_held(maintenance::forget_ids(&repo, &ids, dry_run))
            .await?;
        Ok(chosen)
    }
    .await;
    lock.release().await?;
    let chosen = result?;
    if ctx.cli.json {
        let arr: Vec<_> = chosen
            .iter()
            .map(|s| {
                json!({"id": s.id.to_hex(), "time": s.snapshot.time, "host": s.snapshot.host,
                            "tags": s.snapshot.tags, "keep": false, "reasons": ["named by id"]})
            })
            .collect();
        println!("{}", serde_json::Value::Array(arr));
    } else {
        for s in &chosen {
            println!(
                "{} {} ({}{})",
                if dry_run { "would remove" } else { "removed" },
                s.id.short(),
                output::time(&s.snapshot.time),
                if s.snapshot.tags.is_empty() {
                    String::new()
                } else {
                    format!(", tags {}", s.snapshot.tags.join(","))
                }
            );
        }
    }
    Ok(())
}

/// `forget`: applies the retention policy to the selected host's snapshots.
async fn forget_policy(ctx: &Ctx<'_>, and_prune: bool, dry_run: bool) -> Result<()> {
    if ctx.config.retention.is_empty() {
        return Err(usage(format!(
            "no retention rule in {} ([retention] keep_last, keep_daily, …); refusing to forget everything",
            ctx.config.path.display()
        )));
    }
    let repo = ctx.repo().await?;
    let opts = maintenance::ForgetOptions {
        dry_run,
        hosts: ctx.hosts(),
        safety_window: chrono::TimeDelta::from_std(ctx.config.keep_safety_snapshots)
            .unwrap_or(maintenance::DEFAULT_SAFETY_WINDOW),
        now: chrono::Utc::now(),
    };
    // Shared: backups may go on; prune (exclusive) must not run meanwhile.
    let lock = repo.lock(false, "forget", ctx.lock_wait()).await?;
    let decisions = lock
        .while_held(maintenance::forget(
            &repo,
            &ctx.config.retention,
            &chrono::Local,
            &opts,
        ))
        .await;
    lock.release().await?;
    let decisions = decisions?;
    let removed = decisions.iter().filter(|d| !d.keep).count();
    let several_hosts = decisions
        .iter()
        .any(|d| decisions.first().is_some_and(|f| f.host != d.host));
    if ctx.cli.json && !and_prune {
        let arr: Vec<_> = decisions
            .iter()
            .map(|d| json!({"id": d.id.to_hex(), "time": d.time, "host": d.host, "tags": d.tags, "keep": d.keep, "reasons": d.reasons}))
            .collect();
        println!("{}", serde_json::Value::Array(arr));
    } else if !ctx.cli.json {
        let rows: Vec<Vec<String>> = decisions
            .iter()
            .map(|d| {
                let mut row = vec![d.id.short(), output::time(&d.time)];
                if several_hosts {
                    row.push(d.host.clone());
                }
                row.extend([
                    d.tags.join(","),
                    if d.keep {
                        "keep".into()
                    } else if dry_run {
                        "would remove".into()
                    } else {
                        "removed".into()
                    },
                    d.reasons.join("; "),
                ]);
                row
            })
            .collect();
        let headers: &[&str] = if several_hosts {
            &["ID", "TIME", "HOST", "TAGS", "ACTION", "REASONS"]
        } else {
            &["ID", "TIME", "TAGS", "ACTION", "REASONS"]
        };
        print!("{}", output::table(headers, &rows));
        println!(
            "{} kept, {} {} ({})",
            decisions.len() - removed,
            removed,
            if dry_run {
                "would be removed"
            } else {
                "removed"
            },
            opts.hosts
        );
    }
    Ok(())
}

/// `--max-unused`: a percentage (`10%`, `10`) as a share.
fn parse_max_unused(v: Option<&str>) -> Result<f64> {
    let Some(v) = v else {
        return Ok(maintenance::DEFAULT_MAX_UNUSED);
    };
    let n: f64 = v.trim().trim_end_matches('%').trim().parse().map_err(|_| {
        usage(format!(
            "--max-unused `{v}`: expected a percentage, e.g. `10%`"
        ))
    })?;
    if !(0.0..=100.0).contains(&n) {
        return Err(usage(format!(
            "--max-unused `{v}`: must be between 0% and 100%"
        )));
    }
    Ok(n / 100.0)
}

async fn prune(ctx: &Ctx<'_>, dry_run: bool, max_unused: Option<&str>) -> Result<u8> {
    let max_unused = parse_max_unused(max_unused)?;
    prune_with(ctx, dry_run, max_unused).await
}

async fn prune_with(ctx: &Ctx<'_>, dry_run: bool, max_unused: f64) -> Result<u8> {
    let repo = ctx.repo().await?;
    let lock = repo.lock(true, "prune", ctx.lock_wait()).await?;
    let opts = maintenance::PruneOptions {
        dry_run,
        max_unused,
    };
    let r = lock.while_held(maintenance::prune(&repo, &opts)).await;
    lock.release().await?;
    let r = r?;
    if ctx.cli.json {
        println!(
            "{}",
            json!({"dry_run": dry_run, "packs_deleted": r.packs_deleted, "packs_repacked": r.packs_repacked,
                   "packs_unindexed": r.packs_unindexed, "packs_recovered": r.packs_recovered,
                   "blobs_rewritten": r.blobs_rewritten, "bytes_freed": r.bytes_freed,
                   "bytes_rewritten": r.bytes_rewritten, "bytes_incomplete": r.bytes_incomplete,
                   "fragments_replaced": r.fragments_replaced, "fragments_written": r.fragments_written})
        );
    } else {
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
                "{} pack(s) that no index fragment described are in use and were indexed again",
                r.packs_recovered
            );
        }
    }
    Ok(0)
}

async fn unlock(ctx: &Ctx<'_>, remove_all: bool) -> Result<u8> {
    let repo = ctx.repo().await?;
    let r = repo.unlock(remove_all).await?;
    if ctx.cli.json {
        println!("{}", json!({"removed": r.removed, "kept": r.kept}));
    } else {
        for l in &r.removed {
            println!("removed {l}");
        }
        for l in &r.kept {
            println!("kept {l} (in use; --remove-all removes it)");
        }
        if r.removed.is_empty() && r.kept.is_empty() {
            println!("no locks");
        }
    }
    Ok(0)
}

async fn tag(ctx: &Ctx<'_>, spec: &str, add: &[String], remove: &[String]) -> Result<u8> {
    if add.is_empty() && remove.is_empty() {
        return Err(usage("give --add TAG or --remove TAG"));
    }
    for t in add {
        if t.is_empty() || t.contains(char::is_whitespace) || t.contains(',') {
            return Err(usage(format!("invalid tag `{t}`: no spaces or commas")));
        }
    }
    let repo = ctx.repo().await?;
    let lock = repo.lock(false, "tag", ctx.lock_wait()).await?;
    let result = async {
        let list = load_snapshots(ctx, &repo).await?;
        let s = resolve(ctx, &list, spec, None)?.clone();
        let id = lock
            .while_held(respaldo_core::ops::repair::retag(&repo, &s, add, remove))
            .await?;
        Ok::<_, anyhow::Error>((s, id))
    }
    .await;
    lock.release().await?;
    let (s, id) = result?;
    if ctx.cli.json {
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
