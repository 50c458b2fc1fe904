//! Backup: per volume, its containers stopped or paused (and always
//! started again), the helper's tar stream stored as a tree, the files
//! counted and hashed.

use std::collections::BTreeMap;

use bollard::Docker;
use respaldo_core::error::BoxError;
use respaldo_core::source::BackupContext;

use crate::archive;
use crate::engine::is_404;
use crate::volume::create_helper;
use crate::volume::download;
use crate::volume::ensure_helper_image;
use crate::volume::VolumeMeta;
use crate::DockerError;
use crate::DockerSource;

impl DockerSource {
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
}

impl DockerSource {
    pub(crate) async fn backup_volumes(
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
