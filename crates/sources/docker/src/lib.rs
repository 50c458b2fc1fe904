//! # respaldo-source-docker
//!
//! The `docker` source: Docker volumes backed up as file trees through the
//! Docker Engine API (honours `DOCKER_HOST`), without pulling any image.
//!
//! * Volumes are selected by name, by label (`respaldo.backup=true`) or by
//!   Compose project; each volume's driver, options, labels and root
//!   owner/mode are recorded in the snapshot's metadata.
//! * The driver imports a tiny image of its own (`respaldo-helper:1`, one empty
//!   directory), *creates* (never starts) a helper container with the volume
//!   mounted and streams tar through the archive endpoints. Each volume is one
//!   tree artifact named after it: unchanged files deduplicate and a single
//!   file can be restored (`restore --to DIR`, `dump`).
//! * `stop_containers = true`: running containers that use the volume (and
//!   running containers labelled `respaldo.stop-during-backup=true`) are
//!   stopped — or paused with `pause = true` — for the copy and always started
//!   again: after success, on error, when the task panics or is dropped, and
//!   on SIGINT/SIGTERM (everything is put back before the process ends).
//! * Restore goes into the same volume (`--force` empties it first; without
//!   it a non-empty volume is refused and nothing changes) or into a new
//!   volume with `--target NAME`, created with the recorded driver, options and
//!   labels. Containers using the target are stopped during the restore and
//!   started after, then optionally health-checked. Entry counts recorded at
//!   backup are compared with what the volume holds afterwards.
//! * `test-restore` restores into a throwaway volume, compares entry counts
//!   and every file's SHA-256 with the backup, and removes it.
//!
//! ```toml
//! [sources.volumes]
//! type = "docker"
//! volumes = ["grafana-data", "loki-data"]
//! labels = ["respaldo.backup=true"]
//! compose_project = "shop"
//! stop_containers = true
//! ```
#![deny(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateImageOptions, DownloadFromContainerOptions, ListContainersOptions, ListVolumesOptions,
    UploadToContainerOptions,
};
use bollard::Docker;
use futures::{Stream, StreamExt, TryStreamExt};
use respaldo_core::error::BoxError;
use respaldo_core::kit::check::compare_counts;
use respaldo_core::kit::health;
use respaldo_core::source::{
    BackupContext, PlanAction, PlanItem, RestoreContext, RestorePlan, RestoreReport, RestoreTarget,
    Source, TargetState,
};
use serde::{Deserialize, Serialize};

mod archive;
mod guard;
mod services;

pub use services::{stop_containers, StoppedContainers};

use archive::{Counts, RootMeta, MOUNT};
use guard::{Helper, Quiesced};

/// Name of the helper image the driver imports.
const HELPER_IMAGE: &str = "respaldo-helper:1";
/// Label on running containers to stop during a backup even when they do not
/// mount the volume.
const STOP_LABEL: &str = "respaldo.stop-during-backup=true";

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

fn default_stop_timeout() -> u64 {
    10
}

/// Errors of the docker source.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// Invalid configuration.
    #[error("{0}")]
    Config(String),
    /// The engine cannot be reached.
    #[error("cannot reach the Docker engine at {host}: {source}")]
    Unreachable {
        /// `DOCKER_HOST` or the default socket.
        host: String,
        /// Why.
        #[source]
        source: bollard::errors::Error,
    },
    /// An engine API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: bollard::errors::Error,
    },
    /// A volume does not exist.
    #[error("volume `{0}` does not exist")]
    NoVolume(String),
    /// A tar stream could not be read or written.
    #[error("{0}")]
    Archive(String),
    /// Containers could not be started again.
    #[error("cannot start containers again: {0}")]
    Restart(String),
    /// The process is being terminated.
    #[error("interrupted")]
    Interrupted,
    /// A check after a restore failed.
    #[error("{0}")]
    Check(String),
    /// An exec hook exited non-zero.
    #[error("`{command}` in container {container} exited with {code}: {output}")]
    Hook {
        /// The container.
        container: String,
        /// The program run.
        command: String,
        /// Its exit status.
        code: i64,
        /// The end of its output.
        output: String,
    },
    /// Repository error.
    #[error(transparent)]
    Core(#[from] respaldo_core::Error),
}

impl DockerError {
    pub(crate) fn api(what: String, source: bollard::errors::Error) -> Self {
        DockerError::Api { what, source }
    }
}

fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// A client for the engine named by `DOCKER_HOST` (default: the local socket).
pub(crate) fn connect() -> Result<Docker, DockerError> {
    Docker::connect_with_defaults().map_err(|source| DockerError::Unreachable {
        host: docker_host(),
        source,
    })
}

fn is_404(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// What is recorded per volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VolumeMeta {
    driver: String,
    #[serde(default)]
    options: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    root: RootMeta,
    counts: Counts,
}

/// The `docker` source.
#[derive(Debug)]
pub struct DockerSource {
    config: DockerConfig,
    health_timeout: Option<Duration>,
}

impl DockerSource {
    /// Builds the source.
    pub fn new(config: DockerConfig) -> Result<Self, DockerError> {
        if config.volumes.is_empty() && config.labels.is_empty() && config.compose_project.is_none()
        {
            return Err(DockerError::Config(
                "set at least one of `volumes`, `labels` or `compose_project`".into(),
            ));
        }
        if config
            .health_command
            .as_ref()
            .is_some_and(|c| c.first().is_none_or(|p| p.is_empty()))
        {
            return Err(DockerError::Config(
                "`health_command` must name a program".into(),
            ));
        }
        if config.pause && !config.stop_containers {
            return Err(DockerError::Config(
                "`pause` needs `stop_containers = true`".into(),
            ));
        }
        let health_timeout = config
            .health_timeout
            .as_deref()
            .map(respaldo_core::kit::duration::parse_duration)
            .transpose()
            .map_err(|e| DockerError::Config(format!("health_timeout: {e}")))?;
        Ok(DockerSource {
            config,
            health_timeout,
        })
    }

    async fn engine(&self) -> Result<Docker, DockerError> {
        let docker = connect()?;
        docker
            .negotiate_version()
            .await
            .map_err(|source| DockerError::Unreachable {
                host: docker_host(),
                source,
            })
    }

