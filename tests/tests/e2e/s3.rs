//! Repositories in an S3-compatible object store (moto's server mode): the
//! same backup, verify, restore and prune as on a local directory.

use crate::common;

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

/// A moto server with the bucket `backups`, and a project folder whose
/// `data/NAME` holds `content`.
fn moto_and_data(name: &str, content: &[u8]) -> (Moto, tempfile::TempDir) {
    let moto = Moto::start();
    moto.create_bucket("backups");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data").join(name), content).unwrap();
    (moto, dir)
}

/// Restores the latest backup of the source `data` into `out` and asserts
/// that it is identical to the project's `data` folder.
fn restores_identically(dir: &std::path::Path, out: &std::path::Path) {
    ok(
        dir,
        &[
            "restore",
            "latest",
            "--source",
            "data",
            "--target",
            out.to_str().unwrap(),
        ],
    );
    assert_same_tree(&dir.join("data"), &out.join("data"));
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
    restores_identically(dir.path(), &out);
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
    restores_identically(dir.path(), &out2);
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

fn json(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(dir, &a)).unwrap()
}

fn s3_repo(url: &str, endpoint: &str, extra_s3: &str) -> String {
    format!("url = \"{url}\"\n\n[repository.s3]\nendpoint = \"{endpoint}\"\n{extra_s3}\n")
}

const FILES_SOURCE: &str = "\n[sources.data]\ntype = \"files\"\npaths = [\"data\"]\n";

/// An encrypted repository copied local → S3 → local restores identically;
/// copying again sends nothing.
#[test]
fn copy_local_to_s3_to_local() {
    let moto = Moto::start();
    moto.create_bucket("offsite");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("big.bin"), common::random_bytes(3, 24 << 20)).unwrap();
    std::fs::write(data.join("sub/a.txt"), b"first").unwrap();
    let recipient = ok(d, &["key", "generate", "--output", "id.key"]);
    let keys = format!(
        "recipients = [\"{}\"]\nidentity_file = \"id.key\"\n",
        recipient.trim()
    );
    let offsite = format!(
        "[repositories.offsite]\nurl = \"s3://offsite/shop\"\n\n[repositories.offsite.s3]\nendpoint = \"{}\"\n",
        moto.endpoint()
    );
    std::fs::write(
        d.join("backup.toml"),
        format!("[repository]\nurl = \"repo\"\n{keys}\n{offsite}{FILES_SOURCE}"),
    )
    .unwrap();
    ok(d, &["init"]);
    ok(d, &["backup"]);
    std::fs::write(data.join("sub/a.txt"), b"second").unwrap();
    ok(d, &["backup"]);
    ok(d, &["init", "--repository", "offsite"]);
    let first = json(d, &["copy", "--to", "offsite"]);
    assert_eq!(first["copied"].as_array().unwrap().len(), 2, "{first}");
    assert!(first["chunks_copied"].as_u64().unwrap() > 0);
    let again = json(d, &["copy", "--to", "offsite"]);
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["already_present"], 2);
    assert_eq!(again["chunks_copied"], 0);

    // Now from S3 to a second local repository, then restore from it.
    std::fs::write(
        d.join("backup.toml"),
        format!(
            "[repository]\n{keys}{}\n[repositories.back]\nurl = \"back\"\n{FILES_SOURCE}",
            s3_repo("s3://offsite/shop", &moto.endpoint(), "")
        ),
    )
    .unwrap();
    ok(d, &["verify", "--read-data"]);
    ok(d, &["init", "--repository", "back"]);
    let back = json(d, &["copy", "--to", "back", "latest"]);
    assert_eq!(back["copied"].as_array().unwrap().len(), 1, "{back}");
    std::fs::write(
        d.join("backup.toml"),
        format!("[repository]\nurl = \"back\"\n{keys}{FILES_SOURCE}"),
    )
    .unwrap();
    ok(d, &["verify", "--read-data"]);
    let out = d.join("out");
    restores_identically(d, &out);
}

