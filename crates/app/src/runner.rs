//! Running one `[schedule]` entry (`schedule run NAME`, the daemon, the
//! installed timers and cron lines): each step is this same program run as a
//! child (`backup --tag …`, then `forget [--prune]`; or `verify`,
//! `test-restore`, …), so a scheduled run does exactly what the command
//! does. A failed backup is retried with backoff, only for the sources that
//! failed. SIGTERM is passed on to the running step, which stops cleanly.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::history::{RunRecord, SourceRun};
use crate::notify::{self, EventKind};
use crate::ops::tracked::{RUN_ID_ENV, TRIGGER_ENV};
use crate::schedule::{Action, Entry};

/// How long a step may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(60);

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Exit 0.
    Ok,
    /// Exit 1 (or killed).
    Failed,
    /// Exit 2: configuration or usage; retrying cannot help.
    Usage,
    /// Stopped by a signal we passed on.
    Interrupted,
}

/// How an entry's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every step succeeded.
    Ok,
    /// A step failed.
    Failed,
    /// Stopped by SIGTERM/SIGINT.
    Interrupted,
}

/// The global options a step inherits: the configuration, its `--env`,
/// and the caller's `flags` (`-q`, `-v`).
fn base_args(config: &Config, flags: &[String]) -> Vec<String> {
    let mut a = vec!["-c".to_string(), config.path.display().to_string()];
    if let Some(env) = &config.env {
        a.push("--env".into());
        a.push(env.clone());
    }
    a.extend(flags.iter().cloned());
    a
}

/// The steps an entry runs, as command lines (for `--dry-run`).
pub fn describe(entry: &Entry) -> Vec<String> {
    std::iter::once(first_step(entry, &entry.sources).join(" "))
        .chain(after_backup(entry).map(|a| a.join(" ")))
        .map(|s| format!("respaldo {s}"))
        .collect()
}

fn first_step(entry: &Entry, sources: &[String]) -> Vec<String> {
    let mut a: Vec<String> = match &entry.host {
        Some(h) => vec!["--host".into(), h.clone()],
        None => Vec::new(),
    };
    a.push(entry.action.as_str().to_string());
    let with_sources = |a: &mut Vec<String>| {
        for s in sources {
            a.push("--source".into());
            a.push(s.clone());
        }
    };
    match entry.action {
        Action::Backup => {
            for t in &entry.tags {
                a.push("--tag".into());
                a.push(t.clone());
            }
            with_sources(&mut a);
        }
        Action::TestRestore => with_sources(&mut a),
        Action::Verify if entry.read_data => a.push("--read-data".into()),
        Action::Forget if entry.prune => a.push("--prune".into()),
        Action::Copy => {
            a.push("--to".into());
            a.push(entry.to.clone().unwrap_or_default());
        }
        Action::Verify | Action::Forget | Action::Prune => {}
    }
    a
}

fn after_backup(entry: &Entry) -> Option<Vec<String>> {
    (entry.action == Action::Backup && entry.forget).then(|| {
        let mut a = vec!["forget".to_string()];
        if entry.prune {
            a.push("--prune".into());
        }
        a
    })
}

/// Runs one step as a child, its stderr passed through (and kept in the log
/// tail for notifications).
async fn step(
    config: &Config,
    flags: &[String],
    args: &[String],
    env: &[(&str, String)],
    token: &CancellationToken,
) -> Result<Step> {
    let exe =
        std::env::current_exe().map_err(|e| Error::io("cannot find the respaldo executable", e))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(base_args(config, flags))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C reaches only us, and we pass one
        // SIGTERM on (a second would make it exit without cleaning up).
        .process_group(0)
        .kill_on_drop(true);
    tracing::info!("running: respaldo {}", args.join(" "));
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("cannot start respaldo", e))?;
    let stderr = child.stderr.take().expect("piped");
    let forward = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            eprintln!("{l}");
            crate::mask::LogTail::global().push(&l);
        }
    });
    let waited = tokio::select! {
        s = child.wait() => Some(s.map_err(|e| Error::io("waiting for respaldo", e))?),
        () = token.cancelled() => None,
    };
    let Some(status) = waited else {
        if let Some(pid) = child.id() {
            // SAFETY: signals our own child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        if tokio::time::timeout(STOP_GRACE, child.wait())
            .await
            .is_err()
        {
            tracing::warn!("respaldo {} did not stop in time; killing it", args[0]);
            child
                .kill()
                .await
                .map_err(|e| Error::io("cannot kill respaldo", e))?;
        }
        let _ = forward.await;
        return Ok(Step::Interrupted);
    };
    let _ = forward.await;
    Ok(match status.code() {
        Some(0) => Step::Ok,
        Some(2) => Step::Usage,
        _ => Step::Failed,
    })
}

/// Records and notifies a step's outcome (for steps other than backup,
/// which does so itself, and for a backup step that died before it could);
/// the record's sources get the step's outcome.
async fn report(config: &Config, rec: &mut RunRecord, result: Step) {
    report_failure(rec, result);
    crate::ops::tracked::conclude(config, rec).await;
}