    /// The selected volume names, sorted.
    async fn select(&self, docker: &Docker) -> Result<Vec<String>, DockerError> {
        let mut names: Vec<String> = self.config.volumes.clone();
        let mut filters: Vec<String> = self.config.labels.clone();
        if let Some(p) = &self.config.compose_project {
            filters.push(format!("com.docker.compose.project={p}"));
        }
        for f in filters {
            let opts = ListVolumesOptions {
                filters: Some(HashMap::from([("label".to_string(), vec![f.clone()])])),
            };
            let list = docker
                .list_volumes(Some(opts))
                .await
                .map_err(|e| DockerError::api(format!("listing volumes with label {f}"), e))?;
            names.extend(list.volumes.unwrap_or_default().into_iter().map(|v| v.name));
        }
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Err(DockerError::Config(
                "no volume matches `labels`/`compose_project`".into(),
            ));
        }
        Ok(names)
    }

    /// Running containers to stop for a copy of `volume`.
    async fn to_stop(
        &self,
        docker: &Docker,
        volume: &str,
    ) -> Result<Vec<(String, String)>, DockerError> {
        if !self.config.stop_containers {
            return Ok(Vec::new());
        }
        let mut out: Vec<(String, String)> = Vec::new();
        for (key, value) in [("volume", volume), ("label", STOP_LABEL)] {
            let opts = ListContainersOptions {
                filters: Some(HashMap::from([
                    (key.to_string(), vec![value.to_string()]),
                    ("status".to_string(), vec!["running".to_string()]),
                ])),
                ..Default::default()
            };
            for c in docker
                .list_containers(Some(opts))
                .await
                .map_err(|e| DockerError::api("listing containers".into(), e))?
            {
                let Some(id) = c.id else { continue };
                if out.iter().any(|(i, _)| i == &id) {
                    continue;
                }
                let name = c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_else(|| id.chars().take(12).collect());
                out.push((id, name));
            }
        }
        Ok(out)
    }

    async fn quiesce(&self, docker: &Docker, volume: &str) -> Result<Quiesced, DockerError> {
        let list = self.to_stop(docker, volume).await?;
        for (_, name) in &list {
            if let Some(argv) = self.config.exec.get(name).and_then(|h| h.before.as_ref()) {
                run_exec(docker, name, argv).await?;
            }
        }
        Quiesced::new(
            docker,
            list,
            self.config.pause,
            Duration::from_secs(self.config.stop_timeout),
        )
        .await
    }

    /// Starts the held containers again, then runs their `after` hooks.
    async fn resume(&self, docker: &Docker, held: Quiesced) -> Result<Vec<String>, DockerError> {
        let names = held.release().await?;
        for name in &names {
            if let Some(argv) = self.config.exec.get(name).and_then(|h| h.after.as_ref()) {
                run_exec(docker, name, argv).await?;
            }
        }
        Ok(names)
    }

    async fn backup_volume(
        &self,
        docker: &Docker,
        name: &str,
        ctx: &mut BackupContext,
    ) -> Result<VolumeMeta, DockerError> {
        let v = match docker.inspect_volume(name).await {
            Ok(v) => v,
            Err(e) if is_404(&e) => return Err(DockerError::NoVolume(name.into())),
            Err(e) => return Err(DockerError::api(format!("inspecting volume `{name}`"), e)),
        };
        ensure_helper_image(docker).await?;
        let held = self.quiesce(docker, name).await?;
        let copied: Result<_, DockerError> = async {
            let helper = create_helper(docker, name, true).await?;
            let r = async {
                let mut tree = ctx.tree(name, None).await?;
                let stream = download(docker, &helper.id);
                let stats = archive::read_into_tree(stream, &mut tree, ctx).await?;
                ctx.add_tree(tree).await?;
                Ok::<_, DockerError>(stats)
            }
            .await;
            let removed = helper.remove().await;
            let stats = r?;
            removed?;
            Ok(stats)
        }
        .await;
        let restarted = self.resume(docker, held).await;
        let stats = copied?;
        let names = restarted?;
        if !names.is_empty() {
            tracing::info!("volume {name}: started again: {}", names.join(", "));
        }
        Ok(VolumeMeta {
            driver: v.driver,
            options: v.options.into_iter().collect(),
            labels: v.labels.into_iter().collect(),
            root: stats.root,
            counts: stats.counts,
        })
    }

    /// Which recorded volume goes into which volume: every one (or those
    /// named by `--volume`) under its own name, or the one selected into
    /// `--target`; `--path` filters must match in some volume.
    async fn pairs(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<Vec<(String, String)>, DockerError> {
        ctx.refuse_selection("docker", &["--path", "--volume"])?;
        let mut recorded = Self::recorded(ctx)?;
        let all_names = recorded.keys().cloned().collect::<Vec<_>>().join(", ");
        let names = || all_names.clone();
        if let Some(bad) = ctx
            .selection
            .volumes
            .iter()
            .find(|v| !recorded.contains_key(*v))
        {
            return Err(DockerError::Config(format!(
                "--volume `{bad}`: snapshot {} holds no such volume (it holds {})",
                ctx.snapshot_id.short(),
                names()
            )));
        }
        if !ctx.selection.volumes.is_empty() {
            recorded.retain(|k, _| ctx.selection.volumes.contains(k));
        }
        if !ctx.paths.is_empty() {
            let mut unmatched = ctx.paths.clone();
            for name in recorded.keys() {
                let artifact = ctx.artifact(name)?;
                let left =
                    respaldo_core::repo::extract::unmatched_paths(&ctx.repo, artifact, &unmatched)
                        .await?;
                unmatched = left;
            }
            if !unmatched.is_empty() {
                return Err(DockerError::Config(format!(
                    "--path {} matches nothing in the volumes restored ({})",
                    unmatched
                        .iter()
                        .map(|p| format!("`{}`", p.display()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    names()
                )));
            }
        }
        Ok(match target {
            RestoreTarget::Live => recorded.keys().map(|k| (k.clone(), k.clone())).collect(),
            RestoreTarget::Other(t) => {
                if recorded.len() != 1 {
                    return Err(DockerError::Config(format!(
                        "--target names one volume, but {} volumes are selected ({}); \
                         choose one with --volume NAME",
                        recorded.len(),
                        names()
                    )));
                }
                let k = recorded.keys().next().expect("one volume").clone();
                vec![(k, t.clone())]
            }
        })
    }

    fn recorded(ctx: &RestoreContext) -> Result<BTreeMap<String, VolumeMeta>, DockerError> {
        let v = ctx.entry.metadata.get("volumes").cloned().ok_or_else(|| {
            DockerError::Check(format!(
                "snapshot {} has no volume metadata for source `{}`",
                ctx.snapshot_id.short(),
                ctx.source_name
            ))
        })?;
        serde_json::from_value(v)
            .map_err(|e| DockerError::Check(format!("bad volume metadata in the snapshot: {e}")))
    }

    /// Restores one volume's artifact into volume `target` (created when it
    /// does not exist). Returns the report lines.
    async fn restore_volume(
        &self,
        docker: &Docker,
        ctx: &RestoreContext,
        source: &str,
        meta: &VolumeMeta,
        target: &str,
        force: bool,
    ) -> Result<Vec<String>, DockerError> {
        let artifact = ctx.artifact(source)?.clone();
        ensure_helper_image(docker).await?;
        let mut lines = Vec::new();
        let exists = match docker.inspect_volume(target).await {
            Ok(_) => true,
            Err(e) if is_404(&e) => false,
            Err(e) => return Err(DockerError::api(format!("inspecting volume `{target}`"), e)),
        };
        let held = if exists {
            let nonempty = {
                let helper = create_helper(docker, target, true).await?;
                let r = archive::has_content(download(docker, &helper.id)).await;
                helper.remove().await?;
                r?
            };
            if nonempty && !force {
                return Err(respaldo_core::Error::TargetNotEmpty(format!(
                    "volume `{target}` is not empty"
                ))
                .into());
            }
            let held = self.quiesce(docker, target).await?;
            // With --path only the selected entries are replaced.
            if nonempty && ctx.paths.is_empty() {
                if let Err(e) = self.empty_volume(docker, target, meta).await {
                    let _ = held.release().await;
                    return Err(e);
                }
                lines.push(format!("volume `{target}` emptied"));
            }
            held
        } else {
            create_volume(docker, target, meta).await?;
            lines.push(format!(
                "volume `{target}` created (driver {})",
                meta.driver
            ));
            self.quiesce(docker, target).await?
        };
        let result: Result<_, DockerError> = async {
            let helper = create_helper(docker, target, false).await?;
            let r = upload_tree(docker, &helper.id, ctx, &artifact, meta.root, &ctx.paths).await;
            let removed = helper.remove().await;
            let written = r?;
            removed?;
            let (after, _) = scan_volume(docker, target, &ctx.paths).await?;
            Ok((written, after))
        }
        .await;
        let restarted = self.resume(docker, held).await;
        let (written, after) = result?;
        let names = restarted?;
        lines.push(format!(
            "restored {} bytes into volume `{target}`",
            written.bytes
        ));
        if ctx.paths.is_empty() {
            let check = compare_counts(&meta.counts, &after, |_| true, true);
            let line = check.line(&format!("volume `{target}` entry"), "types");
            if !check.ok() {
                return Err(DockerError::Check(line));
            }
            lines.push(line);
        } else {
            // Only what was selected was written (nothing was emptied):
            // the volume must now hold at least that many of each type
            // under the selected paths.
            let short: Vec<String> = written
                .counts
                .iter()
                .filter(|(k, n)| after.get(*k).copied().unwrap_or(0) < **n)
                .map(|(k, n)| {
                    format!(
                        "{k}: sent {n}, volume holds {}",
                        after.get(k).copied().unwrap_or(0)
                    )
                })
                .collect();
            if !short.is_empty() {
                return Err(DockerError::Check(format!(
                    "partial restore incomplete: {}",
                    short.join("; ")
                )));
            }
            let n: u64 = written.counts.values().sum();
            lines.push(format!(
                "partial restore: {n} entries under the selected paths"
            ));
        }
        if !names.is_empty() {
            lines.push(format!("started again: {}", names.join(", ")));
            if let Some(t) = self.health_timeout {
                lines.push(self.health_check(docker, &names, t).await?);
            }
        }
        let t = self.health_timeout.unwrap_or(health::DEFAULT_TIMEOUT);
        if let Some(argv) = &self.config.health_command {
            lines.push(
                health::command(argv, t)
                    .await
                    .map_err(|e| DockerError::Check(e.to_string()))?,
            );
        }
        if let Some(url) = &self.config.health_url {
            lines.push(
                health::url(url, t)
                    .await
                    .map_err(|e| DockerError::Check(e.to_string()))?,
            );
        }
        Ok(lines)
    }

    /// Empties a volume: by recreating it when no container refers to it,
    /// else with a container of `helper_image`.
    async fn empty_volume(
        &self,
        docker: &Docker,
        volume: &str,
        meta: &VolumeMeta,
    ) -> Result<(), DockerError> {
        let opts = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "volume".to_string(),
                vec![volume.to_string()],
            )])),
            ..Default::default()
        };
        let users = docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| DockerError::api("listing containers".into(), e))?;
        if users.is_empty() {
            docker
                .remove_volume(
                    volume,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await
                .map_err(|e| DockerError::api(format!("removing volume `{volume}`"), e))?;
            return create_volume(docker, volume, meta).await;
        }
        let Some(image) = &self.config.helper_image else {
            return Err(DockerError::Config(format!(
                "it is used by {} container(s); emptying it for a --force restore needs \
                 `helper_image` (an image with /bin/sh), or restore into a new volume with --target",
                users.len()
            )));
        };
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("cd /{MOUNT} && rm -rf -- * .[!.]* ..?*"),
            ]),
            host_config: Some(HostConfig {
                mounts: Some(vec![volume_mount(volume, false)]),
                ..Default::default()
            }),
            labels: Some(HashMap::from([("respaldo.helper".into(), "true".into())])),
            ..Default::default()
        };
        let helper = Helper::create(docker, body).await?;
        let r: Result<(), DockerError> = async {
            docker
                .start_container(&helper.id, None)
                .await
                .map_err(|e| DockerError::api(format!("starting a container of `{image}`"), e))?;
            let mut wait = docker.wait_container(
                &helper.id,
                None::<bollard::query_parameters::WaitContainerOptions>,
            );
            let mut code = None;
            while let Some(r) = wait.next().await {
                match r {
                    Ok(w) => code = Some(w.status_code),
                    Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => {
                        code = Some(c)
                    }
                    Err(e) => {
                        return Err(DockerError::api(
                            "waiting for the emptying container".into(),
                            e,
                        ))
                    }
                }
            }
            match code {
                Some(0) => Ok(()),
                c => Err(DockerError::Check(format!(
                    "emptying volume `{volume}` failed (exit status {c:?})"
                ))),
            }
        }
        .await;
        let removed = helper.remove().await;
        r?;
        removed
    }

    /// Waits until each container runs and, when it has a health check, is
    /// healthy.
    async fn health_check(
        &self,
        docker: &Docker,
        names: &[String],
        timeout: Duration,
    ) -> Result<String, DockerError> {
        use bollard::models::HealthStatusEnum as H;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut healthy = Vec::new();
        for name in names {
            loop {
                let c = docker
                    .inspect_container(name, None)
                    .await
                    .map_err(|e| DockerError::api(format!("inspecting container {name}"), e))?;
                let state = c.state.unwrap_or_default();
                let health = state.health.and_then(|h| h.status);
                let running = state.running == Some(true);
                let done = match health {
                    Some(H::HEALTHY) => true,
                    Some(H::STARTING) | Some(H::UNHEALTHY) => false,
                    _ => running,
                };
                if done {
                    healthy.push(format!(
                        "{name} ({})",
                        if health == Some(H::HEALTHY) {
                            "healthy"
                        } else {
                            "running"
                        }
                    ));
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(DockerError::Check(format!(
                        "health check: container {name} is not {} after {}s",
                        if health.is_some() {
                            "healthy"
                        } else {
                            "running"
                        },
                        timeout.as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Ok(format!("health check passed: {}", healthy.join(", ")))
    }
}

/// Runs `argv` inside a running container; fails unless it exits 0.
async fn run_exec(docker: &Docker, container: &str, argv: &[String]) -> Result<(), DockerError> {
    use bollard::exec::{CreateExecOptions, StartExecResults};
    let what = || format!("running `{}` in container {container}", argv.join(" "));
    let opts = CreateExecOptions {
        cmd: Some(argv.to_vec()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let exec = docker
        .create_exec(container, opts)
        .await
        .map_err(|e| DockerError::api(what(), e))?
        .id;
    let mut tail = Vec::new();
    if let StartExecResults::Attached { mut output, .. } = docker
        .start_exec(&exec, None)
        .await
        .map_err(|e| DockerError::api(what(), e))?
    {
        while let Some(chunk) = output.next().await {
            tail.extend_from_slice(&chunk.map_err(|e| DockerError::api(what(), e))?.into_bytes());
            if tail.len() > 4096 {
                tail.drain(..tail.len() - 4096);
            }
        }
    }
    let code = docker
        .inspect_exec(&exec)
        .await
        .map_err(|e| DockerError::api(what(), e))?
        .exit_code
        .unwrap_or(-1);
    if code != 0 {
        return Err(DockerError::Hook {
            container: container.to_string(),
            command: argv.join(" "),
            code,
            output: String::from_utf8_lossy(&tail).trim().to_string(),
        });
    }
    Ok(())
}

fn volume_mount(volume: &str, read_only: bool) -> Mount {
    Mount {
        target: Some(format!("/{MOUNT}")),
        source: Some(volume.to_string()),
        typ: Some(MountType::VOLUME),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// Whether a volume's driver options point at storage outside the volume
/// (a bind mount, an NFS or CIFS share): a copy made with them would be the
/// same storage. Returns why.
fn shares_storage(meta: &VolumeMeta) -> Option<String> {
    let o = meta.options.get("o").map(String::as_str).unwrap_or("");
    let device = meta.options.get("device");
    let kind = meta.options.get("type").map(String::as_str).unwrap_or("");
    if meta.driver != "local" {
        return Some(format!("the original uses driver `{}`", meta.driver));
    }
    if o.split(',').any(|x| x == "bind") || device.is_some() || !kind.is_empty() {
        return Some(format!(
            "the original is mounted from {}",
            device.map(String::as_str).unwrap_or("a device")
        ));
    }
    None
}

/// Whether a volume is absent, empty, or holds files.
async fn volume_state(docker: &Docker, name: &str) -> Result<TargetState, DockerError> {
    match docker.inspect_volume(name).await {
        Err(e) if is_404(&e) => return Ok(TargetState::Absent),
        Err(e) => return Err(DockerError::api(format!("inspecting volume `{name}`"), e)),
        Ok(_) => {}
    }
    ensure_helper_image(docker).await?;
    let helper = create_helper(docker, name, true).await?;
    let r = archive::has_content(download(docker, &helper.id)).await;
    helper.remove().await?;
    Ok(if r? {
        TargetState::Holds("files".into())
    } else {
        TargetState::Empty
    })
}

async fn create_volume(docker: &Docker, name: &str, meta: &VolumeMeta) -> Result<(), DockerError> {
    let req = VolumeCreateRequest {
        name: Some(name.to_string()),
        driver: Some(meta.driver.clone()),
        driver_opts: Some(meta.options.clone().into_iter().collect()),
        labels: Some(meta.labels.clone().into_iter().collect()),
        ..Default::default()
    };
    docker
        .create_volume(req)
        .await
        .map_err(|e| DockerError::api(format!("creating volume `{name}`"), e))?;
    Ok(())
}

/// Imports the helper image (one empty directory) unless the engine has it.
async fn ensure_helper_image(docker: &Docker) -> Result<(), DockerError> {
    match docker.inspect_image(HELPER_IMAGE).await {
        Ok(_) => return Ok(()),
        Err(e) if is_404(&e) => {}
        Err(e) => return Err(DockerError::api("inspecting the helper image".into(), e)),
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, MOUNT, std::io::empty())
        .and_then(|_| b.finish())
        .map_err(|e| DockerError::Archive(format!("building the helper image: {e}")))?;
    let tar = b
        .into_inner()
        .map_err(|e| DockerError::Archive(format!("building the helper image: {e}")))?;
    let (repo, tag) = HELPER_IMAGE.split_once(':').expect("name:tag");
    let opts = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(repo.into()),
        tag: Some(tag.into()),
        ..Default::default()
    };
    docker
        .create_image(Some(opts), Some(bollard::body_full(tar.into())), None)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| DockerError::api("importing the helper image".into(), e))?;
    Ok(())
}

/// Creates (does not start) a helper container with `volume` at `/volume`.
async fn create_helper(
    docker: &Docker,
    volume: &str,
    read_only: bool,
) -> Result<Helper, DockerError> {
    let body = ContainerCreateBody {
        image: Some(HELPER_IMAGE.into()),
        // Never run: the container only gives the archive endpoints a mount.
        cmd: Some(vec!["/respaldo-helper-never-runs".into()]),
        network_disabled: Some(true),
        labels: Some(HashMap::from([("respaldo.helper".into(), "true".into())])),
        host_config: Some(HostConfig {
            mounts: Some(vec![volume_mount(volume, read_only)]),
            ..Default::default()
        }),
        ..Default::default()
    };
    Helper::create(docker, body).await
}

fn download(
    docker: &Docker,
    id: &str,
) -> impl Stream<Item = Result<bytes::Bytes, bollard::errors::Error>> + Send + 'static {
    let opts = DownloadFromContainerOptions {
        path: format!("/{MOUNT}"),
    };
    docker.download_from_container(id, Some(opts))
}

/// Streams a tree artifact into the volume mounted in helper `id`.
async fn upload_tree(
    docker: &Docker,
    id: &str,
    ctx: &RestoreContext,
    artifact: &respaldo_core::artifact::Artifact,
    root: RootMeta,
    paths: &[respaldo_core::repo::tree::RawPath],
) -> Result<archive::WriteStats, DockerError> {
    let (w, r) = tokio::io::duplex(256 * 1024);
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(r));
    let opts = UploadToContainerOptions {
        path: "/".into(),
        ..Default::default()
    };
    let upload = async {
        docker
            .upload_to_container(id, Some(opts), body)
            .await
            .map_err(|e| DockerError::api("uploading the archive".into(), e))
    };
    let (written, uploaded) = tokio::join!(
        archive::write_tree(&ctx.repo, artifact, root, paths, w),
        upload
    );
    uploaded?;
    written
}

/// Counts and file hashes of a volume, read through a helper container.
async fn scan_volume(
    docker: &Docker,
    volume: &str,
    paths: &[respaldo_core::repo::tree::RawPath],
) -> Result<
    (
        Counts,
        BTreeMap<respaldo_core::repo::tree::RawPath, [u8; 32]>,
    ),
    DockerError,
> {
    let helper = create_helper(docker, volume, true).await?;
    let r = archive::scan(download(docker, &helper.id), paths.to_vec()).await;
    helper.remove().await?;
    r
}

/// The driver's registry entry: what the application's one list of
/// drivers holds. It builds a source from the `[sources.NAME]` table (as
/// JSON, `type` taken out), naming the key of any error:
///
/// ```
/// use respaldo_core::registry::BuildContext;
/// let ctx = BuildContext { base: std::path::Path::new("/srv/app"), local_repository: None };
/// let table = serde_json::json!({"volumes": ["grafana-data"], "stop_containers": true});
/// let source = (respaldo_source_docker::DRIVER.build)(table, &ctx).unwrap();
/// assert_eq!(source.kind(), "docker");
///
/// let bad = serde_json::json!({"no_such_key": 1});
/// let err = (respaldo_source_docker::DRIVER.build)(bad, &ctx).err().unwrap();
/// assert!(err.to_string().contains("no_such_key"), "{err}");
/// ```
pub const DRIVER: respaldo_core::registry::Driver = respaldo_core::registry::Driver {
    kind: "docker",
    build: |value, _| respaldo_core::registry::build_with(value, DockerSource::new),
    example:
        "type = \"docker\"\nvolumes = [\"grafana-data\", \"loki-data\"]\nstop_containers = true\n",
};

#[async_trait]
impl Source for DockerSource {
    fn kind(&self) -> &'static str {
        "docker"
    }

    async fn check(&self) -> Result<(), BoxError> {
        let docker = self.engine().await?;
        for v in &self.config.volumes {
            match docker.inspect_volume(v).await {
                Ok(_) => {}
                Err(e) if is_404(&e) => return Err(DockerError::NoVolume(v.clone()).into()),
                Err(e) => {
                    return Err(DockerError::api(format!("inspecting volume `{v}`"), e).into())
                }
            }
        }
        Ok(())
    }

    async fn backup(&self, ctx: &mut BackupContext) -> Result<(), BoxError> {
        let docker = self.engine().await?;
        let names = self.select(&docker).await?;
        self.backup_volumes(&docker, names, ctx).await
    }

    /// Backs up the volumes the restore will overwrite (those that exist
    /// and hold files); a volume that is gone has nothing to protect.
    async fn safety_backup(
        &self,
        ctx: &mut BackupContext,
        plan: &RestorePlan,
    ) -> Result<(), BoxError> {
        let docker = self.engine().await?;
        let names: Vec<String> = plan
            .items
            .iter()
            .filter(|i| i.overwrites_data())
            .map(|i| i.target.clone())
            .collect();
        self.backup_volumes(&docker, names, ctx).await
    }

    async fn plan(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestorePlan, BoxError> {
        let pairs = self.pairs(ctx, target).await?;
        let docker = self.engine().await?;
        let partial = !ctx.paths.is_empty();
        let mut plan = RestorePlan::default();
        for (_, dest) in &pairs {
            let state = volume_state(&docker, dest).await?;
            let mut item =
                PlanItem::decide(format!("volume {dest}"), dest.clone(), state, ctx.force);
            if partial && item.action == PlanAction::Overwrite {
                item.action = PlanAction::Partial;
            }
            plan.items.push(item);
        }
        Ok(plan)
    }

    async fn restore(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestoreReport, BoxError> {
        let plan = self.plan(ctx, target).await?;
        if let Some(e) = plan.refused(&ctx.source_name) {
            return Err(e.into());
        }
        let pairs = self.pairs(ctx, target).await?;
        let recorded = Self::recorded(ctx)?;
        let docker = self.engine().await?;
        let mut lines = Vec::new();
        for (source, dest) in pairs {
            let mut meta = recorded[&source].clone();
            if let RestoreTarget::Other(_) = target {
                // A new volume never shares the original's storage.
                if let Some(why) = shares_storage(&meta) {
                    lines.push(format!(
                        "volume `{dest}` created with the local driver and no options ({why})"
                    ));
                    meta.driver = "local".into();
                    meta.options.clear();
                }
            }
            let meta = &meta;
            let l = self
                .restore_volume(&docker, ctx, &source, meta, &dest, ctx.force)
                .await
                .map_err(|e| -> BoxError {
                    match e {
                        DockerError::Core(c) => Box::new(c),
                        e => format!("volume `{dest}`: {e}").into(),
                    }
                })?;
            lines.extend(l);
        }
        Ok(RestoreReport { lines })
    }

    async fn test_restore(&self, ctx: &RestoreContext) -> Result<RestoreReport, BoxError> {
        let recorded = Self::recorded(ctx)?;
        let docker = self.engine().await?;
        let mut lines = Vec::new();
        for (source, meta) in &recorded {
            let scratch = format!(
                "respaldo-test-restore-{}-{}",
                ctx.snapshot_id.short(),
                std::process::id()
            );
            // Never the original's storage: the local driver, no options.
            let scratch_meta = VolumeMeta {
                driver: "local".into(),
                options: BTreeMap::new(),
                labels: BTreeMap::from([("respaldo.test-restore".into(), "true".into())]),
                ..meta.clone()
            };
            create_volume(&docker, &scratch, &scratch_meta).await?;
            let r: Result<(), DockerError> = async {
                ensure_helper_image(&docker).await?;
                let artifact = ctx.artifact(source)?.clone();
                let helper = create_helper(&docker, &scratch, false).await?;
                let up = upload_tree(&docker, &helper.id, ctx, &artifact, meta.root, &[]).await;
                helper.remove().await?;
                up?;
                let (counts, hashes) = scan_volume(&docker, &scratch, &[]).await?;
                let check = compare_counts(&meta.counts, &counts, |_| true, true);
                let line = check.line(&format!("volume `{source}` entry"), "types");
                if !check.ok() {
                    return Err(DockerError::Check(line));
                }
                lines.push(line);
                let mut reader =
                    respaldo_core::repo::tree::TreeReader::new(ctx.repo.clone(), &artifact)?;
                let mut checked = 0u64;
                while let Some(e) = reader.next_entry().await? {
                    let Some(want) = e.sha256 else { continue };
                    if e.hardlink.is_some() {
                        continue;
                    }
                    if hashes.get(&e.path) != Some(&want.0) {
                        return Err(DockerError::Check(format!(
                            "volume `{source}`: {} differs from the backup after restore",
                            e.path.display()
                        )));
                    }
                    checked += 1;
                }
                lines.push(format!(
                    "volume `{source}`: {checked} file hashes match the backup"
                ));
                Ok(())
            }
            .await;
            let removed = docker
                .remove_volume(
                    &scratch,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await
                .map_err(|e| DockerError::api(format!("removing volume `{scratch}`"), e));
            r.map_err(|e| format!("test-restore of volume `{source}`: {e}"))?;
            removed?;
        }
        Ok(RestoreReport { lines })
    }
}

impl DockerSource {
    async fn backup_volumes(
        &self,
        docker: &Docker,
        names: Vec<String>,
        ctx: &mut BackupContext,
    ) -> Result<(), BoxError> {
        let mut metas = BTreeMap::new();
        for name in names {
            let meta = self
                .backup_volume(docker, &name, ctx)
                .await
                .map_err(|e| -> BoxError {
                    match e {
                        DockerError::NoVolume(_) => Box::new(e),
                        e => format!("volume `{name}`: {e}").into(),
                    }
                })?;
            metas.insert(name, meta);
        }
        ctx.set_metadata(
            "volumes",
            serde_json::to_value(&metas).map_err(|e| DockerError::Archive(e.to_string()))?,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_needs_a_selection() {
        let cfg: DockerConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        assert!(DockerSource::new(cfg).is_err());
        let cfg: DockerConfig =
            serde_json::from_value(serde_json::json!({"volumes": ["a"], "pause": true})).unwrap();
        assert!(DockerSource::new(cfg).is_err());
        let cfg: DockerConfig = serde_json::from_value(
            serde_json::json!({"labels": ["respaldo.backup=true"], "health_timeout": "30s"}),
        )
        .unwrap();
        assert!(DockerSource::new(cfg).is_ok());
    }
}
