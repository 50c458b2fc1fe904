//! The restore contract (docs/restore.md) for the files and command
//! sources, cell by cell, checked by file hashes and metadata; and the check
//! that the matrix in docs/restore.md and the cells the suite runs agree.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;

const FILES: &str =
    "[sources.files]\ntype = \"files\"\npaths = [\"data\", \"conf\"]\nexclude = [\"*.tmp\"]\n";

fn tree(p: &Project) {
    for (dir, n) in [("data", 4u64), ("conf", 2)] {
        let d = p.path().join(dir);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        for i in 0..n {
            std::fs::write(d.join(format!("f{i}")), random_bytes(i + n * 10, 100_000)).unwrap();
            std::fs::write(d.join(format!("sub/t{i}")), text_bytes(i, 5_000)).unwrap();
        }
    }
}

#[test]
fn files_restore_matrix() {
    let p = Project::new(FILES);
    tree(&p);
    p.ok(&["init"]);
    p.backup(&[]);
    let data = p.path().join("data");
    let conf = p.path().join("conf");
    let want_data = fingerprint(&data);
    let want_conf = fingerprint(&conf);

    cell("files/live/absent");
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::remove_dir_all(&conf).unwrap();
    p.ok(&["restore", "latest", "--source", "files"]);
    assert_eq!(fingerprint(&data), want_data);
    assert_eq!(fingerprint(&conf), want_conf);

    cell("files/live/empty");
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::remove_dir_all(&conf).unwrap();
    std::fs::create_dir(&data).unwrap();
    std::fs::create_dir(&conf).unwrap();
    p.ok(&["restore", "latest", "--source", "files"]);
    assert_eq!(fingerprint(&data), want_data);

    cell("files/live/holds");
    std::fs::write(data.join("f0"), b"changed").unwrap();
    std::fs::write(data.join("extra"), b"new file").unwrap();
    let changed = fingerprint(&data);
    let err = fails(&p, &["restore", "latest", "--source", "files"], 1);
    assert!(
        err.contains("`files`") && err.contains("is not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(fingerprint(&data), changed, "a refusal changed nothing");

    // --dry-run: the plan, per target, and nothing changes.
    let plan = p.ok(&[
        "restore",
        "latest",
        "--source",
        "files",
        "--force",
        "--dry-run",
    ]);
    assert!(
        plan.contains("holds data")
            && plan.contains("replace it")
            && plan.contains("safety snapshot first"),
        "{plan}"
    );
    assert_eq!(fingerprint(&data), changed);

    cell("files/live/holds/force");
    // An excluded file is outside the backup's scope: it stays.
    std::fs::write(data.join("keep.tmp"), b"scratch").unwrap();
    let out = p.run(&["restore", "latest", "--source", "files", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("safety snapshot"), "{}", stderr(&out));
    assert_eq!(std::fs::read(data.join("keep.tmp")).unwrap(), b"scratch");
    std::fs::remove_file(data.join("keep.tmp")).unwrap();
    let mut now = fingerprint(&data);
    let mut want = want_data.clone();
    // Removing keep.tmp changed the folder's own mtime; compare the rest.
    now.remove(Path::new(""));
    want.remove(Path::new(""));
    assert_eq!(
        now, want,
        "the extra file is gone, the changed one restored"
    );
    let safety = tagged(&p, "pre-restore");
    assert_eq!(safety.len(), 1);
    let out_dir = p.path().join("safety-out");
    p.ok(&[
        "restore",
        &safety[0],
        "--source",
        "files",
        "--target",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(out_dir.join("data/extra")).unwrap(),
        b"new file"
    );

    cell("files/target/absent");
    let t = p.path().join("elsewhere");
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "files",
        "--target",
        t.to_str().unwrap(),
    ]);
    assert_eq!(fingerprint(&t.join("data")), want_data);

    cell("files/target/holds");
    std::fs::write(t.join("data/f1"), b"changed").unwrap();
    let before = fingerprint(&t);
    let err = fails(
        &p,
        &[
            "restore",
            "latest",
            "--source",
            "files",
            "--target",
            t.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(fingerprint(&t), before);

    cell("files/target/holds/force");
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "files",
        "--target",
        t.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(fingerprint(&t.join("data")), want_data);

    cell("files/path/holds/force");
    std::fs::write(data.join("sub/t0"), b"changed").unwrap();
    std::fs::write(data.join("sub/extra"), b"x").unwrap();
    std::fs::write(data.join("f3"), b"outside the selection").unwrap();
    p.ok(&[
        "restore", "latest", "--source", "files", "--path", "data/sub", "--force",
    ]);
    assert_eq!(fingerprint(&data.join("sub")), {
        let mut w = fingerprint(&p.path().join("elsewhere/data/sub"));
        w.retain(|_, _| true);
        w
    });
    assert_eq!(
        std::fs::read(data.join("f3")).unwrap(),
        b"outside the selection"
    );

    cell("files/path/nomatch");
    for bad in ["nope", "/etc", "data/nope"] {
        let err = fails(
            &p,
            &[
                "restore", "latest", "--source", "files", "--path", bad, "--force",
            ],
            1,
        );
        assert!(err.contains("matches nothing"), "{bad}: {err}");
    }
    assert_eq!(
        std::fs::read(data.join("f3")).unwrap(),
        b"outside the selection"
    );

    cell("files/target/empty-string");
    let err = fails(
        &p,
        &["restore", "latest", "--source", "files", "--target", ""],
        2,
    );
    assert!(err.contains("--target is empty"), "{err}");
}

#[test]
fn files_config_rejects_empty_paths_and_leaves_the_repository_out() {
    cell("files/config/empty-path");
    let p = Project::new("[sources.files]\ntype = \"files\"\npaths = [\"\"]\n");
    let err = fails(&p, &["config", "check"], 2);
    assert!(err.contains("empty entry"), "{err}");
    // `.` backs up the configuration's folder, but never the repository in it.
    let p = Project::new("[sources.files]\ntype = \"files\"\npaths = [\".\"]\n");
    std::fs::write(p.path().join("a"), b"a").unwrap();
    p.ok(&["init"]);
    p.backup(&[]);
    p.backup(&[]);
    let out = p.path().join("out");
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "files",
        "--target",
        out.to_str().unwrap(),
    ]);
    let name = p.path().file_name().unwrap().to_owned();
    assert!(out.join(&name).join("a").exists());
    assert!(
        !out.join(&name).join("repo").exists(),
        "the repository was backed up"
    );
}

const COMMAND: &str = r#"[sources.cmd]
type = "command"
command = ["sh", "-c", "cat state.txt"]
restore_command = ["sh", "-c", "cat > state.txt"]
"#;

#[test]
fn command_restore_matrix() {
    let p = Project::new(COMMAND);
    let state = p.path().join("state.txt");
    std::fs::write(&state, text_bytes(1, 200_000)).unwrap();
    p.ok(&["init"]);
    p.backup(&[]);
    let want = sha256_file(&state);

    cell("command/live/unknown");
    std::fs::write(&state, b"live data").unwrap();
    let err = fails(&p, &["restore", "latest", "--source", "cmd"], 1);
    assert!(
        err.contains("check_empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&state).unwrap(), b"live data");

    cell("command/live/empty");
    let with_check = format!("{COMMAND}check_empty = [\"sh\", \"-c\", \"test ! -s state.txt\"]\n");
    p.write_config(&with_check);
    let err = fails(&p, &["restore", "latest", "--source", "cmd"], 1);
    assert!(err.contains("says it holds data"), "{err}");
    std::fs::write(&state, b"").unwrap();
    p.ok(&["restore", "latest", "--source", "cmd"]);
    assert_eq!(sha256_file(&state), want);

    cell("command/live/holds/force");
    std::fs::write(&state, b"newer live data").unwrap();
    let o = p.run(&["restore", "latest", "--source", "cmd", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sha256_file(&state), want);
    let safety = tagged(&p, "pre-restore");
    assert_eq!(
        safety.len(),
        1,
        "the safety snapshot ran the backup command"
    );
    let dumped = std::process::Command::new(bin())
        .current_dir(p.path())
        .args(["-c", "backup.toml", "dump", &safety[0], "cmd"])
        .output()
        .unwrap();
    assert_eq!(dumped.stdout, b"newer live data");

    cell("command/live/partial-read");
    p.write_config(
        "[sources.cmd]\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"cat state.txt\"]\n\
         restore_command = [\"sh\", \"-c\", \"head -c 10 > state.txt\"]\n",
    );
    let err = fails(
        &p,
        &[
            "restore",
            "latest",
            "--source",
            "cmd",
            "--force",
            "--no-safety-snapshot",
        ],
        1,
    );
    assert!(err.contains("only part of the backup went in"), "{err}");

    cell("command/test-restore/none");
    let o = p.run(&["--json", "test-restore"]);
    assert!(
        o.status.success(),
        "not testable is not a failure: {}",
        stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["sources"][0]["testable"], false, "{v}");
    assert!(v["sources"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("test_restore_command"));
    p.write_config(&format!(
        "{COMMAND}test_restore_command = [\"sh\", \"-c\", \"grep -c alpha > /dev/null\"]\n"
    ));
    let v = p.json(&["test-restore"]);
    assert_eq!(v["sources"][0]["ok"], true, "{v}");
    assert_eq!(v["sources"][0]["testable"], true, "{v}");
}

/// docs/restore.md's matrix and the `cell("…")` calls of the suite name the
/// same cells.
#[test]
fn restore_matrix_table_matches_the_suite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("../docs/restore.md")).unwrap();
    let table: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(c, _)| c.to_string()))
        .collect();
    let mut suite = BTreeSet::new();
    for entry in std::fs::read_dir(root.join("tests/e2e")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for part in text.split("cell(\"").skip(1) {
            if let Some((id, _)) = part.split_once('"') {
                suite.insert(id.to_string());
            }
        }
    }
    suite.remove("…");
    let only_doc: Vec<_> = table.difference(&suite).collect();
    let only_suite: Vec<_> = suite.difference(&table).collect();
    assert!(
        only_doc.is_empty() && only_suite.is_empty(),
        "docs/restore.md lists cells no test runs: {only_doc:?}; tests run cells the table lacks: {only_suite:?}"
    );
    assert!(table.len() >= 40, "{table:?}");
}
