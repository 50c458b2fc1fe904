//! PostgreSQL source against real PostgreSQL servers started per test.
//! Every round trip is checked with an independent `pg_dump` of the original
//! and the restored database.

use crate::common;
use respaldo_testing::servers::postgres as pg;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{assert_backup_fails, stderr, Project, Tmpfs};
use pg::{Pg, PASSWORD};

/// Several schemas, sequences, a view, a function, indexes, jsonb, bytea,
/// NULLs, unicode, a large object and a table of 1 M rows.
const FIXTURE: &str = r#"
CREATE SCHEMA sales;
CREATE SCHEMA audit;
CREATE TABLE public.customers (
    id serial PRIMARY KEY,
    name text NOT NULL,
    email text UNIQUE,
    profile jsonb,
    avatar bytea,
    note text
);
INSERT INTO customers (name, email, profile, avatar, note) VALUES
  ('Ana Núñez', 'ana@example.com', '{"tier": "gold", "tags": ["a", "b"], "n": 1.5}', '\x00ff10deadbeef'::bytea, NULL),
  ('Zoë 😀 Ωmega', 'zoe@example.com', NULL, NULL, E'multi\nline, "quoted" \\ back'),
  ('李小龍', NULL, '[]', ''::bytea, '');
CREATE SEQUENCE sales.invoice_no START 1000;
SELECT setval('sales.invoice_no', 4242);
CREATE TABLE sales.orders (
    id bigserial PRIMARY KEY,
    customer_id int REFERENCES customers(id),
    total numeric(12, 2),
    placed timestamptz DEFAULT '2024-05-01 10:00:00+00',
    items jsonb
);
CREATE INDEX orders_customer ON sales.orders (customer_id);
INSERT INTO sales.orders (customer_id, total, items)
  SELECT 1 + g % 3, g * 1.25, jsonb_build_object('sku', 'X' || g, 'qty', g % 7)
  FROM generate_series(1, 5000) g;
CREATE VIEW sales.order_totals AS
  SELECT customer_id, sum(total) AS total FROM sales.orders GROUP BY customer_id;
CREATE FUNCTION audit.bump(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x + 1';
CREATE TABLE audit.events (id bigint PRIMARY KEY, payload text, at timestamptz);
INSERT INTO audit.events
  SELECT g, md5(g::text), '2024-01-01'::timestamptz + g * interval '1 second'
  FROM generate_series(1, 1000000) g;
SELECT lo_from_bytea(424242, 'the contents of a large object'::bytea);
"#;

fn source_config(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[sources.{name}]\ntype = \"postgres\"\nurl = \"{url}\"\npassword = {{ file = \"pw\" }}\n{extra}\n"
    )
}

fn project(config: &str) -> Project {
    let p = Project::new(config);
    std::fs::write(p.path().join("pw"), PASSWORD).unwrap();
    p.ok(&["init"]);
    p
}

/// Runs respaldo, asserts success, returns stdout and stderr together (the
/// restore reports go to stderr).
fn say(p: &Project, args: &[&str]) -> String {
    let out = p.run(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "respaldo {args:?} failed: {text}");
    text
}

fn events_digest(pg: &Pg, db: &str) -> String {
    pg.psql(
        db,
        "SELECT count(*) || ' ' || md5(string_agg(id || payload || at, ',' ORDER BY id)) FROM audit.events",
    )
}

