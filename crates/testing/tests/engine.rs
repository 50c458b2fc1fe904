//! Engine behaviour under injected storage faults, and retention grouping.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use respaldo_core::kit::progress::Progress;
use respaldo_core::ops::backup::{self, BackupJob, BackupOptions};
use respaldo_core::ops::maintenance;
use respaldo_core::ops::prune;
use respaldo_core::ops::retention::RetentionPolicy;
use respaldo_core::repo::lock::{LockInfo, LockMode};
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
        .lock(
            respaldo_core::repo::lock::LockMode::Shared,
            "backup",
            std::time::Duration::ZERO,
        )
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
        .lock(
            respaldo_core::repo::lock::LockMode::Shared,
            "backup",
            std::time::Duration::ZERO,
        )
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
        .lock(
            respaldo_core::repo::lock::LockMode::Shared,
            "backup",
            std::time::Duration::ZERO,
        )
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

/// Asserts that snapshot `id`'s source `a` holds exactly `expected` and that
/// `verify --read-data` finds no problem; returns verify's notes.
/// `verify --read-data` passes; returns its notes.
async fn verifies_reading_data(repo: &Arc<Repository>) -> Vec<String> {
    let v = respaldo_core::ops::verify::verify(
        repo,
        &respaldo_core::ops::verify::VerifyOptions {
            read_data: true,
            snapshots: None,
        },
        &Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    v.notes
}

async fn holds_and_verifies(repo: Arc<Repository>, id: ObjectId, expected: &[u8]) -> Vec<String> {
    let (snaps, _) = repo.snapshots().await.unwrap();
    let s = snaps.iter().find(|s| s.id == id).unwrap();
    let a = &s.snapshot.sources["a"].artifacts[0];
    let got: Vec<u8> = repo.read_all(a.chunks.clone()).await.unwrap().concat();
    assert!(got == expected, "snapshot {} differs", id.short());
    verifies_reading_data(&repo).await
}

/// A backup that loaded the index before a prune marked a pack stores a
/// snapshot that deduplicates against it: the pack waits while the backup
/// runs, stays readable, and the next prune indexes it again instead of
/// deleting it.
#[tokio::test]
async fn a_pack_marked_while_a_backup_ran_is_indexed_again_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Sink> = Arc::new(LocalSink::new(dir.path().join("repo")));
    let repo = Repository::init(local.clone()).await.unwrap();
    let file = dir.path().join("data.bin");
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    let cat = format!("cat {}", file.display());
    let first = backup::backup(
        &repo,
        vec![job("a", &cat)],
        &opts(),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();

    // The backup beside: its lock is taken and the index loaded first.
    let beside = Repository::open(local.clone()).await.unwrap();
    let lock = beside
        .lock(LockMode::Shared, "backup", Duration::from_secs(5))
        .await
        .unwrap();
    beside.load_index().await.unwrap();

    // The only snapshot is forgotten and pruned: its packs are marked, and
    // wait for the backup.
    let pruner = Repository::open(local.clone()).await.unwrap();
    maintenance::forget_ids(&pruner, &[first.snapshot_id.unwrap()], false)
        .await
        .unwrap();
    let r = prune::prune(&pruner, &Default::default()).await.unwrap();
    assert!(
        r.packs_deleted > 0 && r.packs_waiting == r.packs_deleted,
        "{r:?}"
    );
    assert_eq!(r.packs_swept, 0, "{r:?}");

    // The backup stores the same data again: nothing new is uploaded.
    let second = backup::backup(
        &beside,
        vec![job("a", &cat)],
        &opts(),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    lock.release().await.unwrap();
    let second_id = second.snapshot_id.unwrap();

    // Before the next prune: readable, and verify says why the packs wait.
    let open = || Repository::open(local.clone());
    let notes = holds_and_verifies(open().await.unwrap(), second_id, &data).await;
    assert!(
        notes.iter().any(|n| n.contains("marked for deletion")),
        "{notes:?}"
    );

    // The next prune indexes the marked packs again; nothing waits.
    let pruner = Repository::open(local.clone()).await.unwrap();
    let r = prune::prune(&pruner, &Default::default()).await.unwrap();
    assert!(r.packs_recovered > 0, "{r:?}");
    assert_eq!((r.packs_waiting, r.packs_swept), (0, 0), "{r:?}");
    assert!(local.list("marks/").await.unwrap().is_empty());
    let notes = holds_and_verifies(open().await.unwrap(), second_id, &data).await;
    assert!(!notes.iter().any(|n| n.contains("marked")), "{notes:?}");
}

/// Lock leases are measured by the storage's clock: a lock written just now
/// by a host whose clock is hours behind is held, and one the storage has
/// not seen refreshed for longer than the lease is stale, whatever time its
/// holder wrote into it.
#[tokio::test]
async fn lock_leases_follow_the_storage_clock_not_the_holders() {
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Sink> = Arc::new(LocalSink::new(dir.path()));
    let repo = Repository::init(local.clone()).await.unwrap();
    let mut info = LockInfo {
        boot_id: None,
        start_time: None,
        host: "far-away".into(),
        pid: 1,
        command: "backup".into(),
        exclusive: false,
        prune: false,
        time: chrono::Utc::now() - chrono::TimeDelta::hours(3),
        released: false,
    };
    let key = "locks/00000000000000000000000000000001";
    let put = |info: &LockInfo| {
        let bytes = bytes::Bytes::from(serde_json::to_vec(info).unwrap());
        let local = local.clone();
        async move {
            local
                .put(key, respaldo_core::sink::once(bytes))
                .await
                .unwrap()
        }
    };
    put(&info).await;
    let err = repo
        .lock(LockMode::Exclusive, "repair", Duration::ZERO)
        .await
        .expect_err("a lock the storage saw written just now is held");
    assert!(err.to_string().contains("far-away"), "{err}");
    // A prune runs beside it.
    repo.lock(LockMode::Prune, "prune", Duration::ZERO)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();

    // The holder claims it refreshed just now, but the storage last wrote
    // the object two hours ago.
    info.time = chrono::Utc::now();
    put(&info).await;
    let f = std::fs::File::options()
        .write(true)
        .open(dir.path().join(key))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    drop(f);
    repo.lock(LockMode::Exclusive, "repair", Duration::ZERO)
        .await
        .expect("a lock unrefreshed for longer than the lease is stale")
        .release()
        .await
        .unwrap();
    assert!(local.list("locks/").await.unwrap().is_empty());
}

/// Repositories written before the binary index encoding keep working:
/// their JSON fragments are read, and the first prune rewrites them in the
/// binary encoding with every snapshot still whole.
#[tokio::test]
async fn json_index_fragments_are_read_and_migrated_by_prune() {
    use respaldo_core::repo::index::IndexFragment;
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Sink> = Arc::new(LocalSink::new(dir.path()));
    let repo = Repository::init(local.clone()).await.unwrap();
    let data = respaldo_testing::data::random_bytes(11, 2_000_000);
    let file = dir.path().join("data.bin");
    std::fs::write(&file, &data).unwrap();
    let out = backup::backup(
        &repo,
        vec![job("a", &format!("cat {}", file.display()))],
        &opts(),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    // Rewrite every fragment as an earlier version stored it (JSON).
    for o in local.list("index/").await.unwrap() {
        let bytes = local.get(&o.key).await.unwrap();
        let id = respaldo_core::repo::format::id_from_key(&o.key).unwrap();
        assert!(IndexFragment::is_binary(&bytes));
        let frag = IndexFragment::open("f", &id, &bytes).unwrap();
        let (json_id, json) = respaldo_core::repo::format::seal_document(&frag).unwrap();
        let key = format!("index/{json_id}");
        local
            .put(&key, respaldo_core::sink::once(json))
            .await
            .unwrap();
        local.delete(&o.key).await.unwrap();
    }
    let id = out.snapshot_id.unwrap();
    let old = Repository::open(local.clone()).await.unwrap();
    assert!(!old.legacy_fragments().await.unwrap().is_empty());
    holds_and_verifies(old, id, &data).await;
    let pruner = Repository::open(local.clone()).await.unwrap();
    let r = prune::prune(&pruner, &Default::default()).await.unwrap();
    assert!(r.fragments_replaced > 0 && r.fragments_written > 0, "{r:?}");
    for o in local.list("index/").await.unwrap() {
        assert!(IndexFragment::is_binary(&local.get(&o.key).await.unwrap()));
    }
    let new = Repository::open(local.clone()).await.unwrap();
    assert!(new.legacy_fragments().await.unwrap().is_empty());
    holds_and_verifies(new, id, &data).await;
}

/// Chunks read through the coalescing fetcher come back in the order asked
/// for, whatever that order (repeats, long runs of one chunk, back
/// references, chunks of another artifact and of another pack between
/// them), identical to reading each on
/// its own; reading an artifact in order takes far fewer pack reads than it
/// has chunks. Seeded: a failure prints its seed (`FETCH_SEED` replays it).
#[tokio::test]
async fn chunks_come_back_in_the_order_asked_from_few_pack_reads() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Sink> = Arc::new(LocalSink::new(dir.path()));
    // Chunks of about 64 KiB: hundreds of them, tens to a pack.
    let params = respaldo_core::repo::format::ChunkerParams {
        min: 16 << 10,
        avg: 64 << 10,
        max: 256 << 10,
    };
    let repo = Repository::init_with_chunker(local.clone(), &Default::default(), params)
        .await
        .unwrap();
    backup::backup(
        &repo,
        vec![
            job("a", "head -c 40000000 /dev/urandom"),
            job("b", "head -c 6000000 /dev/urandom"),
        ],
        &opts(),
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    let counted = Arc::new(FaultySink::new(local, Fault::None));
    let repo = Repository::open(counted.clone()).await.unwrap();
    let (snaps, _) = repo.snapshots().await.unwrap();
    let chunks = |s: &str| snaps[0].snapshot.sources[s].artifacts[0].chunks.clone();
    let (a, b) = (chunks("a"), chunks("b"));
    let mut each = std::collections::HashMap::new();
    for id in a.iter().chain(&b) {
        each.insert(*id, repo.read_blob(id).await.unwrap());
    }

    let before = counted.pack_reads();
    let got = repo.read_all(a.clone()).await.unwrap();
    let reads = counted.pack_reads() - before;
    assert!(got.iter().zip(&a).all(|(g, id)| *g == each[id]));
    assert!(
        reads * 20 <= a.len(),
        "{} chunks read in order took {reads} pack reads",
        a.len()
    );

    let seed = std::env::var("FETCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let all: Vec<ObjectId> = a.iter().chain(&b).copied().collect();
    for round in 0..20 {
        let len = rng.gen_range(0..3 * all.len());
        let mut asked = Vec::with_capacity(len);
        while asked.len() < len {
            let at = rng.gen_range(0..all.len());
            // Runs of neighbours (coalesced), single jumps, repeats.
            let run = rng.gen_range(1..6).min(all.len() - at);
            asked.extend_from_slice(&all[at..at + run]);
            if rng.gen_bool(0.2) {
                asked.push(all[at]);
            }
            // A long run of one chunk (the zeros of a sparse file).
            if rng.gen_bool(0.05) {
                let n = rng.gen_range(20..300);
                asked.extend(std::iter::repeat_n(all[at], n));
            }
        }
        let got = repo.read_all(asked.clone()).await.unwrap();
        assert_eq!(got.len(), asked.len(), "seed {seed}, round {round}");
        for (i, (g, id)) in got.iter().zip(&asked).enumerate() {
            assert!(
                *g == each[id],
                "seed {seed}, round {round}: chunk {i} ({}) differs",
                id.short()
            );
        }
    }
}

/// A sink that runs `hook` once, just before answering its `nth` listing of
/// snapshot objects (to act in the middle of a command).
struct BeforeListing {
    inner: Arc<dyn Sink>,
    nth: usize,
    seen: std::sync::atomic::AtomicUsize,
    hook: tokio::sync::Mutex<Option<futures::future::BoxFuture<'static, ()>>>,
}

impl std::fmt::Debug for BeforeListing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeListing")
    }
}

#[async_trait::async_trait]
impl Sink for BeforeListing {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put(
        &self,
        key: &str,
        data: respaldo_core::sink::ByteStream,
    ) -> respaldo_core::Result<()> {
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &str) -> respaldo_core::Result<bytes::Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> respaldo_core::Result<bytes::Bytes> {
        self.inner.get_range(key, range).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> respaldo_core::Result<Vec<respaldo_core::sink::ObjectInfo>> {
        use std::sync::atomic::Ordering;
        if prefix == "snapshots/" && self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.nth {
            let hook = self.hook.lock().await.take();
            if let Some(h) = hook {
                h.await;
            }
        }
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> respaldo_core::Result<()> {
        self.inner.delete(key).await
    }
    async fn reclaim_incomplete(&self) -> respaldo_core::Result<u64> {
        self.inner.reclaim_incomplete().await
    }
}

fn files_job(dir: &Path) -> BackupJob {
    let source = respaldo_source_files::FilesSource::new(
        respaldo_source_files::FilesConfig {
            paths: vec![dir.to_path_buf()],
            exclude: vec![],
            max_age: None,
            one_file_system: false,
        },
        dir.parent().unwrap(),
    )
    .unwrap();
    BackupJob::new("data", Arc::new(source), 3)
}

/// The bytes of every file of snapshot `id`'s `data` tree, by name.
async fn tree_files(
    repo: &Arc<Repository>,
    id: ObjectId,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    use respaldo_core::repo::tree::{EntryKind, TreeReader};
    let (snaps, _) = repo.snapshots().await.unwrap();
    let s = snaps.iter().find(|s| s.id == id).unwrap();
    let a = &s.snapshot.sources["data"].artifacts[0];
    let mut reader = TreeReader::new(repo.clone(), a).unwrap();
    let mut out = std::collections::BTreeMap::new();
    while let Some(e) = reader.next_entry().await.unwrap() {
        if e.kind == EntryKind::File {
            let name = String::from_utf8_lossy(&e.path.0)
                .rsplit('/')
                .next()
                .unwrap()
                .to_string();
            out.insert(name, repo.read_all(e.chunks).await.unwrap().concat());
        }
    }
    out
}

/// A snapshot committed while a prune works, whose tree is in a pack the
/// prune's index never saw, is read by the prune's sweep (not reported
/// missing, even when the prune already scanned for unindexed packs) and
/// keeps all its data. (Found by the three-hosts S3 test: `forget --prune`
/// failed with "chunk … missing from the repository".)
#[tokio::test]
async fn a_snapshot_committed_during_prune_is_read_by_its_sweep() {
    use respaldo_testing::data::random_bytes;
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Sink> = Arc::new(LocalSink::new(dir.path().join("repo")));
    let repo = Repository::init(local.clone()).await.unwrap();
    let mut files = std::collections::BTreeMap::new();
    for (name, seed) in [("old", 1), ("kept", 2), ("new", 3)] {
        std::fs::create_dir_all(dir.path().join(name)).unwrap();
        let bytes = random_bytes(seed, 300_000);
        std::fs::write(dir.path().join(name).join(format!("{name}.bin")), &bytes).unwrap();
        files.insert(format!("{name}.bin"), bytes);
    }
    let run = |repo: Arc<Repository>, d: std::path::PathBuf| async move {
        backup::backup(
            &repo,
            vec![files_job(&d)],
            &opts(),
            Arc::new(Progress::default()),
        )
        .await
        .unwrap()
        .snapshot_id
        .unwrap()
    };
    let old = run(repo.clone(), dir.path().join("old")).await;
    let fragments = |l: Arc<dyn Sink>| async move {
        let v: std::collections::HashSet<String> = l
            .list("index/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        v
    };
    let before = fragments(local.clone()).await;
    let kept = run(repo.clone(), dir.path().join("kept")).await;
    // The kept snapshot's index fragment is lost: the prune finds its packs
    // by scanning, and indexes them again.
    for key in fragments(local.clone()).await.difference(&before) {
        local.delete(key).await.unwrap();
    }
    maintenance::forget_ids(&repo, &[old], false).await.unwrap();

    // A backup of new data commits while the prune sweeps.
    let (committed_tx, committed_rx) = tokio::sync::oneshot::channel();
    let hook: futures::future::BoxFuture<'static, ()> = {
        let (local, d) = (local.clone(), dir.path().join("new"));
        Box::pin(async move {
            let beside = Repository::open(local).await.unwrap();
            committed_tx.send(run(beside, d).await).unwrap();
        })
    };
    let pruning: Arc<dyn Sink> = Arc::new(BeforeListing {
        inner: local.clone(),
        nth: 2,
        seen: Default::default(),
        hook: tokio::sync::Mutex::new(Some(hook)),
    });
    let pruner = Repository::open(pruning).await.unwrap();
    let r = prune::prune(&pruner, &Default::default()).await.unwrap();
    let new = committed_rx.await.unwrap();
    // The forgotten snapshot's packs are deleted at once; the kept one's
    // are described by a new fragment.
    assert!(r.packs_swept > 0 && r.fragments_written > 0, "{r:?}");

    let repo = Repository::open(local.clone()).await.unwrap();
    for (id, name) in [(kept, "kept.bin"), (new, "new.bin")] {
        let got = tree_files(&repo, id).await;
        assert_eq!(got.len(), 1, "{name}");
        assert!(got[name] == files[name], "{name} differs");
    }
    verifies_reading_data(&repo).await;
}

/// `diff_trees` and `list_tree` against a model: random trees changed at
/// random (files added, removed, rewritten, chmod'ed, or left alone), backed
/// up twice; the diff names exactly the files the model changed, each in the
/// right way, and every directory lists exactly its model children. The seed
/// is printed (`BROWSE_SEED=… cargo test … tree_diffs` repeats a failure).
#[tokio::test]
async fn tree_diffs_and_listings_match_a_model() {
    use rand::{Rng, SeedableRng};
    use respaldo_core::ops::browse::{self, Modification};
    use respaldo_core::repo::tree::EntryKind;
    use std::collections::{BTreeMap, BTreeSet};
    use std::os::unix::fs::PermissionsExt;
    let seed: u64 = std::env::var("BROWSE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("BROWSE_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let repo = Repository::init(Arc::new(respaldo_testing::MemorySink::new()))
            .await
            .unwrap();
        let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for i in 0..rng.gen_range(5..40) {
            let name = format!("d{}/f{i}", rng.gen_range(0..4));
            model.insert(
                name,
                respaldo_testing::data::random_bytes(rng.gen(), rng.gen_range(0..5000)),
            );
        }
        for (name, bytes) in &model {
            std::fs::create_dir_all(data.join(name).parent().unwrap()).unwrap();
            std::fs::write(data.join(name), bytes).unwrap();
        }
        let run = |repo: Arc<Repository>, d: std::path::PathBuf| async move {
            let out = backup::backup(
                &repo,
                vec![files_job(&d)],
                &opts(),
                Arc::new(Progress::default()),
            )
            .await
            .unwrap();
            out.snapshot.sources["data"].artifacts[0].clone()
        };
        let a = run(repo.clone(), data.clone()).await;
        let mut want: BTreeMap<String, &str> = BTreeMap::new();
        let names: Vec<String> = model.keys().cloned().collect();
        for name in names {
            let path = data.join(&name);
            match rng.gen_range(0..5) {
                0 => {
                    std::fs::remove_file(&path).unwrap();
                    want.insert(name, "removed");
                }
                1 => {
                    let old = std::fs::metadata(&path).unwrap().modified().unwrap();
                    let mut bytes = std::fs::read(&path).unwrap();
                    bytes.push(rng.gen());
                    std::fs::write(&path, bytes).unwrap();
                    let t = filetime::FileTime::from_system_time(old);
                    filetime::set_file_mtime(&path, t).unwrap();
                    want.insert(name, "content");
                }
                2 => {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))
                        .unwrap();
                    want.insert(name, "metadata");
                }
                _ => {}
            }
        }
        for i in 0..rng.gen_range(0..5) {
            let name = format!("d{}/new{i}", rng.gen_range(0..5));
            std::fs::create_dir_all(data.join(&name).parent().unwrap()).unwrap();
            std::fs::write(data.join(&name), b"new").unwrap();
            want.insert(name, "added");
        }
        let b = run(repo.clone(), data.clone()).await;
        let d = browse::diff_trees(&repo, Some(&a), Some(&b)).await.unwrap();
        let rel = |p: &respaldo_core::repo::tree::RawPath| {
            String::from_utf8_lossy(&p.0)
                .trim_start_matches("data/")
                .to_string()
        };
        let mut got: BTreeMap<String, &str> = BTreeMap::new();
        got.extend(
            d.added
                .iter()
                .filter(|e| e.kind == EntryKind::File)
                .map(|e| (rel(&e.path), "added")),
        );
        got.extend(
            d.removed
                .iter()
                .filter(|e| e.kind == EntryKind::File)
                .map(|e| (rel(&e.path), "removed")),
        );
        for (_, n, m) in d
            .modified
            .iter()
            .filter(|(_, n, _)| n.kind == EntryKind::File)
        {
            let m = if *m == Modification::Content {
                "content"
            } else {
                "metadata"
            };
            got.insert(rel(&n.path), m);
        }
        assert_eq!(got, want, "seed {seed}, round {round}");
        // Every directory lists exactly its children.
        let mut children: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for e in walk(&data) {
            let (parent, _) = e.rsplit_once('/').unwrap_or(("", &e));
            children
                .entry(parent.to_string())
                .or_default()
                .insert(e.clone());
        }
        for (parent, want) in children {
            let dir_path = browse::tree_path(&format!("data/{parent}"));
            let mut listed = BTreeSet::new();
            browse::list_tree(&repo, &b, &dir_path, false, |e| {
                listed.insert(rel(&e.path));
                Ok(())
            })
            .await
            .unwrap();
            assert_eq!(
                listed, want,
                "seed {seed}, round {round}, directory {parent:?}"
            );
        }
        assert!(browse::diff_trees(&repo, Some(&b), Some(&b))
            .await
            .unwrap()
            .modified
            .is_empty());
    }
}

/// Every path below `root`, relative to it.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}
