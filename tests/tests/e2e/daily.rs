//! Everyday options: `backup --no-verify` skips `verify_after_backup` for
//! one run; `$RESPALDO_REPOSITORY` replaces `[repository] url`; `status
//! --prometheus FILE` writes the textfile node exporter collects; `rto`
//! is checked by `status` against the last drill; `tag --add keep` keeps a
//! snapshot from retention until `tag --remove keep`.

use crate::common;

use std::process::Command;

use common::*;

#[test]
fn no_verify_skips_the_verification_after_backup_for_one_run() {
    let p = Project::new("");
    std::fs::write(
        p.path().join("backup.toml"),
        "[repository]\nurl = \"repo\"\nverify_after_backup = true\n\n\
         [sources.files]\ntype = \"files\"\npaths = [\"data\"]\n",
    )
    .unwrap();
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    std::fs::write(p.path().join("data/a"), random_bytes(1, 1 << 20)).unwrap();
    p.ok(&["init"]);
    p.backup(&[]);
    // The packs go, their index entries stay: the unchanged file's chunks
    // look stored, so only the verification after the backup can tell.
    remove_packs(&p);
    let checked = p.run(&["--json", "backup"]);
    assert_eq!(checked.status.code(), Some(1), "{}", stderr(&checked));
    let skipped = p.run(&["--json", "backup", "--no-verify"]);
    assert_eq!(skipped.status.code(), Some(0), "{}", stderr(&skipped));
    let v: serde_json::Value = serde_json::from_slice(&skipped.stdout).unwrap();
    assert_eq!(v["sources"]["files"]["status"], "ok", "{v}");
    // What was skipped is still found by `verify`.
    assert_eq!(p.run(&["verify"]).status.code(), Some(1));
}

