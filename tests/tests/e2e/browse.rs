//! Looking inside snapshots without restoring: `ls`, `find`, `diff`,
//! `dump` of a path and `stats`, on a repository holding files, PostgreSQL,
//! Redis and InfluxDB sources (real servers), with the exact expected
//! output for the fixture; `dump` checked against the files themselves and
//! `tar`, `stats` against the repository's files on disk.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::{self, dir_size, random_bytes, sha256_file, stderr, Project};
use respaldo_testing::servers::influxdb::Influx;
use respaldo_testing::servers::postgres::{Pg, PASSWORD};
use respaldo_testing::servers::redis::Redis;

/// Times shown in UTC whatever this machine's zone.
fn run(p: &Project, args: &[&str]) -> Output {
    Command::new(common::bin())
        .current_dir(p.path())
        .args(["-c", "backup.toml"])
        .args(args)
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(p: &Project, args: &[&str]) -> String {
    let o = run(p, args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// Sets a path's mtime (without following symlinks).
fn touch(p: &Path, secs: i64) {
    let t = filetime::FileTime::from_unix_time(secs, 0);
    filetime::set_symlink_file_times(p, t, t).unwrap();
}

const T0: i64 = 1_764_590_400; // 2025-12-01 12:00:00 UTC

struct Stack {
    pg: Pg,
    redis: Redis,
    flux: Influx,
    p: Project,
}

fn stack() -> Stack {
    let pg = Pg::start();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.script(
        "shop",
        "CREATE TABLE products (id int PRIMARY KEY, name text);
         CREATE TABLE orders (id int PRIMARY KEY, product int REFERENCES products(id));
         INSERT INTO products SELECT g, 'p' || g FROM generate_series(1, 20) g;
         INSERT INTO orders SELECT g, 1 + g % 20 FROM generate_series(1, 100) g;",
    );
    let redis = Redis::start(None);
    for i in 0..5 {
        redis.cli(&["SET", &format!("k{i}"), "v"]);
    }
    redis.cli(&["-n", "2", "SET", "other", "v"]);
    let flux = Influx::start(None);
    flux.query("CREATE DATABASE energy");
    let lines: String = (0..30i64)
        .map(|i| {
            format!(
                "power,meter=m{} kw={i} {}\n",
                i % 3,
                1_600_000_000_000_000_000 + i * 1_000_000_000
            )
        })
        .collect();
    flux.write("energy", "autogen", lines.as_bytes());
    let config = format!(
        "[sources.app]\ntype = \"files\"\npaths = [\"app\"]\n\n\
         [sources.db]\ntype = \"postgres\"\nurl = \"{}\"\npassword = {{ file = \"pw\" }}\n\n\
         [sources.cache]\ntype = \"redis\"\nurl = \"{}\"\n\n\
         [sources.metrics]\ntype = \"influxdb\"\nurl = \"{}\"\ndatabases = [\"energy\"]\n",
        pg.url("shop"),
        redis.url(),
        flux.url
    );
    let p = Project::new(&config);
    std::fs::write(p.path().join("pw"), PASSWORD).unwrap();
    let app = p.path().join("app");
    std::fs::create_dir_all(app.join("models")).unwrap();
    std::fs::write(app.join("docker-compose.yml"), "services: {}\n").unwrap();
    std::fs::write(app.join("models/a.pkl"), random_bytes(1, 3000)).unwrap();
    std::fs::write(app.join("models/b.pkl"), random_bytes(2, 700)).unwrap();
    std::os::unix::fs::symlink("models/a.pkl", app.join("current")).unwrap();
    for (path, t) in [
        ("docker-compose.yml", 0),
        ("models/a.pkl", 60),
        ("models/b.pkl", 120),
        ("current", 180),
        ("models", 240),
        ("", 300),
    ] {
        touch(&app.join(path), T0 + t);
    }
    ok(&p, &["init"]);
    Stack { pg, redis, flux, p }
}

fn owner() -> String {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/self").unwrap();
    format!("{}:{}", m.uid(), m.gid())
}

#[test]
fn ls_find_diff_dump_and_stats_show_what_snapshots_hold() {
    let Stack {
        pg, redis, flux, p, ..
    } = stack();
    ok(&p, &["backup"]);
    let first = p.json(&["snapshots"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // ls SNAPSHOT: every source in a line.
    let ls = ok(&p, &["ls", "latest"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["SOURCE", "TYPE", "STATUS", "SIZE", "CONTENTS"],
        "{ls}"
    );
    let contents = |name: &str| -> String {
        let l = lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name}: {ls}"));
        l.split("  ")
            .filter(|c| !c.is_empty())
            .last()
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(contents("app"), "3 files", "{ls}");
    assert_eq!(contents("db"), "2 tables, 120 rows", "{ls}");
    assert_eq!(contents("cache"), "6 keys", "{ls}");
    assert_eq!(contents("metrics"), "1 measurements, 30 points", "{ls}");

    // ls of a tree: a long listing, exact.
    let o = owner();
    let expected = format!(
        "-rw-r--r-- {o:>11}         13 2025-12-01 12:00:00 +00:00 app/docker-compose.yml\n\
         drwxr-xr-x {o:>11}          0 2025-12-01 12:04:00 +00:00 app/models\n\
         lrwxrwxrwx {o:>11}          0 2025-12-01 12:03:00 +00:00 app/current -> models/a.pkl\n"
    );
    let mut got: Vec<String> = ok(&p, &["ls", "latest", "app:app"])
        .lines()
        .map(str::to_string)
        .collect();
    let mut want: Vec<String> = expected.lines().map(str::to_string).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let rec = ok(&p, &["ls", "latest", "app:app/models", "--recursive"]);
    assert_eq!(
        rec,
        format!(
            "-rw-r--r-- {o:>11}       3000 2025-12-01 12:01:00 +00:00 app/models/a.pkl\n\
             -rw-r--r-- {o:>11}        700 2025-12-01 12:02:00 +00:00 app/models/b.pkl\n"
        )
    );
    // ls of a database source: its databases, tables and rows, exact.
    let db = ok(&p, &["ls", "latest", "db"]);
    let holds = db.split("\n\n").nth(1).unwrap_or_else(|| panic!("{db}"));
    assert_eq!(
        holds,
        "HOLDS                 COUNT\nshop                  2 tables\nshop/public.orders    100 rows\nshop/public.products  20 rows\n"
    );
    assert!(db.starts_with("ARTIFACT"), "{db}");
    let cache = ok(&p, &["ls", "latest", "cache"]);
    assert!(
        cache.ends_with("HOLDS  COUNT\ndb0    5 keys\ndb2    1 keys\n"),
        "{cache}"
    );
    let metrics = ok(&p, &["ls", "latest", "metrics:energy"]);
    assert!(metrics.ends_with("HOLDS                 COUNT\nenergy                1 measurements\nenergy/autogen.power  30 points\n"), "{metrics}");
    let j = p.json(&["ls", "latest", "app:app/models"]);
    assert_eq!(j["entries"].as_array().unwrap().len(), 2, "{j}");
    assert_eq!(j["entries"][0]["size"], 3000, "{j}");
    let bad = run(&p, &["ls", "latest", "app:app/nope"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("app/nope"), "{}", stderr(&bad));

    // dump: one file's bytes, a directory as tar with its metadata.
    let out = p.path().join("a.out");
    ok(
        &p,
        &[
            "dump",
            "latest",
            "app:app/models/a.pkl",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(
        sha256_file(&out),
        sha256_file(&p.path().join("app/models/a.pkl"))
    );
    let tar = p.path().join("models.tar");
    ok(
        &p,
        &[
            "dump",
            "latest",
            "app:app/models",
            "--output",
            tar.to_str().unwrap(),
        ],
    );
    let listing = Command::new("tar")
        .args(["-tvf", tar.to_str().unwrap(), "--utc", "--numeric-owner"])
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    // The directory comes with its parents (their metadata kept), as
    // `restore --path` does.
    assert_eq!(
        names,
        [
            "app/",
            "app/models/",
            "app/models/a.pkl",
            "app/models/b.pkl"
        ],
        "{listing}"
    );
    assert!(
        listing.contains("2025-12-01 12:01 app/models/a.pkl"),
        "{listing}"
    );
    let x = tempfile::tempdir().unwrap();
    assert!(Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(x.path())
        .status()
        .unwrap()
        .success());
    assert_eq!(
        sha256_file(&x.path().join("app/models/b.pkl")),
        sha256_file(&p.path().join("app/models/b.pkl"))
    );

    // A second backup after changes everywhere.
    let app = p.path().join("app");
    std::fs::write(app.join("models/b.pkl"), random_bytes(3, 900)).unwrap();
    touch(&app.join("models/b.pkl"), T0 + 120);
    std::fs::remove_file(app.join("docker-compose.yml")).unwrap();
    std::fs::write(app.join("new.txt"), "new\n").unwrap();
    touch(&app, T0 + 300);
    std::fs::set_permissions(
        app.join("models/a.pkl"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    pg.psql(
        "shop",
        "INSERT INTO orders SELECT g, 1 FROM generate_series(101, 110) g",
    );
    redis.cli(&["DEL", "k0", "k1"]);
    flux.write(
        "energy",
        "autogen",
        b"power,meter=m9 kw=1 1600000100000000000\n",
    );
    ok(&p, &["backup"]);

    let diff = ok(&p, &["diff", "latest~1", "latest"]);
    let body: Vec<&str> = diff.lines().skip(1).collect();
    let find = |prefix: &str| {
        body.iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix}: {diff}"))
    };
    let app_at = find("app (files) modified: 1 added, 1 removed, 1 changed, 1 metadata only;");
    assert_eq!(
        &body[app_at + 1..app_at + 5],
        [
            "  - app/docker-compose.yml  (13 B -> -)",
            "  m app/models/a.pkl  (2.9 KiB -> 2.9 KiB)",
            "  M app/models/b.pkl  (700 B -> 900 B)",
            "  + app/new.txt  (- -> 4 B)",
        ],
        "{diff}"
    );
    let db_at = find("db (postgres) modified:");
    assert!(
        body[db_at..].contains(&"  shop/public.orders: 100 -> 110 rows (+10)"),
        "{diff}"
    );
    let cache_at = find("cache (redis) modified:");
    assert_eq!(
        body[cache_at + 1..].iter().find(|l| l.contains("keys")),
        Some(&"  db0: 5 -> 3 keys (-2)"),
        "{diff}"
    );
    assert!(
        body.contains(&"  energy/autogen.power: 30 -> 31 points (+1)"),
        "{diff}"
    );
    let j = p.json(&["diff", &first, "latest"]);
    let app_j = j["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "app")
        .unwrap()
        .clone();
    assert_eq!(app_j["paths"].as_array().unwrap().len(), 4, "{j}");
    assert_eq!(j["from"]["id"], first.as_str());

    // find: every version of b.pkl, newest first, with the snapshots holding it.
    let ids: Vec<String> = p
        .json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap()[..8].to_string())
        .collect();
    let found = ok(&p, &["find", "*.pkl"]);
    // a.pkl: the same bytes, another mode — two versions.
    assert_eq!(
        found,
        format!(
            "app:app/models/a.pkl\n  -rw-------    2.9 KiB  2025-12-01 12:01:00 +00:00  in 1: {new}\n  -rw-r--r--    2.9 KiB  2025-12-01 12:01:00 +00:00  in 1: {old}\n\
             app:app/models/b.pkl\n  -rw-r--r--      900 B  2025-12-01 12:02:00 +00:00  in 1: {new}\n  -rw-r--r--      700 B  2025-12-01 12:02:00 +00:00  in 1: {old}\n",
            new = ids[0],
            old = ids[1]
        )
    );
    let gone = ok(&p, &["find", "docker-compose.yml"]);
    assert!(gone.ends_with(&format!("in 1: {}\n", ids[1])), "{gone}");
    assert_eq!(
        ok(&p, &["find", "app/models/*", "--newer", "2025-12-02"]),
        ""
    );
    assert_eq!(ok(&p, &["find", "nothing-matches"]), "");

    // stats: against the repository's files and the snapshots' own sizes.
    let st = p.json(&["stats"]);
    let repo = p.repo();
    let stored: u64 = ["packs", "index", "snapshots"]
        .iter()
        .map(|d| dir_size(&repo.join(d)))
        .sum();
    assert_eq!(st["stored"], stored, "{st}");
    assert_eq!(st["snapshots"], 2);
    let snaps = p.json(&["snapshots"]);
    let raw: u64 = snaps
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["sources"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v["size"].as_u64().unwrap())
        })
        .sum();
    assert_eq!(st["raw"], raw, "{st}");
    let app_s = st["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "app")
        .unwrap()
        .clone();
    assert_eq!(app_s["growth"], 4 + 200 - 13, "{st}");
    let text = ok(&p, &["stats"]);
    assert!(text.starts_with("snapshots  2\nstored     "), "{text}");
    assert!(text.contains("SOURCE   TYPE      BACKUPS  SIZE"), "{text}");
}