/// Writes a project whose repository is reached through `endpoint`.
fn project_via(d: &std::path::Path, endpoint: &str, extra_s3: &str) {
    std::fs::write(
        d.join("backup.toml"),
        format!(
            "[repository]\n{}{FILES_SOURCE}",
            s3_repo("s3://backups/repo", endpoint, extra_s3)
        ),
    )
    .unwrap();
}

fn snapshot_count(d: &std::path::Path) -> usize {
    json(d, &["snapshots"]).as_array().unwrap().len()
}

/// 500s, 503s, a connection dropped mid-upload and a hung request on the way
/// to S3: the backup retries and completes.
#[test]
fn backup_survives_s3_faults() {
    use respaldo_testing::s3proxy::{FaultProxy, HttpFault};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    let (moto, dir) = moto_and_data("big.bin", &common::random_bytes(5, 40 << 20));
    let d = dir.path();
    project_via(d, &moto.endpoint(), "");
    ok(d, &["init"]);

    let uploads = Arc::new(AtomicU64::new(0));
    let proxy = FaultProxy::start(moto.port, {
        let uploads = uploads.clone();
        move |r| {
            if r.method != "PUT" && r.method != "POST" {
                return HttpFault::Pass;
            }
            match uploads.fetch_add(1, Ordering::SeqCst) {
                1 => HttpFault::Status(500),
                3 => HttpFault::DropMidBody,
                5 => HttpFault::Status(503),
                7 => HttpFault::Hang(Duration::from_secs(4)),
                _ => HttpFault::Pass,
            }
        }
    });
    project_via(d, &proxy.endpoint(), "timeout_secs = 2\n");
    ok(d, &["backup"]);
    assert_eq!(proxy.faults_injected(), 4);
    project_via(d, &moto.endpoint(), "");
    ok(d, &["verify", "--read-data"]);
    let out = d.join("out");
    restores_identically(d, &out);
}

