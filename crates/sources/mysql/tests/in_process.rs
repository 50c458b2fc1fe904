//! The mysql driver in-process against a real MariaDB server, through the
//! test harness. Every comparison is with a second, independent
//! `mariadb-dump` of the original and the restored database.

use respaldo_core::source::{RestoreTarget, Selection};
use respaldo_testing::harness::{runtime, Harness, RestoreOptions};
use respaldo_testing::servers::mariadb::{Maria, PASSWORD};

/// Foreign keys, a view, a trigger, a stored procedure and function, an
/// event, JSON, BLOBs, utf8mb4 text, NULLs, and a table of 1 M rows.
pub const FIXTURE: &str = r#"
CREATE TABLE customers (
  id INT PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  email VARCHAR(100) UNIQUE,
  profile JSON,
  avatar BLOB,
  note TEXT
) DEFAULT CHARSET=utf8mb4;
INSERT INTO customers VALUES
  (1, 'Ana Núñez', 'ana@example.com', '{"tier": "gold", "tags": ["a", "b"]}', 0x00FF10DEADBEEF, NULL),
  (2, 'Zoë 😀 Ωmega', 'zoe@example.com', NULL, NULL, 'multi\nline, "quoted" \\ back; (paren'),
  (3, '李小龍', NULL, '[]', '', '');
CREATE TABLE orders (
  id INT AUTO_INCREMENT PRIMARY KEY,
  customer_id INT NOT NULL,
  total DECIMAL(12,2),
  placed DATETIME DEFAULT '2024-05-01 10:00:00',
  KEY by_customer (customer_id),
  CONSTRAINT orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id)
) DEFAULT CHARSET=utf8mb4;
INSERT INTO orders (customer_id, total) SELECT 1 + seq % 3, seq * 1.25 FROM seq_1_to_5000;
CREATE TABLE audit_log (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(200));
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW
  INSERT INTO audit_log (what) VALUES (CONCAT('order ', NEW.id));
CREATE VIEW order_totals AS SELECT customer_id, SUM(total) AS total FROM orders GROUP BY customer_id;
CREATE PROCEDURE add_order(IN c INT, IN t DECIMAL(12,2)) INSERT INTO orders (customer_id, total) VALUES (c, t);
CREATE FUNCTION with_tax(x DECIMAL(12,2)) RETURNS DECIMAL(12,2) DETERMINISTIC RETURN x * 1.21;
CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DO DELETE FROM audit_log WHERE id < 0;
CALL add_order(2, 99.99);
CREATE TABLE events (id INT PRIMARY KEY, payload CHAR(32), at DATETIME);
INSERT INTO events SELECT seq, MD5(seq), '2024-01-01' + INTERVAL seq SECOND FROM seq_1_to_1000000;
"#;

fn harness(dir: &std::path::Path) -> Harness {
    std::fs::write(dir.join("pw"), PASSWORD).unwrap();
    runtime().block_on(Harness::new()).with_base(dir)
}

fn table(m: &Maria, db: &str) -> String {
    format!("url = \"{}\"\npassword = {{ file = \"pw\" }}", m.url(db))
}

#[test]
fn round_trip_into_a_new_database_and_in_place_after_a_drop() {
    let rt = runtime();
    let m = Maria::start();
    m.sql(
        None,
        "CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
    );
    m.script(Some("shop"), FIXTURE);
    let original = m.normalized_dump("shop");

    let dir = tempfile::tempdir().unwrap();
    let h = harness(dir.path());
    let source = h
        .source(&respaldo_source_mysql::DRIVER, &table(&m, "shop"))
        .unwrap();
    let backup = rt.block_on(h.backup_with("db", source.clone())).unwrap();
    let rows = &backup.entry.metadata["databases"]["shop"]["rows"];
    assert_eq!(rows["events"], 1_000_000);
    assert_eq!(rows["orders"], 5001);
    assert_eq!(rows["audit_log"], 1, "the trigger's row");
    assert!(rows.get("order_totals").is_none(), "a view is not a table");

    // Into a new database on the same server.
    rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Other(m.url("shop_copy")),
        RestoreOptions::default(),
    ))
    .unwrap();
    assert_eq!(m.normalized_dump("shop_copy"), original);
    assert_eq!(
        m.sql(None, "SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop_copy'").trim(),
        "utf8mb4_unicode_ci"
    );

    // In place over live data: refused without force, changed nothing.
    m.sql(Some("shop"), "DELETE FROM orders WHERE id > 10");
    let changed = m.normalized_dump("shop");
    let refused = rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Live,
        RestoreOptions::default(),
    ));
    let err = refused
        .expect_err("restore over live data was not refused")
        .to_string();
    assert!(err.contains("--force"), "{err}");
    assert_eq!(m.normalized_dump("shop"), changed);

    // The database is gone: restored without force, identical.
    m.sql(None, "DROP DATABASE shop");
    rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Live,
        RestoreOptions::default(),
    ))
    .unwrap();
    assert_eq!(m.normalized_dump("shop"), original);

    let report = rt
        .block_on(h.test_restore_with(&backup, source.as_ref()))
        .unwrap();
    assert!(
        report.lines.iter().any(|l| l.contains("removed")),
        "{:?}",
        report.lines
    );
    let left = m.sql(None, "SHOW DATABASES LIKE 'respaldo_test%'");
    assert!(
        left.trim().is_empty(),
        "the scratch database was left behind: {left}"
    );
    rt.block_on(h.verify());
}

