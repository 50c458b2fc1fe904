//! `ls`, `find`, `diff`, `stats`, `dump` and `mount`: looking inside snapshots.

use anyhow::{Context, Result};
use respaldo_app::ops::browse;
use respaldo_app::ops::{diff, find, stats};
use serde_json::json;
use tokio::io::AsyncWrite;

use crate::args::Command;
use crate::ctx::Ctx;
use crate::{exit, output};

/// Runs one of the browsing commands.
pub async fn command(ctx: &Ctx<'_>, cmd: &Command) -> Result<u8> {
    match cmd {
        Command::Ls {
            snapshot,
            what,
            recursive,
        } => ls(ctx, snapshot, what.as_deref(), *recursive).await,
        Command::Find {
            pattern,
            source,
            newer,
            older,
        } => {
            let time = |t: &Option<String>| t.as_deref().map(find::parse_time).transpose();
            let req = find::FindRequest {
                pattern: pattern.clone(),
                source: source.clone(),
                newer: time(newer)?,
                older: time(older)?,
            };
            let found = find::find(ctx, &req).await?;
            match ctx.json() {
                true => println!("{}", serde_json::to_value(&found)?),
                false => print!("{}", find::text(&found)),
            }
            Ok(exit::OK)
        }
        Command::Diff { from, to } => output::render(ctx.json(), &diff::diff(ctx, from, to).await?),
        Command::Stats { last } => output::render(ctx.json(), &stats::stats(ctx, *last).await?),
        Command::Dump {
            snapshot,
            what,
            output,
        } => {
            let (repo, dump) = browse::dump(ctx, snapshot, what).await?;
            let out: Box<dyn AsyncWrite + Unpin + Send> = match output {
                Some(p) => Box::new(
                    tokio::fs::File::create(p)
                        .await
                        .with_context(|| format!("creating {}", p.display()))?,
                ),
                None => Box::new(tokio::io::stdout()),
            };
            match browse::write_dump(&repo, dump, out).await {
                // `dump … | head`: the reader has what it wanted.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::OK),
                r => r.map(|_| exit::OK).context("writing the dump"),
            }
        }
        Command::Mount { dir } => {
            let m = respaldo_app::ops::mount::mount(ctx, dir).await?;
            let latest = m
                .latest
                .map_or(String::new(), |l| format!("; latest is {l}"));
            let (n, h, d) = (m.snapshots, m.hosts, dir.display());
            ctx.say(format!(
                "mounted {n} snapshots of {h} hosts on {d}{latest}; Ctrl-C unmounts"
            ));
            let stop = respaldo_app::signals::shutdown();
            respaldo_app::ops::mount::serve(m.mounted, &stop).await?;
            ctx.say(format!("unmounted {}", dir.display()));
            Ok(exit::OK)
        }
        _ => unreachable!("not a browsing command"),
    }
}

/// `ls`: tree entries as they are read, then the listing's own text.
async fn ls(ctx: &Ctx<'_>, spec: &str, what: Option<&str>, recursive: bool) -> Result<u8> {
    let (json, mut entries) = (ctx.json(), Vec::new());
    let listing = browse::ls(ctx, spec, what, recursive, |_, e| match json {
        true => entries.push(json!({
            "path": e.path.display(), "type": e.kind, "mode": e.mode & 0o7777,
            "uid": e.uid, "gid": e.gid, "size": e.size, "mtime_ns": e.mtime_ns,
            "target": e.target.as_ref().map(|t| t.display()),
        })),
        false => println!("{}", browse::entry_line(&e)),
    })
    .await?;
    if json {
        let mut v = serde_json::to_value(&listing)?;
        v["entries"] = json!(entries);
        println!("{v}");
    } else {
        print!("{listing}");
    }
    Ok(exit::OK)
}
