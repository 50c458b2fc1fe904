//! The mysql source through the binary against real MariaDB servers: the
//! restore contract (docs/restore.md) cell by cell, and failures that must
//! leave the last good backup restorable. Every comparison is with an
//! independent `mariadb-dump` of the original and the restored database.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;
use respaldo_testing::servers::mariadb::{Maria, PASSWORD};

/// A foreign key, a trigger, a view, a procedure, an event, BLOBs, JSON,
/// utf8mb4 text and NULLs.
const FIXTURE: &str = r#"
CREATE TABLE settings (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50) UNIQUE NOT NULL, value VARCHAR(50) DEFAULT 'x', data JSON, KEY by_value (value)) DEFAULT CHARSET=utf8mb4;
CREATE TABLE products (id INT AUTO_INCREMENT PRIMARY KEY, setting_id INT, price DECIMAL(10,2), photo BLOB,
  CONSTRAINT products_setting FOREIGN KEY (setting_id) REFERENCES settings (id)) DEFAULT CHARSET=utf8mb4;
CREATE TABLE audit (n INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(50));
CREATE TRIGGER products_audit AFTER INSERT ON products FOR EACH ROW INSERT INTO audit (what) VALUES ('insert');
INSERT INTO settings (name, value, data) SELECT CONCAT('k', seq), CONCAT('v', seq, ' ñ 😀'), JSON_OBJECT('n', seq) FROM seq_1_to_50;
INSERT INTO products (setting_id, price, photo) SELECT 1 + seq % 50, seq, IF(seq % 3 = 0, NULL, UNHEX(MD5(seq))) FROM seq_1_to_500;
CREATE VIEW cheap AS SELECT id, price FROM products WHERE price < 10;
CREATE PROCEDURE bump() UPDATE settings SET value = CONCAT(value, '+');
CREATE EVENT tidy ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01' DO DELETE FROM audit WHERE n < 0;
"#;

fn source(name: &str, m: &Maria, db: &str, extra: &str) -> String {
    format!(
        "[sources.{name}]\ntype = \"mysql\"\nurl = \"{}\"\npassword = {{ file = \"pw\" }}\n{extra}\n",
        m.url(db)
    )
}

fn project(config: &str) -> Project {
    let p = Project::new(config);
    std::fs::write(p.path().join("pw"), PASSWORD).unwrap();
    p.ok(&["init"]);
    p
}

fn new_db(m: &Maria, db: &str) {
    m.sql(None, &format!("CREATE DATABASE {db}"));
    m.script(Some(db), FIXTURE);
}

