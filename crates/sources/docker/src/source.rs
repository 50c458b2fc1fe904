//! The `docker` source: built from its configuration, which volumes and
//! containers it selects, and the driver's `Source` implementation
//! (check, backup, plan, restore, test-restore into a scratch volume).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bollard::query_parameters::{ListContainersOptions, ListVolumesOptions};
use bollard::Docker;
use respaldo_core::error::BoxError;
use respaldo_core::source::{
    BackupContext, PlanAction, PlanItem, RestoreContext, RestorePlan, RestoreReport, RestoreTarget,
    Source,
};

use crate::config::STOP_LABEL;
use crate::engine::connect;
use crate::engine::docker_host;
use crate::engine::is_404;
use crate::engine::run_exec;
use crate::guard::Quiesced;
use crate::volume::shares_storage;
use crate::volume::volume_state;
use crate::DockerConfig;
use crate::DockerError;

/// The `docker` source.
#[derive(Debug)]
pub struct DockerSource {
    pub(crate) config: DockerConfig,
    pub(crate) health_timeout: Option<Duration>,
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

    pub(crate) async fn engine(&self) -> Result<Docker, DockerError> {
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

    pub(crate) async fn quiesce(
        &self,
        docker: &Docker,
        volume: &str,
    ) -> Result<Quiesced, DockerError> {
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
    pub(crate) async fn resume(
        &self,
        docker: &Docker,
        held: Quiesced,
    ) -> Result<Vec<String>, DockerError> {
        let names = held.release().await?;
        for name in &names {
            if let Some(argv) = self.config.exec.get(name).and_then(|h| h.after.as_ref()) {
                run_exec(docker, name, argv).await?;
            }
        }
        Ok(names)
    }
}

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
        self.drill(ctx).await
    }
}
