//! The `influxdb` source against a real InfluxDB 1.x (Debian's `influxdb`
//! package): a round trip of more than a million points of every field type,
//! escaped names, tags and strings, two retention policies and a continuous
//! query, into the same and into a second database; test-restore; and the
//! failures (wrong password, unreachable server, missing database).

mod common;
#[path = "common/influxdb.rs"]
mod influxdb_server;

use common::{stderr, Project};
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
    assert!(out.contains("field value counts match"), "{out}");
    assert_eq!(
        digests(&s, "copy")
            .iter()
            .map(|d| (&d.0, d.1))
            .collect::<Vec<_>>(),
        before.iter().map(|d| (&d.0, d.1)).collect::<Vec<_>>(),
        "SELECT * differs in `copy`"
    );
    assert_eq!(policies(&s, "copy"), rps);

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
    assert!(out.contains("field value counts match"), "{out}");
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
        out.contains("field value counts match (1 measurements, 1 in all)"),
        "{out}"
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
