//! The restore contract (docs/restore.md) for PostgreSQL, cell by cell,
//! against a real server: every outcome is checked with an independent
//! `pg_dump` of the original and of the restored database.

use crate::common;
use respaldo_testing::servers::postgres as pg;

use common::*;
use pg::{Pg, PASSWORD};

/// Two schemas, a serial key, a unique constraint, a standalone index, a
/// default, a foreign key into `settings`, a trigger, and a second schema
/// that filtered backups leave out.
const FIXTURE: &str = r#"
CREATE SCHEMA app;
CREATE TABLE app.settings (id serial PRIMARY KEY, name text UNIQUE NOT NULL, value text DEFAULT 'x');
CREATE INDEX settings_value_idx ON app.settings (value);
CREATE TABLE app.products (id serial PRIMARY KEY, setting_id int REFERENCES app.settings(id), price numeric);
CREATE TABLE app.audit (n serial PRIMARY KEY, what text);
CREATE FUNCTION app.log() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO app.audit(what) VALUES (TG_OP); RETURN NEW; END $$;
CREATE TRIGGER products_audit AFTER INSERT ON app.products FOR EACH ROW EXECUTE FUNCTION app.log();
INSERT INTO app.settings (name, value) SELECT 'k' || g, 'v' || g FROM generate_series(1, 50) g;
INSERT INTO app.products (setting_id, price) SELECT 1 + g % 50, g FROM generate_series(1, 500) g;
CREATE SCHEMA other;
CREATE TABLE other.notes (id int PRIMARY KEY, body text);
INSERT INTO other.notes SELECT g, 'n' || g FROM generate_series(1, 20) g;
"#;

fn source(name: &str, pg: &Pg, db: &str, extra: &str) -> String {
    format!(
        "[sources.{name}]\ntype = \"postgres\"\nurl = \"{}\"\npassword = {{ file = \"pw\" }}\n{extra}\n",
        pg.url(db)
    )
}

fn project(config: &str) -> Project {
    let p = Project::new(config);
    std::fs::write(p.path().join("pw"), PASSWORD).unwrap();
    p.ok(&["init"]);
    p
}

fn new_db(pg: &Pg, db: &str) {
    pg.psql("postgres", &format!("CREATE DATABASE {db}"));
    pg.script(db, FIXTURE);
}