#[test]
fn one_table_comes_back_with_its_keys_and_triggers_and_the_rest_is_untouched() {
    let rt = runtime();
    let m = Maria::start();
    m.sql(None, "CREATE DATABASE shop");
    m.script(
        Some("shop"),
        &FIXTURE.replace("seq_1_to_1000000", "seq_1_to_2000"),
    );
    let original = m.normalized_dump("shop");
    let dir = tempfile::tempdir().unwrap();
    let h = harness(dir.path());
    let source = h
        .source(&respaldo_source_mysql::DRIVER, &table(&m, "shop"))
        .unwrap();
    let backup = rt.block_on(h.backup_with("db", source.clone())).unwrap();

    let orders = RestoreOptions {
        selection: Selection {
            tables: vec!["orders".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    // The table holds rows: refused without force.
    m.sql(Some("shop"), "DELETE FROM orders WHERE id > 100");
    let refused = rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Live,
        orders.clone(),
    ));
    assert!(refused.is_err());
    assert_eq!(
        m.sql(Some("shop"), "SELECT COUNT(*) FROM orders").trim(),
        "100"
    );

    // Dropped: it comes back with its index, foreign key and trigger.
    m.sql(Some("shop"), "SET FOREIGN_KEY_CHECKS=0; DROP TABLE orders");
    m.sql(
        Some("shop"),
        "INSERT INTO customers (id, name) VALUES (4, 'new since the backup')",
    );
    rt.block_on(h.restore_with(&backup, source.as_ref(), RestoreTarget::Live, orders))
        .unwrap();
    m.sql(Some("shop"), "DELETE FROM customers WHERE id = 4");
    assert_eq!(
        m.normalized_dump("shop"),
        original,
        "the rest of the database was changed"
    );

    // Definitions only, into a new database.
    let schema = RestoreOptions {
        selection: Selection {
            schema_only: true,
            ..Default::default()
        },
        ..Default::default()
    };
    rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Other(m.url("empty_shop")),
        schema,
    ))
    .unwrap();
    assert_eq!(
        m.sql(Some("empty_shop"), "SELECT COUNT(*) FROM events")
            .trim(),
        "0"
    );
    assert_eq!(
        m.sql(
            None,
            "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'empty_shop'"
        )
        .trim(),
        "1"
    );
}