#[test]
fn respaldo_repository_replaces_the_configured_url() {
    let p = Project::new("[sources.files]\ntype = \"files\"\npaths = [\"data\"]\n");
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    std::fs::write(p.path().join("data/a"), b"hello").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let other = elsewhere.path().join("other-repo");
    let run = |args: &[&str]| {
        Command::new(bin())
            .current_dir(p.path())
            .env("RESPALDO_REPOSITORY", &other)
            .args(["-c", "backup.toml"])
            .args(args)
            .output()
            .unwrap()
    };
    for args in [&["init"][..], &["backup"]] {
        let o = run(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    assert!(
        other.join("config").exists(),
        "no repository at the variable's URL"
    );
    assert!(!p.repo().exists(), "the configured URL was used");
    let o = run(&["--json", "snapshots"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    // Without the variable, the configured (empty) repository.
    assert_eq!(p.run(&["snapshots"]).status.code(), Some(10));
}

#[test]
fn status_writes_a_node_exporter_textfile_for_timer_and_cron_users() {
    let p = Project::new(
        "[status]\nstate_dir = \"state\"\nrpo = \"1h\"\n\n\
         [sources.db]\ntype = \"command\"\ncommand = [\"echo\", \"rows\"]\n\n\
         [sources.never]\ntype = \"command\"\ncommand = [\"echo\", \"more\"]\n",
    );
    p.ok(&["init"]);
    p.ok(&["backup", "--source", "db"]);
    let collector = p.path().join("textfile");
    std::fs::create_dir(&collector).unwrap();
    let file = collector.join("respaldo.prom");
    let out = p.run(&["status", "--prometheus", file.to_str().unwrap()]);
    // `never` was never backed up: stale, so status still exits 1.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    let sample = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
    };
    // Against the independent record of the backup: the repository's files
    // and the snapshot's time as `snapshots --json` shows it.
    let snaps = p.json(&["snapshots"]);
    let time = chrono::DateTime::parse_from_rfc3339(snaps[0]["time"].as_str().unwrap())
        .unwrap()
        .timestamp() as f64;
    let good = sample("respaldo_source_last_success_timestamp_seconds{source=\"db\"}").unwrap();
    assert!((good - time).abs() <= 2.0, "{good} vs {time}\n{text}");
    assert_eq!(
        sample("respaldo_source_stale{source=\"db\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample("respaldo_source_stale{source=\"never\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample("respaldo_source_rpo_seconds{source=\"db\"}"),
        Some(3600.0)
    );
    assert_eq!(
        sample("respaldo_repository_size_bytes"),
        Some(p.repo_size() as f64),
        "{text}"
    );
    assert!(
        sample("respaldo_status_timestamp_seconds").is_some(),
        "{text}"
    );
    assert!(text.contains("# TYPE respaldo_source_failures_total counter"));
    // Replaced whole (no temporary file left beside it), readable by a
    // collector running as another user.
    let names: Vec<_> = std::fs::read_dir(&collector)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("respaldo.prom")]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    // A folder that does not exist is an error naming the file.
    let bad = p.run(&["status", "--prometheus", "missing/dir/respaldo.prom"]);
    assert_ne!(bad.status.code(), Some(0));
    assert!(
        stderr(&bad).contains("missing/dir/respaldo.prom"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn status_checks_each_source_against_its_recovery_time_objective() {
    let config = |rto: &str| {
        format!(
            "[status]\nstate_dir = \"state\"\n\n\
             [sources.files]\ntype = \"files\"\npaths = [\"data\"]\nrto = \"{rto}\"\n\
             hooks = {{ before = \"sleep 2\" }}\n\n\
             [sources.other]\ntype = \"files\"\npaths = [\"data\"]\n"
        )
    };
    let p = Project::new(&config("1h"));
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    std::fs::write(p.path().join("data/a"), random_bytes(3, 1 << 16)).unwrap();
    p.ok(&["init"]);
    p.ok(&["backup"]);
    // Backed up but never drilled: the objective is not met.
    let out = p.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(table.contains("RTO 60min: never drilled"), "{table}");
    // A drill within the objective: ok. `other` has none: never judged.
    p.ok(&["test-restore"]);
    let v = p.json(&["status"]);
    assert_eq!(v[0]["source"], "files");
    assert_eq!(v[0]["ok"], true, "{v}");
    assert_eq!(v[0]["rto_seconds"], 3600);
    let estimate = v[0]["last_drill"]["rto_seconds"].as_f64().unwrap();
    // The estimate holds the safety snapshot: the backup, which the hook
    // made take two seconds.
    assert!(estimate >= 2.0, "{v}");
    assert_eq!(v[1]["rto_missed"], false);
    assert!(v[1]["rto_seconds"].is_null());
    // A tighter objective than the estimate fails status, saying both.
    p.write_config(&config("1s"));
    let out = p.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.contains("RTO 1s: the last drill estimated"),
        "{table}"
    );
    // A failed drill fails it too, with the drill's error.
    p.write_config(&config("1h"));
    remove_packs(&p);
    assert_eq!(p.run(&["test-restore"]).status.code(), Some(1));
    let out = p.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.contains("RTO 60min: the last drill failed"),
        "{table}"
    );
}

/// Deletes every pack, leaving the index and snapshots.
#[test]
fn a_snapshot_tagged_keep_outlives_retention_until_the_tag_is_removed() {
    let p = Project::new(
        "[retention]\nkeep_last = 1\n\n[sources.files]\ntype = \"files\"\npaths = [\"data\"]\n",
    );
    let data = p.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    p.ok(&["init"]);
    let mut fingerprints = Vec::new();
    let mut ids = Vec::new();
    for i in 0..3u64 {
        std::fs::write(data.join("f"), random_bytes(i, 300_000)).unwrap();
        fingerprints.push(fingerprint(&data));
        ids.push(p.backup(&[])["id"].as_str().unwrap().to_string());
    }
    // Tagging rewrites the snapshot: the new id replaces the old one.
    let tagged = p.json(&["tag", &ids[0], "--add", "keep", "--add", "audit-2026"]);
    let kept = tagged["id"].as_str().unwrap().to_string();
    assert_eq!(tagged["previous_id"], ids[0].as_str());
    p.ok(&["forget", "--prune"]);
    let left: Vec<serde_json::Value> = p.json(&["snapshots"]).as_array().unwrap().clone();
    let left_ids: Vec<&str> = left.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(left_ids.len(), 2, "{left_ids:?}");
    assert!(left_ids.contains(&kept.as_str()) && left_ids.contains(&ids[2].as_str()));
    let kept_entry = left.iter().find(|s| s["id"] == kept.as_str()).unwrap();
    assert_eq!(
        kept_entry["tags"],
        serde_json::json!(["keep", "audit-2026"])
    );
    // What it kept restores identical after the prune.
    std::fs::remove_dir_all(&data).unwrap();
    p.ok(&["restore", &kept, "--source", "files"]);
    assert_eq!(fingerprint(&data), fingerprints[0]);
    // Without the tag, retention takes it.
    let untagged = p.json(&["tag", &kept, "--remove", "keep"]);
    let untagged = untagged["id"].as_str().unwrap().to_string();
    p.ok(&["forget", "--prune"]);
    let left: Vec<String> = p
        .json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, [ids[2].clone()], "{untagged} should be gone");
    assert!(p.run(&["tag", &untagged, "--add", "keep"]).status.code() != Some(0));
    p.ok(&["verify", "--read-data"]);
}

fn remove_packs(p: &Project) {
    for f in walk(&p.repo().join("packs")) {
        if f.is_file() {
            std::fs::remove_file(f).unwrap();
        }
    }
}

#[test]
fn a_copy_entry_replicates_and_repository_name_reads_the_copy_directly() {
    let p = Project::new(
        "[repositories.offsite]\nurl = \"offsite\"\n\n\
         [schedule.nightly]\ncron = \"0 4 * * *\"\naction = \"copy\"\nto = \"offsite\"\n\n\
         [sources.files]\ntype = \"files\"\npaths = [\"data\"]\n",
    );
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    std::fs::write(p.path().join("data/a"), b"replicated by the schedule").unwrap();
    p.ok(&["init"]);
    p.ok(&["init", "--repository", "offsite"]);
    p.ok(&["backup"]);
    let plan = p.ok(&["schedule", "run", "nightly", "--dry-run"]);
    assert!(plan.contains("copy --to offsite"), "{plan}");
    p.ok(&["schedule", "run", "nightly"]);
    // `--repository offsite` uses the copy directly.
    let list = p.json(&["--repository", "offsite", "snapshots"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    p.ok(&["--repository", "offsite", "show", "latest"]);
    p.ok(&["--repository", "offsite", "verify", "--read-data"]);
    let status = p.json(&["--repository", "offsite", "status"]);
    assert!(status.to_string().contains("files"), "{status}");
    let out = p.path().join("restored");
    p.ok(&[
        "--repository",
        "offsite",
        "restore",
        "latest",
        "--source",
        "files",
        "--target",
        out.to_str().unwrap(),
    ]);
    common::assert_same_tree(&p.path().join("data"), &out.join("data"));
    // Nothing new: the next copy sends nothing.
    let again = p.json(&["copy", "--to", "offsite"]);
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["chunks_copied"], 0, "{again}");
    // An unknown name is a usage error naming the configured ones.
    let o = p.run(&["--repository", "nope", "snapshots"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("configured: offsite"), "{}", stderr(&o));
}
