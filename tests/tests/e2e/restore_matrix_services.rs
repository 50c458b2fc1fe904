//! The restore contract (docs/restore.md) for Redis, InfluxDB and Docker
//! volumes, cell by cell, against real servers: checked with `DEBUG DIGEST`,
//! `SELECT *` digests and volume listings.

use crate::common;
#[allow(dead_code)]
use respaldo_testing::servers::docker_objects as dockerh;
#[allow(dead_code)]
use respaldo_testing::servers::influxdb as influx;
use respaldo_testing::servers::redis as redis_server;

use common::*;
use dockerh::*;
use influx::Influx;
use redis_server::{populate, Redis};

#[test]
fn redis_restore_matrix() {
    let a = Redis::start(None);
    populate(&a);
    let digest = a.digest();
    let p = Project::new(&format!(
        "[sources.cache]\ntype = \"redis\"\nurl = \"{}\"\n",
        a.url()
    ));
    p.ok(&["init"]);
    p.backup(&[]);

    cell("redis/live/empty");
    let functions = a.cli(&["FUNCTION", "LIST"]);
    a.cli(&["FLUSHALL"]);
    // Function libraries are data too: with one left, the server is not empty.
    let err = fails(&p, &["restore", "latest", "--source", "cache"], 1);
    assert!(err.contains("function libraries"), "{err}");
    a.cli(&["FUNCTION", "FLUSH"]);
    p.ok(&["restore", "latest", "--source", "cache"]);
    assert_eq!(a.digest(), digest);
    assert_eq!(a.cli(&["FUNCTION", "LIST"]), functions);

    cell("redis/live/holds");
    a.cli(&["SET", "s:1", "changed"]);
    a.cli(&["SET", "new:key", "x"]);
    let changed = a.digest();
    let err = fails(&p, &["restore", "latest", "--source", "cache"], 1);
    assert!(
        err.contains("`cache`") && err.contains("not empty"),
        "{err}"
    );
    assert_eq!(a.digest(), changed);

    cell("redis/live/holds/force");
    p.ok(&["restore", "latest", "--source", "cache", "--force"]);
    assert_eq!(a.digest(), digest);

    cell("redis/keys/holds/force");
    // Matching keys become the backup's (the new one goes); others stay.
    a.cli(&["SET", "s:1", "changed"]);
    a.cli(&["SET", "s:new", "not in the backup"]);
    a.cli(&["-n", "1", "SET", "outside", "untouched"]);
    p.ok(&[
        "restore", "latest", "--source", "cache", "--keys", "s:*", "--force",
    ]);
    assert_eq!(a.cli(&["GET", "s:1"]), "value 1");
    assert_eq!(a.cli(&["EXISTS", "s:new"]), "0");
    assert_eq!(a.cli(&["-n", "1", "GET", "outside"]), "untouched");
    a.cli(&["-n", "1", "DEL", "outside"]);
    assert_eq!(a.digest(), digest);

    cell("redis/db/holds/force");
    a.cli(&["-n", "1", "SET", "extra", "x"]);
    a.cli(&["SET", "s:2", "changed in db 0"]);
    let url1 = format!("{}/1", a.url());
    p.ok(&[
        "restore", "latest", "--source", "cache", "--target", &url1, "--force",
    ]);
    assert_eq!(
        a.cli(&["-n", "1", "EXISTS", "extra"]),
        "0",
        "db 1 is the backup's"
    );
    assert_eq!(a.cli(&["GET", "s:2"]), "changed in db 0", "db 0 untouched");
    a.cli(&["SET", "s:2", "value 2"]);
    assert_eq!(a.digest(), digest);

    cell("redis/db/not-in-backup");
    let url9 = format!("{}/9", a.url());
    let err = fails(
        &p,
        &["restore", "latest", "--source", "cache", "--target", &url9],
        1,
    );
    assert!(err.contains("holds no keys in db9"), "{err}");
}