/// The run `id` as the step recorded it, if it did.
fn own_record(config: &Config, id: &str) -> Option<RunRecord> {
    config
        .status
        .history
        .read_or_warn()
        .into_iter()
        .rev()
        .find(|r| r.id == id)
}

/// A step's outcome in `rec`: ok, or failed with the last line it logged;
/// the record's sources get the same outcome.
fn report_failure(rec: &mut RunRecord, result: Step) {
    rec.ok = result == Step::Ok;
    if !rec.ok {
        let tail = crate::mask::LogTail::global().text();
        let last = tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        rec.error = Some(format!(
            "`respaldo {}` {}{}",
            rec.action,
            match result {
                Step::Usage => "failed (configuration or usage error)",
                Step::Interrupted => "was interrupted",
                _ => "failed",
            },
            if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            }
        ));
    }
    for s in rec.sources.values_mut() {
        s.ok = rec.ok;
        s.error.clone_from(&rec.error);
    }
}

/// The sources a backup step of `sources` backs up: those named, or every
/// enabled source when none is.
fn selected(config: &Config, sources: &[String]) -> Vec<String> {
    if sources.is_empty() {
        config
            .sources
            .iter()
            .filter(|s| s.enabled)
            .map(|s| s.name.clone())
            .collect()
    } else {
        sources.to_vec()
    }
}

/// Runs `entry` now; each step is this program run with the global
/// `flags` (`-q`, `-v`) besides the configuration's.
pub async fn run_entry(
    config: &Config,
    flags: &[String],
    entry: &Entry,
    token: &CancellationToken,
) -> Result<Outcome> {
    let trigger = Some(entry.name.clone());
    let env = |id: &str| {
        vec![
            (TRIGGER_ENV, entry.name.clone()),
            (RUN_ID_ENV, id.to_string()),
        ]
    };
    if entry.action != Action::Backup {
        let mut rec = RunRecord::start(entry.action.as_str(), trigger);
        if notify::wants(&config.notify, EventKind::Start) {
            notify::send(
                &config.notify,
                &crate::ops::tracked::event(config, EventKind::Start, &rec),
            )
            .await;
        }
        let args = first_step(entry, &entry.sources);
        let r = step(config, flags, &args, &env(&rec.id), token).await?;
        match own_record(config, &rec.id) {
            // The step recorded its run itself (test-restore, verify): its
            // record has the details (each drill's estimate, the damage
            // found), the notification says them.
            Some(mut own) => {
                if r != Step::Ok && own.ok {
                    report_failure(&mut own, r);
                }
                crate::ops::tracked::notify_outcome(config, &own).await;
            }
            None => report(config, &mut rec, r).await,
        }
        return Ok(match r {
            Step::Ok => Outcome::Ok,
            Step::Interrupted => Outcome::Interrupted,
            _ => Outcome::Failed,
        });
    }
    let mut sources = entry.sources.clone();
    let mut delay = entry.retry_delay;
    let mut wrote_snapshot = false;
    let mut attempt = 0;
    let outcome = loop {
        let id = hex::encode(rand::random::<[u8; 8]>());
        let args = first_step(entry, &sources);
        let r = step(config, flags, &args, &env(&id), token).await?;
        let rec = own_record(config, &id);
        wrote_snapshot |= rec.as_ref().is_some_and(|r| r.snapshot.is_some());
        if rec.is_none() && r != Step::Ok {
            // The step died before it could record its run: every source it
            // was to back up failed.
            let mut rec = RunRecord::start("backup", trigger.clone());
            rec.id = id;
            for name in selected(config, &sources) {
                rec.sources.insert(name, SourceRun::default());
            }
            report(config, &mut rec, r).await;
        }
        match r {
            Step::Ok => break Outcome::Ok,
            Step::Interrupted => return Ok(Outcome::Interrupted),
            Step::Usage => break Outcome::Failed,
            Step::Failed if attempt >= entry.retries => break Outcome::Failed,
            Step::Failed => {}
        }
        attempt += 1;
        // Retry only what failed when some sources succeeded.
        if let Some(rec) = &rec {
            let failed: Vec<String> = rec
                .sources
                .iter()
                .filter(|(_, s)| !s.ok)
                .map(|(n, _)| n.clone())
                .collect();
            if !failed.is_empty() && failed.len() < rec.sources.len() {
                sources = failed;
            }
        }
        tracing::warn!(
            "schedule `{}`: backup failed; retry {attempt} of {} in {}",
            entry.name,
            entry.retries,
            crate::status::human(delay)
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = token.cancelled() => return Ok(Outcome::Interrupted),
        }
        delay = delay.saturating_mul(2);
    };
    if wrote_snapshot {
        if let Some(args) = after_backup(entry) {
            let mut rec = RunRecord::start("forget", trigger);
            let r = step(config, flags, &args, &env(&rec.id), token).await?;
            if r == Step::Interrupted {
                return Ok(Outcome::Interrupted);
            }
            if r != Step::Ok {
                report(config, &mut rec, r).await;
                return Ok(Outcome::Failed);
            }
        }
    }
    Ok(outcome)
}