/// When S3 keeps failing, the backup fails with exit 1 and writes no
/// snapshot; the repository stays sound and the earlier snapshot restores.
#[test]
fn persistent_s3_failure_leaves_no_snapshot() {
    use respaldo_testing::s3proxy::{FaultProxy, HttpFault};

    let (moto, dir) = moto_and_data("a.bin", &common::random_bytes(8, 3 << 20));
    let d = dir.path();
    project_via(d, &moto.endpoint(), "");
    ok(d, &["init"]);
    ok(d, &["backup"]);
    std::fs::write(d.join("data/b.bin"), common::random_bytes(9, 20 << 20)).unwrap();
    let proxy = FaultProxy::start(moto.port, |r| {
        if r.target.contains("/packs/") && (r.method == "PUT" || r.method == "POST") {
            HttpFault::Status(500)
        } else {
            HttpFault::Pass
        }
    });
    project_via(d, &proxy.endpoint(), "max_retries = 2\n");
    let o = run(d, &["backup"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("s3://backups/repo"), "{}", stderr(&o));
    assert!(proxy.faults_injected() >= 3);
    project_via(d, &moto.endpoint(), "");
    assert_eq!(snapshot_count(d), 1);
    ok(d, &["verify", "--read-data"]);
    let out = d.join("out");
    ok(
        d,
        &[
            "restore",
            "latest",
            "--source",
            "data",
            "--target",
            out.to_str().unwrap(),
        ],
    );
    assert!(out.join("data/a.bin").exists() && !out.join("data/b.bin").exists());
}

/// A writer whose credentials may not delete (append-only bucket) backs up
/// and copies; forget fails clearly there and works where delete is allowed.
#[test]
fn append_only_writer() {
    use respaldo_testing::s3proxy::{FaultProxy, HttpFault};

    let (moto, dir) = moto_and_data("a.txt", b"one");
    let d = dir.path();
    let proxy = FaultProxy::start(moto.port, |r| {
        if r.method == "DELETE" || (r.method == "POST" && r.target.contains("?delete")) {
            HttpFault::Status(403)
        } else {
            HttpFault::Pass
        }
    });
    project_via(d, &proxy.endpoint(), "");
    ok(d, &["init"]);
    ok(d, &["backup"]);
    std::fs::write(d.join("data/a.txt"), b"two").unwrap();
    ok(d, &["backup"]);
    assert!(
        proxy.faults_injected() >= 2,
        "lock deletes were attempted and denied"
    );
    assert_eq!(snapshot_count(d), 2);
    std::fs::write(
        d.join("backup.toml"),
        std::fs::read_to_string(d.join("backup.toml")).unwrap() + "\n[retention]\nkeep_last = 1\n",
    )
    .unwrap();
    let o = run(d, &["forget"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("403") || stderr(&o).contains("AccessDenied"),
        "{}",
        stderr(&o)
    );
    // Where delete is allowed: forget and prune, which also clears the
    // released locks the writer left.
    let direct = std::fs::read_to_string(d.join("backup.toml"))
        .unwrap()
        .replace(&proxy.endpoint(), &moto.endpoint());
    std::fs::write(d.join("backup.toml"), direct).unwrap();
    ok(d, &["forget", "--prune"]);
    assert_eq!(snapshot_count(d), 1);
    ok(d, &["verify", "--read-data"]);

    // `copy` into an append-only repository: a local repository copies its
    // snapshots to a second prefix reached through the delete-denying proxy.
    let denied_before = proxy.faults_injected();
    std::fs::write(
        d.join("backup.toml"),
        format!(
            "[repository]\nurl = \"local\"\n\n[repositories.offsite]\nurl = \"s3://backups/offsite\"\n\n\
             [repositories.offsite.s3]\nendpoint = \"{}\"\n{FILES_SOURCE}",
            proxy.endpoint()
        ),
    )
    .unwrap();
    ok(d, &["init"]);
    ok(d, &["backup"]);
    ok(d, &["init", "--repository", "offsite"]);
    let copied = json(d, &["copy", "--to", "offsite"]);
    assert_eq!(copied["copied"].as_array().unwrap().len(), 1, "{copied}");
    assert!(
        proxy.faults_injected() > denied_before,
        "the copy's lock delete was attempted and denied"
    );
    let again = json(d, &["copy", "--to", "offsite"]);
    assert_eq!(again["chunks_copied"], 0, "{again}");
}

/// A 2 GiB stream uploads to S3 with bounded memory.
#[test]
fn two_gib_upload_has_bounded_memory() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("backup.toml"),
        format!(
            "[repository]\n{}\n[sources.big]\ntype = \"command\"\n\
             command = [\"head\", \"-c\", \"2147483648\", \"/dev/urandom\"]\nartifact = \"big.bin\"\n",
            s3_repo("s3://backups/big", &moto.endpoint(), "")
        ),
    )
    .unwrap();
    ok(d, &["init"]);
    let (o, peak_kib) = common::run_with_peak_rss(
        Command::new(common::bin())
            .current_dir(d)
            .args(["-c", "backup.toml", "--json", "backup"])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b["sources"]["big"]["bytes_total"], 2147483648u64);
    eprintln!("peak RSS of a 2 GiB upload: {} MiB", peak_kib / 1024);
    assert!(peak_kib > 0, "no RSS sample");
    assert!(
        peak_kib < 256 * 1024,
        "peak RSS {} MiB for a 2 GiB upload",
        peak_kib / 1024
    );
}

