//! Everyday options: `backup --no-verify` skips `verify_after_backup` for
//! one run; `$RESPALDO_REPOSITORY` replaces `[repository] url`.

mod common;

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
    for f in walk(&p.repo().join("packs")) {
        if f.is_file() {
            std::fs::remove_file(f).unwrap();
        }
    }
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