fn databases(m: &Maria) -> Vec<String> {
    m.sql(None, "SHOW DATABASES")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn mysql_full_table_and_schema_restore_matrix() {
    let m = Maria::start();
    new_db(&m, "shop");
    new_db(&m, "crm");
    let original = m.normalized_dump("shop");
    let p = project(&source("shop", &m, "shop", ""));
    p.backup(&[]);

    cell("mysql/full/live/absent");
    m.sql(None, "DROP DATABASE shop");
    p.ok(&["restore", "latest", "--source", "shop"]);
    assert_eq!(m.normalized_dump("shop"), original);

    cell("mysql/full/live/holds");
    m.sql(
        Some("shop"),
        "UPDATE settings SET value = 'changed' WHERE id < 10",
    );
    let changed = m.normalized_dump("shop");
    let err = fails(&p, &["restore", "latest", "--source", "shop"], 1);
    assert!(
        err.contains("`shop`") && err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(m.normalized_dump("shop"), changed);

    cell("mysql/full/live/holds/force");
    p.ok(&["restore", "latest", "--source", "shop", "--force"]);
    assert_eq!(m.normalized_dump("shop"), original);
    let safety = tagged(&p, "pre-restore");
    assert_eq!(safety.len(), 1);
    // The safety snapshot holds the changed database.
    p.ok(&[
        "restore",
        &safety[0],
        "--source",
        "shop",
        "--target",
        &m.url("before"),
    ]);
    assert_eq!(m.normalized_dump("before"), changed);

    cell("mysql/full/target/absent");
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "shop",
        "--target",
        &m.url("shop_copy"),
    ]);
    assert_eq!(m.normalized_dump("shop_copy"), original);

    cell("mysql/table/dropped");
    m.sql(
        Some("shop"),
        "SET FOREIGN_KEY_CHECKS = 0; DROP TABLE settings",
    );
    p.ok(&[
        "restore", "latest", "--source", "shop", "--table", "settings",
    ]);
    assert_eq!(
        m.normalized_dump("shop"),
        original,
        "the table, its keys, index and the foreign key into it are back"
    );

    cell("mysql/table/holds");
    m.sql(Some("shop"), "UPDATE settings SET value = 'changed'");
    let changed = m.normalized_dump("shop");
    let err = fails(
        &p,
        &[
            "restore", "latest", "--source", "shop", "--table", "settings",
        ],
        1,
    );
    assert!(
        err.contains("holds rows") && err.contains("settings: 50 rows"),
        "{err}"
    );
    assert_eq!(m.normalized_dump("shop"), changed);

    cell("mysql/table/holds/force");
    m.sql(
        Some("shop"),
        "INSERT INTO audit (what) VALUES ('after the backup')",
    );
    p.ok(&[
        "restore", "latest", "--source", "shop", "--table", "settings", "--force",
    ]);
    m.sql(
        Some("shop"),
        "DELETE FROM audit WHERE what = 'after the backup'",
    );
    assert_eq!(
        m.normalized_dump("shop"),
        original,
        "rows replaced, the rest untouched"
    );

    cell("mysql/table/nomatch");
    let err = fails(
        &p,
        &[
            "restore", "latest", "--source", "shop", "--table", "nope", "--force",
        ],
        1,
    );
    assert!(err.contains("no such table"), "{err}");
    assert_eq!(m.normalized_dump("shop"), original);

    cell("mysql/schema_only/target/absent");
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "shop",
        "--schema-only",
        "--target",
        &m.url("shape"),
    ]);
    assert_eq!(
        m.sql(Some("shape"), "SELECT COUNT(*) FROM settings").trim(),
        "0"
    );
    let shape = m.normalized_dump("shape");
    assert!(shape.contains("CREATE TABLE `products`") && shape.contains("products_audit"));
    assert!(!shape.contains("INSERT INTO `"), "no rows: {shape}");

    cell("mysql/schema_only/live/holds/force");
    let err = fails(
        &p,
        &[
            "restore",
            "latest",
            "--source",
            "shop",
            "--schema-only",
            "--force",
        ],
        1,
    );
    assert!(err.contains("would lose its rows"), "{err}");
    assert_eq!(m.normalized_dump("shop"), original);

    cell("mysql/database/one-of-several");
    let crm = m.normalized_dump("crm");
    let q = project(&source("both", &m, "", "databases = [\"shop\", \"crm\"]"));
    q.backup(&[]);
    q.ok(&[
        "restore",
        "latest",
        "--source",
        "both",
        "--database",
        "crm",
        "--target",
        &m.url("crm_copy"),
    ]);
    assert_eq!(m.normalized_dump("crm_copy"), crm);

    // The drill leaves nothing behind.
    let out = p.ok(&["test-restore", "--source", "shop"]);
    assert!(
        !databases(&m).iter().any(|d| d.starts_with("respaldo_test")),
        "{out}"
    );
    p.ok(&["verify", "--read-data"]);
}