fn influx_digests(s: &Influx, db: &str, wheres: &str) -> Vec<(String, String, usize, u64)> {
    let m = s.query_on(db, "SHOW MEASUREMENTS");
    let names: Vec<String> = m["results"][0]["series"][0]["values"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|r| r[0].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    names
        .into_iter()
        .map(|n| {
            let (d, rows, pts) = s.digest(db, &format!("SELECT * FROM \"{n}\" {wheres}"));
            (n, d, rows, pts)
        })
        .collect()
}

#[test]
fn influxdb_restore_matrix() {
    let s = Influx::start(None);
    let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    for db in ["energy", "weather"] {
        s.query(&format!("CREATE DATABASE {db}"));
        let mut lines = String::new();
        for i in 0..2000i64 {
            // Old points (2020) and recent ones (the last hour).
            lines.push_str(&format!(
                "power,meter=m{} kw={}.5,on=true {}\n",
                i % 7,
                i,
                1_600_000_000_000_000_000 + i * 1_000_000_000
            ));
            lines.push_str(&format!(
                "temp,room=r{} c={} {}\n",
                i % 5,
                i % 40,
                now_ns - 3_600_000_000_000 + i * 1_000_000
            ));
        }
        s.write(db, "autogen", lines.as_bytes());
    }
    let energy = influx_digests(&s, "energy", "");
    let weather = influx_digests(&s, "weather", "");
    let p = Project::new(&format!(
        "[sources.metrics]\ntype = \"influxdb\"\nurl = \"{}\"\ndatabases = [\"energy\", \"weather\"]\n",
        s.url
    ));
    p.ok(&["init"]);
    p.backup(&[]);

    cell("influxdb/live/absent");
    s.query("DROP DATABASE energy");
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "metrics",
        "--database",
        "energy",
    ]);
    assert_eq!(influx_digests(&s, "energy", ""), energy);

    cell("influxdb/live/holds");
    s.write(
        "energy",
        "autogen",
        b"power,meter=x kw=1 1600000000000000123\n",
    );
    let changed = influx_digests(&s, "energy", "");
    let err = fails(&p, &["restore", "latest", "--source", "metrics"], 1);
    assert!(err.contains("already has measurements"), "{err}");
    assert_eq!(influx_digests(&s, "energy", ""), changed);

    cell("influxdb/live/holds/force");
    p.ok(&["restore", "latest", "--source", "metrics", "--force"]);
    assert_eq!(influx_digests(&s, "energy", ""), energy);
    assert_eq!(influx_digests(&s, "weather", ""), weather);

    cell("influxdb/database/one-of-several");
    s.write(
        "energy",
        "autogen",
        b"power,meter=x kw=1 1600000000000000123\n",
    );
    s.write(
        "weather",
        "autogen",
        b"temp,room=x c=1 1600000000000000123\n",
    );
    let weather_changed = influx_digests(&s, "weather", "");
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "metrics",
        "--database",
        "energy",
        "--force",
    ]);
    assert_eq!(influx_digests(&s, "energy", ""), energy);
    assert_eq!(
        influx_digests(&s, "weather", ""),
        weather_changed,
        "the other database is untouched"
    );

    cell("influxdb/since/holds/force");
    let q = Project::new(&format!(
        "[sources.recent]\ntype = \"influxdb\"\nurl = \"{}\"\ndatabases = [\"energy\"]\nsince = \"1d\"\n",
        s.url
    ));
    q.ok(&["init"]);
    q.backup(&[]);
    let recent = influx_digests(&s, "energy", "WHERE time > now() - 1d");
    let old = influx_digests(&s, "energy", "WHERE time <= now() - 1d");
    s.query_on("energy", "DELETE FROM \"temp\" WHERE time > now() - 2h");
    s.write(
        "energy",
        "autogen",
        format!("temp,room=x c=99 {}\n", now_ns - 60_000_000_000).as_bytes(),
    );
    let o = q.run(&["restore", "latest", "--source", "recent", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("older ones kept"), "{}", stderr(&o));
    assert_eq!(
        influx_digests(&s, "energy", "WHERE time > now() - 1d"),
        recent
    );
    assert_eq!(
        influx_digests(&s, "energy", "WHERE time <= now() - 1d"),
        old,
        "points before the window are kept"
    );
}

#[test]
fn docker_restore_matrix() {
    busybox_image();
    let v1 = Volume::new("m1", &[]);
    let v2 = Volume::new("m2", &[]);
    v1.sh("mkdir -p /v/a && echo one > /v/a/f && dd if=/dev/urandom of=/v/blob bs=1k count=500 2>/dev/null");
    v2.sh("echo two > /v/g && mkdir /v/empty");
    let (l1, l2) = (v1.listing(), v2.listing());
    let p = Project::new(&format!(
        "[sources.vols]\ntype = \"docker\"\nvolumes = [\"{}\", \"{}\"]\nhelper_image = \"{BUSYBOX}\"\n",
        v1.name, v2.name
    ));
    p.ok(&["init"]);
    p.backup(&[]);

    cell("docker/live/holds");
    // One volume gone, the other changed: refused before any volume changes.
    docker(&["volume", "rm", &v1.name]);
    v2.sh("echo changed > /v/g");
    let changed2 = v2.listing();
    let err = fails(&p, &["restore", "latest", "--source", "vols"], 1);
    assert!(err.contains(&v2.name) && err.contains("not empty"), "{err}");
    let gone = std::process::Command::new("docker")
        .args(["volume", "inspect", &v1.name])
        .output()
        .unwrap();
    assert!(
        !gone.status.success(),
        "the absent volume was not created by a refused restore"
    );
    assert_eq!(v2.listing(), changed2);

    cell("docker/live/absent");
    p.ok(&[
        "restore", "latest", "--source", "vols", "--volume", &v1.name,
    ]);
    assert_eq!(v1.listing(), l1);

    cell("docker/live/holds/force");
    let o = p.run(&["restore", "latest", "--source", "vols", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(v1.listing(), l1);
    assert_eq!(v2.listing(), l2);

    cell("docker/volume/one-of-several");
    v1.sh("echo changed > /v/a/f");
    v2.sh("echo changed > /v/g");
    let changed2 = v2.listing();
    p.ok(&[
        "restore", "latest", "--source", "vols", "--volume", &v1.name, "--force",
    ]);
    assert_eq!(v1.listing(), l1);
    assert_eq!(v2.listing(), changed2, "the other volume is untouched");
    let err = fails(
        &p,
        &["restore", "latest", "--source", "vols", "--volume", "nope"],
        1,
    );
    assert!(err.contains("holds no such volume"), "{err}");

    cell("docker/target/new");
    let copy = Volume::future("copy");
    p.ok(&[
        "restore", "latest", "--source", "vols", "--volume", &v1.name, "--target", &copy.name,
    ]);
    assert_eq!(copy.listing(), l1);
    let err = fails(
        &p,
        &["restore", "latest", "--source", "vols", "--target", "x"],
        1,
    );
    assert!(err.contains("choose one with --volume"), "{err}");

    cell("docker/path/nomatch");
    let err = fails(
        &p,
        &[
            "restore", "latest", "--source", "vols", "--path", "nope", "--force",
        ],
        1,
    );
    assert!(err.contains("matches nothing"), "{err}");
    assert_eq!(v2.listing(), changed2);
}