/// Keys from a named profile of the AWS shared credentials file: `profile`
/// in the configuration, or `$AWS_PROFILE`; the requests are signed with
/// that profile's access key, and its region comes from the config file.
#[test]
fn credentials_from_an_aws_profile() {
    use respaldo_testing::s3proxy::{FaultProxy, HttpFault};
    use std::sync::{Arc, Mutex};

    let moto = Moto::start();
    moto.create_bucket("backups");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let proxy = {
        let seen = seen.clone();
        FaultProxy::start(moto.port, move |r| {
            seen.lock()
                .unwrap()
                .push(r.authorization.clone().unwrap_or_default());
            HttpFault::Pass
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::write(d.join("data/a.txt"), b"profile").unwrap();
    std::fs::write(
        d.join("credentials"),
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = SECRETDEFAULTKEY\n\n\
         [backup-writer]\naws_access_key_id = AKIDWRITER\naws_secret_access_key = SECRETWRITERKEY\n",
    )
    .unwrap();
    std::fs::write(
        d.join("config"),
        "[profile backup-writer]\nregion = eu-west-3\n",
    )
    .unwrap();
    let run_with = |args: &[&str], env: &[(&str, &str)]| {
        Command::new(common::bin())
            .current_dir(d)
            .args(["-c", "backup.toml"])
            .args(args)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env("AWS_SHARED_CREDENTIALS_FILE", d.join("credentials"))
            .env("AWS_CONFIG_FILE", d.join("config"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let signed_by = |key: &str| {
        let mut s = seen.lock().unwrap();
        let all = std::mem::take(&mut *s);
        assert!(!all.is_empty());
        for a in &all {
            assert!(a.contains(&format!("Credential={key}/")), "{a}");
        }
        all
    };

    // `profile` in the configuration, region from the config file.
    project_via(d, &proxy.endpoint(), "profile = \"backup-writer\"\n");
    let o = run_with(&["init"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_with(&["backup"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let auth = signed_by("AKIDWRITER");
    assert!(
        auth.iter().all(|a| a.contains("/eu-west-3/s3/")),
        "{auth:?}"
    );

    // Without `profile`: $AWS_PROFILE, else the `default` profile.
    project_via(d, &proxy.endpoint(), "");
    let o = run_with(&["snapshots"], &[("AWS_PROFILE", "backup-writer")]);
    assert!(o.status.success(), "{}", stderr(&o));
    signed_by("AKIDWRITER");
    let o = run_with(&["snapshots"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let auth = signed_by("AKIDDEFAULT");
    assert!(
        auth.iter().all(|a| a.contains("/us-east-1/s3/")),
        "{auth:?}"
    );

    // A profile that does not exist is a clear error, and no secret is shown.
    project_via(d, &proxy.endpoint(), "profile = \"nobody\"\n");
    let o = run_with(&["snapshots"], &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("AWS profile `nobody` not found"), "{err}");
    assert!(
        !err.contains("SECRETDEFAULTKEY") && !err.contains("SECRETWRITERKEY"),
        "{err}"
    );
}

/// Adds `n` copies of the repository's newest snapshot (one second apart)
/// through the library: a repository with many snapshots in seconds.
fn add_snapshots(endpoint: &str, url: &str, n: usize) {
    use respaldo_core::Repository;
    use respaldo_sink_object_store::{ObjectStoreSink, S3Options};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use respaldo_core::kit::secret::Secret;
        let options = S3Options {
            endpoint: Some(endpoint.to_string()),
            access_key_id: Some(Secret::Value("testing".into())),
            secret_access_key: Some(Secret::Value("testing".into())),
            ..Default::default()
        };
        let sink = ObjectStoreSink::connect(url, &options).await.unwrap();
        let repo = Repository::open(std::sync::Arc::new(sink)).await.unwrap();
        let (list, _) = repo.snapshots().await.unwrap();
        let newest = list[0].snapshot.clone();
        for i in 1..=n {
            let mut s = newest.clone();
            s.time -= chrono::TimeDelta::seconds(i as i64);
            repo.write_snapshot(&s).await.unwrap();
        }
    });
}

/// A second `snapshots` against an S3 repository of 1,000 snapshots
/// downloads no snapshot or index object again; a damaged cache entry is
/// noticed and fetched again; `RESPALDO_CACHE_DIR=off` goes without.
#[test]
fn the_local_cache_downloads_snapshots_and_index_once() {
    use respaldo_testing::s3proxy::{FaultProxy, HttpFault};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let (moto, dir) = moto_and_data("a.txt", b"cached");
    let d = dir.path();
    let gets = Arc::new(AtomicU64::new(0));
    let proxy = FaultProxy::start(moto.port, {
        let gets = gets.clone();
        move |r| {
            if r.method == "GET"
                && (r.target.contains("/snapshots/") || r.target.contains("/index/"))
            {
                gets.fetch_add(1, Ordering::SeqCst);
            }
            HttpFault::Pass
        }
    });
    std::fs::write(
        d.join("backup.toml"),
        format!(
            "[repository]\n{}\n[retention]\nkeep_last = 10\n{FILES_SOURCE}",
            s3_repo("s3://backups/many", &proxy.endpoint(), "")
        ),
    )
    .unwrap();
    let cache = d.join("cache");
    let with_cache = |args: &[&str]| {
        let o = Command::new(common::bin())
            .current_dir(d)
            .args(["-c", "backup.toml"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("RESPALDO_CACHE_DIR", &cache)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    with_cache(&["init"]);
    with_cache(&["backup"]);
    add_snapshots(&moto.endpoint(), "s3://backups/many", 999);

    gets.store(0, Ordering::SeqCst);
    let first = with_cache(&["--json", "snapshots"]);
    let listed: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1000);
    // The backup's own snapshot was cached when it was written.
    let downloaded = gets.load(Ordering::SeqCst);
    assert!(
        downloaded >= 999,
        "the first listing downloaded {downloaded}"
    );

    gets.store(0, Ordering::SeqCst);
    assert_eq!(with_cache(&["--json", "snapshots"]), first);
    assert_eq!(
        gets.load(Ordering::SeqCst),
        0,
        "the second listing downloaded objects again"
    );

    // A damaged entry is found by its name and fetched again.
    let cached: Vec<std::path::PathBuf> = common::walk(&cache)
        .into_iter()
        .filter(|p| p.is_file() && p.to_string_lossy().contains("/snapshots/"))
        .collect();
    assert_eq!(cached.len(), 1000);
    std::fs::write(&cached[0], b"not the snapshot").unwrap();
    gets.store(0, Ordering::SeqCst);
    assert_eq!(with_cache(&["--json", "snapshots"]), first);
    assert_eq!(gets.load(Ordering::SeqCst), 1);

    // Forgotten snapshots leave the cache at the next listing.
    with_cache(&["forget"]);
    with_cache(&["snapshots"]);
    let left = common::walk(&cache)
        .into_iter()
        .filter(|p| p.is_file() && p.to_string_lossy().contains("/snapshots/"))
        .count();
    assert_eq!(left, 10);
}

/// Three hosts back up to one bucket while a fourth runs `forget --prune
/// --host '*'` in a loop: every command succeeds (prune never stops a
/// backup), each host's `latest` is its own, each keeps exactly its
/// retention, and `verify --read-data` passes at the end.
#[test]
fn three_hosts_back_up_while_a_fourth_prunes_in_a_loop() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    let root = tempfile::tempdir().unwrap();
    let project = |host: &str| -> std::path::PathBuf {
        let d = root.path().join(host);
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::write(
            d.join("backup.toml"),
            format!(
                "[repository]\n{}\n[backup]\nhost = \"{host}\"\n\n[retention]\nkeep_last = 2\n{FILES_SOURCE}",
                s3_repo("s3://backups/shared", &moto.endpoint(), "")
            ),
        )
        .unwrap();
        d
    };
    let hosts = ["web-1", "web-2", "worker"];
    let pruner = project("maintenance");
    ok(&pruner, &["init"]);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prunes = std::thread::spawn({
        let done = done.clone();
        let pruner = pruner.clone();
        move || {
            let (mut n, mut waited) = (0, 0);
            while !done.load(std::sync::atomic::Ordering::SeqCst) || n == 0 {
                let r = json(&pruner, &["--host", "*", "forget", "--prune"]);
                n += 1;
                waited += (r["packs_waiting"].as_u64().unwrap() > 0) as usize;
            }
            (n, waited)
        }
    });
    let backups: Vec<_> = hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let d = project(host);
            let host = host.to_string();
            std::thread::spawn(move || {
                for round in 0..6u64 {
                    let data = d.join("data");
                    std::fs::write(data.join("f"), format!("{host} {round}")).unwrap();
                    let big = common::random_bytes(i as u64 * 100 + round, 12 << 20);
                    std::fs::write(data.join("big.bin"), big).unwrap();
                    let v = json(&d, &["backup"]);
                    assert_eq!(v["host"], host.as_str(), "{v}");
                }
                d
            })
        })
        .collect();
    let dirs: Vec<std::path::PathBuf> = backups.into_iter().map(|t| t.join().unwrap()).collect();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (loops, waited) = prunes.join().unwrap();
    eprintln!("{loops} prune(s) beside the backups, {waited} left packs waiting for a backup");
    // A last pass once every backup is in, then the checks.
    let last = json(&pruner, &["--host", "*", "forget", "--prune"]);
    let again = json(&pruner, &["prune"]);
    assert_eq!(again["packs_waiting"], 0, "{last} {again}");
    for (d, host) in dirs.iter().zip(hosts) {
        let mine = json(d, &["snapshots"]);
        let mine = mine.as_array().unwrap();
        assert_eq!(mine.len(), 2, "{host}: {mine:?}");
        assert!(mine.iter().all(|s| s["host"] == host), "{mine:?}");
        let out = d.join("out");
        restores_identically(d, &out);
        assert_eq!(
            std::fs::read_to_string(out.join("data/f")).unwrap(),
            format!("{host} 5")
        );
    }
    let all = json(&pruner, &["--host", "*", "snapshots"]);
    assert_eq!(all.as_array().unwrap().len(), 6, "{all}");
    ok(&pruner, &["--host", "*", "verify", "--read-data"]);
}

/// A restore from an object store reads packs in coalesced ranged requests,
/// several in flight, not one request per chunk: 3,000 small files and a
/// file of several chunks come back identical in far fewer pack reads than
/// chunks; restoring one small file reads one range.
#[test]
fn a_restore_reads_packs_in_few_ranged_requests() {
    use respaldo_testing::data::{random_bytes, text_bytes};
    use respaldo_testing::s3proxy::{FaultProxy, HttpFault};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let moto = Moto::start();
    moto.create_bucket("backups");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    const SMALL: u64 = 3_000;
    for i in 0..SMALL {
        let sub = d.join("data").join(format!("d{:02}", i % 30));
        std::fs::create_dir_all(&sub).unwrap();
        let len = 1024 + (i as usize * 37) % 3072;
        std::fs::write(sub.join(format!("f{i}.txt")), text_bytes(i, len)).unwrap();
    }
    std::fs::write(d.join("data/big.bin"), random_bytes(7, 24 << 20)).unwrap();
    let pack_gets = Arc::new(AtomicU64::new(0));
    let proxy = FaultProxy::start(moto.port, {
        let pack_gets = pack_gets.clone();
        move |r| {
            if r.method == "GET" && r.target.contains("/packs/") {
                pack_gets.fetch_add(1, Ordering::SeqCst);
            }
            HttpFault::Pass
        }
    });
    project_via(d, &proxy.endpoint(), "");
    ok(d, &["init"]);
    ok(d, &["backup"]);

    pack_gets.store(0, Ordering::SeqCst);
    let out = d.join("out");
    restores_identically(d, &out);
    let reads = pack_gets.load(Ordering::SeqCst);
    // At most 8 MiB a request: a few for the big file, one or two for the
    // 7 MiB of small files, and the listing.
    assert!(
        reads <= 40,
        "restoring {SMALL} small files and a 24 MiB file took {reads} pack reads"
    );

    pack_gets.store(0, Ordering::SeqCst);
    let one = d.join("one");
    ok(
        d,
        &[
            "restore",
            "latest",
            "--source",
            "data",
            "--path",
            "data/d07/f1507.txt",
            "--target",
            one.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read(one.join("data/d07/f1507.txt")).unwrap(),
        std::fs::read(d.join("data/d07/f1507.txt")).unwrap()
    );
    // The listing (a few chunks, read by the path check and by the
    // restore) and the one file: nothing of the 3,000 others.
    let reads = pack_gets.load(Ordering::SeqCst);
    assert!(
        reads <= 12,
        "restoring one small file took {reads} pack reads"
    );
}