#[test]
fn every_database_and_the_accounts_onto_a_second_server() {
    let rt = runtime();
    let a = Maria::start();
    let b = Maria::start();
    a.sql(None, "CREATE DATABASE shop; CREATE DATABASE crm");
    a.script(
        Some("shop"),
        &FIXTURE.replace("seq_1_to_1000000", "seq_1_to_2000"),
    );
    a.script(
        Some("crm"),
        "CREATE TABLE c (id INT PRIMARY KEY); INSERT INTO c SELECT seq FROM seq_1_to_100;",
    );
    a.sql(
        None,
        "CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw'; GRANT SELECT, INSERT ON shop.* TO 'app'@'%'",
    );
    let dir = tempfile::tempdir().unwrap();
    let h = harness(dir.path());
    let source = h
        .source(
            &respaldo_source_mysql::DRIVER,
            &format!("{}\ndatabases = [\"*\"]", table(&a, "")),
        )
        .unwrap();
    let backup = rt.block_on(h.backup_with("all", source.clone())).unwrap();
    assert_eq!(
        backup.entry.metadata["users"]["accounts"],
        serde_json::json!(["`app`@`%`"])
    );

    let to_b = RestoreTarget::Other(b.url(""));
    rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        to_b.clone(),
        RestoreOptions::default(),
    ))
    .unwrap();
    for db in ["shop", "crm"] {
        assert_eq!(b.normalized_dump(db), a.normalized_dump(db));
    }
    assert_eq!(
        b.sql(None, "SHOW GRANTS FOR 'app'@'%'"),
        a.sql(None, "SHOW GRANTS FOR 'app'@'%'")
    );
    // The target's own root account still logs in with its own password.
    assert_eq!(b.sql(None, "SELECT 1").trim(), "1");

    // Again: the databases and the account exist, so it is refused …
    let again = rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        to_b.clone(),
        RestoreOptions::default(),
    ));
    assert!(again.is_err());
    // … and with force it replaces them.
    b.sql(Some("crm"), "DELETE FROM c");
    let force = RestoreOptions {
        force: true,
        ..Default::default()
    };
    rt.block_on(h.restore_with(&backup, source.as_ref(), to_b, force))
        .unwrap();
    assert_eq!(b.normalized_dump("crm"), a.normalized_dump("crm"));
}

#[test]
fn tls_required_by_the_server_and_the_unix_socket() {
    let rt = runtime();
    let m = Maria::start_tls();
    m.sql(None, "CREATE DATABASE shop");
    m.script(
        Some("shop"),
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40)); INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_1000;",
    );
    let original = m.normalized_dump("shop");
    let dir = tempfile::tempdir().unwrap();
    let h = harness(dir.path());

    // Plain TCP is refused by the server (MariaDB answers "insecure
    // transport" or, before authentication completes, "access denied").
    let plain = h
        .source(
            &respaldo_source_mysql::DRIVER,
            &format!("{}\ntls = \"disable\"", table(&m, "shop")),
        )
        .unwrap();
    let err = rt
        .block_on(h.backup_with("db", plain))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("insecure transport") || err.contains("Access denied"),
        "{err}"
    );

    // Encrypted without checking, then with the certificate checked.
    for (i, tls) in [
        "tls = \"prefer\"".to_string(),
        "tls = \"require\"".to_string(),
        format!("tls = \"verify\"\nca_file = \"{}\"", m.ca_cert().display()),
    ]
    .iter()
    .enumerate()
    {
        let source = h
            .source(
                &respaldo_source_mysql::DRIVER,
                &format!("{}\n{tls}", table(&m, "shop")),
            )
            .unwrap();
        let backup = rt.block_on(h.backup_with("db", source.clone())).unwrap();
        let copy = format!("shop_tls_{i}");
        rt.block_on(h.restore_with(
            &backup,
            source.as_ref(),
            RestoreTarget::Other(m.url(&copy)),
            RestoreOptions::default(),
        ))
        .unwrap();
        assert_eq!(m.normalized_dump(&copy), original, "{tls}");
    }

    // A CA that did not sign the server's certificate is refused.
    let other_ca = dir.path().join("other-ca.crt");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ])
        .arg("-keyout")
        .arg(dir.path().join("other.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .unwrap();
    assert!(made.status.success());
    let wrong = h
        .source(
            &respaldo_source_mysql::DRIVER,
            &format!(
                "{}\ntls = \"verify\"\nca_file = \"{}\"",
                table(&m, "shop"),
                other_ca.display()
            ),
        )
        .unwrap();
    assert!(rt.block_on(h.backup_with("db", wrong)).is_err());

    // The Unix socket (no TLS needed there).
    let socket = h
        .source(
            &respaldo_source_mysql::DRIVER,
            &format!(
                "url = \"{}\"\npassword = {{ file = \"pw\" }}",
                m.socket_url("shop")
            ),
        )
        .unwrap();
    let backup = rt.block_on(h.backup_with("db", socket.clone())).unwrap();
    rt.block_on(h.restore_with(
        &backup,
        socket.as_ref(),
        RestoreTarget::Other(m.socket_url("shop_socket")),
        RestoreOptions::default(),
    ))
    .unwrap();
    assert_eq!(m.normalized_dump("shop_socket"), original);
}
