//! `respaldo daemon`: runs the `[schedule]` entries one at a time (never two
//! runs at once), catches up a run missed while it was down, reloads the
//! configuration on SIGHUP, stops cleanly on SIGTERM (the running step is
//! told to stop and writes no snapshot), notifies when a source goes stale,
//! and serves `/metrics` (Prometheus text) and `/healthz` on `[daemon] listen`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::runner::{self, Outcome};
use crate::stack::Stack;
use crate::status::{self, SourceState};

/// What `/metrics` and `/healthz` show.
#[derive(Debug, Default)]
struct Metrics {
    sources: Vec<SourceState>,
    repository_size: Option<u64>,
    next_runs: Vec<(String, Option<DateTime<Utc>>)>,
    runs: Vec<(String, &'static str, u64)>,
    status_error: Option<String>,
}

type Shared = Arc<Mutex<Metrics>>;

impl Metrics {
    fn render(&self) -> String {
        let mut out = crate::metrics::render(&self.sources, self.repository_size);
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
            crate::metrics::family(&mut out, name, kind, help, rows)
        };
        family(
            "respaldo_schedule_next_run_timestamp_seconds",
            "gauge",
            "When the schedule entry runs next (Unix seconds).",
            self.next_runs
                .iter()
                .filter_map(|(n, t)| {
                    t.map(|t| {
                        (
                            format!("{{entry=\"{}\"}}", crate::metrics::label(n)),
                            t.timestamp() as f64,
                        )
                    })
                })
                .collect(),
        );
        family(
            "respaldo_schedule_runs_total",
            "counter",
            "Runs of each schedule entry by this daemon, by outcome.",
            self.runs
                .iter()
                .map(|(n, o, c)| {
                    (
                        format!("{{entry=\"{}\",outcome=\"{o}\"}}", crate::metrics::label(n)),
                        *c as f64,
                    )
                })
                .collect(),
        );
        family(
            "respaldo_status_up",
            "gauge",
            "1 when the daemon could read the repository at its last status refresh.",
            vec![(
                String::new(),
                if self.status_error.is_none() {
                    1.0
                } else {
                    0.0
                },
            )],
        );
        out
    }

    fn health(&self) -> (StatusCode, String) {
        if let Some(e) = &self.status_error {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the repository: {e}\n"),
            );
        }
        let bad: Vec<String> = self
            .sources
            .iter()
            .filter(|s| !s.ok())
            .map(|s| format!("{}: {}", s.name, s.describe()))
            .collect();
        if bad.is_empty() {
            (StatusCode::OK, "ok\n".into())
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, bad.join("\n") + "\n")
        }
    }

    fn count_run(&mut self, entry: &str, outcome: Outcome) {
        let o = match outcome {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        };
        match self.runs.iter_mut().find(|(n, x, _)| n == entry && *x == o) {
            Some(r) => r.2 += 1,
            None => self.runs.push((entry.to_string(), o, 1)),
        }
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    m: Shared,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (status, ctype, body) = {
        let m = m.lock().expect("metrics lock");
        match req.uri().path() {
            "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", m.render()),
            "/healthz" => {
                let (s, b) = m.health();
                (s, "text/plain", b)
            }
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".to_string(),
            ),
        }
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response"))
}

async fn serve(listener: tokio::net::TcpListener, m: Shared, token: CancellationToken) {
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            () = token.cancelled() => return,
        };
        let (stream, _) = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("metrics server: {e}");
                continue;
            }
        };
        let m = m.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, m.clone()));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}

/// When each entry runs next. With `catch_up`, an entry whose last recorded
/// run is older than its last due time runs now.
fn plan(config: &Config, now: DateTime<Utc>) -> Vec<Option<DateTime<Utc>>> {
    let history = config.status.history.read_or_warn();
    config
        .schedule
        .iter()
        .map(|e| {
            let last = history
                .iter()
                .filter(|r| r.trigger.as_deref() == Some(e.name.as_str()))
                .map(|r| r.started)
                .max();
            match last.and_then(|l| e.next_after(l)) {
                Some(due) if e.catch_up && due <= now => {
                    tracing::info!(
                        "schedule `{}`: a run was missed at {due}; running it now",
                        e.name
                    );
                    Some(now)
                }
                _ => e.next_after(now),
            }
        })
        .collect()
}

