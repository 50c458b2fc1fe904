//! The Redis driver in-process against a real server, through the test
//! harness: every data type backed up, the server flushed, restored, and
//! compared with `DEBUG DIGEST`.

use respaldo_core::source::RestoreTarget;
use respaldo_testing::harness::{runtime, Harness, RestoreOptions};
use respaldo_testing::servers::redis::{populate, Redis};

#[test]
fn every_type_round_trips_into_the_flushed_server_and_another() {
    let rt = runtime();
    let r = Redis::start(None);
    populate(&r);
    let digest = r.digest();

    let h = rt.block_on(Harness::new());
    let source = h
        .source(
            &respaldo_source_redis::DRIVER,
            &format!("url = \"{}\"", r.url()),
        )
        .unwrap();
    let backup = rt.block_on(h.backup_with("cache", source.clone())).unwrap();

    // Live data: refused without force, unchanged.
    let refused = rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Live,
        RestoreOptions::default(),
    ));
    assert!(refused.is_err(), "restore over live data was not refused");
    assert_eq!(r.digest(), digest);

    // Flushed: restored without force, identical.
    r.cli(&["FLUSHALL"]);
    r.cli(&["FUNCTION", "FLUSH"]);
    rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Live,
        RestoreOptions::default(),
    ))
    .unwrap();
    assert_eq!(r.digest(), digest);

    // Into another, empty server.
    let other = Redis::start(None);
    rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Other(other.url()),
        RestoreOptions::default(),
    ))
    .unwrap();
    assert_eq!(other.digest(), digest);
    rt.block_on(h.verify());
}
