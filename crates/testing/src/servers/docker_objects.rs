//! Docker helpers for the docker source tests: a busybox image imported from
//! Debian's busybox-static (no registry needed), throwaway volumes and
//! containers removed on drop.

use std::process::{Command, Stdio};

pub use crate::docker::{busybox_image, docker, unique, BUSYBOX};

/// A volume removed on drop.
pub struct Volume {
    /// The volume's name.
    pub name: String,
}

impl Volume {
    /// A new volume named after `tag`, with these `KEY=VALUE` labels.
    pub fn new(tag: &str, labels: &[&str]) -> Self {
        let name = unique(tag);
        let mut args = vec!["volume", "create"];
        for l in labels {
            args.push("--label");
            args.push(l);
        }
        args.push(&name);
        docker(&args);
        Volume { name }
    }

    /// A name for a volume the test expects respaldo to create.
    pub fn future(tag: &str) -> Self {
        Volume { name: unique(tag) }
    }

    /// Runs a shell script in a busybox container with the volume at /v.
    pub fn sh(&self, script: &str) -> String {
        busybox_image();
        docker(&[
            "run",
            "--rm",
            "-v",
            &format!("{}:/v", self.name),
            BUSYBOX,
            "sh",
            "-c",
            script,
        ])
    }

    /// Every entry with type, mode, owner, size, mtime, link target and
    /// content hash, sorted.
    pub fn listing(&self) -> String {
        self.sh(
            "cd /v && find . | sort | while read -r p; do \
               s=$(stat -c '%F %a %u:%g %s' \"$p\"); \
               if [ -L \"$p\" ]; then s=\"$s -> $(readlink \"$p\")\"; \
               elif [ -f \"$p\" ]; then s=\"$s links=$(stat -c %h \"$p\") $(stat -c %Y \"$p\") $(sha256sum < \"$p\" | cut -c1-16)\"; \
               elif [ -d \"$p\" ]; then s=\"$s $(stat -c %Y \"$p\")\"; fi; \
               echo \"$p $s\"; done",
        )
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A container removed on drop.
pub struct Container {
    /// The container's name.
    pub name: String,
}

impl Container {
    /// Starts `sleep` in a busybox container with `volume` (if any) at /data.
    pub fn sleeping(volume: Option<&str>, labels: &[&str]) -> Self {
        busybox_image();
        let name = unique("ctr");
        let mut args = vec!["run", "-d", "--name", &name];
        let mount;
        if let Some(v) = volume {
            mount = format!("{v}:/data");
            args.push("-v");
            args.push(&mount);
        }
        for l in labels {
            args.push("--label");
            args.push(l);
        }
        args.extend([BUSYBOX, "sleep", "3600"]);
        docker(&args);
        Container { name }
    }

    /// Creates (does not start) a container that refers to `volume`.
    pub fn created(volume: &str) -> Self {
        busybox_image();
        let name = unique("ctr");
        docker(&[
            "create",
            "--name",
            &name,
            "-v",
            &format!("{volume}:/data"),
            BUSYBOX,
            "true",
        ]);
        Container { name }
    }

    /// `docker inspect --format TEMPLATE` of the container.
    pub fn inspect(&self, template: &str) -> String {
        docker(&["inspect", "-f", template, &self.name])
            .trim()
            .to_string()
    }

    /// Whether the container is running.
    pub fn running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    /// When the container was last started (changes when it is stopped and started).
    pub fn started_at(&self) -> String {
        self.inspect("{{.State.StartedAt}}")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Helper containers respaldo left behind for `volume` (there must be none).
pub fn helpers_of(volume: &str) -> String {
    docker(&[
        "ps",
        "-a",
        "-q",
        "--filter",
        "label=respaldo.helper=true",
        "--filter",
        &format!("volume={volume}"),
    ])
}
