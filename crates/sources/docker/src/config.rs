//! The `[sources.NAME]` table of a `docker` source: which volumes, which
//! containers to stop or pause, and the hooks run inside them.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Name of the helper image the driver imports.
pub(crate) const HELPER_IMAGE: &str = "respaldo-helper:1";
/// Label on running containers to stop during a backup even when they do not
/// mount the volume.
pub(crate) const STOP_LABEL: &str = "respaldo.stop-during-backup=true";

/// Configuration of a `docker` source. At least one of `volumes`, `labels`
/// and `compose_project` must be given; the union of what they select is
/// backed up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// Volume names. A named volume that does not exist fails the backup.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Volume label filters, `key=value` or `key` (e.g.
    /// `"respaldo.backup=true"`); a volume matching any of them is selected.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Selects every volume of this Docker Compose project (label
    /// `com.docker.compose.project`).
    #[serde(default)]
    pub compose_project: Option<String>,
    /// Stop the running containers that use a volume (and running containers
    /// labelled `respaldo.stop-during-backup=true`) while it is copied or
    /// restored; they are always started again.
    #[serde(default)]
    pub stop_containers: bool,
    /// With `stop_containers`: pause the containers instead of stopping them.
    #[serde(default)]
    pub pause: bool,
    /// Seconds a container gets to stop before it is killed.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: u64,
    /// An image with `/bin/sh` and `rm` (e.g. `"alpine:3"`) that the engine
    /// has, used only to empty a volume for a `--force` restore in place while
    /// containers still refer to it. Without it such a restore is refused; a
    /// volume no container refers to is emptied by recreating it.
    #[serde(default)]
    pub helper_image: Option<String>,
    /// After a restore, wait until every restarted container is running and,
    /// if it has a Docker health check, healthy (`"60s"`, `"2min"`). The result
    /// is reported; a container that does not become healthy fails the restore.
    #[serde(default)]
    pub health_timeout: Option<String>,
    /// After a restore, a program run on this host (no shell) until it exits
    /// 0, at most `health_timeout` (default 60s) — e.g.
    /// `["curl", "-fsS", "http://localhost:3000/api/health"]`. The result is
    /// reported; a check that never passes fails the restore.
    #[serde(default)]
    pub health_command: Option<Vec<String>>,
    /// After a restore, an `http://` or `https://` URL fetched until it
    /// answers 2xx, at most `health_timeout` (default 60s) — e.g.
    /// `"http://localhost:3000/api/health"`. The result is reported; a URL
    /// that never answers 2xx fails the restore.
    #[serde(default)]
    pub health_url: Option<String>,
    /// Commands run inside a container (by container name) around the copy:
    /// `before` runs while it is still running (before it is stopped or
    /// paused; e.g. a flush), `after` once it runs again. A failing `before`
    /// fails the copy (containers already stopped are started again); a
    /// failing `after` fails it too, after every container was started.
    #[serde(default)]
    pub exec: BTreeMap<String, ExecHooks>,
}

/// Commands run inside one container around a copy (no shell: use
/// `["sh", "-c", "…"]` for one).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecHooks {
    /// Program and arguments run before the container is stopped or paused.
    #[serde(default)]
    pub before: Option<Vec<String>>,
    /// Program and arguments run after the container runs again.
    #[serde(default)]
    pub after: Option<Vec<String>>,
}

pub(crate) fn default_stop_timeout() -> u64 {
    10
}
