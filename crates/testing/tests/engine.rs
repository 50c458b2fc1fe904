//! Engine behaviour under injected storage faults, and retention grouping.

use std::path::Path;
use std::sync::Arc;

use respaldo_core::kit::progress::Progress;
use respaldo_core::ops::backup::{self, BackupJob, BackupOptions};
use respaldo_core::ops::maintenance;
use respaldo_core::ops::retention::RetentionPolicy;
use respaldo_core::repo::snapshot::{
    RunStats, Snapshot, SnapshotRef, SourceEntry, SourceStats, SourceStatus,
};
use respaldo_core::{ObjectId, Repository, Sink};
use respaldo_sink_local::LocalSink;
use respaldo_source_command::{CommandConfig, CommandSource};
use respaldo_testing::{Fault, FaultySink};

fn job(name: &str, script: &str) -> BackupJob {
    let cfg = CommandConfig {
        command: vec!["sh".into(), "-c".into(), script.into()],
        restore_command: None,
        check_empty: None,
        test_restore_command: None,
        artifact: "out".into(),
        env: Default::default(),
        workdir: None,
    };
    BackupJob::new(
        name,
        Arc::new(CommandSource::new(cfg, Path::new("/")).unwrap()),
        3,
    )
}

fn opts() -> BackupOptions {
    BackupOptions {
        tags: vec![],
        concurrency: 2,
        host: "test".into(),
        redact: None,
        verify: false,
        cancel: None,
    }
}

#[tokio::test]
async fn a_failing_pack_upload_fails_the_run_and_writes_no_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Sink> = Arc::new(LocalSink::new(dir.path()));
    let repo = Repository::init(local.clone()).await.unwrap();
    // A good first run.
    let first = backup::backup(
        &repo,
        vec![job("a", "head -c 3000000 /dev/urandom")],
        &opts(),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    let first_id = first.snapshot_id.unwrap();

    // The second pack upload of the next run fails: 40 MB of new data.
    let faulty: Arc<dyn Sink> = Arc::new(FaultySink::new(
        local.clone(),
        Fault::PutNth {
            prefix: "packs/",
            n: 2,
        },
    ));
    let repo2 = Repository::open(faulty).await.unwrap();
    let r = backup::backup(
        &repo2,
        vec![
            job("a", "head -c 40000000 /dev/urandom"),
            job("b", "echo small"),
        ],
        &opts(),
        Arc::new(Progress::default()),
    )
    .await;
    let err = r.expect_err("the run must fail");
    assert!(err.to_string().contains("injected fault"), "{err}");

    // No new snapshot; the first still restores completely.
    let repo3 = Repository::open(local).await.unwrap();
    let (snaps, damaged) = repo3.snapshots().await.unwrap();
    assert!(damaged.is_empty());
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].id, first_id);
    let a = &snaps[0].snapshot.sources["a"].artifacts[0];
    let data = repo3.read_all(a.chunks.clone()).await.unwrap();
    assert_eq!(data.iter().map(|b| b.len() as u64).sum::<u64>(), 3_000_000);
    let report = respaldo_core::ops::verify::verify(
        &repo3,
        &Default::default(),
        &Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[tokio::test]
async fn a_failing_snapshot_write_leaves_no_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Sink> = Arc::new(LocalSink::new(dir.path()));
    Repository::init(local.clone()).await.unwrap();
    let faulty: Arc<dyn Sink> = Arc::new(FaultySink::new(
        local.clone(),
        Fault::PutNth {
            prefix: "snapshots/",
            n: 1,
        },
    ));
    let repo = Repository::open(faulty).await.unwrap();
    assert!(backup::backup(
        &repo,
        vec![job("a", "echo hi")],
        &opts(),
        Arc::new(Progress::default())
    )
    .await
    .is_err());
    assert!(local.list("snapshots/").await.unwrap().is_empty());
}

