//! The redis source against real redis-server instances: every type round
//! trips (DEBUG DIGEST equal) live into a second server and into the flushed
//! original, over the dump file and over replication; failures are clear and
//! leave no good snapshot; restores into data refuse without --force.

use crate::common;
use respaldo_testing::servers::redis as redis_server;

use common::*;
use redis_server::{free_port, populate, Redis, TestCerts};

fn source(url: &str, extra: &str) -> String {
    format!("[sources.cache]\ntype = \"redis\"\nurl = \"{url}\"\n{extra}\n")
}

/// Runs and asserts success; returns stdout and stderr (reports go to stderr).
fn ok_all(p: &Project, args: &[&str]) -> String {
    let o = p.run(args);
    let text = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
    assert!(o.status.success(), "respaldo {args:?} failed: {text}");
    text
}

fn failed(p: &Project) -> (String, serde_json::Value) {
    let o = p.run(&["--json", "backup"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(b["sources"]["cache"]["status"], "failed", "{b}");
    assert!(
        b["id"].is_null(),
        "no snapshot when the only source failed: {b}"
    );
    (
        b["sources"]["cache"]["error"].as_str().unwrap().to_string(),
        b,
    )
}

#[test]
fn every_type_round_trips_live_into_another_server_and_the_flushed_original() {
    let a = Redis::start(None);
    let counts = populate(&a);
    let digest = a.digest();
    let p = Project::new(&source(&a.url(), ""));
    p.ok(&["init"]);
    p.backup(&[]);
    let b = p.json(&["show", "latest"]);
    let meta = &b["sources"]["cache"]["metadata"];
    assert_eq!(b["sources"]["cache"]["status"], "ok", "{b}");
    assert!(
        meta["transfer"].as_str().unwrap().starts_with("file "),
        "{meta}"
    );
    assert_eq!(
        meta["redis_version"].as_str().unwrap().split('.').next(),
        Some("7")
    );
    for (db, n) in counts {
        assert_eq!(meta["keys"][format!("db{db}")], n, "{meta}");
    }

    // Into a second, empty server.
    let other = Redis::start(None);
    let out = ok_all(
        &p,
        &[
            "restore",
            "latest",
            "--source",
            "cache",
            "--target",
            &other.url(),
        ],
    );
    assert!(
        out.contains("key counts match (3 databases, 175 in all)"),
        "{out}"
    );
    assert!(out.contains("restored 1 function libraries"), "{out}");
    assert_eq!(other.digest(), digest);
    assert_eq!(other.cli(&["FCALL", "one", "0"]), "1");
    let ttl: i64 = other.cli(&["TTL", "ttl:ex"]).parse().unwrap();
    assert!((3500..=3600).contains(&ttl), "{ttl}");

    // Into data without --force: refused, nothing changed.
    other.cli(&["-n", "1", "SET", "session:1", "changed"]);
    other.cli(&["SET", "extra", "1"]);
    let changed = other.digest();
    let o = p.run(&[
        "restore",
        "latest",
        "--source",
        "cache",
        "--target",
        &other.url(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("is not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(other.digest(), changed, "a refused restore changes nothing");
    // With --force it is replaced by the snapshot.
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "cache",
        "--target",
        &other.url(),
        "--force",
    ]);
    assert_eq!(other.digest(), digest);

    // `dump` gives a valid RDB file.
    let dumped = p.path().join("dump.rdb");
    let o = std::process::Command::new(bin())
        .current_dir(p.path())
        .args(["-c", "backup.toml", "dump", "latest", "cache/dump.rdb"])
        .stdout(std::fs::File::create(&dumped).unwrap())
        .status()
        .unwrap();
    assert!(o.success());
    let check = std::process::Command::new("redis-check-rdb")
        .arg(&dumped)
        .output()
        .expect("redis-check-rdb (redis-tools)");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && text.contains("RDB looks OK"),
        "{text}"
    );

    // Into the flushed original (live, the configured server).
    a.cli(&["FLUSHALL"]);
    a.cli(&["FUNCTION", "FLUSH"]);
    let out = ok_all(&p, &["restore", "latest", "--source", "cache"]);
    assert!(out.contains("key counts match"), "{out}");
    assert_eq!(a.digest(), digest);

    // test-restore: a throwaway server, counts checked.
    let out = ok_all(&p, &["test-restore"]);
    assert!(
        out.contains("key counts match (3 databases, 175 in all)"),
        "{out}"
    );
    assert!(out.contains("throwaway redis-server stopped"), "{out}");
}

#[test]
fn replication_transfer_with_password_and_key_filter() {
    let a = Redis::start(Some("s3cret pass"));
    populate(&a);
    let digest = a.digest();
    let p = Project::new(&source(
        &a.url(),
        "transfer = \"replication\"\nbatch = 7\npassword = { env = \"TEST_REDIS_PW\" }",
    ));
    p.ok(&["init"]);
    // A backup with the password in the environment.
    let backup = || {
        let o = std::process::Command::new(bin())
            .current_dir(p.path())
            .env("TEST_REDIS_PW", "s3cret pass")
            .args(["-c", "backup.toml", "--json", "backup"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    let o = backup();
    let b = p.json(&["show", "latest"]);
    assert_eq!(
        b["sources"]["cache"]["metadata"]["transfer"],
        "replication (SYNC, diskless)"
    );
    let text = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
    assert!(!text.contains("s3cret"), "password printed: {text}");
    // A server that saves the snapshot to disk first sends its length
    // instead of an end mark: the same keys either way.
    a.cli(&["CONFIG", "SET", "repl-diskless-sync", "no"]);
    backup();
    let disk = p.json(&["show", "latest"]);
    assert_eq!(
        disk["sources"]["cache"]["metadata"]["transfer"],
        "replication (SYNC)"
    );
    assert_eq!(
        disk["sources"]["cache"]["metadata"]["keys"],
        b["sources"]["cache"]["metadata"]["keys"]
    );

    let other = Redis::start(Some("other pw"));
    // A wrong password in the target is an authentication error naming the
    // server only; the URL's password is percent-decoded.
    let target = format!("redis://:nope@127.0.0.1:{}", other.port);
    let o = p.run(&[
        "restore", "latest", "--source", "cache", "--target", &target,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("authentication") && !err.contains("nope"),
        "{err}"
    );
    let target = format!("redis://:other%20pw@127.0.0.1:{}", other.port);
    p.ok(&[
        "restore", "latest", "--source", "cache", "--target", &target,
    ]);
    assert_eq!(other.digest(), digest);

    // --keys: only matching keys, in every db.
    let third = Redis::start(None);
    let out = ok_all(
        &p,
        &[
            "restore",
            "latest",
            "--source",
            "cache",
            "--target",
            &third.url(),
            "--keys",
            "session:*",
        ],
    );
    assert!(
        out.contains("key counts match (2 databases, 101 in all)"),
        "{out}"
    );
    assert_eq!(third.dbsize(0), 0);
    assert_eq!(third.dbsize(1), 100);
    assert_eq!(third.dbsize(5), 1);
    assert_eq!(third.cli(&["-n", "1", "GET", "session:7"]), "user 7");
    assert_eq!(
        third.cli(&["FUNCTION", "LIST"]),
        "",
        "a partial restore leaves functions"
    );

    // /N in the target: only that database.
    let fourth = Redis::start(None);
    let target = format!("{}/5", fourth.url());
    let out = ok_all(
        &p,
        &[
            "restore", "latest", "--source", "cache", "--target", &target,
        ],
    );
    assert!(
        out.contains("key counts match (1 databases, 2 in all)"),
        "{out}"
    );
    assert_eq!(
        (fourth.dbsize(0), fourth.dbsize(1), fourth.dbsize(5)),
        (0, 0, 2)
    );
}

#[test]
fn wrong_password_unreachable_and_failing_bgsave_leave_no_good_snapshot() {
    let a = Redis::start(Some("right"));
    a.cli(&["SET", "k", "v"]);
    let p = Project::new(&source(&a.url(), "password = \"wrong\""));
    p.ok(&["init"]);
    let (err, b) = failed(&p);
    assert!(
        err.contains("authentication to redis://127.0.0.1") && err.contains("WRONGPASS"),
        "{err}"
    );
    assert!(!b.to_string().contains("wrong\""), "{b}");

    let port = free_port();
    p.write_config(&source(&format!("redis://127.0.0.1:{port}"), ""));
    let (err, _) = failed(&p);
    assert!(
        err.contains(&format!("cannot connect to redis://127.0.0.1:{port}")),
        "{err}"
    );

    // The server's dir disappears: BGSAVE fails.
    let c = Redis::start(None);
    c.cli(&["SET", "k", "v"]);
    let gone = c.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    c.cli(&["CONFIG", "SET", "dir", gone.to_str().unwrap()]);
    std::fs::remove_dir(&gone).unwrap();
    p.write_config(&source(&c.url(), ""));
    let (err, _) = failed(&p);
    assert!(
        err.contains("BGSAVE on redis://127.0.0.1") && err.contains("rdb_last_bgsave_status:err"),
        "{err}"
    );
    let list = p.json(&["snapshots"]);
    assert_eq!(list.as_array().unwrap().len(), 0, "{list}");
}

/// Shuts the server on `port` down when dropped (a daemonized one too).
struct Shutdown(u16);

impl Drop for Shutdown {
    fn drop(&mut self) {
        let _ = std::process::Command::new("redis-cli")
            .args(["-p", &self.0.to_string(), "SHUTDOWN", "NOSAVE"])
            .output();
    }
}

#[test]
fn file_mode_restore_stops_places_the_rdb_and_restarts() {
    let a = Redis::start(None);
    let _guard = Shutdown(a.port);
    populate(&a);
    let digest = a.digest();
    let port = a.port.to_string();
    let dir = a.path().to_str().unwrap().to_string();
    let toml = |extra: &str| {
        source(
            &a.url(),
            &format!(
                "[sources.cache.file_restore]\nstop = [\"redis-cli\", \"-p\", \"{port}\", \"SHUTDOWN\", \"NOSAVE\"]\n\
                 start = [\"redis-server\", \"--port\", \"{port}\", \"--bind\", \"127.0.0.1\", \"--dir\", \"{dir}\", \
                 \"--daemonize\", \"yes\", \"--save\", \"\", \"--enable-debug-command\", \"yes\", \
                 \"--logfile\", \"{dir}/log2\"]\n{extra}"
            ),
        )
    };
    let p = Project::new(&toml(""));
    p.ok(&["init"]);
    p.backup(&[]);
    a.cli(&["SET", "after", "backup"]);

    // Not empty: refused without --force.
    let o = p.run(&["restore", "latest", "--source", "cache"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not empty"), "{}", stderr(&o));
    // appendonly: refused with a clear message, nothing changed.
    a.cli(&["CONFIG", "SET", "appendonly", "yes"]);
    let o = p.run(&[
        "restore",
        "latest",
        "--source",
        "cache",
        "--force",
        "--no-safety-snapshot",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("appendonly yes"), "{}", stderr(&o));
    assert_eq!(a.cli(&["GET", "after"]), "backup");
    a.cli(&["CONFIG", "SET", "appendonly", "no"]);

    let out = ok_all(&p, &["restore", "latest", "--source", "cache", "--force"]);
    assert!(out.contains("restarted the server"), "{out}");
    assert!(
        out.contains("key counts match (3 databases, 175 in all)"),
        "{out}"
    );
    assert_eq!(a.digest(), digest);
}

#[test]
fn the_example_config_parses() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/redis/backup.toml");
    let o = std::process::Command::new(bin())
        .args(["-c", path.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("cache"));
}

#[test]
fn tls_backup_over_replication_and_file_restore_and_test_restore() {
    let certs = TestCerts::new();
    let a = Redis::start_tls(&certs);
    let counts = populate(&a);
    let digest = a.digest();
    let tls = |ca: &str| {
        format!(
            "tls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            certs.path(ca).display(),
            certs.path("client.crt").display(),
            certs.path("client.key").display()
        )
    };
    let url = format!("rediss://localhost:{}", a.tls_port.unwrap());
    let p = Project::new(&source(
        &url,
        &format!("transfer = \"replication\"\n{}", tls("ca.crt")),
    ));
    p.ok(&["init"]);
    let b = p.backup(&[]);
    assert_eq!(b["sources"]["cache"]["status"], "ok", "{b}");
    let meta = &p.json(&["show", "latest"])["sources"]["cache"]["metadata"];
    assert_eq!(meta["transfer"], "replication (SYNC, diskless)", "{meta}");
    for (db, n) in counts {
        assert_eq!(meta["keys"][format!("db{db}")], n, "{meta}");
    }

    // BGSAVE and the dump file, with the commands over TLS (an IP address
    // this time: the certificate carries 127.0.0.1 too).
    p.write_config(&source(
        &format!("rediss://127.0.0.1:{}", a.tls_port.unwrap()),
        &format!("transfer = \"file\"\n{}", tls("ca.crt")),
    ));
    let b = p.backup(&[]);
    assert_eq!(b["sources"]["cache"]["status"], "ok", "{b}");

    // Live restore into another TLS server: identical.
    let other = Redis::start_tls(&certs);
    let target = format!("rediss://localhost:{}", other.tls_port.unwrap());
    let out = ok_all(
        &p,
        &[
            "restore", "latest", "--source", "cache", "--target", &target,
        ],
    );
    assert!(out.contains(&format!("into {target}")), "{out}");
    assert_eq!(other.digest(), digest);

    // test-restore with a TLS source.
    let out = ok_all(&p, &["test-restore", "--source", "cache"]);
    assert!(out.contains("throwaway redis-server stopped"), "{out}");

    // A certificate from another CA: a clear failure naming the server, no
    // snapshot.
    p.write_config(&source(&url, &tls("other-ca.crt")));
    let (err, _) = failed(&p);
    assert!(
        err.contains(&format!("cannot connect to {url}: TLS handshake failed"))
            && err.contains("UnknownIssuer"),
        "{err}"
    );
    // No client certificate while the server requires one.
    p.write_config(&source(
        &url,
        &format!("tls_ca_file = \"{}\"\n", certs.path("ca.crt").display()),
    ));
    let (err, _) = failed(&p);
    assert!(err.contains(&url), "{err}");
    // A name the certificate does not carry.
    p.write_config(&source(
        &url,
        &format!("{}tls_server_name = \"cache.example\"\n", tls("ca.crt")),
    ));
    let (err, _) = failed(&p);
    assert!(
        err.contains("not valid for name \"cache.example\""),
        "{err}"
    );
    // Configuration errors: TLS settings on a plain URL, a missing CA file.
    for (cfg, want) in [
        (source(&a.url(), &tls("ca.crt")), "need a TLS URL"),
        (source(&url, &tls("missing.crt")), "missing.crt"),
    ] {
        p.write_config(&cfg);
        let o = p.run(&["config", "check"]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
    }
}
