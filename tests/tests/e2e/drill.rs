//! The disaster drill: a stack like the seeds' — PostgreSQL, Redis,
//! InfluxDB, two Docker volumes with their containers, files — is backed
//! up; then the database is dropped, a volume removed and every other source
//! changed; one `restore latest --force` brings every source back identical,
//! takes safety snapshots of what existed only, starts the containers again
//! and passes the health checks.

use crate::common;
#[allow(dead_code)]
use respaldo_testing::servers::docker_objects as dockerh;
#[allow(dead_code)]
use respaldo_testing::servers::influxdb as influx;
use respaldo_testing::servers::postgres as pg;
use respaldo_testing::servers::redis as redis_server;

use common::*;
use dockerh::*;
use influx::Influx;
use pg::{Pg, PASSWORD};
use redis_server::{populate, Redis};

const SHOP: &str = r#"
CREATE TABLE products (id serial PRIMARY KEY, name text NOT NULL, price numeric);
CREATE TABLE orders (id serial PRIMARY KEY, product_id int REFERENCES products(id), qty int);
INSERT INTO products (name, price) SELECT 'p' || g, g * 1.5 FROM generate_series(1, 200) g;
INSERT INTO orders (product_id, qty) SELECT 1 + g % 200, g % 9 FROM generate_series(1, 2000) g;
"#;

fn influx_digest(s: &Influx) -> (String, usize, u64) {
    s.digest("energy", "SELECT * FROM \"power\"")
}