fn snap(day: u32, sources: &[(&str, bool)], tags: &[&str]) -> SnapshotRef {
    let time = chrono::DateTime::from_timestamp(1_700_000_000 + day as i64 * 86_400, 0).unwrap();
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(&day.to_be_bytes());
    SnapshotRef {
        id: ObjectId(id),
        snapshot: Snapshot {
            time,
            finished: time,
            host: "h".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            program_version: "0".into(),
            stats: RunStats::default(),
            origin: None,
            sealed: None,
            sources: sources
                .iter()
                .map(|(n, ok)| {
                    (
                        n.to_string(),
                        SourceEntry {
                            kind: "files".into(),
                            status: if *ok {
                                SourceStatus::Ok
                            } else {
                                SourceStatus::Failed
                            },
                            error: None,
                            started: time,
                            duration_ms: 0,
                            artifacts: vec![],
                            metadata: Default::default(),
                            warnings: vec![],
                            stats: SourceStats::default(),
                        },
                    )
                })
                .collect(),
        },
    }
}

#[test]
fn retention_applies_per_source_and_ignores_failed_entries() {
    // 400 days: `db` every day, `files` only on Sundays-ish (every 7th day),
    // `db` failed on the last 3 days; tag `pre-migration` on day 100.
    let mut snaps = Vec::new();
    for day in 0..400u32 {
        let mut sources = vec![("db", day < 397)];
        if day % 7 == 0 {
            sources.push(("files", true));
        }
        let tags: &[&str] = if day == 100 { &["pre-migration"] } else { &[] };
        snaps.push(snap(day, &sources, tags));
    }
    let policy: RetentionPolicy =
        serde_json::from_str(r#"{"keep_last": 2, "tags": {"pre-migration": {"keep_last": 1}}}"#)
            .unwrap();
    let decisions = maintenance::decide(
        &snaps,
        &policy,
        &chrono::Utc,
        &maintenance::ForgetOptions::default(),
    );
    let kept: Vec<u32> = decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| u32::from_be_bytes(d.id.0[..4].try_into().unwrap()))
        .collect();
    // db: last two good (395, 396); files: last two (399, 392); the tagged day 100.
    let mut want = vec![399, 396, 395, 392, 100];
    want.sort_unstable();
    let mut got = kept.clone();
    got.sort_unstable();
    assert_eq!(got, want);
    // Days 397 and 398 hold only a failed db: removed with that reason.
    let d398 = decisions
        .iter()
        .find(|d| d.id == snap(398, &[], &[]).id)
        .unwrap();
    assert!(!d398.keep);
    assert_eq!(d398.reasons, vec!["no good source".to_string()]);
}

