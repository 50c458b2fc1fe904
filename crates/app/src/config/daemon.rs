//! `[daemon]`: the settings of `respaldo daemon`.

use std::net::SocketAddr;
use std::time::Duration;

use respaldo_core::kit::duration::parse_duration;
use serde::Deserialize;

use super::error::KeyError;

/// `[daemon]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Serve `/metrics` and `/healthz` on this address (`"127.0.0.1:9180"`;
    /// port 0 picks a free port, printed at start). Default: no HTTP server.
    #[serde(default)]
    pub listen: Option<String>,
    /// The time zone of the `[schedule]` cron expressions (`"Europe/Madrid"`);
    /// default: the system's.
    #[serde(default)]
    pub timezone: Option<String>,
    /// At start, run once each entry whose last recorded run is older than
    /// its last due time (a run missed while the daemon was down).
    #[serde(default = "default_catch_up")]
    pub catch_up: bool,
    /// How often a failed scheduled backup is retried (only the sources that
    /// failed).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry, doubled for each next one.
    #[serde(default = "default_retry_delay")]
    pub retry_delay: String,
    /// How often the daemon re-reads the repository to refresh the metrics
    /// and to notify sources that went stale (also after every run).
    #[serde(default = "default_status_interval")]
    pub status_interval: String,
}

fn default_catch_up() -> bool {
    true
}
fn default_retries() -> u32 {
    2
}
fn default_retry_delay() -> String {
    "1min".into()
}
fn default_status_interval() -> String {
    "5min".into()
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            listen: None,
            timezone: None,
            catch_up: default_catch_up(),
            retries: default_retries(),
            retry_delay: default_retry_delay(),
            status_interval: default_status_interval(),
        }
    }
}

/// Validated `[daemon]`.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// Where to serve metrics.
    pub listen: Option<SocketAddr>,
    /// First retry delay.
    pub retry_delay: Duration,
    /// Status refresh period.
    pub status_interval: Duration,
}

impl DaemonSettings {
    /// Validates `[daemon]`.
    pub fn new(c: &DaemonConfig) -> Result<DaemonSettings, KeyError> {
        let key = |k: &str, m: String| (vec![k.to_string()], m);
        let listen = c
            .listen
            .as_deref()
            .map(|l| {
                l.parse::<SocketAddr>().map_err(|_| {
                    key(
                        "listen",
                        format!("`{l}` is not an address like 127.0.0.1:9180"),
                    )
                })
            })
            .transpose()?;
        Ok(DaemonSettings {
            listen,
            retry_delay: parse_duration(&c.retry_delay)
                .map_err(|respaldo_core::kit::duration::DurationError(m)| key("retry_delay", m))?,
            status_interval: parse_duration(&c.status_interval).map_err(
                |respaldo_core::kit::duration::DurationError(m)| key("status_interval", m),
            )?,
        })
    }
}
