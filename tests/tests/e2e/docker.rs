//! The docker source against the real Docker Engine: volume round trips
//! (in place and into a new volume) with owners, modes, symlinks, empty dirs
//! and hard links; containers stopped for the copy and always started again
//! (success, repository disk full, SIGTERM), pause; clear failures.

use crate::common;
use respaldo_testing::servers::docker_objects as dockerh;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use dockerh::*;

/// Nested dirs, an empty dir (sticky, 1777), a 0600 file of another
/// owner with an old mtime, a private dir of another owner, symlinks (one
/// dangling), a hard link, a name longer than 100 bytes, and the volume root
/// with its own mode and owner.
const POPULATE: &str = "cd /v && mkdir -p a/b/c empty private/deep && \
    echo hello > a/b/c/f.txt && chmod 600 a/b/c/f.txt && chown 1234:5678 a/b/c/f.txt && \
    touch -d '2020-01-02 03:04:05' a/b/c/f.txt && \
    ln -s b/c/f.txt a/link && ln -s /nonexistent dangling && \
    dd if=/dev/urandom of=private/deep/blob bs=1k count=3000 2>/dev/null && \
    ln private/deep/blob private/hard && \
    chown -R 999:998 private && chmod 700 private && chmod 1777 empty && \
    echo long > a/nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn && \
    chmod 750 /v && chown 0:1000 /v";

/// Runs respaldo, asserts success, returns stdout and stderr together.
fn ok_all(p: &Project, args: &[&str]) -> String {
    let o = p.run(args);
    let all = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
    assert!(o.status.success(), "respaldo {args:?} failed: {all}");
    all
}

fn source(extra: &str) -> String {
    format!("[sources.vol]\ntype = \"docker\"\n{extra}\n")
}