/// A lock that cannot be refreshed is given up before its lease runs out:
/// the work holding it stops with a clear error (time is simulated).
#[tokio::test(start_paused = true)]
async fn a_lock_that_cannot_be_refreshed_stops_its_holder_before_the_lease_ends() {
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Sink> = Arc::new(LocalSink::new(dir.path()));
    let healthy = Repository::init(local.clone()).await.unwrap();
    // Work that finishes in time is not affected.
    let lock = healthy
        .lock(false, "backup", std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(lock.while_held(async { Ok(7) }).await.unwrap(), 7);
    lock.release().await.unwrap();

    let faulty: Arc<dyn Sink> = Arc::new(FaultySink::new(
        local,
        Fault::PutsAfter {
            prefix: "locks/",
            n: 1,
        },
    ));
    let repo = Repository::open(faulty).await.unwrap();
    let lock = repo
        .lock(false, "backup", std::time::Duration::ZERO)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let err = lock
        .while_held(std::future::pending::<respaldo_core::error::Result<()>>())
        .await
        .unwrap_err();
    let after = started.elapsed();
    assert!(err.to_string().contains("lost the lock"), "{err}");
    assert!(
        after >= std::time::Duration::from_secs(20 * 60)
            && after < std::time::Duration::from_secs(30 * 60),
        "gave up after {after:?}"
    );
}

/// Retention series are per (host, source); safety snapshots never take a
/// place in them and are kept for the safety window only; `keep` and
/// `damaged` snapshots are always kept; other hosts are not touched.
#[test]
fn retention_is_per_host_and_protects_safety_kept_and_damaged_snapshots() {
    let mut snaps = Vec::new();
    for day in 0..10u32 {
        let mut s = snap(day, &[("db", true)], &[]);
        s.snapshot.host = if day % 2 == 0 { "a" } else { "b" }.into();
        snaps.push(s);
    }
    // Newer than every backup of host a: two safety snapshots (one old by
    // the window), one kept by tag, one damaged original.
    let mut tagged = |day: u32, tag: &str| {
        let mut s = snap(day, &[("db", true)], &[tag]);
        s.snapshot.host = "a".into();
        snaps.push(s);
    };
    tagged(20, "pre-restore");
    tagged(12, "pre-restore");
    tagged(1, "keep");
    tagged(3, "damaged");
    let policy: RetentionPolicy =
        serde_json::from_str(r#"{"keep_last": 2, "tags": {"pre-restore": {"keep_last": 5}}}"#)
            .unwrap();
    let day = |d: &maintenance::ForgetDecision| u32::from_be_bytes(d.id.0[..4].try_into().unwrap());
    let now = chrono::DateTime::from_timestamp(1_700_000_000 + 21 * 86_400, 0).unwrap();
    let opts = maintenance::ForgetOptions {
        dry_run: true,
        hosts: respaldo_core::repo::snapshot::Hosts::Only("a".into()),
        safety_window: chrono::TimeDelta::days(7),
        now,
    };
    let decisions = maintenance::decide(&snaps, &policy, &chrono::Utc, &opts);
    assert!(
        decisions.iter().all(|d| d.host == "a"),
        "host b is not even considered"
    );
    let kept: std::collections::BTreeSet<u32> =
        decisions.iter().filter(|d| d.keep).map(day).collect();
    // a's last two regular backups (8, 6) — the safety snapshots do not push
    // them out — the safety snapshots (20 by the window, 12 by its own tag
    // rule), `keep` (1) and `damaged` (3).
    assert_eq!(kept, [1, 3, 6, 8, 12, 20].into_iter().collect());
    // Without a rule for their tag, an old safety snapshot goes.
    let plain: RetentionPolicy = serde_json::from_str(r#"{"keep_last": 2}"#).unwrap();
    let decisions = maintenance::decide(&snaps, &plain, &chrono::Utc, &opts);
    let kept: std::collections::BTreeSet<u32> =
        decisions.iter().filter(|d| d.keep).map(day).collect();
    assert_eq!(kept, [1, 3, 6, 8, 20].into_iter().collect());
    let old_safety = decisions.iter().find(|d| day(d) == 12).unwrap();
    assert!(!old_safety.keep);
    assert_eq!(
        old_safety.reasons,
        vec!["safety snapshot older than 7d".to_string()]
    );
    // All hosts: each keeps its own last two.
    let all = maintenance::decide(
        &snaps,
        &policy,
        &chrono::Utc,
        &maintenance::ForgetOptions {
            hosts: respaldo_core::repo::snapshot::Hosts::All,
            ..opts
        },
    );
    let kept: std::collections::BTreeSet<u32> = all.iter().filter(|d| d.keep).map(day).collect();
    assert_eq!(kept, [1, 3, 6, 7, 8, 9, 12, 20].into_iter().collect());
}

/// A backup whose lock is lost stops through its cancellation token: its
/// sources' tasks are aborted and awaited (not dropped midway), no snapshot
/// is written, and the lock says it was lost (time is simulated).
#[tokio::test(start_paused = true)]
async fn a_backup_whose_lock_is_lost_stops_cleanly_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Sink> = Arc::new(LocalSink::new(dir.path()));
    Repository::init(local.clone()).await.unwrap();
    let faulty: Arc<dyn Sink> = Arc::new(FaultySink::new(
        local,
        Fault::PutsAfter {
            prefix: "locks/",
            n: 1,
        },
    ));
    let repo = Repository::open(faulty).await.unwrap();
    let lock = repo
        .lock(false, "backup", std::time::Duration::ZERO)
        .await
        .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let watch = lock.cancel_when_lost(cancel.clone());
    let mut o = opts();
    o.cancel = Some(cancel);
    let r = backup::backup(
        &repo,
        vec![job("slow", "sleep 3600")],
        &o,
        Arc::new(Progress::default()),
    )
    .await;
    watch.abort();
    assert!(matches!(r, Err(respaldo_core::Error::Interrupted)), "{r:?}");
    assert!(lock.is_lost());
    assert!(lock.lost_error().to_string().contains("lost the lock"));
    let (snapshots, _) = repo.snapshots().await.unwrap();
    assert!(snapshots.is_empty(), "a snapshot was written");
}
