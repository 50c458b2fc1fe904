//! Malformed configurations and bad invocations: one clear message each,
//! exit code 2, and nothing written.

use crate::common;

use common::*;

const GOOD_SOURCE: &str = "[sources.files]\ntype = \"files\"\npaths = [\"data\"]\n";

/// (config body after `[repository] url = "repo"`, expected fragments of the message)
fn bad_configs() -> Vec<(&'static str, String, Vec<&'static str>)> {
    vec![
        (
            "unknown top-level key",
            format!("colour = \"red\"\n{GOOD_SOURCE}"),
            vec!["backup.toml:4", "colour", "unknown field"],
        ),
        (
            "unknown source key",
            "[sources.files]\ntype = \"files\"\npaths = [\"data\"]\npathz = []\n".into(),
            vec![
                "backup.toml:7",
                "sources.files.pathz",
                "expected one of `paths`",
            ],
        ),
        (
            "unknown repository key",
            format!("[repository2]\n{GOOD_SOURCE}"),
            vec!["repository2"],
        ),
        (
            "missing type",
            "[sources.files]\npaths = [\"data\"]\n".into(),
            vec!["backup.toml:4", "sources.files", "missing `type`"],
        ),
        (
            "unknown type",
            "[sources.db]\ntype = \"oracle\"\n".into(),
            vec![
                "backup.toml:5",
                "sources.db.type",
                "unknown source type `oracle`",
            ],
        ),
        (
            "wrong value type",
            "[sources.files]\ntype = \"files\"\npaths = \"data\"\n".into(),
            vec!["backup.toml:6", "sources.files.paths"],
        ),
        (
            "empty paths",
            "[sources.files]\ntype = \"files\"\npaths = []\n".into(),
            vec!["sources.files", "at least one path"],
        ),
        (
            "missing paths",
            "[sources.files]\ntype = \"files\"\n".into(),
            vec!["sources.files", "paths"],
        ),
        (
            "bad glob",
            "[sources.files]\ntype = \"files\"\npaths = [\"data\"]\nexclude = [\"[\"]\n".into(),
            vec!["sources.files", "exclude pattern"],
        ),
        (
            "bad max_age",
            "[sources.files]\ntype = \"files\"\npaths = [\"data\"]\nmax_age = \"7 fortnights\"\n"
                .into(),
            vec!["max_age"],
        ),
        (
            "missing env var",
            "[sources.files]\ntype = \"files\"\npaths = [\"${RESPALDO_TEST_UNSET_VARIABLE}\"]\n"
                .into(),
            vec!["backup.toml:6", "RESPALDO_TEST_UNSET_VARIABLE is not set"],
        ),
        (
            "bad interpolation",
            "[sources.files]\ntype = \"files\"\npaths = [\"${not valid}\"]\n".into(),
            vec!["not a valid variable reference"],
        ),
        (
            "invalid TOML",
            "[sources.files\ntype = \"files\"\n".into(),
            vec!["backup.toml:4:", "invalid TOML"],
        ),
        (
            "bad compression level",
            "[sources.files]\ntype = \"files\"\npaths = [\"data\"]\ncompression_level = 40\n"
                .into(),
            vec!["backup.toml:7", "compression_level", "out of range"],
        ),
        (
            "bad enabled",
            "[sources.files]\ntype = \"files\"\npaths = [\"data\"]\nenabled = \"no\"\n".into(),
            vec!["sources.files.enabled"],
        ),
        (
            "bad retention key",
            format!("[retention]\nkeep_dayly = 7\n{GOOD_SOURCE}"),
            vec!["backup.toml:5", "keep_dayly"],
        ),
        (
            "bad keep_within",
            format!("[retention]\nkeep_within = \"5x\"\n{GOOD_SOURCE}"),
            vec!["retention.keep_within", "5x"],
        ),
        (
            "bad tag rule",
            format!("[retention.tags.pre-migration]\nkeep_whithin = \"90d\"\n{GOOD_SOURCE}"),
            vec!["keep_whithin"],
        ),
        (
            "zero concurrency",
            format!("[backup]\nconcurrency = 0\n{GOOD_SOURCE}"),
            vec!["backup.concurrency", "at least 1"],
        ),
        (
            "bad source name",
            "[sources.\"my db\"]\ntype = \"files\"\npaths = [\"data\"]\n".into(),
            vec!["letters, digits"],
        ),
        (
            "command without program",
            "[sources.c]\ntype = \"command\"\ncommand = []\n".into(),
            vec!["sources.c", "must name a program"],
        ),
        (
            "command bad artifact",
            "[sources.c]\ntype = \"command\"\ncommand = [\"true\"]\nartifact = \"a/b\"\n".into(),
            vec!["plain file name"],
        ),
        (
            "command unknown key",
            "[sources.c]\ntype = \"command\"\ncommand = [\"true\"]\nshell = true\n".into(),
            vec!["backup.toml:7", "sources.c.shell"],
        ),
    ]
}

