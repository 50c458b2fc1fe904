//! The InfluxDB driver in-process against a real InfluxDB 1.x, through the
//! test harness: a database backed up, dropped, restored, and compared by
//! the digest of the server's own query answers.

use respaldo_core::source::RestoreTarget;
use respaldo_testing::harness::{runtime, Harness, RestoreOptions};
use respaldo_testing::servers::influxdb::Influx;

const QUERY: &str = "SELECT * FROM /.*/ GROUP BY *";

#[test]
fn a_dropped_database_comes_back_identical() {
    let rt = runtime();
    let s = Influx::start(None);
    s.query("CREATE DATABASE energy");
    let mut lines = String::new();
    for i in 0..20_000u64 {
        lines.push_str(&format!(
            "power,site=north,phase=L{} watts={}.5,count={}i {}\n",
            i % 3,
            i,
            i,
            1_600_000_000_000_000_000 + i * 1_000_000_000
        ));
    }
    s.write("energy", "autogen", lines.as_bytes());
    let before = s.digest("energy", QUERY);
    assert_eq!(before.2, 20_000);

    let h = rt.block_on(Harness::new());
    let source = h
        .source(
            &respaldo_source_influxdb::DRIVER,
            &format!("url = \"{}\"\ndatabases = [\"energy\"]", s.url),
        )
        .unwrap();
    let backup = rt
        .block_on(h.backup_with("metrics", source.clone()))
        .unwrap();

    s.query("DROP DATABASE energy");
    rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Live,
        RestoreOptions::default(),
    ))
    .unwrap();
    assert_eq!(s.digest("energy", QUERY), before);
    rt.block_on(h.verify());
}
