//! Health checks after a restore: a command run until it exits 0, or (with
//! the `http` feature) a URL fetched until it answers 2xx, each for at most
//! a timeout. Used by the docker driver for the containers it restarts and by
//! the restore of a whole stack for the services it started again.

use std::time::Duration;

use crate::error::{Error, Result};

/// How long a health check waits by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `argv` on this host every half second until it exits 0 or `timeout`
/// has passed; returns a line for the report.
pub async fn command(argv: &[String], timeout: Duration) -> Result<String> {
    let shown = argv.join(" ");
    let program = argv
        .first()
        .ok_or_else(|| Error::Invalid("an empty health command".into()))?;
    crate::kit::process::find_program(program)
        .ok_or_else(|| Error::Invalid(format!("health command: `{program}` not found on PATH")))?;
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    loop {
        match crate::kit::process::run(argv).await {
            Ok(()) => {
                return Ok(format!(
                    "health command `{shown}` passed after {:.1}s",
                    started.elapsed().as_secs_f64()
                ))
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(Error::Invalid(format!(
                    "health command `{shown}` still failing after {}s: {e}",
                    timeout.as_secs()
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Fetches `url` until it answers 2xx or `timeout` passes; returns a line
/// for the report.
#[cfg(feature = "http")]
pub async fn url(url: &str, timeout: Duration) -> Result<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Error::Invalid(format!("health URL {url}: {e}")))?;
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    loop {
        let last = match client.get(url).send().await {
            Ok(r) if r.status().is_success() => {
                return Ok(format!(
                    "health URL {url} answered {} after {:.1}s",
                    r.status(),
                    started.elapsed().as_secs_f64()
                ))
            }
            Ok(r) => format!("it answered {}", r.status()),
            Err(e) => format!("{e}"),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Invalid(format!(
                "health URL {url} still failing after {}s: {last}",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
