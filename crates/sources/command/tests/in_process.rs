//! The command driver in-process, through the test harness: the backup
//! command's output comes back through the restore command byte for byte,
//! `check_empty` guards the live target, and test-restore runs the drill
//! command.

use respaldo_core::source::RestoreTarget;
use respaldo_testing::data::random_bytes;
use respaldo_testing::harness::{runtime, Harness, RestoreOptions};

#[test]
fn output_round_trips_through_the_restore_command() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let original = random_bytes(3, 2 << 20);
    std::fs::write(dir.path().join("live.db"), &original).unwrap();
    let h = rt.block_on(Harness::new()).with_base(dir.path());
    let source = h
        .source(
            &respaldo_source_command::DRIVER,
            r#"
            command = ["cat", "live.db"]
            restore_command = ["sh", "-c", "cat > live.db"]
            check_empty = ["sh", "-c", "test ! -s live.db"]
            test_restore_command = ["sh", "-c", "test \"$(wc -c)\" -eq 2097152"]
            "#,
        )
        .unwrap();
    let backup = rt.block_on(h.backup_with("app", source.clone())).unwrap();

    // The live file holds data: refused without force, unchanged.
    std::fs::write(dir.path().join("live.db"), b"newer").unwrap();
    let refused = rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Live,
        RestoreOptions::default(),
    ));
    assert!(refused.is_err(), "restore over live data was not refused");
    assert_eq!(std::fs::read(dir.path().join("live.db")).unwrap(), b"newer");

    // Empty (check_empty says so): restored without force, identical.
    std::fs::write(dir.path().join("live.db"), b"").unwrap();
    rt.block_on(h.restore_with(
        &backup,
        source.as_ref(),
        RestoreTarget::Live,
        RestoreOptions::default(),
    ))
    .unwrap();
    assert_eq!(std::fs::read(dir.path().join("live.db")).unwrap(), original);

    rt.block_on(h.test_restore_with(&backup, source.as_ref()))
        .unwrap();
    rt.block_on(h.verify());
}