#[test]
fn postgres_full_and_table_restore_matrix() {
    let pg = Pg::start();
    new_db(&pg, "shop");
    let original = pg.dump("shop");
    let p = project(&source("shop", &pg, "shop", ""));
    p.backup(&[]);

    cell("postgres/full/live/absent");
    pg.psql("postgres", "DROP DATABASE shop");
    p.ok(&["restore", "latest", "--source", "shop"]);
    assert_eq!(pg.dump("shop"), original);

    cell("postgres/full/live/holds");
    pg.psql(
        "shop",
        "UPDATE app.settings SET value = 'changed' WHERE id < 10",
    );
    let changed = pg.dump("shop");
    let err = fails(&p, &["restore", "latest", "--source", "shop"], 1);
    assert!(
        err.contains("`shop`") && err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(pg.dump("shop"), changed);

    cell("postgres/full/live/holds/force");
    let o = p.run(&["restore", "latest", "--source", "shop", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("swapped in"), "{}", stderr(&o));
    assert_eq!(pg.dump("shop"), original);
    assert_eq!(tagged(&p, "pre-restore").len(), 1);
    assert!(
        !pg.databases().iter().any(|d| d.contains("respaldo")),
        "no database left beside: {:?}",
        pg.databases()
    );

    cell("postgres/full/target/absent");
    p.ok(&[
        "restore",
        "latest",
        "--source",
        "shop",
        "--target",
        &pg.url("shop_copy"),
    ]);
    assert_eq!(pg.dump("shop_copy"), original);

    cell("postgres/table/dropped");
    // Dropping it takes the products' foreign key with it.
    pg.psql("shop", "DROP TABLE app.settings CASCADE");
    let o = p.run(&[
        "restore",
        "latest",
        "--source",
        "shop",
        "--table",
        "app.settings",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        pg.dump("shop"),
        original,
        "the table, its key, index, default, sequence and the foreign key into it are back"
    );

    cell("postgres/table/holds");
    let err = fails(
        &p,
        &[
            "restore",
            "latest",
            "--source",
            "shop",
            "--table",
            "app.settings",
        ],
        1,
    );
    assert!(err.contains("already has app.settings"), "{err}");

    cell("postgres/table/holds/force/referenced");
    pg.psql("shop", "UPDATE app.settings SET value = 'changed'");
    pg.psql(
        "shop",
        "INSERT INTO other.notes VALUES (999, 'added after the backup')",
    );
    let o = p.run(&[
        "restore",
        "latest",
        "--source",
        "shop",
        "--table",
        "app.settings",
        "--force",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    pg.psql("shop", "DELETE FROM other.notes WHERE id = 999");
    assert_eq!(
        pg.dump("shop"),
        original,
        "products' foreign key kept, rows replaced"
    );

    cell("postgres/table/nomatch");
    let err = fails(
        &p,
        &[
            "restore", "latest", "--source", "shop", "--table", "nope", "--force",
        ],
        1,
    );
    assert!(err.contains("matches no table"), "{err}");
    assert_eq!(pg.dump("shop"), original);
}

#[test]
fn postgres_data_only_schema_only_filtered_and_several_databases() {
    let pg = Pg::start();
    new_db(&pg, "dd");
    pg.psql("postgres", "CREATE DATABASE dd_schema TEMPLATE dd");
    pg.psql(
        "dd_schema",
        "TRUNCATE app.settings, app.products, app.audit, other.notes",
    );
    let original = pg.dump("dd");
    let p = project(&source("dd", &pg, "dd", "data_only = true"));
    p.backup(&[]);

    cell("postgres/data_only/live/absent");
    pg.psql("postgres", "DROP DATABASE dd");
    let err = fails(&p, &["restore", "latest", "--source", "dd", "--force"], 1);
    assert!(
        err.contains("data only") && err.contains("must exist"),
        "{err}"
    );
    assert!(
        !pg.databases().contains(&"dd".to_string()),
        "nothing was created"
    );

    cell("postgres/data_only/live/empty");
    pg.psql("postgres", "CREATE DATABASE dd TEMPLATE dd_schema");
    p.ok(&["restore", "latest", "--source", "dd"]);
    assert_eq!(pg.dump("dd"), original);

    cell("postgres/data_only/live/holds");
    pg.psql("dd", "UPDATE app.products SET price = 0");
    let changed = pg.dump("dd");
    let err = fails(&p, &["restore", "latest", "--source", "dd"], 1);
    assert!(err.contains("already has"), "{err}");
    assert_eq!(pg.dump("dd"), changed);

    cell("postgres/data_only/live/holds/force");
    let o = p.run(&["restore", "latest", "--source", "dd", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        pg.dump("dd"),
        original,
        "the schema stays, the rows are the backup's"
    );
    // The safety snapshot holds the whole database, schema included.
    let safety = tagged(&p, "pre-restore");
    assert_eq!(safety.len(), 1);
    p.ok(&[
        "restore",
        &safety[0],
        "--source",
        "dd",
        "--target",
        &pg.url("dd_before"),
    ]);
    assert_eq!(pg.dump("dd_before"), changed);

    cell("postgres/test-restore/data_only");
    let v = p.json(&["test-restore"]);
    assert_eq!(v["sources"][0]["testable"], false, "{v}");
    assert_eq!(v["ok"], true, "{v}");

    // Schema only.
    new_db(&pg, "so");
    let so_schema = pg.dump_with("so", &["--schema-only"]);
    let so = project(&source("so", &pg, "so", "schema_only = true"));
    so.backup(&[]);
    cell("postgres/schema_only/live/holds/force");
    let before = pg.dump("so");
    let err = fails(&so, &["restore", "latest", "--source", "so", "--force"], 1);
    assert!(err.contains("schema-only restore would lose it"), "{err}");
    assert_eq!(pg.dump("so"), before);
    cell("postgres/schema_only/target/absent");
    so.ok(&[
        "restore",
        "latest",
        "--source",
        "so",
        "--target",
        &pg.url("so_new"),
    ]);
    assert_eq!(pg.dump_with("so_new", &["--schema-only"]), so_schema);

    // A filtered dump replaces its own objects only.
    new_db(&pg, "fl");
    let fl_app = pg.dump_with("fl", &["--schema=app"]);
    let fl = project(&source("fl", &pg, "fl", "schemas = [\"app\"]"));
    fl.backup(&[]);
    cell("postgres/filtered/live/holds/force");
    pg.psql("fl", "UPDATE app.settings SET value = 'changed'");
    pg.psql("fl", "UPDATE other.notes SET body = 'kept'");
    let o = fl.run(&["restore", "latest", "--source", "fl", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(pg.dump_with("fl", &["--schema=app"]), fl_app);
    assert_eq!(
        pg.psql("fl", "SELECT count(*) FROM other.notes WHERE body = 'kept'"),
        "20",
        "what the dump does not hold is untouched"
    );

    // One database of several.
    new_db(&pg, "one");
    new_db(&pg, "two");
    let two = pg.dump("two");
    let both = project(&format!(
        "[sources.both]\ntype = \"postgres\"\nurl = \"{}\"\npassword = {{ file = \"pw\" }}\ndatabases = [\"one\", \"two\"]\n",
        pg.url("postgres")
    ));
    both.backup(&[]);
    cell("postgres/database/one-of-several");
    pg.psql("one", "UPDATE other.notes SET body = 'untouched'");
    let one = pg.dump("one");
    pg.psql("postgres", "DROP DATABASE two");
    both.ok(&["restore", "latest", "--source", "both", "--database", "two"]);
    assert_eq!(pg.dump("two"), two);
    assert_eq!(pg.dump("one"), one, "the other database is untouched");
    let err = fails(
        &both,
        &[
            "restore",
            "latest",
            "--source",
            "both",
            "--database",
            "three",
        ],
        1,
    );
    assert!(err.contains("holds no such database"), "{err}");
}