#[test]
fn volume_round_trip_in_place_and_into_a_new_volume() {
    let label = format!("respaldo.test={}", unique("sel"));
    let v = Volume::new("data", &[&label, "team=shop"]);
    v.sh(POPULATE);
    let before = v.listing();
    for want in [
        ". directory 750 0:1000",
        "./a/b/c/f.txt regular file 600 1234:5678 6 links=1 1577934245",
        "./a/link symbolic link 777 0:0 9 -> b/c/f.txt",
        "-> /nonexistent",
        "./empty directory 1777",
        "./private directory 700 999:998",
        "./private/hard regular file 644 999:998 3072000 links=2",
    ] {
        assert!(before.contains(want), "{want:?} not in:\n{before}");
    }
    let long = format!("./a/{}", "n".repeat(110));
    assert!(before.contains(&long), "{before}");
    let p = Project::new(&source(&format!(
        "labels = [\"{label}\"]\nhelper_image = \"{BUSYBOX}\""
    )));
    p.ok(&["init"]);
    let id = p.backup(&[])["id"].as_str().unwrap().to_string();
    let show = p.ok(&["show", &id]);
    assert!(
        show.contains(&v.name) && show.contains("\"driver\":\"local\"") && show.contains("team"),
        "{show}"
    );
    assert_eq!(helpers_of(&v.name).trim(), "");

    // Into a new volume, created with the recorded driver and labels.
    let copy = Volume::future("copy");
    let out = ok_all(
        &p,
        &["restore", &id, "--source", "vol", "--target", &copy.name],
    );
    assert!(out.contains("counts match"), "{out}");
    assert_eq!(copy.listing(), before);
    let labels = docker(&["volume", "inspect", "-f", "{{json .Labels}}", &copy.name]);
    assert!(labels.contains("\"team\":\"shop\""), "{labels}");

    // Into the live volume without --force: refused, nothing changes.
    v.sh("rm /v/a/b/c/f.txt && echo new > /v/extra && mkdir /v/newdir");
    let changed = v.listing();
    let o = p.run(&["restore", &id, "--source", "vol"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not empty"), "{}", stderr(&o));
    assert_eq!(v.listing(), changed);

    // --force with no container referring to the volume: recreated, refilled.
    p.ok(&["restore", &id, "--source", "vol", "--force"]);
    assert_eq!(v.listing(), before);

    // --force while a (stopped) container refers to it: emptied with helper_image.
    let user = Container::created(&v.name);
    v.sh("echo again > /v/extra2 && rm -r /v/private");
    p.ok(&["restore", &id, "--source", "vol", "--force"]);
    assert_eq!(v.listing(), before);
    drop(user);

    // One file: only it (and its parent dirs' metadata) is written back.
    v.sh("echo changed > /v/a/b/c/f.txt && echo keep > /v/unrelated");
    let o = p.run(&["restore", &id, "--source", "vol", "--path", "a/b/c/f.txt"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = ok_all(
        &p,
        &[
            "restore",
            &id,
            "--source",
            "vol",
            "--path",
            "a/b/c/f.txt",
            "--force",
        ],
    );
    assert!(out.contains("partial restore: 4 entries"), "{out}");
    let after = v.listing();
    let (kept, rest): (Vec<&str>, Vec<&str>) =
        after.lines().partition(|l| l.starts_with("./unrelated "));
    assert_eq!(kept.len(), 1, "{after}");
    assert_eq!(rest.join("\n") + "\n", before);
    v.sh("rm /v/unrelated");

    // Unchanged volume: the next backup adds (almost) nothing.
    let again = p.backup(&[]);
    let added = again["sources"]["vol"]["bytes_added"].as_u64().unwrap();
    assert!(added < 10_000, "{again}");

    // test-restore: throwaway volume, counts and hashes, removed after.
    let out = ok_all(&p, &["test-restore", "--source", "vol"]);
    assert!(out.contains("file hashes match"), "{out}");
    // (only this test runs test-restore)
    let left = docker(&["volume", "ls", "-q"]);
    assert!(!left.contains("respaldo-test-restore-"), "{left}");
    assert_eq!(helpers_of(&v.name).trim(), "");
    assert_eq!(helpers_of(&copy.name).trim(), "");
}

/// A tmpfs mounted on the repository folder, so the repository fills up.
struct TinyDisk(std::path::PathBuf);

impl TinyDisk {
    fn mount(dir: std::path::PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("mount");
        assert!(st.success(), "mounting a tmpfs needs root");
        TinyDisk(dir)
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn containers_are_stopped_for_the_copy_and_always_started_again() {
    let v = Volume::new("app", &[]);
    v.sh("dd if=/dev/urandom of=/v/blob bs=1M count=4 2>/dev/null");
    let app = Container::sleeping(Some(&v.name), &[]);
    let side = Container::sleeping(None, &["respaldo.stop-during-backup=true"]);
    let other = Container::sleeping(None, &[]);
    let cfg = source(&format!(
        "volumes = [\"{}\"]\nstop_containers = true\nstop_timeout = 1",
        v.name
    ));

    // Success: stopped (restarted, so a new start time) and running again.
    let p = Project::new(&cfg);
    p.ok(&["init"]);
    let (a0, s0, o0) = (app.started_at(), side.started_at(), other.started_at());
    p.backup(&[]);
    assert!(app.running() && side.running() && other.running());
    assert_ne!(
        app.started_at(),
        a0,
        "the container using the volume was not stopped"
    );
    assert_ne!(
        side.started_at(),
        s0,
        "the labelled container was not stopped"
    );
    assert_eq!(other.started_at(), o0, "an unrelated container was stopped");

    // The repository's disk fills up midway: the backup fails, the
    // container runs again.
    let full = Project::new(&cfg);
    let _disk = TinyDisk::mount(full.repo(), "1m");
    full.ok(&["init"]);
    let a1 = app.started_at();
    let o = full.run(&["backup"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("No space left on device"),
        "{}",
        stderr(&o)
    );
    assert!(app.running() && side.running(), "{}", stderr(&o));
    assert_ne!(app.started_at(), a1, "not stopped before the failing copy");
    assert_eq!(helpers_of(&v.name).trim(), "");

    // SIGTERM during the copy of a big volume: containers run again, the
    // process stops cleanly (exit 1, no snapshot), no helper container is left.
    v.sh("dd if=/dev/urandom of=/v/big bs=1M count=256 2>/dev/null");
    let child = Command::new(bin())
        .current_dir(p.path())
        .args(["-c", "backup.toml", "backup"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        "the container to be stopped",
        Duration::from_secs(60),
        || !app.running(),
    );
    // The copy starts once the helper exists.
    wait_until("the helper container", Duration::from_secs(30), || {
        !helpers_of(&v.name).trim().is_empty()
    });
    // SAFETY: kill on a child we own.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "respaldo was not stopped cleanly during the copy ({}): {}",
        out.status,
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("interrupted by a signal")
            && stderr(&out).contains("no snapshot was written"),
        "{}",
        stderr(&out)
    );
    assert!(app.running() && side.running(), "{}", stderr(&out));
    assert_eq!(helpers_of(&v.name).trim(), "", "{}", stderr(&out));
    // The next run works.
    v.sh("rm /v/big");
    p.backup(&[]);
    assert!(app.running());

    // pause = true with exec hooks: paused (not restarted); `before` runs
    // before the copy, `after` once the container runs again.
    p.write_config(&source(&format!(
        "volumes = [\"{v}\"]\nstop_containers = true\nstop_timeout = 1\npause = true\n\
         exec.\"{c}\" = {{ before = [\"sh\", \"-c\", \"echo flushed > /data/flushed\"], \
         after = [\"sh\", \"-c\", \"echo resumed > /data/resumed\"] }}",
        v = v.name,
        c = app.name
    )));
    let a2 = app.started_at();
    let id = p.backup(&[])["id"].as_str().unwrap().to_string();
    assert!(app.running());
    assert_eq!(app.started_at(), a2, "pause restarted the container");
    let copy = Volume::future("copy");
    p.ok(&["restore", &id, "--source", "vol", "--target", &copy.name]);
    let l = copy.listing();
    assert!(l.contains("./flushed ") && !l.contains("./resumed"), "{l}");
    assert!(v.listing().contains("./resumed "));

    // A failing `before` hook fails the backup; nothing stays paused.
    p.write_config(&source(&format!(
        "volumes = [\"{v}\"]\nstop_containers = true\nstop_timeout = 1\n\
         exec.\"{c}\" = {{ before = [\"sh\", \"-c\", \"echo no space >&2; exit 3\"] }}",
        v = v.name,
        c = app.name
    )));
    let o = p.run(&["backup"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("exited with 3: no space"),
        "{}",
        stderr(&o)
    );
    assert!(app.running() && app.inspect("{{.State.Paused}}") == "false");

    // Restore in place: the container is stopped, started after and
    // health-checked; the report says so.
    // The health URL answers 503 twice, then 200.
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let health = format!("http://{}/health", http.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for (i, conn) in http.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let status = if i < 2 {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    p.write_config(&source(&format!(
        "volumes = [\"{}\"]\nstop_containers = true\nstop_timeout = 1\nhelper_image = \"{BUSYBOX}\"\n\
         health_timeout = \"30s\"\nhealth_command = [\"docker\", \"exec\", \"{}\", \"sh\", \"-c\", \"test -s /data/blob\"]\n\
         health_url = \"{health}\"",
        v.name, app.name
    )));
    let a3 = app.started_at();
    let out = ok_all(&p, &["restore", &id, "--source", "vol", "--force"]);
    assert!(
        out.contains("started again: ")
            && out.contains(&app.name)
            && out.contains("health check passed")
            && out.contains("health command `docker exec")
            && out.contains(&format!("health URL {health} answered 200 OK"))
            && out.contains("counts match"),
        "{out}"
    );
    assert!(app.running());
    assert_ne!(app.started_at(), a3, "not stopped for the restore");
    assert_eq!(v.listing(), l);
}

#[test]
fn unreachable_engine_and_unknown_volume_fail_clearly() {
    let missing = unique("missing");
    let p = Project::new(&source(&format!("volumes = [\"{missing}\"]")));
    p.ok(&["init"]);
    let o = Command::new(bin())
        .current_dir(p.path())
        .args(["-c", "backup.toml", "backup"])
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot reach the Docker engine at unix:///nonexistent.sock"),
        "{}",
        stderr(&o)
    );
    let o = p.run(&["backup"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("volume `{missing}` does not exist")),
        "{}",
        stderr(&o)
    );
    // The shipped example parses.
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/docker/backup.toml");
    let o = Command::new(bin())
        .arg("-c")
        .arg(&example)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

/// File capabilities, the extended attribute the engine's archive API
/// carries (as a PAX record), survive a volume's round trip.
#[test]
fn file_capabilities_in_a_volume_round_trip() {
    let v = Volume::new("caps", &[]);
    v.sh("echo '#!/bin/true' > /v/ping && chmod 755 /v/ping");
    let mountpoint = docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", &v.name]);
    let file = format!("{}/ping", mountpoint.trim());
    let st = Command::new("setcap")
        .args(["cap_net_raw+ep", &file])
        .status()
        .unwrap();
    assert!(
        st.success(),
        "setcap (libcap2-bin, installed by scripts/test.sh)"
    );
    let p = Project::new(&source(&format!("volumes = [\"{}\"]", v.name)));
    p.ok(&["init"]);
    p.backup(&[]);
    let copy = Volume::future("caps-copy");
    ok_all(
        &p,
        &[
            "restore", "latest", "--source", "vol", "--target", &copy.name,
        ],
    );
    let mp = docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", &copy.name]);
    let got = Command::new("getcap")
        .arg(format!("{}/ping", mp.trim()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&got.stdout).contains("cap_net_raw=ep"),
        "{}",
        String::from_utf8_lossy(&got.stdout)
    );
}
