//! `[sources.NAME.restore]`: hooks, containers to stop and health checks
//! around one source's restore.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::hooks::{HookCommand, Hooks, HooksConfig};

/// `[sources.NAME.restore]`: what happens around this source's restore.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreSettingsConfig {
    /// Runs before the restore changes anything (and before the safety
    /// snapshot), e.g. to stop the application: if it fails, this source is
    /// not restored.
    #[serde(default)]
    pub before: Option<HookCommand>,
    /// Runs after a successful restore, once the containers run again.
    #[serde(default)]
    pub after: Option<HookCommand>,
    /// Containers stopped while the restore runs and always started again
    /// (also on an error or a signal): names, `label:KEY=VALUE`,
    /// `compose:PROJECT` or `compose:PROJECT/SERVICE`. In a whole-stack
    /// restore every source's containers are stopped first, the databases
    /// restored before the rest, and the containers started at the end.
    #[serde(default)]
    pub stop_containers: Vec<String>,
    /// Seconds a container gets to stop before it is killed (default 10).
    #[serde(default)]
    pub stop_timeout: Option<u64>,
    /// After the restore (and the containers started): a command run until
    /// it exits 0, at most `health_timeout`; failing, it fails the restore.
    #[serde(default)]
    pub health_command: Option<HookCommand>,
    /// After the restore: an `http://` URL fetched until it answers 2xx, at
    /// most `health_timeout`; failing, it fails the restore.
    #[serde(default)]
    pub health_url: Option<String>,
    /// How long the health check may take (default `"60s"`).
    #[serde(default)]
    pub health_timeout: Option<String>,
    /// How long each hook may run (default `"5min"`).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// Validated [`RestoreSettingsConfig`].
#[derive(Debug, Clone, Default)]
pub struct RestoreSettings {
    /// `before` and `after`.
    pub hooks: Hooks,
    /// Containers to stop (names, `label:…`, `compose:…`).
    pub stop: Vec<String>,
    /// How long a container gets to stop.
    pub stop_timeout: Duration,
    /// The health check command.
    pub health_command: Option<HookCommand>,
    /// The health check URL.
    pub health_url: Option<String>,
    /// How long the health check may take.
    pub health_timeout: Duration,
}

impl RestoreSettings {
    /// Validates the table; hooks run in `dir`.
    pub fn new(c: RestoreSettingsConfig, dir: &Path) -> Result<Self, (String, String)> {
        let hooks = Hooks::new(
            HooksConfig {
                before: c.before,
                after: c.after,
                failure: None,
                finally: None,
                timeout: c.timeout,
            },
            dir,
        )?;
        if let Some(s) = c.stop_containers.iter().find(|s| s.trim().is_empty()) {
            return Err(("stop_containers".into(), format!("empty entry {s:?}")));
        }
        if let Some(u) = &c.health_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(("health_url".into(), format!("`{u}` is not an http(s) URL")));
            }
        }
        let health_timeout = match &c.health_timeout {
            Some(t) => respaldo_core::kit::duration::parse_duration(t).map_err(
                |respaldo_core::kit::duration::DurationError(m)| ("health_timeout".to_string(), m),
            )?,
            None => respaldo_core::kit::health::DEFAULT_TIMEOUT,
        };
        Ok(RestoreSettings {
            hooks,
            stop: c.stop_containers,
            stop_timeout: Duration::from_secs(c.stop_timeout.unwrap_or(10)),
            health_command: c.health_command,
            health_url: c.health_url,
            health_timeout,
        })
    }

    /// The containers it stops.
    pub fn containers(&self) -> &[String] {
        &self.stop
    }

    /// Whether a health check is configured.
    pub fn has_health_check(&self) -> bool {
        self.health_command.is_some() || self.health_url.is_some()
    }

    /// Runs the health checks; returns the report lines.
    pub async fn health(&self) -> respaldo_core::Result<Vec<String>> {
        let mut lines = Vec::new();
        if let Some(c) = &self.health_command {
            lines.push(respaldo_core::kit::health::command(&c.argv(), self.health_timeout).await?);
        }
        if let Some(u) = &self.health_url {
            lines.push(respaldo_core::kit::health::url(u, self.health_timeout).await?);
        }
        Ok(lines)
    }
}
