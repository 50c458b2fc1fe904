//! Repository integrity: damage is found and named, kills at random moments
//! lose nothing, failed sources never look good, the command source.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};

const FILES: &str = "[sources.files]\ntype = \"files\"\npaths = [\"data\"]\n";

fn objects(repo: &Path) -> Vec<PathBuf> {
    walk(repo)
        .into_iter()
        .filter(|p| p.is_file())
        .filter(|p| {
            let rel = p.strip_prefix(repo).unwrap().to_string_lossy().into_owned();
            rel.starts_with("packs/") || rel.starts_with("index/") || rel.starts_with("snapshots/")
        })
        .collect()
}

fn flip(p: &Path, at: usize) {
    let mut b = std::fs::read(p).unwrap();
    let i = at % b.len();
    b[i] ^= 0x40;
    std::fs::write(p, b).unwrap();
}

#[test]
fn verify_read_data_names_every_flipped_byte_and_undamaged_snapshots_restore() {
    let p = Project::new(FILES);
    let d = p.path().join("data");
    std::fs::create_dir_all(&d).unwrap();
    p.ok(&["init"]);
    let mut ids = Vec::new();
    for i in 0..3u64 {
        std::fs::write(d.join(format!("f{i}")), random_bytes(i, 3 << 20)).unwrap();
        ids.push(p.backup(&[])["id"].as_str().unwrap().to_string());
    }
    p.ok(&["verify", "--read-data"]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let objs = objects(&p.repo());
    assert!(objs.len() >= 9, "{objs:?}");
    for obj in objs {
        let original = std::fs::read(&obj).unwrap();
        let name = obj.file_name().unwrap().to_string_lossy().into_owned();
        flip(&obj, rng.gen_range(0..original.len()));
        let o = p.run(&["verify", "--read-data"]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(1),
            "flip in {obj:?} not caught: {out}"
        );
        assert!(
            out.contains(&name),
            "the report does not name {name}: {out}"
        );

        // Every snapshot the report does not call damaged still restores, identically.
        let report = {
            let o = p.run(&["--json", "verify", "--read-data"]);
            serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
        };
        let damaged: Vec<String> = report["damaged_snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        for (i, id) in ids.iter().enumerate() {
            if damaged.contains(id) || name == *id {
                continue;
            }
            let out = p.path().join(format!("out-{i}"));
            p.ok(&[
                "restore",
                id,
                "--target",
                out.to_str().unwrap(),
                "--source",
                "files",
            ]);
            for j in 0..=i {
                assert_eq!(
                    std::fs::read(out.join(format!("data/f{j}"))).unwrap(),
                    random_bytes(j as u64, 3 << 20),
                    "snapshot {i} restored wrong data after damage to {name}"
                );
            }
            std::fs::remove_dir_all(&out).unwrap();
        }
        std::fs::write(&obj, original).unwrap();
    }
    p.ok(&["verify", "--read-data"]);
}

#[test]
fn backups_killed_at_random_moments_lose_nothing() {
    let p = Project::new(FILES);
    let d = p.path().join("data");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("base"), random_bytes(1, 20 << 20)).unwrap();
    p.ok(&["init"]);
    let first = p.backup(&[])["id"].as_str().unwrap().to_string();
    let base_fp = fingerprint(&d);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut killed = 0;
    for trial in 0..24u64 {
        // New data every time, so every run writes packs.
        std::fs::write(
            d.join(format!("t{trial}")),
            random_bytes(100 + trial, 24 << 20),
        )
        .unwrap();
        let mut child = Command::new(bin())
            .current_dir(p.path())
            .args(["-q", "-c", "backup.toml", "backup"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
        // Every earlier snapshot still verifies.
        p.ok(&["verify"]);
    }
    assert!(killed >= 20, "only {killed} runs were killed mid-way");
    // The first snapshot restores exactly.
    let out = p.path().join("out");
    p.ok(&[
        "restore",
        &first,
        "--source",
        "files",
        "--target",
        out.to_str().unwrap(),
    ]);
    assert_eq!(base_fp, fingerprint(&out.join("data")));
    // The next backup works, and restores the current data.
    p.backup(&[]);
    let out2 = p.path().join("out2");
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "files",
        "--target",
        out2.to_str().unwrap(),
    ]);
    assert_same_tree(&d, &out2.join("data"));
    // Prune reclaims what the killed runs left behind.
    let before = p.repo_size();
    let r = p.json(&["prune"]);
    assert!(
        r["packs_unindexed"].as_u64().unwrap() + r["bytes_incomplete"].as_u64().unwrap() > 0,
        "nothing reclaimed: {r}"
    );
    assert!(p.repo_size() < before);
    assert!(
        !walk(&p.repo())
            .iter()
            .any(|x| x.to_string_lossy().contains("/.tmp/")),
        "temporary files left"
    );
    assert!(walk(&p.repo().join("locks")).is_empty(), "stale locks left");
    p.ok(&["verify", "--read-data"]);
    let out3 = p.path().join("out3");
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "files",
        "--target",
        out3.to_str().unwrap(),
    ]);
    assert_same_tree(&d, &out3.join("data"));
}