#[test]
fn round_trip_in_place_into_a_new_database_and_table_by_table() {
    let pg = Pg::start();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.script("shop", FIXTURE);
    let p = project(&source_config("shop", &pg.url("shop"), ""));
    let b = p.backup(&[]);
    assert_eq!(b["sources"]["shop"]["status"], "ok", "{b}");
    let original = pg.dump("shop");
    assert!(
        original.contains("4242, true"),
        "sequence value in the dump"
    );

    // The row counts were recorded in the dump's snapshot.
    let show = p.json(&["show", "latest"]);
    let rows = &show["sources"]["shop"]["metadata"]["databases"]["shop"]["rows"];
    assert_eq!(rows["audit.events"], 1_000_000, "{show}");
    assert_eq!(rows["sales.orders"], 5000);
    assert_eq!(rows["public.customers"], 3);
    assert!(show["sources"]["shop"]["metadata"]["server_version"]
        .as_str()
        .unwrap()
        .starts_with("15"));

    // Into a new database name on the same server.
    let out = say(
        &p,
        &[
            "restore",
            "latest",
            "--source",
            "shop",
            "--target",
            &pg.url("shop_copy"),
        ],
    );
    assert!(out.contains("row counts match"), "{out}");
    assert_eq!(pg.dump("shop_copy"), original, "restored copy differs");

    // Into the live, non-empty database without --force: refused, unchanged.
    pg.psql("shop", "DELETE FROM sales.orders WHERE id % 2 = 0");
    let changed = pg.dump("shop");
    let out = p.run(&["restore", "latest", "--source", "shop"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert!(stderr(&out).contains("shop"), "{}", stderr(&out));
    assert_eq!(
        pg.dump("shop"),
        changed,
        "a refused restore changed the database"
    );

    // With --force: a safety snapshot of the live state first, then replaced.
    let out = say(&p, &["restore", "latest", "--source", "shop", "--force"]);
    assert!(out.contains("safety snapshot"), "{out}");
    assert_eq!(pg.dump("shop"), original);
    let safety = p.json(&["snapshots", "--tag", "pre-restore"]);
    let safety = safety.as_array().unwrap();
    assert_eq!(safety.len(), 1, "{safety:?}");
    let id = safety[0]["id"].as_str().unwrap();
    p.ok(&[
        "restore",
        id,
        "--source",
        "shop",
        "--target",
        &pg.url("shop_before"),
    ]);
    assert_eq!(
        pg.dump("shop_before"),
        changed,
        "the safety snapshot holds the replaced state"
    );

    // A destroyed database comes back from `latest` (never the safety snapshot).
    pg.psql("postgres", "DROP DATABASE shop WITH (FORCE)");
    p.ok(&["restore", "latest", "--source", "shop"]);
    assert_eq!(pg.dump("shop"), original);

    // One table at a time.
    let digest = events_digest(&pg, "shop");
    pg.psql("shop", "DROP TABLE audit.events");
    let out = say(
        &p,
        &[
            "restore",
            "latest",
            "--source",
            "shop",
            "--table",
            "audit.events",
        ],
    );
    assert!(
        out.contains("row counts match (1 tables, 1000000 in all)"),
        "{out}"
    );
    assert_eq!(events_digest(&pg, "shop"), digest);
    let out = p.run(&[
        "restore",
        "latest",
        "--source",
        "shop",
        "--table",
        "sales.orders",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("already has sales.orders"),
        "{}",
        stderr(&out)
    );
    pg.psql("shop", "DELETE FROM sales.orders");
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "shop",
        "--table",
        "sales.orders",
        "--force",
    ]);
    assert_eq!(pg.psql("shop", "SELECT count(*) FROM sales.orders"), "5000");
    assert_eq!(
        pg.psql("shop", "SELECT count(*) FROM sales.order_totals"),
        "3",
        "the dependent view stays"
    );

    // Schema only, into a new database.
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "shop",
        "--schema-only",
        "--target",
        &pg.url("shop_schema"),
    ]);
    assert_eq!(
        pg.psql("shop_schema", "SELECT count(*) FROM audit.events"),
        "0"
    );
    assert_eq!(pg.psql("shop_schema", "SELECT audit.bump(1)"), "2");

    // `dump` gives a file pg_restore accepts.
    let file = p.path().join("shop.dump");
    let st = Command::new(common::bin())
        .current_dir(p.path())
        .args(["-c", "backup.toml", "dump", "latest", "shop/shop.dump"])
        .stdout(std::fs::File::create(&file).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let list = Command::new(pg::bin_dir().join("pg_restore"))
        .arg("--list")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(String::from_utf8_lossy(&list.stdout).contains("TABLE DATA audit events"));

    // test-restore: a scratch database, checked and dropped.
    let out = say(&p, &["test-restore"]);
    assert!(out.contains("row counts match"), "{out}");
    assert!(out.contains("RTO"), "{out}");
    assert!(!pg
        .databases()
        .iter()
        .any(|d| d.starts_with("respaldo_test")));
}