/// Refreshes the status behind the metrics; notifies sources newly stale.
async fn refresh(
    ctx: &Stack,
    m: &Shared,
    next: &[Option<DateTime<Utc>>],
    notified: &mut BTreeSet<String>,
) {
    let repo = ctx.repo().await;
    let (states, size) = match &repo {
        Ok(repo) => (
            status::collect(&ctx.config, repo, &ctx.hosts())
                .await
                .map_err(Error::from),
            status::repository_size(repo).await,
        ),
        Err(e) => (Err(Error::failed(e.describe())), None),
    };
    let newly: Vec<SourceState> = {
        let mut guard = m.lock().expect("metrics lock");
        guard.next_runs = ctx
            .config
            .schedule
            .iter()
            .zip(next)
            .map(|(e, t)| (e.name.clone(), *t))
            .collect();
        match states {
            Ok(states) => {
                guard.status_error = None;
                guard.repository_size = size;
                let newly: Vec<SourceState> = states
                    .iter()
                    .filter(|s| s.stale && !notified.contains(&s.name))
                    .cloned()
                    .collect();
                notified.retain(|n| states.iter().any(|s| s.stale && &s.name == n));
                guard.sources = states;
                newly
            }
            Err(e) => {
                let msg = ctx.config.masker.mask(&e.describe());
                tracing::warn!("status refresh failed: {msg}");
                guard.status_error = Some(msg);
                Vec::new()
            }
        }
    };
    if !newly.is_empty() {
        notified.extend(newly.iter().map(|s| s.name.clone()));
        let refs: Vec<&SourceState> = newly.iter().collect();
        crate::notify::send(&ctx.config.notify, &status::stale_event(&ctx.config, &refs)).await;
    }
}

/// When each entry runs next (with `catch_up`, a run missed while the
/// daemon was down runs now), for `daemon --dry-run`.
pub fn next_runs(config: &Config) -> Vec<Option<DateTime<Utc>>> {
    plan(config, Utc::now())
}

/// Runs the `[schedule]` entries until `token` is cancelled (each step is
/// this program run with the global `flags`), serving `/metrics` and
/// `/healthz` on `[daemon] listen`; SIGHUP reloads the configuration.
pub async fn run(mut ctx: Stack, flags: &[String], token: CancellationToken) -> Result<()> {
    if ctx.config.schedule.is_empty() && ctx.config.daemon.listen.is_none() {
        return Err(Error::usage(format!(
            "nothing to do: {} has no [schedule] entry and no [daemon] listen address",
            ctx.config.path.display()
        )));
    }
    let mut hup = signal(SignalKind::hangup()).map_err(|e| Error::io("cannot handle SIGHUP", e))?;
    let metrics: Shared = Arc::default();
    let mut next = plan(&ctx.config, Utc::now());
    let mut notified = BTreeSet::new();
    refresh(&ctx, &metrics, &next, &mut notified).await;
    let server_token = token.child_token();
    if let Some(addr) = ctx.config.daemon.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {addr} ([daemon] listen)"), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("the metrics address", e))?;
        ctx.say(format!(
            "respaldo daemon: /metrics and /healthz on http://{local}"
        ));
        tokio::spawn(serve(listener, metrics.clone(), server_token.clone()));
    }
    ctx.say(format!(
        "respaldo daemon: {} schedule entr{} for {}",
        ctx.config.schedule.len(),
        if ctx.config.schedule.len() == 1 {
            "y"
        } else {
            "ies"
        },
        ctx.config.path.display()
    ));
    let mut status_timer = tokio::time::interval(ctx.config.daemon.status_interval);
    status_timer.reset();
    loop {
        let due = next
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.map(|t| (t, i)))
            .min();
        let wait = due
            .map(|(t, _)| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(86400));
        tokio::select! {
            () = tokio::time::sleep(wait), if due.is_some() => {
                let i = due.expect("guarded").1;
                let entry = ctx.config.schedule[i].clone();
                tracing::info!("schedule `{}`: starting", entry.name);
                let outcome = match runner::run_entry(&ctx.config, flags, &entry, &token).await {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::error!("schedule `{}`: {}", entry.name, e.describe());
                        Outcome::Failed
                    }
                };
                metrics.lock().expect("metrics lock").count_run(&entry.name, outcome);
                if outcome == Outcome::Interrupted {
                    break;
                }
                next[i] = entry.next_after(Utc::now());
                refresh(&ctx, &metrics, &next, &mut notified).await;
            }
            _ = status_timer.tick() => refresh(&ctx, &metrics, &next, &mut notified).await,
            _ = hup.recv() => {
                match crate::config::Config::load(&ctx.config.path, ctx.config.env.as_deref()) {
                    Ok(c) => {
                        if c.daemon.listen != ctx.config.daemon.listen {
                            tracing::warn!("[daemon] listen changed: restart the daemon to apply it");
                        }
                        ctx.say(format!("respaldo daemon: configuration reloaded ({} schedule entries)", c.schedule.len()));
                        ctx.config = c;
                        next = plan(&ctx.config, Utc::now());
                        status_timer = tokio::time::interval(ctx.config.daemon.status_interval);
                        status_timer.reset();
                        refresh(&ctx, &metrics, &next, &mut notified).await;
                    }
                    Err(e) => tracing::error!("configuration not reloaded, keeping the running one: {e}"),
                }
            }
            () = token.cancelled() => break,
        }
    }
    server_token.cancel();
    ctx.say("respaldo daemon: stopped");
    Ok(())
}
