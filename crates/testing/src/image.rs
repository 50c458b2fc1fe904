//! Container images for the tests of respaldo's own image and example
//! stacks, built from local files because the engine may reach no registry:
//! a Debian base made with `debootstrap` and `docker import`, respaldo's
//! image from the repository's Dockerfile (its `prebuilt` stage, holding the
//! binary under test), and a PostgreSQL server image that behaves like the
//! official `postgres` one (`POSTGRES_USER`, `POSTGRES_PASSWORD`,
//! `POSTGRES_DB`, `PGDATA`, `pg_isready`).
//!
//! Building needs root (debootstrap), the Debian mirror
//! (`$RESPALDO_DEBIAN_MIRROR`, default deb.debian.org) and Docker; a missing
//! one is a failure, not a skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::docker::docker;

/// Debian bookworm, minbase, imported from a debootstrap folder.
pub const BASE: &str = "respaldo-test-base:bookworm";
/// respaldo's image, from the Dockerfile's `prebuilt` stage.
pub const RESPALDO: &str = "respaldo-test:latest";
/// A PostgreSQL 15 server image shaped like the official one.
pub const POSTGRES: &str = "respaldo-test-postgres:15";

/// The repository's root.
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(what: &str, cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `docker build` with the classic builder, which uses local images as they
/// are (BuildKit may try a registry for a `FROM`).
fn build(
    context: &Path,
    dockerfile: &Path,
    tag: &str,
    args: &[(&str, &str)],
    target: Option<&str>,
) {
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", tag, "-f"])
        .arg(dockerfile);
    for (k, v) in args {
        cmd.arg("--build-arg").arg(format!("{k}={v}"));
    }
    if let Some(t) = target {
        cmd.args(["--target", t]);
    }
    cmd.arg(context);
    run(&format!("docker build of {tag}"), &mut cmd);
}

/// Makes [`BASE`] once (kept across runs: it depends on nothing here).
pub fn base_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if exists(BASE) {
            return;
        }
        assert!(
            crate::is_root(),
            "building the Debian base image needs root (debootstrap)"
        );
        let mirror = std::env::var("RESPALDO_DEBIAN_MIRROR")
            .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        run(
            "debootstrap (apt-get install debootstrap)",
            Command::new("debootstrap")
                .args(["--variant=minbase", "bookworm"])
                .arg(&root)
                .arg(&mirror),
        );
        let tar = dir.path().join("base.tar");
        run(
            "tar of the base",
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        );
        docker(&["import", tar.to_str().unwrap(), BASE]);
    });
}

/// Builds [`RESPALDO`] from the repository's Dockerfile with `binary` (the
/// one under test, stripped of debug info) as its program.
pub fn respaldo_image(binary: &Path) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        base_image();
        let ctx = tempfile::tempdir().unwrap();
        let program = ctx.path().join("respaldo");
        run(
            "objcopy --strip-debug (binutils)",
            Command::new("objcopy")
                .arg("--strip-debug")
                .arg(binary)
                .arg(&program),
        );
        build(
            ctx.path(),
            &repository_root().join("Dockerfile"),
            RESPALDO,
            &[("BASE", BASE), ("BINARY", "respaldo")],
            Some("prebuilt"),
        );
    });
}

/// Builds [`POSTGRES`] once (kept across runs).
pub fn postgres_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if exists(POSTGRES) {
            return;
        }
        base_image();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/postgres");
        build(
            &dir,
            &dir.join("Dockerfile"),
            POSTGRES,
            &[("BASE", BASE)],
            None,
        );
    });
}
