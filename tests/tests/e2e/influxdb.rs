//! The `influxdb` source against a real InfluxDB 1.x (Debian's `influxdb`
//! package): a round trip of more than a million points of every field type,
//! escaped names, tags and strings, two retention policies and a continuous
//! query, into the same and into a second database; test-restore; and the
//! failures (wrong password, unreachable server, missing database).
//!
//! The 2.x path runs against a protocol fake (`common/influx2_fake.rs`):
//! no InfluxDB 2.x server can be installed here.

use crate::common;
use respaldo_testing::servers::influx2_fake;
use respaldo_testing::servers::influxdb as influxdb_server;

use common::{stderr, Project};
use influx2_fake::{point_counts, Fake2};
use influxdb_server::Influx;

const DB: &str = "energy";

/// The measurements and retention policies the round trip compares.
const SERIES: [(&str, &str); 4] = [
    ("autogen", "power meter"),
    ("autogen", "events"),
    ("archive", "temp,room"),
    ("archive", "flags"),
];

fn select(db: &str, rp: &str, m: &str) -> String {
    format!(
        "SELECT * FROM \"{db}\".\"{rp}\".\"{}\"",
        m.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

/// Writes 1 000 000+ points: every field type, escaped names and tags,
/// strings with quotes and backslashes, sparse fields, extreme values.
fn fill(s: &Influx) {
    s.query(&format!("CREATE DATABASE {DB}"));
    s.query(&format!(
        "CREATE RETENTION POLICY \"archive\" ON {DB} DURATION 0s REPLICATION 1 SHARD DURATION 52w"
    ));
    s.query(&format!(
        "CREATE RETENTION POLICY \"week\" ON {DB} DURATION 7d REPLICATION 1 SHARD DURATION 1d"
    ));
    s.query(&format!(
        "CREATE CONTINUOUS QUERY \"hourly\" ON {DB} BEGIN SELECT mean(\"watts\") INTO \"archive\".\"power_hourly\" FROM \"power meter\" GROUP BY time(1h) END"
    ));
    let base: i64 = 1_600_000_000_000_000_000;
    let mut buf = Vec::with_capacity(64 << 20);
    // 600 000 points in "power meter" (autogen).
    for i in 0..600_000i64 {
        let t = base + i * 100_000_007;
        let site = ["north hall", "south,wing", "x=y", "plain"][(i % 4) as usize];
        let phase = i % 3;
        buf.extend_from_slice(
            format!(
                "power\\ meter,phase\\,n\\=o=L{phase},site\\ name={} watts={},count={}i,ok={}{} {t}\n",
                site.replace(' ', "\\ ").replace(',', "\\,").replace('=', "\\="),
                (i as f64) * 0.1 + 1e-9,
                i - 300_000,
                i % 2 == 0,
                if i % 5 == 0 {
                    format!(",label=\"say \\\"{i}\\\" c:\\\\temp\\\\\"")
                } else {
                    String::new()
                },
            )
            .as_bytes(),
        );
        if buf.len() > 32 << 20 {
            s.write(DB, "autogen", &buf);
            buf.clear();
        }
    }
    // Extremes and odd strings in "events".
    buf.extend_from_slice(
        format!(
            "events,kind=max big={}i,tiny=1e-300,neg=-1.5e300,s=\"\" {base}\n\
             events,kind=min big={}i,s=\"\\\\\" {}\n\
             events,kind=text s=\"tab\there, comma, equals=, \\\"quotes\\\" and unicode ü€\" {}\n",
            i64::MAX,
            i64::MIN,
            base + 1,
            base + 2
        )
        .as_bytes(),
    );
    s.write(DB, "autogen", &buf);
    buf.clear();
    // 400 000 points in "temp,room" and 20 000 in "flags" (archive).
    for i in 0..400_000i64 {
        let t = base - 86_400_000_000_000 + i * 33_333_331;
        buf.extend_from_slice(
            format!(
                "temp\\,room,sensor=s{} celsius={},raw={}i {t}\n",
                i % 50,
                (i % 1000) as f64 / 7.0 - 20.0,
                i * 1_000_000_007
            )
            .as_bytes(),
        );
        if i < 20_000 {
            buf.extend_from_slice(
                format!("flags,on=yes up={},n={}i {t}\n", i % 3 == 0, i).as_bytes(),
            );
        }
        if buf.len() > 32 << 20 {
            s.write(DB, "archive", &buf);
            buf.clear();
        }
    }
    s.write(DB, "archive", &buf);
}

type Digests = Vec<(String, usize, u64)>;

fn digests(s: &Influx, db: &str) -> Digests {
    SERIES
        .iter()
        .map(|(rp, m)| s.digest(db, &select(db, rp, m)))
        .collect()
}

fn policies(s: &Influx, db: &str) -> serde_json::Value {
    s.query(&format!("SHOW RETENTION POLICIES ON \"{db}\""))["results"][0]["series"].clone()
}

/// Runs respaldo, asserts success and returns what it printed (the restore
/// report goes to stderr).
fn ok_all(p: &Project, args: &[&str]) -> String {
    let o = p.run(args);
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(o.status.success(), "respaldo {args:?} failed: {all}");
    all
}

fn config(s: &Influx, extra: &str) -> String {
    format!(
        "[sources.metrics]\ntype = \"influxdb\"\nurl = \"{}\"\n{extra}",
        s.url
    )
}

#[test]
fn a_million_points_round_trip_into_the_same_and_a_second_database() {
    let s = Influx::start(None);
    fill(&s);
    let before = digests(&s, DB);
    let total: u64 = before.iter().map(|d| d.2).sum();
    assert!(total >= 1_000_000, "{total} points");
    let rps = policies(&s, DB);

    let p = Project::new(&config(&s, &format!("databases = [\"{DB}\"]\n")));
    p.ok(&["init"]);
    let b = p.backup(&[]);
    let m = &b["sources"]["metrics"];
    assert_eq!(m["status"], "ok", "{b}");
    let snap = b["id"].as_str().unwrap().to_string();
    let show = p.json(&["show", &snap]);
    let meta = &show["sources"]["metrics"]["metadata"];
    assert_eq!(meta["points"], total, "{meta}");
    assert_eq!(
        meta["databases"][DB]["points"]["archive"]["temp,room"],
        400_000
    );
    assert_eq!(
        meta["databases"][DB]["continuous_queries"][0]["name"],
        "hourly"
    );

    // The export is line protocol with exact types and escapes.
    let lp = p.ok(&["dump", &snap, &format!("metrics/{DB}.lp")]);
    assert!(
        lp.starts_with("# DML\n# CONTEXT-DATABASE: energy\n"),
        "{}",
        &lp[..200]
    );
    for needle in [
        "# CONTEXT-RETENTION-POLICY: archive\n",
        "power\\ meter,phase\\,n\\=o=L0,site\\ name=north\\ hall count=-300000i,label=\"say \\\"0\\\" c:\\\\temp\\\\\",ok=true,watts=1e-9 1600000000000000000\n",
        &format!("events,kind=max big={}i,neg=-1.5e300,s=\"\",tiny=1e-300 1600000000000000000\n", i64::MAX),
    ] {
        assert!(lp.contains(needle), "missing {needle:?}");
    }
    drop(lp);

    // Into a second database on the same server.
    let out = ok_all(
        &p,
        &[
            "restore",
            &snap,
            "--source",
            "metrics",
            "--target",
            &format!("{}/copy", s.url),
        ],
    );
    assert!(
        out.contains("point counts match (") && out.contains(", 1020003 in all)"),
        "{out}"
    );
    assert_eq!(
        digests(&s, "copy")
            .iter()
            .map(|d| (&d.0, d.1))
            .collect::<Vec<_>>(),
        before.iter().map(|d| (&d.0, d.1)).collect::<Vec<_>>(),
        "SELECT * differs in `copy`"
    );
    assert_eq!(policies(&s, "copy"), rps);
    let measurements = |db: &str| {
        s.query(&format!("SHOW MEASUREMENTS ON \"{db}\""))["results"][0]["series"].clone()
    };
    assert_eq!(measurements("copy"), measurements(DB));

    // Into the live database: refused without --force, nothing changed.
    s.query_on(
        DB,
        &format!(
            "DELETE FROM \"events\" WHERE time >= {}",
            1_600_000_000_000_000_001i64
        ),
    );
    let damaged = digests(&s, DB);
    let o = p.run(&["restore", &snap, "--source", "metrics"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("already has measurements; use --force"),
        "{}",
        stderr(&o)
    );
    assert_eq!(digests(&s, DB), damaged);
    // With --force: dropped and recreated, identical to the backup again.
    let out = ok_all(&p, &["restore", &snap, "--source", "metrics", "--force"]);
    assert!(out.contains("1 continuous queries"), "{out}");
    assert_eq!(digests(&s, DB), before, "SELECT * differs after --force");
    assert_eq!(policies(&s, DB), rps);
    let cqs = s.query("SHOW CONTINUOUS QUERIES").to_string();
    assert!(cqs.contains("hourly"), "{cqs}");

    // test-restore: a scratch database, counts compared, then dropped.
    let dbs = s.databases();
    let out = ok_all(&p, &["test-restore"]);
    assert!(
        out.contains("point counts match (") && out.contains(", 1020003 in all)"),
        "{out}"
    );
    assert_eq!(s.databases(), dbs, "the scratch database is dropped");
}

#[test]
fn failures_name_the_source_exit_1_and_record_no_good_snapshot() {
    let s = Influx::start(Some("s3cret-pw"));
    s.query("CREATE DATABASE small");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let old = now - 10 * 86_400 * 1_000_000_000;
    s.write(
        "small",
        "autogen",
        format!("m,t=a v=1i {old}\nm,t=a v=2i {now}\n").as_bytes(),
    );
    let p = Project::new("");
    p.ok(&["init"]);
    std::fs::write(p.path().join("pw"), "s3cret-pw\n").unwrap();
    std::fs::write(p.path().join("bad"), "wrong\n").unwrap();

    let fails = |cfg: String, want: &str| {
        p.write_config(&cfg);
        let o = p.run(&["--json", "backup"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(b["id"].is_null(), "no snapshot: {b}");
        let err = b["sources"]["metrics"]["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("s3cret") && !stderr(&o).contains("s3cret"));
        let o = p.run(&["backup"]);
        assert_eq!(o.status.code(), Some(1));
        let e = stderr(&o);
        assert!(e.contains("metrics") && e.contains(want), "{e}");
    };
    fails(
        config(&s, "user = \"admin\"\npassword = { file = \"bad\" }\n"),
        "refused the credentials",
    );
    fails(config(&s, ""), "refused the credentials");
    fails(
        "[sources.metrics]\ntype = \"influxdb\"\nurl = \"http://127.0.0.1:1\"\n".into(),
        "cannot reach InfluxDB at http://127.0.0.1:1",
    );
    fails(
        config(
            &s,
            "user = \"admin\"\npassword = { file = \"pw\" }\ndatabases = [\"nope\"]\n",
        ),
        "database `nope` does not exist",
    );
    assert_eq!(p.json(&["snapshots"]).as_array().unwrap().len(), 0);

    // With the right password and a time window, only the recent point.
    p.write_config(&config(
        &s,
        "user = \"admin\"\npassword = { file = \"pw\" }\nsince = \"1d\"\n",
    ));
    let b = p.backup(&[]);
    assert_eq!(b["sources"]["metrics"]["status"], "ok", "{b}");
    let lp = p.ok(&["dump", "latest", "metrics/small.lp"]);
    assert!(lp.contains(&format!("m,t=a v=2i {now}\n")), "{lp}");
    assert!(!lp.contains(&old.to_string()), "{lp}");
    let out = ok_all(
        &p,
        &[
            "restore", "latest", "--source", "metrics", "--target", "again",
        ],
    );
    assert!(
        out.contains("point counts match (1 measurements, 1 in all)"),
        "{out}"
    );

    // Into another server (no authentication there): created, identical.
    let other = Influx::start(None);
    ok_all(
        &p,
        &[
            "restore",
            "latest",
            "--source",
            "metrics",
            "--target",
            &format!("{}/small", other.url),
        ],
    );
    let q = "SELECT * FROM \"small\".\"autogen\".\"m\"";
    assert_eq!(
        other.query(q)["results"][0]["series"],
        s.query(&format!("{q} WHERE time > {old}"))["results"][0]["series"]
    );
}

#[test]
fn the_example_configuration_parses() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ex = root.join("examples/influxdb/backup.toml");
    let o = std::process::Command::new(common::bin())
        .args(["config", "check", "-c"])
        .arg(&ex)
        .env("INFLUX_PASSWORD", "x")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------
// InfluxDB 2.x, against a protocol fake (no 2.x server can be installed
// here; see common/influx2_fake.rs).

const TOKEN: &str = "t0ken-s3cret-value";

fn esc_key(s: &str) -> String {
    s.replace(' ', "\\ ")
        .replace(',', "\\,")
        .replace('=', "\\=")
}

/// Two buckets (one with a 30-day retention and a description), every field
/// type, escaped names and tags, strings with quotes, backslashes, newlines
/// and empty strings, sparse fields, timestamps from 1677 to 2262.
fn fill2(f: &Fake2) {
    f.create_bucket("acme", "energy", 30 * 86_400, Some("live meters"));
    f.create_bucket("acme", "archive", 0, None);
    let base: i64 = 1_600_000_000_000_000_000;
    let mut lp = String::new();
    for i in 0..3000i64 {
        let site = ["north hall", "south,wing", "x=y", "plain"][(i % 4) as usize];
        lp.push_str(&format!(
            "power\\ meter,phase\\,n\\=o=L{},site\\ name={} watts={},count={}i,total={}u,ok={}{} {}\n",
            i % 3,
            esc_key(site),
            (i as f64) * 0.1 + 1e-9,
            i - 1500,
            (i as u64) * 1_000_000_007,
            i % 2 == 0,
            if i % 5 == 0 {
                format!(",label=\"say \\\"{i}\\\" c:\\\\temp\\\\\"")
            } else {
                String::new()
            },
            base + i * 1_000_000_007
        ));
    }
    lp.push_str(&format!(
        "events,kind=max big={}i,ubig={}u,tiny=1e-300,neg=-1.5e300,s=\"\" {base}\n\
         events,kind=min big={}i,u0=0u,s=\"\\\\\" {}\n\
         events,kind=text s=\"tab\there, comma, equals=, \\\"quotes\\\" and unicode ü€\nnext line\" {}\n\
         events,kind=only-empty s=\"\" {}\n\
         events,kind=old f=-0.0,b=false -86400000000000\n\
         events,kind=edge f=1 {}\n\
         events,kind=edge f=2 {}\n",
        i64::MAX,
        u64::MAX,
        i64::MIN,
        base + 1,
        base + 2,
        base + 3,
        i64::MIN + 2,
        i64::MAX - 1,
    ));
    f.write("energy", &lp);
    let mut lp = String::new();
    for i in 0..2000i64 {
        let t = base - 86_400_000_000_000 + i * 33_333_331;
        lp.push_str(&format!(
            "temp\\,room,sensor=s{} celsius={},raw={}i {t}\n",
            i % 5,
            (i % 1000) as f64 / 7.0 - 20.0,
            i * 1_000_000_007
        ));
        if i % 10 == 0 {
            lp.push_str(&format!("flags,on=yes up={} {t}\n", i % 3 == 0));
        }
    }
    f.write("archive", &lp);
}

fn config2(url: &str, extra: &str) -> String {
    format!(
        "[sources.metrics]\ntype = \"influxdb\"\nurl = \"{url}\"\norg = \"acme\"\ntoken = {{ file = \"token\" }}\n{extra}"
    )
}

fn project2(url: &str, extra: &str) -> Project {
    let p = Project::new(&config2(url, extra));
    std::fs::write(p.path().join("token"), format!("{TOKEN}\n")).unwrap();
    p.ok(&["init"]);
    p
}

#[test]
fn influxdb2_every_field_type_and_two_buckets_round_trip_against_the_protocol_fake() {
    let f = Fake2::start(TOKEN, "acme");
    fill2(&f);
    let energy = f.bucket("energy").unwrap();
    let archive = f.bucket("archive").unwrap();
    let p = project2(&f.url, "batch_lines = 500\n");
    let b = p.backup(&[]);
    assert_eq!(b["sources"]["metrics"]["status"], "ok", "{b}");
    let snap = b["id"].as_str().unwrap().to_string();

    // The metadata: points per measurement as the fake counts them
    // (distinct series and timestamps), retention rules, description.
    let show = p.json(&["show", &snap]);
    let meta = &show["sources"]["metrics"]["metadata"];
    assert_eq!(meta["version"], 2, "{meta}");
    assert_eq!(meta["org"], "acme");
    let counts =
        |b: &str| serde_json::to_value(point_counts(&f.bucket(b).unwrap().points)).unwrap();
    assert_eq!(
        meta["buckets"]["energy"]["points"],
        counts("energy"),
        "{meta}"
    );
    assert_eq!(
        meta["buckets"]["archive"]["points"],
        counts("archive"),
        "{meta}"
    );
    assert_eq!(meta["buckets"]["energy"]["points"]["events"], 7);
    assert_eq!(meta["points"], 3000 + 7 + 2000 + 200);
    assert_eq!(
        meta["buckets"]["energy"]["retention_rules"][0]["everySeconds"],
        30 * 86_400
    );
    assert_eq!(meta["buckets"]["energy"]["description"], "live meters");
    assert!(
        meta["buckets"].get("_monitoring").is_none(),
        "system buckets are left out: {meta}"
    );

    // The export: line protocol with exact types and escapes; the empty
    // strings (which annotated CSV cannot tell from missing values) follow
    // as lines of their own.
    let lp = p.ok(&["dump", &snap, "metrics/energy.lp"]);
    for needle in [
        "power\\ meter,phase\\,n\\=o=L0,site\\ name=north\\ hall count=-1500i,label=\"say \\\"0\\\" c:\\\\temp\\\\\",ok=true,total=0u,watts=1e-9 1600000000000000000\n".to_string(),
        format!("events,kind=max big={}i,neg=-1.5e300,tiny=1e-300,ubig={}u 1600000000000000000\n", i64::MAX, u64::MAX),
        "events,kind=max s=\"\" 1600000000000000000\n".to_string(),
        "events,kind=only-empty s=\"\" 1600000000000000003\n".to_string(),
        "events,kind=old b=false,f=-0.0 -86400000000000\n".to_string(),
        format!("events,kind=edge f=1.0 {}\n", i64::MIN + 2),
        "s=\"tab\there, comma, equals=, \\\"quotes\\\" and unicode ü€\nnext line\" 1600000000000000002\n".to_string(),
    ] {
        assert!(lp.contains(&needle), "missing {needle:?}");
    }
    assert!(
        !lp.contains("kind=min s=\"\""),
        "only ambiguous cells are fetched again"
    );

    // Into another server (same organization name): both buckets with their
    // retention, every point identical; two transient 503s are retried.
    let f2 = Fake2::start(TOKEN, "acme");
    f2.fail_writes(2);
    let out = ok_all(
        &p,
        &["restore", &snap, "--source", "metrics", "--target", &f2.url],
    );
    assert!(
        out.contains("point counts match (2 measurements, 3007 in all)"),
        "{out}"
    );
    for (b, want) in [("energy", &energy), ("archive", &archive)] {
        let got = f2.bucket(b).unwrap();
        assert!(
            got.points == want.points,
            "bucket {b} differs after the restore"
        );
        assert_eq!(got.retention_rules, want.retention_rules, "{b}");
        assert_eq!(got.description, want.description, "{b}");
    }
    let (requests, most) = f2.write_stats();
    assert!(most <= 500, "batches of at most batch_lines lines: {most}");
    assert!(requests >= 10, "{requests} write requests");

    // A bucket name in --target needs a snapshot of one bucket.
    let o = p.run(&["restore", &snap, "--source", "metrics", "--target", "copy"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("names one bucket but the snapshot has 2"),
        "{}",
        stderr(&o)
    );
    p.write_config(&config2(&f.url, "buckets = [\"archive\"]\n"));
    let one = p.backup(&[])["id"].as_str().unwrap().to_string();
    ok_all(
        &p,
        &[
            "restore",
            &one,
            "--source",
            "metrics",
            "--target",
            "archive_copy",
        ],
    );
    assert!(f.bucket("archive_copy").unwrap().points == archive.points);

    // Into the live buckets: refused without --force, nothing changed.
    f.write("energy", "events,kind=extra x=1 5\n");
    let damaged = f.bucket("energy").unwrap();
    let o = p.run(&["restore", &snap, "--source", "metrics"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("already has points; use --force"),
        "{}",
        stderr(&o)
    );
    assert!(f.bucket("energy").unwrap().points == damaged.points);
    // With --force: the points deleted (the bucket keeps its id) and
    // written again.
    let out = ok_all(
        &p,
        &[
            "restore",
            &snap,
            "--source",
            "metrics",
            "--force",
            "--no-safety-snapshot",
        ],
    );
    assert!(out.contains("point counts match"), "{out}");
    let after = f.bucket("energy").unwrap();
    assert_eq!(after.id, energy.id);
    assert!(
        after.points == energy.points,
        "energy differs after --force"
    );

    // test-restore: a throwaway bucket per bucket, counted, deleted.
    let names = f.bucket_names();
    let out = ok_all(&p, &["test-restore"]);
    assert!(out.contains("point counts match"), "{out}");
    assert!(
        out.contains("scratch bucket `respaldo_test_restore_"),
        "{out}"
    );
    assert_eq!(f.bucket_names(), names, "the scratch bucket is deleted");

    // A server that silently loses points fails the count check.
    let lossy = Fake2::start(TOKEN, "acme");
    lossy.drop_every(Some(97));
    let o = p.run(&[
        "restore", &snap, "--source", "metrics", "--target", &lossy.url,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("point counts differ"), "{}", stderr(&o));
    assert!(!stderr(&o).contains(TOKEN) && !String::from_utf8_lossy(&o.stdout).contains(TOKEN));
}

#[test]
fn influxdb2_failures_name_the_cause_exit_1_and_record_no_good_snapshot() {
    let f = Fake2::start(TOKEN, "acme");
    f.create_bucket("acme", "small", 0, None);
    f.write("small", "m,t=a v=1i 1\n");
    let p = project2(&f.url, "");
    std::fs::write(p.path().join("bad"), "wrong-token\n").unwrap();
    let fails = |cfg: String, want: &str| {
        p.write_config(&cfg);
        let o = p.run(&["--json", "backup"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(b["id"].is_null(), "no snapshot: {b}");
        let err = b["sources"]["metrics"]["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(err.contains(want), "{err}");
        assert!(!err.contains(TOKEN) && !stderr(&o).contains(TOKEN));
        assert!(!err.contains("wrong-token") && !stderr(&o).contains("wrong-token"));
    };
    fails(
        config2(&f.url, "").replace("{ file = \"token\" }", "{ file = \"bad\" }"),
        &format!("InfluxDB at {} refused the credentials", f.url),
    );
    fails(
        config2("http://127.0.0.1:1", ""),
        "cannot reach InfluxDB at http://127.0.0.1:1",
    );
    fails(
        config2(&f.url, "buckets = [\"nope\"]\n"),
        &format!(
            "bucket `nope` does not exist in organization `acme` on InfluxDB at {}",
            f.url
        ),
    );
    fails(
        config2(&f.url, "").replace("org = \"acme\"", "org = \"nope\""),
        "organization `nope` does not exist",
    );
    assert_eq!(p.json(&["snapshots"]).as_array().unwrap().len(), 0);

    // 1.x and 2.x keys mixed, or 2.x without a token: a configuration error.
    for (cfg, want) in [
        (config2(&f.url, "databases = [\"x\"]\n"), "`databases` are for InfluxDB 1.x"),
        (
            format!("[sources.metrics]\ntype = \"influxdb\"\nurl = \"{}\"\nversion = 2\norg = \"acme\"\n", f.url),
            "needs `org` and `token`",
        ),
        (
            format!("[sources.metrics]\ntype = \"influxdb\"\nurl = \"{}\"\nversion = 1\norg = \"acme\"\n", f.url),
            "are for InfluxDB 2.x",
        ),
    ] {
        p.write_config(&cfg);
        let o = p.run(&["config", "check"]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
    }

    // With good settings: a one-bucket snapshot into another bucket name.
    p.write_config(&config2(&f.url, ""));
    let b = p.backup(&[]);
    assert_eq!(b["sources"]["metrics"]["status"], "ok", "{b}");
    let o = p.run(&[
        "restore", "latest", "--source", "metrics", "--target", "again",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(f.bucket("again").unwrap().points == f.bucket("small").unwrap().points);
    // A 2.x snapshot is not restored by a source configured for 1.x.
    p.write_config("[sources.metrics]\ntype = \"influxdb\"\nurl = \"http://127.0.0.1:1\"\n");
    let o = p.run(&["restore", "latest", "--source", "metrics", "--target", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o)
            .contains("the snapshot holds InfluxDB 2.x data but the source is configured for 1.x"),
        "{}",
        stderr(&o)
    );
}