#[test]
fn malformed_configs_exit_2_with_a_located_message_and_write_nothing() {
    let cases = bad_configs();
    assert!(cases.len() >= 20);
    for (what, body, expect) in cases {
        let p = Project::new(&body);
        std::fs::create_dir_all(p.path().join("data")).unwrap();
        for args in [&["config", "check"][..], &["init"][..], &["backup"][..]] {
            let o = p.run(args);
            let err = stderr(&o);
            assert_eq!(
                o.status.code(),
                Some(2),
                "{what}: {args:?}: exit {:?}: {err}",
                o.status.code()
            );
            for frag in &expect {
                assert!(err.contains(frag), "{what}: message lacks `{frag}`: {err}");
            }
            assert_eq!(
                err.trim().lines().count(),
                1,
                "{what}: one line expected: {err}"
            );
            assert!(o.stdout.is_empty(), "{what}: stdout should be empty");
            assert!(!p.repo().exists(), "{what}: something was written");
        }
    }
}

#[test]
fn repository_url_scheme_not_supported_is_a_config_error() {
    let p = Project::new(GOOD_SOURCE);
    std::fs::write(
        p.path().join("backup.toml"),
        format!("[repository]\nurl = \"ftp://bucket/x\"\n{GOOD_SOURCE}"),
    )
    .unwrap();
    let o = p.run(&["init"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("backup.toml:2: repository.url"),
        "{}",
        stderr(&o)
    );
}

/// Object-store keys written inline are refused (by reference only), naming
/// the key, not its value.
#[test]
fn inline_object_store_keys_are_refused() {
    let p = Project::new(GOOD_SOURCE);
    for (repo, key) in [
        (
            "[repository]\nurl = \"s3://bucket/x\"\n[repository.s3]\nsecret_access_key = \"wJalrXUtnFEMI-inline\"\n",
            "repository.s3.secret_access_key",
        ),
        (
            "[repository]\nurl = \"repo\"\n[repositories.off]\nurl = \"s3://b/y\"\n[repositories.off.s3]\naccess_key_id = \"wJalrXUtnFEMI-inline\"\n",
            "repositories.off.s3.access_key_id",
        ),
    ] {
        std::fs::write(p.path().join("backup.toml"), format!("{repo}{GOOD_SOURCE}")).unwrap();
        let o = p.run(&["config", "check"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(key) && err.contains("never written inline"), "{err}");
        assert!(!err.contains("wJalrXUtnFEMI"), "{err}");
    }
    // By reference it is fine.
    std::fs::write(
        p.path().join("backup.toml"),
        format!(
            "[repository]\nurl = \"s3://bucket/x\"\n[repository.s3]\nsecret_access_key = {{ env = \"S3_SECRET\" }}\naccess_key_id = \"${{HOME}}\"\n{GOOD_SOURCE}"
        ),
    )
    .unwrap();
    let o = p.run(&["config", "check"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// With every source disabled there is nothing to test-restore: a usage
/// error, not a silent success.
#[test]
fn test_restore_with_no_enabled_source_is_a_usage_error() {
    let p = Project::new(&format!("{GOOD_SOURCE}enabled = false\n"));
    p.ok(&["init"]);
    let o = p.run(&["test-restore"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nothing to test-restore"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_invocations_exit_2() {
    let p = Project::new(GOOD_SOURCE);
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    p.ok(&["init"]);
    p.backup(&[]);
    let before = dir_size(&p.repo());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["backup", "--source", "nope"], "no source named `nope`"),
        (vec!["backup", "--type", "oracle"], "unknown source type"),
        (vec!["backup", "--tag", "has space"], "invalid tag"),
        (
            vec!["restore", "latest", "--target", "/tmp/x"],
            "--target needs exactly one --source",
        ),
        (vec!["restore", "zzzz"], "not a snapshot id"),
        (vec!["restore", "0000000"], "no snapshot matches"),
        (
            vec!["restore", "latest", "--source", "files", "--path", "../etc"],
            "relative path inside",
        ),
        (vec!["dump", "latest", "files"], "is a file tree"),
        (
            vec!["dump", "latest", "ghost"],
            "no good backup of source `ghost`",
        ),
        (vec!["show", "abcdef0123"], "no snapshot matches"),
        (vec!["frobnicate"], "unrecognized subcommand"),
        (vec!["backup", "--no-such-flag"], "unexpected argument"),
        (vec!["forget"], "no retention rule"),
    ];
    for (args, expect) in cases {
        let o = p.run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(expect),
            "{args:?}: lacks `{expect}`: {}",
            stderr(&o)
        );
    }
    assert_eq!(
        before,
        dir_size(&p.repo()),
        "a bad invocation wrote to the repository"
    );

    // A missing config file is a usage error too.
    let o = std::process::Command::new(bin())
        .args(["-c", "/nonexistent/backup.toml", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read configuration /nonexistent/backup.toml"));
}

#[test]
fn config_is_found_through_the_environment_and_the_current_folder() {
    let p = Project::new(GOOD_SOURCE);
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    // ./backup.toml
    let o = std::process::Command::new(bin())
        .current_dir(p.path())
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // $RESPALDO_CONFIG, from elsewhere: relative paths follow the file.
    let o = std::process::Command::new(bin())
        .current_dir("/")
        .env("RESPALDO_CONFIG", p.path().join("backup.toml"))
        .args(["--json", "init"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(p.repo().join("config").exists());
}

#[test]
fn a_missing_repository_is_exit_code_10() {
    let p = Project::new("[sources.files]\ntype = \"files\"\npaths = [\"data\"]\n");
    for args in [&["snapshots"][..], &["backup"], &["verify"]] {
        let o = p.run(args);
        assert_eq!(o.status.code(), Some(10), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("respaldo init"), "{}", stderr(&o));
    }
}
