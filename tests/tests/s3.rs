//! Repositories in an S3-compatible object store (moto's server mode): the
//! same backup, verify, restore and prune as on a local directory.

mod common;

use std::process::{Command, Output, Stdio};

use common::{assert_same_tree, stderr};
use respaldo_testing::moto::Moto;

fn run(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(common::bin())
        .current_dir(dir)
        .args(["-c", "backup.toml"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(dir: &std::path::Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn files_round_trip_through_s3() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("big.bin"), common::random_bytes(7, 20 << 20)).unwrap();
    std::fs::write(data.join("sub/small.txt"), b"hello s3").unwrap();
    std::fs::write(
        dir.path().join("backup.toml"),
        format!(
            "[repository]\nurl = \"s3://backups/team/shop\"\n\n[repository.s3]\nendpoint = \"{}\"\n\n\
             [sources.data]\ntype = \"files\"\npaths = [\"data\"]\n",
            moto.endpoint()
        ),
    )
    .unwrap();
    ok(dir.path(), &["init"]);
    let b: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["--json", "backup"])).unwrap();
    let first = b["id"].as_str().unwrap().to_string();
    std::fs::write(data.join("sub/small.txt"), b"changed").unwrap();
    ok(dir.path(), &["backup"]);
    ok(dir.path(), &["verify", "--read-data"]);
    let out = dir.path().join("out");
    ok(
        dir.path(),
        &[
            "restore",
            "latest",
            "--source",
            "data",
            "--target",
            out.to_str().unwrap(),
        ],
    );
    assert_same_tree(&data, &out.join("data"));
    // Forget the first snapshot and prune: the rest still restores.
    std::fs::write(
        dir.path().join("backup.toml"),
        std::fs::read_to_string(dir.path().join("backup.toml")).unwrap()
            + "\n[retention]\nkeep_last = 1\n",
    )
    .unwrap();
    ok(dir.path(), &["forget", "--prune"]);
    let snaps: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["--json", "snapshots"])).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_ne!(snaps[0]["id"].as_str().unwrap(), first);
    ok(dir.path(), &["verify", "--read-data"]);
    let out2 = dir.path().join("out2");
    ok(
        dir.path(),
        &[
            "restore",
            "latest",
            "--source",
            "data",
            "--target",
            out2.to_str().unwrap(),
        ],
    );
    assert_same_tree(&data, &out2.join("data"));
}

#[test]
fn unreachable_store_is_a_clear_failure() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("backup.toml"),
        format!(
            "[repository]\nurl = \"s3://nowhere/repo\"\n\n[repository.s3]\nendpoint = \"http://127.0.0.1:{port}\"\nmax_retries = 1\n\n\
             [sources.data]\ntype = \"files\"\npaths = [\".\"]\n"
        ),
    )
    .unwrap();
    let o = run(dir.path(), &["snapshots"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("s3://nowhere/repo"), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("testing"),
        "credentials leaked: {}",
        stderr(&o)
    );
}