#[test]
fn a_failing_source_is_recorded_as_failed_and_latest_means_latest_good() {
    let p = Project::new(
        "[sources.files]\ntype = \"files\"\npaths = [\"data\"]\n\n[sources.dump]\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"cat payload; test ! -e fail || { echo 'dump broke' >&2; exit 3; }\"]\nartifact = \"dump.sql\"\n",
    );
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    std::fs::write(p.path().join("data/x"), b"x").unwrap();
    std::fs::write(p.path().join("payload"), b"version 1\n").unwrap();
    p.ok(&["init"]);
    let good = p.backup(&[])["id"].as_str().unwrap().to_string();

    std::fs::write(p.path().join("payload"), b"version 2\n").unwrap();
    std::fs::write(p.path().join("fail"), b"").unwrap();
    let o = p.run(&["--json", "backup"]);
    assert_eq!(o.status.code(), Some(3));
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b["sources"]["dump"]["status"], "failed");
    let err = b["sources"]["dump"]["error"].as_str().unwrap();
    assert!(
        err.contains("exited with status 3") && err.contains("dump broke"),
        "{err}"
    );
    assert_eq!(
        b["sources"]["files"]["status"], "ok",
        "the other source is kept"
    );
    let partial = b["id"].as_str().unwrap().to_string();

    // latest for `dump` is the earlier good one.
    let dumped = p.ok(&["dump", "latest", "dump"]);
    assert_eq!(dumped, "version 1\n");
    let o = p.run(&["dump", &partial, "dump"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let list = p.json(&["snapshots"]);
    let arr = list.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert!(arr.iter().any(|s| s["id"] == good.as_str()));
    // A killed command fails too.
    std::fs::remove_file(p.path().join("fail")).unwrap();
    p.write_config("[sources.dump]\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"echo partial; kill -9 $$\"]\n");
    let o = p.run(&["--json", "backup"]);
    assert_eq!(o.status.code(), Some(1));
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        b["id"].is_null(),
        "no snapshot when every source failed: {b}"
    );
    assert!(
        b["sources"]["dump"]["error"]
            .as_str()
            .unwrap()
            .contains("killed by signal 9"),
        "{b}"
    );
}

#[test]
fn command_source_round_trip_through_restore_command() {
    let p = Project::new("");
    // `${RESPALDO_TARGET:-…}` must reach the shell unexpanded: escape it.
    p.write_config(
        "[sources.db]\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"test \\\"$SECRET\\\" = s3cr3t && cat db.txt\"]\nrestore_command = [\"sh\", \"-c\", \"cat > \\\"$${RESPALDO_TARGET:-db.txt}\\\"\"]\nenv.SECRET = { env = \"RESPALDO_TEST_SECRET\" }\n",
    );
    let content = text_bytes(9, 3 << 20);
    std::fs::write(p.path().join("db.txt"), &content).unwrap();
    std::env::set_var("RESPALDO_TEST_SECRET", "s3cr3t");
    p.ok(&["init"]);
    let b = p.backup(&[]);
    assert_eq!(b["sources"]["db"]["status"], "ok", "{b}");
    assert!(!serde_json::to_string(&p.json(&["show", "latest"]))
        .unwrap()
        .contains("s3cr3t"));
    // Into the live system: refused without --force, as nothing tells
    // whether it holds data (no `check_empty`); the safety snapshot would
    // run the backup command, which cannot work with db.txt gone.
    std::fs::remove_file(p.path().join("db.txt")).unwrap();
    let o = p.run(&["restore", "latest"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("check_empty"), "{}", stderr(&o));
    p.ok(&["restore", "latest", "--force", "--no-safety-snapshot"]);
    assert_eq!(std::fs::read(p.path().join("db.txt")).unwrap(), content);
    // Somewhere else.
    let other = p.path().join("other.txt");
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "db",
        "--target",
        other.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(std::fs::read(&other).unwrap(), content);
    // As a plain file; its SHA-256 is the recorded one.
    let to = p.path().join("files");
    p.ok(&["restore", "latest", "--to", to.to_str().unwrap()]);
    let show = p.json(&["show", "latest"]);
    assert_eq!(
        sha256_file(&to.join("db/stdout")),
        show["sources"]["db"]["artifacts"][0]["sha256"]
            .as_str()
            .unwrap()
    );
}

#[test]
fn dry_run_backup_checks_and_writes_nothing_and_snapshots_lists() {
    let p = Project::new(
        "[sources.files]\ntype = \"files\"\npaths = [\"data\"]\n\n[sources.gone]\ntype = \"files\"\npaths = [\"missing\"]\n\n[sources.off]\ntype = \"files\"\npaths = [\"data\"]\nenabled = false\n",
    );
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    std::fs::write(p.path().join("data/a"), b"a").unwrap();
    p.ok(&["init"]);
    let before = dir_size(&p.repo());
    let o = p.run(&["backup", "--dry-run"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(1),
        "a failing check fails the dry run: {out}"
    );
    assert!(out.contains("`files`: check passed"), "{out}");
    assert!(
        out.contains("`gone`: CHECK FAILED") && out.contains("missing"),
        "{out}"
    );
    assert!(
        !out.contains("`off`"),
        "disabled sources are left out: {out}"
    );
    assert_eq!(
        before,
        dir_size(&p.repo()),
        "dry run wrote to the repository"
    );

    p.backup(&["--source", "files", "--tag", "daily"]);
    let o = p.run(&["backup", "--source", "off"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let table = p.ok(&["snapshots"]);
    assert!(
        table.contains("daily") && table.contains("files") && table.contains("1 snapshot(s)"),
        "{table}"
    );
    let tagged = p.json(&["snapshots", "--tag", "weekly"]);
    assert_eq!(tagged.as_array().unwrap().len(), 0);
    assert!(
        walk(&p.repo().join("locks")).is_empty(),
        "locks left behind"
    );
}