#[test]
fn all_databases_and_roles_onto_a_new_server_and_plain_format() {
    let pg = Pg::start();
    pg.script(
        "postgres",
        "CREATE ROLE app_owner LOGIN PASSWORD 'app-pw' CREATEDB;
         CREATE ROLE reporting NOLOGIN;
         CREATE DATABASE app OWNER app_owner;
         CREATE DATABASE metrics;",
    );
    pg.script(
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 20000) g;
         ALTER TABLE items OWNER TO app_owner;
         GRANT SELECT ON items TO reporting;",
    );
    pg.script(
        "metrics",
        "CREATE TABLE samples (t timestamptz, v double precision, tags jsonb);
         INSERT INTO samples SELECT '2020-01-01'::timestamptz + g * interval '1 minute', g / 7.0,
           jsonb_build_object('host', 'h' || g % 5) FROM generate_series(1, 50000) g;",
    );
    let config = source_config("all", &pg.url("postgres"), "databases = [\"*\"]")
        + &source_config("plain", &pg.url("metrics"), "format = \"plain\"");
    let p = project(&config);
    let b = p.backup(&[]);
    assert_eq!(b["sources"]["all"]["status"], "ok", "{b}");
    assert_eq!(b["sources"]["plain"]["status"], "ok", "{b}");

    let other = Pg::start();
    let server = format!("postgres://postgres@127.0.0.1:{}", other.port);
    let out = say(
        &p,
        &["restore", "latest", "--source", "all", "--target", &server],
    );
    assert!(out.contains("roles"), "{out}");
    assert_eq!(other.roles(), pg.roles());
    assert_eq!(other.databases(), pg.databases());
    for db in ["app", "metrics"] {
        assert_eq!(other.dump(db), pg.dump(db), "database {db} differs");
    }
    assert_eq!(
        other.psql(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'"
        ),
        "app_owner"
    );
    assert_eq!(
        other.psql(
            "app",
            "SELECT has_table_privilege('reporting', 'items', 'SELECT')"
        ),
        "t"
    );

    // The plain SQL dump goes back through psql.
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "plain",
        "--target",
        &other.url("metrics_plain"),
    ]);
    assert_eq!(other.dump("metrics_plain"), pg.dump("metrics"));
    let out = p.run(&[
        "restore",
        "latest",
        "--source",
        "plain",
        "--table",
        "samples",
        "--target",
        &other.url("x"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("custom-format"), "{}", stderr(&out));
}

/// Points the source at a `bin_dir` holding only a `pg_dump` shell script
/// with `body` (or nothing at all).
fn fake_tools(p: &Project, pg: &Pg, dir: &str, body: Option<&str>) {
    let tools = p.path().join(dir);
    std::fs::create_dir(&tools).unwrap();
    if let Some(body) = body {
        let path = tools.join("pg_dump");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    p.write_config(&source_config(
        "db",
        &pg.url("db"),
        &format!("bin_dir = \"{dir}\""),
    ));
}

#[test]
fn failures_are_clear_and_leave_the_last_good_backup() {
    let mut pg = Pg::start();
    pg.psql("postgres", "CREATE DATABASE db");
    pg.script(
        "db",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 200000) g;",
    );
    let p = project(&source_config("db", &pg.url("db"), ""));
    p.backup(&[]);
    let original = pg.dump("db");

    // Wrong password.
    std::fs::write(p.path().join("pw"), "wrong").unwrap();
    assert_backup_fails(&p, 1, "password authentication failed", PASSWORD);
    std::fs::write(p.path().join("pw"), PASSWORD).unwrap();

    // Missing pg_dump.
    fake_tools(&p, &pg, "no-tools", None);
    assert_backup_fails(&p, 1, "pg_dump", PASSWORD);

    // A pg_dump older than the server.
    fake_tools(
        &p,
        &pg,
        "old-tools",
        Some("echo 'pg_dump (PostgreSQL) 12.3'"),
    );
    assert_backup_fails(&p, 1, "is version 12 but the server", PASSWORD);

    // pg_dump killed mid-stream (after 1 MB of output).
    let real = pg::bin_dir().join("pg_dump");
    let script = format!(
        "if [ \"$1\" = --version ]; then exec {real} --version; fi\n{real} \"$@\" | head -c 1000000\nkill -KILL $$",
        real = real.display()
    );
    fake_tools(&p, &pg, "killing-tools", Some(&script));
    assert_backup_fails(&p, 1, "killed by signal 9", PASSWORD);

    // Server down.
    p.write_config(&source_config("db", &pg.url("db"), ""));
    pg.stop();
    assert_backup_fails(&p, 1, "cannot connect", PASSWORD);

    // The last good backup still restores.
    pg.restart();
    p.write_config(&source_config("db", &pg.url("db"), ""));
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "db",
        "--target",
        &pg.url("db_again"),
    ]);
    assert_eq!(pg.dump("db_again"), original);
    p.ok(&["verify", "--read-data"]);
}

#[test]
fn repository_disk_full_fails_cleanly() {
    let pg = Pg::start();
    pg.psql("postgres", "CREATE DATABASE db");
    pg.psql(
        "db",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'small')",
    );
    let p = Project::new("");
    let _disk = Tmpfs::mount(&p.path().join("repo"), "24m");
    p.write_config(&source_config("db", &pg.url("db"), ""));
    std::fs::write(p.path().join("pw"), PASSWORD).unwrap();
    p.ok(&["init"]);
    p.backup(&[]);
    let original = pg.dump("db");
    // ~60 MB of data that does not compress below the 24 MB left.
    pg.psql(
        "db",
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, 1000000) g",
    );
    let out = p.run(&["backup"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("db"), "{err}");
    assert!(err.to_lowercase().contains("no space left"), "{err}");
    // Free the space the failed run used, then the earlier backup restores.
    p.ok(&["prune"]);
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "db",
        "--target",
        &pg.url("db_again"),
    ]);
    assert_eq!(pg.dump("db_again"), original);
}

