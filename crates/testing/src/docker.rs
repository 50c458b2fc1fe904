//! Docker helpers shared by the docker driver's unit tests and the
//! end-to-end tests: a busybox image imported from Debian's busybox-static
//! (the engine may have no registry), the `docker` CLI, unique names.

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
