//! Restore: each recorded volume paired with its target, emptied or
//! created, the tree uploaded through the helper, the counts and hashes
//! compared, and the health check after.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;
use futures::StreamExt;
use respaldo_core::kit::check::compare_counts;
use respaldo_core::kit::health;
use respaldo_core::source::SelectionPart;
use respaldo_core::source::{RestoreContext, RestoreTarget};

use crate::archive;
use crate::archive::MOUNT;
use crate::engine::is_404;
use crate::guard::Helper;
use crate::volume::create_helper;
use crate::volume::create_volume;
use crate::volume::download;
use crate::volume::ensure_helper_image;
use crate::volume::scan_volume;
use crate::volume::upload_tree;
use crate::volume::volume_mount;
use crate::volume::VolumeMeta;
use crate::DockerError;
use crate::DockerSource;

impl DockerSource {
    /// Which recorded volume goes into which volume: every one (or those
    /// named by `--volume`) under its own name, or the one selected into
    /// `--target`; `--path` filters must match in some volume.
    pub(crate) async fn pairs(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<Vec<(String, String)>, DockerError> {
        ctx.refuse_selection("docker", &[SelectionPart::Paths, SelectionPart::Volumes])?;
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

    pub(crate) fn recorded(
        ctx: &RestoreContext,
    ) -> Result<BTreeMap<String, VolumeMeta>, DockerError> {
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
    pub(crate) async fn restore_volume(
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
