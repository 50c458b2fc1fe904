//! Volumes and the helper container that reads and writes them: what a
//! backup records per volume, its state, creating it, and the tree copied
//! in or out.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateImageOptions, DownloadFromContainerOptions, UploadToContainerOptions,
};
use bollard::Docker;
use futures::{Stream, TryStreamExt};
use respaldo_core::source::{RestoreContext, TargetState};
use serde::{Deserialize, Serialize};

use crate::archive;
use crate::archive::{Counts, RootMeta, MOUNT};
use crate::config::HELPER_IMAGE;
use crate::engine::is_404;
use crate::guard::Helper;
use crate::DockerError;

/// What is recorded per volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VolumeMeta {
    pub(crate) driver: String,
    #[serde(default)]
    pub(crate) options: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) root: RootMeta,
    pub(crate) counts: Counts,
}

pub(crate) fn volume_mount(volume: &str, read_only: bool) -> Mount {
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
pub(crate) fn shares_storage(meta: &VolumeMeta) -> Option<String> {
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
pub(crate) async fn volume_state(docker: &Docker, name: &str) -> Result<TargetState, DockerError> {
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

pub(crate) async fn create_volume(
    docker: &Docker,
    name: &str,
    meta: &VolumeMeta,
) -> Result<(), DockerError> {
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
pub(crate) async fn ensure_helper_image(docker: &Docker) -> Result<(), DockerError> {
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
pub(crate) async fn create_helper(
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

pub(crate) fn download(
    docker: &Docker,
    id: &str,
) -> impl Stream<Item = Result<bytes::Bytes, bollard::errors::Error>> + Send + 'static {
    let opts = DownloadFromContainerOptions {
        path: format!("/{MOUNT}"),
    };
    docker.download_from_container(id, Some(opts))
}

/// Streams a tree artifact into the volume mounted in helper `id`.
pub(crate) async fn upload_tree(
    docker: &Docker,
    id: &str,
    ctx: &RestoreContext,
    artifact: &respaldo_core::artifact::Artifact,
    root: RootMeta,
    paths: &[respaldo_core::repo::tree::RawPath],
) -> Result<respaldo_core::repo::tar_stream::TarStats, DockerError> {
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
pub(crate) async fn scan_volume(
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
