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

mod archive;
mod backup;
mod config;
mod engine;
mod error;
mod guard;
mod restore;
mod services;
mod source;
mod test_restore;
mod volume;

pub use config::{DockerConfig, ExecHooks};
pub use error::DockerError;
pub use services::{stop_containers, StoppedContainers};
pub use source::DockerSource;

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
    inventory: respaldo_core::inventory::nothing,
};

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