#[test]
fn tenant_csv_export_and_restore() {
    let pg = Pg::start();
    pg.psql("postgres", "CREATE DATABASE saas");
    pg.script(
        "saas",
        r#"CREATE TABLE "Tenant" (id int PRIMARY KEY, name text);
           CREATE TABLE product (id int PRIMARY KEY, tenant_id int REFERENCES "Tenant"(id), name text, price numeric);
           INSERT INTO "Tenant" VALUES (1, 'uno'), (42, 'Comercial, "Eléctrica"');
           INSERT INTO product SELECT g, CASE WHEN g % 2 = 0 THEN 42 ELSE 1 END, 'p' || g || E'\n"x"', g / 3.0
             FROM generate_series(1, 10000) g;"#,
    );
    let config = source_config(
        "tenant42",
        &pg.url("saas"),
        "mode = \"csv\"\ntables = [\"product\"]\nwhere = \"tenant_id = 42\"",
    );
    let p = project(&config);
    let b = p.backup(&[]);
    assert_eq!(b["sources"]["tenant42"]["status"], "ok", "{b}");
    let before = pg.psql(
        "saas",
        "SELECT md5(string_agg(id || name || price, ',' ORDER BY id)) FROM product",
    );

    // The artifacts are one CSV per table, with a header.
    let out_dir = p.path().join("out");
    p.ok(&["restore", "latest", "--to", out_dir.to_str().unwrap()]);
    let csv = std::fs::read_to_string(out_dir.join("tenant42/product.csv")).unwrap();
    assert!(
        csv.starts_with("id,tenant_id,name,price\n"),
        "{}",
        &csv[..80]
    );
    assert_eq!(csv.matches(",42,").count(), 5000);

    // Restore refuses while the tenant's rows exist.
    let out = p.run(&["restore", "latest", "--source", "tenant42"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("already has matching rows"),
        "{}",
        stderr(&out)
    );

    // Tenant data lost, then restored with COPY FROM.
    pg.psql("saas", "DELETE FROM product WHERE tenant_id = 42");
    let out = say(&p, &["restore", "latest", "--source", "tenant42"]);
    assert!(out.contains("row counts match"), "{out}");
    let after = pg.psql(
        "saas",
        "SELECT md5(string_agg(id || name || price, ',' ORDER BY id)) FROM product",
    );
    assert_eq!(after, before);
    // --force replaces the tenant's rows and leaves the others alone.
    pg.psql("saas", "UPDATE product SET price = 0");
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "tenant42",
        "--force",
        "--no-safety-snapshot",
    ]);
    assert_eq!(
        pg.psql("saas", "SELECT count(*) FROM product WHERE price = 0"),
        "5000",
        "only tenant 42's rows were replaced"
    );
    // A csv source is reported as not testable, which is not a failure.
    let v = p.json(&["test-restore"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["sources"][0]["testable"], false, "{v}");
}

#[test]
fn tls_connections_follow_sslmode() {
    let pg = Pg::start_tls();
    pg.psql("postgres", "CREATE DATABASE db");
    pg.psql(
        "db",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g",
    );
    let ca = pg.ca_cert();
    let url = |mode: &str| {
        format!(
            "{}?sslmode={mode}&sslrootcert={}",
            pg.url("db"),
            ca.display()
        )
    };
    // Encrypted without checking the certificate, and with it.
    for mode in ["require", "verify-full"] {
        let p = project(&source_config("db", &url(mode), ""));
        let b = p.backup(&[]);
        assert_eq!(b["sources"]["db"]["status"], "ok", "{mode}: {b}");
        let target = format!(
            "{}?sslmode={mode}&sslrootcert={}",
            pg.url(&format!("db_{}", mode.replace('-', "_"))),
            ca.display()
        );
        let out = say(
            &p,
            &["restore", "latest", "--source", "db", "--target", &target],
        );
        assert!(out.contains("row counts match"), "{out}");
    }
    // The server only accepts TLS: sslmode=disable is refused, clearly.
    let p = project(&source_config("db", &url("disable"), ""));
    let out = p.run(&["backup"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no encryption"), "{}", stderr(&out));
}

#[test]
fn example_config_parses() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(common::bin())
        .arg("-c")
        .arg(root.join("examples/postgres/backup.toml"))
        .args(["config", "check"])
        .env("SHOP_DB_PASSWORD", "x")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