/// A `dump_bin` shell script with `body`, or a path that does not exist.
fn fake_dump(p: &Project, m: &Maria, body: Option<&str>) {
    let dir = p.path().join("tools");
    let _ = std::fs::create_dir(&dir);
    let path = dir.join("mariadb-dump");
    let _ = std::fs::remove_file(&path);
    if let Some(body) = body {
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    p.write_config(&source("db", m, "db", "dump_bin = \"tools/mariadb-dump\""));
}

#[test]
fn mysql_failures_are_clear_and_leave_the_last_good_backup() {
    let mut m = Maria::start();
    m.sql(None, "CREATE DATABASE db");
    m.script(
        Some("db"),
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(200)); \
         INSERT INTO t SELECT seq, REPEAT(MD5(seq), 4) FROM seq_1_to_200000;",
    );
    let p = project(&source("db", &m, "db", ""));
    p.backup(&[]);
    let original = m.normalized_dump("db");

    // Wrong password.
    std::fs::write(p.path().join("pw"), "wrong").unwrap();
    assert_backup_fails(&p, 1, "Access denied", PASSWORD);
    std::fs::write(p.path().join("pw"), PASSWORD).unwrap();

    // Missing client.
    fake_dump(&p, &m, None);
    assert_backup_fails(&p, 1, "not found", PASSWORD);

    // A client older than the server.
    fake_dump(
        &p,
        &m,
        Some("echo 'mariadb-dump  Ver 10.19 Distrib 10.3.39-MariaDB, for debian-linux-gnu'"),
    );
    assert_backup_fails(&p, 1, "10.3 is older than the server", PASSWORD);

    // The dump killed mid-stream (after 1 MB of output).
    let script = "if [ \"$1\" = --version ]; then exec mariadb-dump --version; fi\n\
                  mariadb-dump \"$@\" | head -c 1000000\nkill -KILL $$";
    fake_dump(&p, &m, Some(script));
    assert_backup_fails(&p, 1, "killed by signal 9", PASSWORD);

    // Server down.
    p.write_config(&source("db", &m, "db", ""));
    m.stop();
    assert_backup_fails(&p, 1, "Can't connect", PASSWORD);

    // The last good backup still restores.
    m.restart();
    p.write_config(&source("db", &m, "db", ""));
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "db",
        "--target",
        &m.url("db_again"),
    ]);
    assert_eq!(m.normalized_dump("db_again"), original);
    p.ok(&["verify", "--read-data"]);
}

#[test]
fn mysql_repository_disk_full_fails_cleanly() {
    let m = Maria::start();
    m.sql(None, "CREATE DATABASE db");
    m.sql(
        Some("db"),
        "CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'small')",
    );
    let p = Project::new("");
    let _disk = Tmpfs::mount(&p.path().join("repo"), "24m");
    p.write_config(&source("db", &m, "db", ""));
    std::fs::write(p.path().join("pw"), PASSWORD).unwrap();
    p.ok(&["init"]);
    p.backup(&[]);
    let original = m.normalized_dump("db");
    // ~64 MB of rows that do not compress below the 24 MB left.
    m.sql(
        Some("db"),
        "CREATE TABLE big AS SELECT seq AS id, CONCAT(MD5(seq), MD5(seq * 7)) AS v FROM seq_1_to_1000000",
    );
    let out = p.run(&["backup"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("db"), "{err}");
    assert!(err.to_lowercase().contains("no space left"), "{err}");
    assert_eq!(
        good_backups(&p, "db"),
        1,
        "the failed run was recorded as good"
    );
    p.ok(&["prune"]);
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "db",
        "--target",
        &m.url("db_again"),
    ]);
    assert_eq!(m.normalized_dump("db_again"), original);
}

#[test]
fn mariadb_and_mongodb_example_configs_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for example in [
        "examples/mariadb/backup.toml",
        "examples/mongodb/backup.toml",
    ] {
        let out = Command::new(bin())
            .arg("-c")
            .arg(root.join(example))
            .args(["config", "check"])
            .env("SHOP_DB_PASSWORD", "x")
            .env("MONGO_URI", "mongodb://localhost")
            .output()
            .unwrap();
        assert!(out.status.success(), "{example}: {}", stderr(&out));
    }
}
