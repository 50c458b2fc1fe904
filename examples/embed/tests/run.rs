//! Runs the embed example against a real PostgreSQL and moto's S3 server:
//! the restored database matches the original by a second `pg_dump`.

use std::process::Command;

use respaldo_testing::moto::Moto;
use respaldo_testing::servers::postgres::{Pg, PASSWORD};

#[test]
fn backs_up_to_s3_and_restores_into_a_new_database() {
    let pg = Pg::start();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.script(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(8,2));
         INSERT INTO items SELECT g, 'item ' || g, g * 0.5 FROM generate_series(1, 2000) g;",
    );
    let original = pg.dump("shop");
    let moto = Moto::start();
    moto.create_bucket("backups");

    let out = Command::new(env!("CARGO_BIN_EXE_embed"))
        .args([
            &pg.url("shop"),
            "s3://backups/embed",
            &pg.url("shop_restored"),
        ])
        .env("PGPASSWORD", PASSWORD)
        .env("S3_ENDPOINT", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "embed failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("restored snapshot"), "{stdout}");
    assert_eq!(pg.dump("shop_restored"), original);
}