#[test]
fn one_restore_brings_a_whole_stack_back_after_a_disaster() {
    cell("stack/disaster");
    let pg = Pg::start();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.script("shop", SHOP);
    let shop = pg.dump("shop");
    let redis = Redis::start(None);
    populate(&redis);
    let cache = redis.digest();
    let flux = Influx::start(None);
    flux.query("CREATE DATABASE energy");
    let lines: String = (0..3000i64)
        .map(|i| {
            format!(
                "power,meter=m{} kw={i} {}\n",
                i % 4,
                1_600_000_000_000_000_000 + i * 1_000_000_000
            )
        })
        .collect();
    flux.write("energy", "autogen", lines.as_bytes());
    let energy = influx_digest(&flux);
    busybox_image();
    let grafana = Volume::new("grafana", &[]);
    let loki = Volume::new("loki", &[]);
    grafana.sh("mkdir -p /v/dash && echo '{\"panels\": 3}' > /v/dash/main.json && dd if=/dev/urandom of=/v/grafana.db bs=1k count=800 2>/dev/null");
    loki.sh("mkdir -p /v/chunks && dd if=/dev/urandom of=/v/chunks/c1 bs=1k count=300 2>/dev/null");
    let (grafana_l, loki_l) = (grafana.listing(), loki.listing());
    let web = Container::sleeping(Some(&grafana.name), &[]);
    let worker = Container::sleeping(None, &["tier=worker"]);
    let psql = pg::bin_dir().join("psql");
    let port = pg
        .url("x")
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let config = format!(
        r#"
[sources.db]
type = "postgres"
url = "{db}"
password = {{ file = "pw" }}
[sources.db.restore]
health_command = ["sh", "-c", "PGPASSWORD='{PASSWORD}' {psql} -h 127.0.0.1 -p {port} -U postgres -d shop -Atc 'SELECT count(*) FROM orders' | grep -qx 2000"]

[sources.cache]
type = "redis"
url = "{redis}"

[sources.metrics]
type = "influxdb"
url = "{flux}"
databases = ["energy"]

[sources.vols]
type = "docker"
volumes = ["{grafana}", "{loki}"]
helper_image = "{BUSYBOX}"
[sources.vols.restore]
stop_containers = ["{web}", "label:tier=worker"]
health_command = ["sh", "-c", "docker inspect -f '{{{{.State.Running}}}}' {web} | grep -qx true"]

[sources.files]
type = "files"
paths = ["app"]
"#,
        db = pg.url("shop"),
        psql = psql.display(),
        redis = redis.url(),
        flux = flux.url,
        grafana = grafana.name,
        loki = loki.name,
        web = web.name,
    );
    let p = Project::new(&config);
    std::fs::write(p.path().join("pw"), PASSWORD).unwrap();
    let app = p.path().join("app");
    std::fs::create_dir_all(app.join("models")).unwrap();
    std::fs::write(app.join("docker-compose.yml"), "services: {}\n").unwrap();
    std::fs::write(app.join("models/m.pkl"), random_bytes(9, 400_000)).unwrap();
    let files = fingerprint(&app);
    p.ok(&["init"]);
    let b = p.backup(&[]);
    assert!(
        b["sources"]
            .as_object()
            .unwrap()
            .values()
            .all(|s| s["status"] == "ok"),
        "{b}"
    );

    // The disaster.
    pg.psql("postgres", "DROP DATABASE shop WITH (FORCE)");
    redis.cli(&["FLUSHALL"]);
    redis.cli(&["SET", "stale", "x"]);
    flux.write(
        "energy",
        "autogen",
        b"power,meter=bad kw=0 1600000000000000001\n",
    );
    docker(&["volume", "rm", &loki.name]);
    grafana.sh("echo broken > /v/dash/main.json");
    std::fs::write(app.join("models/m.pkl"), b"corrupted").unwrap();
    std::fs::remove_file(app.join("docker-compose.yml")).unwrap();

    let (web_started, worker_started) = (web.started_at(), worker.started_at());
    let o = p.run(&["restore", "latest", "--force"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
    assert!(o.status.success(), "the whole-stack restore failed: {out}");

    // Every source is back, checked independently.
    assert_eq!(pg.dump("shop"), shop, "{out}");
    assert_eq!(redis.digest(), cache);
    assert_eq!(influx_digest(&flux), energy);
    assert_eq!(grafana.listing(), grafana_l);
    assert_eq!(loki.listing(), loki_l);
    assert_eq!(fingerprint(&app), files);
    // Safety snapshots only of what existed: not the dropped database, and
    // of the volumes only the one that was there.
    let safety = tagged(&p, "pre-restore");
    assert_eq!(safety.len(), 1, "{out}");
    let s = p.json(&["show", &safety[0]]);
    let sources: Vec<&String> = s["sources"].as_object().unwrap().keys().collect();
    assert!(
        !sources.contains(&&"db".to_string()),
        "the dropped database has nothing to protect: {sources:?}"
    );
    for want in ["cache", "metrics", "vols", "files"] {
        assert!(
            sources.contains(&&want.to_string()),
            "{want} missing from {sources:?}"
        );
    }
    let vols = s["sources"]["vols"]["metadata"]["volumes"]
        .as_object()
        .unwrap();
    assert!(
        vols.contains_key(&grafana.name) && !vols.contains_key(&loki.name),
        "{vols:?}"
    );
    assert!(out.contains("no safety snapshot needed"), "{out}");
    // The containers were stopped and run again; the health checks passed.
    assert!(web.running() && worker.running());
    assert_ne!(
        web.started_at(),
        web_started,
        "web was stopped for the restore"
    );
    assert_ne!(
        worker.started_at(),
        worker_started,
        "the worker was stopped for the restore"
    );
    assert!(out.contains("health command"), "{out}");
    assert_eq!(out.matches("health command").count(), 2, "{out}");
    // Databases first.
    let pos = |n: &str| out.find(&format!("{n}: ")).unwrap_or(usize::MAX);
    assert!(
        pos("db") < pos("vols") && pos("cache") < pos("files"),
        "{out}"
    );
    // The drill afterwards reports an RTO with what the real restore took
    // around the data: the safety snapshot, the containers, the health check.
    let drill = p.json(&["test-restore"]);
    assert_eq!(drill["ok"], true, "{drill}");
    let vols = drill["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "vols")
        .unwrap();
    for part in ["drill", "safety", "stop", "start", "health"] {
        assert!(
            vols["rto_parts_ms"][part].is_u64(),
            "{part} missing: {vols}"
        );
    }
    let sum: u64 = drill["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["rto_ms"].as_u64())
        .sum();
    assert_eq!(drill["rto_ms"].as_u64(), Some(sum), "{drill}");
    // The safety snapshots never become `latest` nor the last good backup.
    let st = p.json(&["status"]);
    for s in st.as_array().unwrap() {
        assert_eq!(s["last_good"]["snapshot"], b["id"], "{s}");
    }
}
