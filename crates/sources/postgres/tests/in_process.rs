//! The PostgreSQL driver in-process against a real server, through the test
//! harness: backup → restore into a new database, compared with a second
//! `pg_dump`; in place after a drop; and the driver's own drill.

use respaldo_core::source::RestoreTarget;
use respaldo_testing::harness::{runtime, Harness, RestoreOptions};
use respaldo_testing::servers::postgres::{Pg, PASSWORD};

#[test]
fn round_trip_into_a_new_database_and_in_place_after_a_drop() {
    let rt = runtime();
    let pg = Pg::start();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.script(
        "shop",
        "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
         CREATE TABLE orders (id serial PRIMARY KEY, customer int REFERENCES customers(id), total numeric(10,2));
         INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 500) g;
         INSERT INTO orders (customer, total) SELECT 1 + g % 500, g * 1.25 FROM generate_series(1, 5000) g;
         CREATE INDEX orders_by_customer ON orders (customer);",
    );
    let original = pg.dump("shop");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), PASSWORD).unwrap();
    let h = rt.block_on(Harness::new()).with_base(dir.path());
    let source = h
        .source(
            &respaldo_source_postgres::DRIVER,
            &format!(
                "url = \"{}\"\npassword = {{ file = \"pw\" }}",
                pg.url("shop")
            ),
        )
        .unwrap();
    let backup = rt.block_on(h.backup_with("db", source.clone())).unwrap();

    // Into a new database on the same server.
    rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Other(pg.url("shop_copy")),
        RestoreOptions::default(),
    ))
    .unwrap();
    assert_eq!(pg.dump("shop_copy"), original);

    // In place over live data: refused without force, changed nothing.
    pg.psql("shop", "DELETE FROM orders WHERE id > 10");
    let changed = pg.dump("shop");
    let refused = rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Live,
        RestoreOptions::default(),
    ));
    assert!(refused.is_err(), "restore over live data was not refused");
    assert_eq!(pg.dump("shop"), changed);

    // The database is gone: restored without force, identical.
    pg.psql("postgres", "DROP DATABASE shop");
    rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Live,
        RestoreOptions::default(),
    ))
    .unwrap();
    assert_eq!(pg.dump("shop"), original);

    rt.block_on(h.test_restore_with(&backup, source.as_ref()))
        .unwrap();
    rt.block_on(h.verify());
}
