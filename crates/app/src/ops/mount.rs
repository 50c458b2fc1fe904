//! `mount`: the repository's snapshots as a read-only folder (see
//! [`respaldo_mount`]), until a signal or an outside `umount` ends it.

use std::path::Path;
use std::time::Duration;

use respaldo_core::repo::snapshot::{self, Hosts};
use respaldo_mount::{Mounted, View};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::stack::Stack;

/// What was mounted.
#[derive(Debug)]
pub struct Mount {
    /// The mounted view.
    pub mounted: Mounted,
    /// How many snapshots it shows.
    pub snapshots: usize,
    /// Of how many hosts.
    pub hosts: usize,
    /// The folder `latest` points to, if any.
    pub latest: Option<String>,
}

/// Mounts the repository's snapshots on `dir` (an existing folder).
pub async fn mount(ctx: &Stack, dir: &Path) -> Result<Mount> {
    if !dir.is_dir() {
        return Err(Error::usage(format!(
            "{} is not a folder: create the mount point first",
            dir.display()
        )));
    }
    let repo = ctx.repo().await?;
    repo.require_readable("mount")?;
    let list = ctx.snapshots(&repo).await?;
    let latest_of = |hosts: &Hosts| {
        snapshot::resolve(&list, "latest", None, hosts)
            .ok()
            .map(|s| s.id)
    };
    let mut hosts: Vec<String> = list.iter().map(|s| s.snapshot.host.clone()).collect();
    hosts.sort();
    hosts.dedup();
    let view = View {
        latest: latest_of(&ctx.hosts()),
        host_latest: hosts
            .iter()
            .filter_map(|h| latest_of(&Hosts::Only(h.clone())).map(|id| (h.clone(), id)))
            .collect(),
        snapshots: list.clone(),
    };
    let latest = view
        .latest
        .and_then(|id| list.iter().find(|s| s.id == id))
        .map(respaldo_mount::snapshot_dir_name);
    let mounted = respaldo_mount::mount(repo, &view, dir)?;
    Ok(Mount {
        mounted,
        snapshots: list.len(),
        hosts: hosts.len(),
        latest,
    })
}

/// Serves `mounted` until `stop` is cancelled (a signal) or it is unmounted
/// from outside, then unmounts.
pub async fn serve(mounted: Mounted, stop: &CancellationToken) -> Result<()> {
    while !mounted.ended() {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    tokio::task::spawn_blocking(move || mounted.unmount())
        .await
        .map_err(|e| Error::failed(format!("unmounting: {e}")))??;
    Ok(())
}
