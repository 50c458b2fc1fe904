//! Docker helpers for the docker source tests: a busybox image imported from
//! Debian's busybox-static (no registry needed), throwaway volumes and
//! containers removed on drop.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The test image: /bin/busybox and its applets as symlinks.
pub const BUSYBOX: &str = "respaldo-test-busybox:latest";

/// Runs `docker ARGS`, panics on failure, returns stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `docker` (install docker.io and start the engine): {e}")
        });
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Imports [`BUSYBOX`] once (idempotent across runs).
pub fn busybox_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let ok = Command::new("docker")
            .args(["image", "inspect", BUSYBOX])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return;
        }
        let bb = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox not found: apt-get install busybox-static");
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("root/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(bb, bin.join("busybox")).unwrap();
        let list = Command::new(bb).arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
            }
        }
        std::fs::create_dir_all(dir.path().join("root/tmp")).unwrap();
        let tar = dir.path().join("img.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(dir.path().join("root"))
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        docker(&["import", tar.to_str().unwrap(), BUSYBOX]);
    });
}

/// A name unique to this test process and call.
pub fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "respaldo-t{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A volume removed on drop.
pub struct Volume {
    pub name: String,
}

impl Volume {
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

    pub fn inspect(&self, template: &str) -> String {
        docker(&["inspect", "-f", template, &self.name])
            .trim()
            .to_string()
    }

    pub fn running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

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
