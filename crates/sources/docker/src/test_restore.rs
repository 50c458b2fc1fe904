//! Test restore: every recorded volume restored into a scratch volume with
//! a name no one else uses, its files counted and hashed against the
//! backup's, and the scratch volume removed whatever happened.

use std::collections::BTreeMap;

use bollard::query_parameters::RemoveVolumeOptions;
use respaldo_core::error::BoxError;
use respaldo_core::kit::check::compare_counts;
use respaldo_core::kit::scratch::Scratch;
use respaldo_core::source::{RestoreContext, RestoreReport};

use crate::volume::create_helper;
use crate::volume::create_volume;
use crate::volume::ensure_helper_image;
use crate::volume::scan_volume;
use crate::volume::upload_tree;
use crate::volume::VolumeMeta;
use crate::DockerError;
use crate::DockerSource;

impl DockerSource {
    /// The drill of `ctx`'s snapshot.
    pub(crate) async fn drill(&self, ctx: &RestoreContext) -> Result<RestoreReport, BoxError> {
        let recorded = Self::recorded(ctx)?;
        let docker = &self.engine().await?;
        let mut lines = Vec::new();
        for (source, meta) in &recorded {
            let scratch = Scratch::new(
                "volume",
                &format!("respaldo-test-restore-{}", ctx.snapshot_id.short()),
                '-',
            );
            // Never the original's storage: the local driver, no options.
            let scratch_meta = VolumeMeta {
                driver: "local".into(),
                options: BTreeMap::new(),
                labels: BTreeMap::from([("respaldo.test-restore".into(), "true".into())]),
                ..meta.clone()
            };
            create_volume(docker, scratch.name(), &scratch_meta).await?;
            let name = scratch.name().to_string();
            let drill = async {
                ensure_helper_image(docker).await?;
                let artifact = ctx.artifact(source)?.clone();
                let helper = create_helper(docker, &name, false).await?;
                let up = upload_tree(docker, &helper.id, ctx, &artifact, meta.root, &[]).await;
                helper.remove().await?;
                up?;
                let (counts, hashes) = scan_volume(docker, &name, &[]).await?;
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
                Ok::<(), DockerError>(())
            };
            let ((), line) = scratch
                .drill(drill, |name| async move {
                    docker
                        .remove_volume(&name, None::<RemoveVolumeOptions>)
                        .await
                        .map_err(|e| DockerError::api(format!("removing volume `{name}`"), e))
                })
                .await
                .map_err(|e| format!("test-restore of volume `{source}`: {e}"))?;
            lines.push(line);
        }
        Ok(RestoreReport { lines })
    }
}
