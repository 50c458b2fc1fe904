//! Model-based test of the repository engine.
//!
//! A seeded random sequence of operations — backups after random mutations of
//! a folder (new, deleted, rewritten, partly rewritten, appended and touched
//! files, large files changed in the middle), backups that load the index
//! before a forget and a prune run beside them and store their snapshot after
//! (deduplicating against packs the prune marked), forgets with random policies,
//! prunes with varied repack thresholds, copies to a second repository — each
//! possibly killed at a random write to storage ([`CrashSink`]), runs against
//! a model of which snapshots exist and what each holds. After every step the
//! repository must pass `verify --read-data` and every snapshot must hold
//! exactly what the model says (its files read back and hashed; every few
//! steps restored to disk and hashed there).
//!
//! `MODEL_OPS` sets the number of operations, `MODEL_SEED` the seed (default:
//! from the clock). A failure prints the seed and the operation log;
//! `scripts/soak.sh OPS SEED` replays or extends a run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use respaldo_core::kit::progress::Progress;
use respaldo_core::ops::backup::{self, BackupJob, BackupOptions};
use respaldo_core::ops::maintenance::{self, ForgetOptions};
use respaldo_core::ops::prune::{self, PruneOptions};
use respaldo_core::ops::retention::RetentionPolicy;
use respaldo_core::ops::verify::{self, VerifyOptions};
use respaldo_core::repo::crypto::{self, KeyMaterial};
use respaldo_core::repo::extract::{self, TreeRestoreOptions};
use respaldo_core::repo::format::ChunkerParams;
use respaldo_core::repo::lock::LockMode;
use respaldo_core::repo::snapshot::{Hosts, SnapshotRef};
use respaldo_core::repo::tree::{EntryKind, TreeReader};
use respaldo_core::{ObjectId, Repository, Sink};
use respaldo_sink_local::LocalSink;
use respaldo_source_files::{FilesConfig, FilesSource};
use respaldo_testing::CrashSink;
use sha2::{Digest, Sha256};

/// What a snapshot must hold: per path (relative to the backed-up folder's
/// parent) the SHA-256 and size of the file.
type Expected = BTreeMap<String, (String, u64)>;

/// Where the repositories live.
enum Storage {
    Local(PathBuf),
    S3 { endpoint: String, bucket: String },
}

impl Storage {
    async fn sink(&self, prefix: &str) -> Arc<dyn Sink> {
        match self {
            Storage::Local(dir) => Arc::new(LocalSink::new(dir.join(prefix))),
            Storage::S3 { endpoint, bucket } => {
                let opts = respaldo_sink_object_store::S3Options {
                    endpoint: Some(endpoint.clone()),
                    region: Some("us-east-1".into()),
                    access_key_id: Some(respaldo_core::kit::secret::Secret::Value(
                        "testing".into(),
                    )),
                    secret_access_key: Some(respaldo_core::kit::secret::Secret::Value(
                        "testing".into(),
                    )),
                    ..Default::default()
                };
                Arc::new(
                    respaldo_sink_object_store::ObjectStoreSink::connect(
                        &format!("s3://{bucket}/{prefix}"),
                        &opts,
                    )
                    .await
                    .unwrap(),
                )
            }
        }
    }
}

/// The model and the world it describes.
struct World {
    rng: StdRng,
    seed: u64,
    log: Vec<String>,
    /// The folder that is backed up (`<work>/data`).
    work: tempfile::TempDir,
    /// Scratch space for restores.
    scratch: tempfile::TempDir,
    /// The folder's files as the model knows them.
    files: BTreeMap<String, Vec<u8>>,
    /// Repository A's snapshots, oldest first, with their tags.
    a: Vec<(ObjectId, Vec<String>, Expected)>,
    /// Repository B's snapshots, by their origin id in A.
    b: BTreeMap<ObjectId, Expected>,
    sink_a: Arc<dyn Sink>,
    sink_b: Arc<dyn Sink>,
    keys: KeyMaterial,
    /// Counters the test asserts on.
    stats: Stats,
    next_name: u64,
}

#[derive(Debug, Default)]
struct Stats {
    backups: u64,
    forgets: u64,
    prunes: u64,
    backups_beside_prune: u64,
    /// Prunes that left marked packs waiting for a running backup.
    prunes_waiting: u64,
    packs_recovered: u64,
    /// Checks that found snapshots using packs a prune marked.
    checks_on_marked_packs: u64,
    copies: u64,
    crashes: u64,
    crashed_writes_applied: u64,
    packs_repacked: u64,
    blobs_rewritten: u64,
    restores_to_disk: u64,
    snapshot_checks: u64,
}

const CHUNKER: ChunkerParams = ChunkerParams {
    min: 16 * 1024,
    avg: 64 * 1024,
    max: 256 * 1024,
};

impl World {
    async fn new(seed: u64, storage: &Storage, encrypted: bool) -> World {
        let work = tempfile::tempdir().unwrap();
        std::fs::create_dir(work.path().join("data")).unwrap();
        let keys = if encrypted {
            let (identity, recipient) = crypto::generate_identity();
            KeyMaterial {
                recipients: vec![recipient],
                identities: vec![identity],
                passphrase: None,
            }
        } else {
            KeyMaterial::default()
        };
        let sink_a = storage.sink(&format!("a-{seed}")).await;
        let sink_b = storage.sink(&format!("b-{seed}")).await;
        let a = Repository::init_with_chunker(sink_a.clone(), &keys, CHUNKER)
            .await
            .unwrap();
        Repository::init_with(sink_b.clone(), &keys, Some(&a))
            .await
            .unwrap();
        World {
            rng: StdRng::seed_from_u64(seed),
            seed,
            log: Vec::new(),
            work,
            scratch: tempfile::tempdir().unwrap(),
            files: BTreeMap::new(),
            a: Vec::new(),
            b: BTreeMap::new(),
            sink_a,
            sink_b,
            keys,
            stats: Stats::default(),
            next_name: 0,
        }
    }

    fn fail(&self, msg: String) -> ! {
        let start = self.log.len().saturating_sub(60);
        panic!(
            "model test failed (MODEL_SEED={} reproduces it): {msg}\noperation log (last {}):\n{}",
            self.seed,
            self.log.len() - start,
            self.log[start..].join("\n")
        );
    }

    fn data(&self) -> PathBuf {
        self.work.path().join("data")
    }

    async fn open(&self, sink: Arc<dyn Sink>) -> Arc<Repository> {
        Repository::open_with(sink, &self.keys).await.unwrap()
    }

    /// A crash point for an operation making about `writes` writes: half
    /// the time none.
    fn crash_sink(&mut self, inner: &Arc<dyn Sink>, writes: u64) -> (Arc<CrashSink>, String) {
        if self.rng.gen_bool(0.5) {
            return (
                Arc::new(CrashSink::new(inner.clone(), u64::MAX, false)),
                String::new(),
            );
        }
        let after = self.rng.gen_range(0..=writes);
        let apply = self.rng.gen_bool(0.5);
        (
            Arc::new(CrashSink::new(inner.clone(), after, apply)),
            format!(
                " [crash at write {}{}]",
                after + 1,
                if apply { ", applied" } else { "" }
            ),
        )
    }

    /// A sink on repository A: crashing at a random write when `crash`.
    fn sink_for_a(&mut self, crash: bool, writes: u64) -> (Arc<CrashSink>, String) {
        match crash {
            true => self.crash_sink(&self.sink_a.clone(), writes),
            false => {
                let never = CrashSink::new(self.sink_a.clone(), u64::MAX, false);
                (Arc::new(never), String::new())
            }
        }
    }

    fn note_crash(&mut self, sink: &CrashSink, apply_hint: &str) {
        if sink.crashed() {
            self.stats.crashes += 1;
            if apply_hint.contains("applied") {
                self.stats.crashed_writes_applied += 1;
            }
            self.log
                .push(format!("  … crashed after {} write(s)", sink.writes()));
        }
    }

    // ---------------------------------------------------------------- data --

    fn content(&mut self, size: usize) -> Vec<u8> {
        let mut v = vec![0u8; size];
        if self.rng.gen_bool(0.3) {
            // Compressible text.
            let words: [&[u8]; 6] = [
                b"alpha ", b"beta ", b"gamma ", b"pack ", b"chunk\n", b"index ",
            ];
            let mut out = Vec::with_capacity(size + 8);
            while out.len() < size {
                out.extend_from_slice(words[self.rng.gen_range(0..words.len())]);
            }
            out.truncate(size);
            return out;
        }
        self.rng.fill_bytes(&mut v);
        v
    }

    fn file_size(&mut self) -> usize {
        match self.rng.gen_range(0..10) {
            0 => 0,
            1..=6 => self.rng.gen_range(1..48 * 1024),
            7 | 8 => self.rng.gen_range(64 * 1024..300 * 1024),
            _ => self.rng.gen_range(400 * 1024..900 * 1024),
        }
    }

    fn write_file(&self, rel: &str, data: &[u8]) {
        let p = self.work.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }

    fn pick_file(&mut self, min_len: usize) -> Option<String> {
        let names: Vec<&String> = self
            .files
            .iter()
            .filter(|(_, v)| v.len() >= min_len)
            .map(|(k, _)| k)
            .collect();
        if names.is_empty() {
            return None;
        }
        Some(names[self.rng.gen_range(0..names.len())].clone())
    }

    /// One random change to the folder, described.
    fn mutate_once(&mut self) -> String {
        let total: usize = self.files.values().map(Vec::len).sum();
        let choice = if self.files.is_empty() || (total < 600 * 1024 && self.rng.gen_bool(0.5)) {
            0
        } else if total > 3 * 1024 * 1024 {
            1
        } else {
            self.rng.gen_range(0..7)
        };
        match choice {
            0 => {
                self.next_name += 1;
                let rel = format!("data/d{}/f{}", self.rng.gen_range(0..4), self.next_name);
                let size = self.file_size();
                let data = self.content(size);
                self.write_file(&rel, &data);
                self.files.insert(rel.clone(), data);
                format!("add {rel} ({size} B)")
            }
            1 => {
                let rel = self.pick_file(0).expect("not empty");
                std::fs::remove_file(self.work.path().join(&rel)).unwrap();
                self.files.remove(&rel);
                format!("delete {rel}")
            }
            2 => match self.pick_file(100 * 1024) {
                Some(rel) => {
                    let mut data = self.files[&rel].clone();
                    let len = self.rng.gen_range(1..20 * 1024);
                    let at = data.len() / 2 - len / 2 + self.rng.gen_range(0..1024);
                    let patch = self.content(len);
                    let end = (at + len).min(data.len());
                    data[at..end].copy_from_slice(&patch[..end - at]);
                    self.write_file(&rel, &data);
                    self.files.insert(rel.clone(), data);
                    format!("patch the middle of {rel} ({} B at {at})", end - at)
                }
                None => "no large file to patch".into(),
            },
            3 => {
                let rel = self.pick_file(0).expect("not empty");
                let more = self.rng.gen_range(1..64 * 1024);
                let extra = self.content(more);
                let mut data = self.files[&rel].clone();
                data.extend_from_slice(&extra);
                self.write_file(&rel, &data);
                self.files.insert(rel.clone(), data);
                format!("append {more} B to {rel}")
            }
            4 => {
                let rel = self.pick_file(0).expect("not empty");
                let size = self.file_size();
                let data = self.content(size);
                self.write_file(&rel, &data);
                self.files.insert(rel.clone(), data);
                format!("rewrite {rel} ({size} B)")
            }
            5 => {
                // Same content, new times: read again, must dedup.
                let rel = self.pick_file(0).expect("not empty");
                let data = self.files[&rel].clone();
                self.write_file(&rel, &data);
                format!("touch {rel}")
            }
            _ => "leave unchanged".into(),
        }
    }

    fn expected_now(&self) -> Expected {
        self.files
            .iter()
            .map(|(k, v)| (k.clone(), (hex::encode(Sha256::digest(v)), v.len() as u64)))
            .collect()
    }

    // ---------------------------------------------------------- operations --

    async fn op_backup(&mut self) {
        self.backup_with(None, true).await
    }

    /// A backup that takes its lock and loads the index before a forget
    /// and a prune run beside it, and stores its snapshot after them: it
    /// deduplicates against packs the prune marked for deletion, which the
    /// prunes after it must index again rather than delete.
    async fn op_backup_beside_prune(&mut self) {
        // Half the time the folder then goes back to what only the snapshots
        // forgotten beside the backup hold: the backup needs exactly the
        // packs the prune marks.
        let revert = self.rng.gen_bool(0.5);
        let saved = if revert {
            self.backup_with(None, false).await;
            Some(self.files.clone())
        } else {
            None
        };
        self.log
            .push("backup beside prune: lock taken, index loaded".into());
        let repo = self.open(self.sink_a.clone()).await;
        let lock = repo
            .lock(LockMode::Shared, "backup", Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| self.fail(format!("shared lock: {e}")));
        repo.load_index().await.unwrap();
        self.stats.backups_beside_prune += 1;
        match saved {
            None => {
                self.op_forget().await;
                self.op_prune().await;
            }
            Some(saved) => {
                for _ in 0..3 {
                    let what = self.rewrite_one();
                    self.log.push(what);
                }
                self.backup_with(None, false).await;
                self.forget_with(1, None, false).await;
                self.prune_with(0.0, false).await;
                self.log
                    .push("revert the folder to before the last backup".into());
                self.set_files(saved);
            }
        }
        self.backup_with(Some(repo), false).await;
        lock.release().await.unwrap();
        if self.rng.gen_bool(0.5) {
            // Before any backup stores those chunks again.
            self.op_prune().await;
        }
    }

    /// Gives one file (a new one when there is none) new content.
    fn rewrite_one(&mut self) -> String {
        let rel = match self.pick_file(0) {
            Some(rel) => rel,
            None => {
                self.next_name += 1;
                format!("data/d0/f{}", self.next_name)
            }
        };
        let size = self.file_size().max(1);
        let data = self.content(size);
        self.write_file(&rel, &data);
        self.files.insert(rel.clone(), data);
        format!("rewrite {rel} ({size} B)")
    }

    /// Makes the folder hold exactly `files`.
    fn set_files(&mut self, files: BTreeMap<String, Vec<u8>>) {
        for rel in self.files.keys().filter(|k| !files.contains_key(*k)) {
            std::fs::remove_file(self.work.path().join(rel)).unwrap();
        }
        for (rel, data) in &files {
            if self.files.get(rel) != Some(data) {
                self.write_file(rel, data);
            }
        }
        self.files = files;
    }

    /// A backup through `beside` (a repository opened earlier, whose index
    /// may be old), else through a fresh one, on a crashing sink when
    /// `crash`.
    async fn backup_with(&mut self, beside: Option<Arc<Repository>>, crash: bool) {
        let n = self.rng.gen_range(0..4);
        let changes: Vec<String> = (0..n).map(|_| self.mutate_once()).collect();
        let tags: Vec<String> = match self.rng.gen_range(0..4) {
            0 => vec!["weekly".into()],
            1 => vec!["daily".into()],
            _ => vec![],
        };
        let (sink, crash) = self.sink_for_a(beside.is_none() && crash, 4);
        self.log.push(format!(
            "backup tags={tags:?} after [{}]{crash}",
            changes.join("; ")
        ));
        let expected = self.expected_now();
        let before: BTreeSet<ObjectId> = self.a.iter().map(|(id, _, _)| *id).collect();
        let result = async {
            let repo = match beside {
                Some(r) => r,
                None => Repository::open_with(sink.clone(), &self.keys).await?,
            };
            let source = FilesSource::new(
                FilesConfig {
                    paths: vec![self.data()],
                    exclude: vec![],
                    max_age: None,
                    one_file_system: false,
                },
                self.work.path(),
            )
            .map_err(|e| respaldo_core::Error::Invalid(e.to_string()))?;
            let job = BackupJob::new("data", Arc::new(source), 3);
            let opts = BackupOptions {
                tags: tags.clone(),
                concurrency: 1,
                host: "model".into(),
                redact: None,
                verify: true,
                cancel: None,
            };
            backup::backup(&repo, vec![job], &opts, Arc::new(Progress::default())).await
        }
        .await;
        self.note_crash(&sink, &crash);
        self.stats.backups += 1;
        match result {
            Ok(outcome) => {
                if let Some((n, e)) = outcome.failures().first() {
                    self.fail(format!("source {n} failed: {e}"));
                }
                let id = outcome.snapshot_id.expect("a snapshot");
                self.log.push(format!("  → snapshot {}", id.short()));
                self.a.push((id, tags, expected));
            }
            Err(e) => {
                if !sink.crashed() {
                    self.fail(format!("backup failed without a crash: {e}"));
                }
                // The snapshot may have been written just before the crash.
                let now = self.list_a().await;
                let new: Vec<&ObjectId> = now.iter().filter(|id| !before.contains(id)).collect();
                match new.as_slice() {
                    [] => self.log.push("  → no snapshot".into()),
                    [one] => {
                        self.log.push(format!(
                            "  → snapshot {} written before the crash",
                            one.short()
                        ));
                        self.a.push((**one, tags, expected));
                    }
                    many => self.fail(format!("{} new snapshots after one backup", many.len())),
                }
            }
        }
    }

    async fn list_a(&self) -> BTreeSet<ObjectId> {
        let repo = self.open(self.sink_a.clone()).await;
        let (list, damaged) = repo.snapshots().await.unwrap();
        if !damaged.is_empty() {
            self.fail(format!("damaged snapshots: {damaged:?}"));
        }
        list.iter().map(|s| s.id).collect()
    }

    async fn op_forget(&mut self) {
        let keep_last = self.rng.gen_range(1..=5u32);
        let weekly = self.rng.gen_bool(0.4).then(|| self.rng.gen_range(1..=3u32));
        self.forget_with(keep_last, weekly, true).await
    }

    async fn forget_with(&mut self, keep_last: u32, weekly: Option<u32>, crash: bool) {
        let mut policy = RetentionPolicy {
            keep_last: Some(keep_last),
            ..Default::default()
        };
        if let Some(w) = weekly {
            policy.tags.insert(
                "weekly".into(),
                respaldo_core::ops::retention::KeepRules {
                    keep_last: Some(w),
                    ..Default::default()
                },
            );
        }
        // The model's own reading of the policy: the newest `keep_last`, and
        // the newest `w` of those tagged weekly.
        let mut keep: BTreeSet<ObjectId> = self
            .a
            .iter()
            .rev()
            .take(keep_last as usize)
            .map(|(id, _, _)| *id)
            .collect();
        if let Some(w) = weekly {
            keep.extend(
                self.a
                    .iter()
                    .rev()
                    .filter(|(_, t, _)| t.iter().any(|x| x == "weekly"))
                    .take(w as usize)
                    .map(|(id, _, _)| *id),
            );
        }
        let removing = self.a.len() - keep.len();
        let (sink, crash) = self.sink_for_a(crash, removing as u64);
        self.log.push(format!(
            "forget keep_last={keep_last} weekly={weekly:?} (removes {removing}){crash}"
        ));
        let result = async {
            let repo = Repository::open_with(sink.clone(), &self.keys).await?;
            maintenance::forget(
                &repo,
                &policy,
                &chrono::Utc,
                &ForgetOptions {
                    hosts: Hosts::Only("model".into()),
                    ..Default::default()
                },
            )
            .await
        }
        .await;
        self.note_crash(&sink, &crash);
        self.stats.forgets += 1;
        let now = self.list_a().await;
        match result {
            Ok(_) if now != keep => self.fail(format!(
                "forget kept {:?}, the model keeps {:?}",
                now.iter().map(ObjectId::short).collect::<Vec<_>>(),
                keep.iter().map(ObjectId::short).collect::<Vec<_>>()
            )),
            Ok(_) => {}
            Err(e) if !sink.crashed() => self.fail(format!("forget failed without a crash: {e}")),
            Err(_) => {
                let before: BTreeSet<ObjectId> = self.a.iter().map(|(id, _, _)| *id).collect();
                if !keep.is_subset(&now) || !now.is_subset(&before) {
                    self.fail("a crashed forget removed a kept snapshot or added one".into());
                }
            }
        }
        self.a.retain(|(id, _, _)| now.contains(id));
    }

    async fn op_prune(&mut self) {
        let max_unused = [0.0, 0.0, 0.05, 0.1, 0.3, 1.0][self.rng.gen_range(0..6)];
        self.prune_with(max_unused, true).await
    }

    async fn prune_with(&mut self, max_unused: f64, crash: bool) {
        let (sink, crash) = self.sink_for_a(crash, 14);
        self.log
            .push(format!("prune max_unused={max_unused}{crash}"));
        let result = async {
            let repo = Repository::open_with(sink.clone(), &self.keys).await?;
            prune::prune(
                &repo,
                &PruneOptions {
                    dry_run: false,
                    max_unused,
                },
            )
            .await
        }
        .await;
        self.note_crash(&sink, &crash);
        self.stats.prunes += 1;
        match result {
            Ok(r) => {
                self.log.push(format!(
                    "  → {} deleted, {} repacked ({} blobs), {} unindexed, {} swept, {} waiting, {} recovered",
                    r.packs_deleted,
                    r.packs_repacked,
                    r.blobs_rewritten,
                    r.packs_unindexed,
                    r.packs_swept,
                    r.packs_waiting,
                    r.packs_recovered
                ));
                self.stats.packs_repacked += r.packs_repacked as u64;
                self.stats.packs_recovered += r.packs_recovered as u64;
                if r.packs_waiting > 0 {
                    self.stats.prunes_waiting += 1;
                }
                self.stats.blobs_rewritten += r.blobs_rewritten;
            }
            Err(e) if !sink.crashed() => self.fail(format!("prune failed without a crash: {e}")),
            Err(_) => {}
        }
    }

    async fn op_copy(&mut self) {
        let (sink, crash) = self.crash_sink(&self.sink_b.clone(), 12);
        // Half the copies move the stored objects as they are, as a host
        // without the identity does.
        let stored = self.rng.gen_bool(0.5);
        let how = if stored { " (stored objects)" } else { "" };
        self.log.push(format!("copy A → B{how}{crash}"));
        let result = async {
            let src = Repository::open_with(self.sink_a.clone(), &self.keys).await?;
            let dst = Repository::open_with(sink.clone(), &self.keys).await?;
            let (list, _) = src.snapshots().await?;
            let progress = Arc::new(Progress::default());
            if stored {
                respaldo_core::ops::copy::copy_stored(&src, &dst, &list, &progress).await
            } else {
                respaldo_core::ops::copy::copy(&src, &dst, &list, &progress).await
            }
        }
        .await;
        self.note_crash(&sink, &crash);
        self.stats.copies += 1;
        if let Err(e) = &result {
            if !sink.crashed() {
                self.fail(format!("copy failed without a crash: {e}"));
            }
        }
        let repo = self.open(self.sink_b.clone()).await;
        let (list, damaged) = repo.snapshots().await.unwrap();
        if !damaged.is_empty() {
            self.fail(format!("B has damaged snapshots: {damaged:?}"));
        }
        let mut fresh = Vec::new();
        for s in &list {
            let origin = s.snapshot.origin_or(s.id);
            if self.b.contains_key(&origin) {
                continue;
            }
            match self.a.iter().find(|(id, _, _)| *id == origin) {
                Some((_, _, e)) => {
                    self.b.insert(origin, e.clone());
                    fresh.push(origin);
                }
                None => self.fail(format!(
                    "B holds snapshot {} of unknown origin {}",
                    s.id.short(),
                    origin.short()
                )),
            }
        }
        if result.is_ok() {
            for (id, _, _) in &self.a {
                if !self.b.contains_key(id) {
                    self.fail(format!("snapshot {} was not copied", id.short()));
                }
            }
        }
        self.log.push(format!("  → {} new in B", fresh.len()));
        // Check B: structure and data, the new copies, and a few others.
        self.check_verify(&repo, "B").await;
        let mut sample: Vec<ObjectId> = fresh;
        let others: Vec<ObjectId> = self.b.keys().copied().collect();
        for _ in 0..2 {
            if !others.is_empty() {
                sample.push(others[self.rng.gen_range(0..others.len())]);
            }
        }
        for origin in sample {
            let s = list
                .iter()
                .find(|s| s.snapshot.origin_or(s.id) == origin)
                .cloned()
                .unwrap_or_else(|| self.fail(format!("copy of {} is gone from B", origin.short())));
            let expected = self.b[&origin].clone();
            self.check_snapshot(&repo, &s, &expected, false).await;
        }
    }

    // -------------------------------------------------------------- checks --

    async fn check_verify(&self, repo: &Arc<Repository>, which: &str) -> Vec<String> {
        let report = verify::verify(
            repo,
            &VerifyOptions {
                read_data: true,
                snapshots: None,
            },
            &Arc::new(Progress::default()),
        )
        .await
        .unwrap_or_else(|e| self.fail(format!("verify of {which} failed: {e}")));
        if !report.is_ok() {
            self.fail(format!(
                "verify --read-data of {which}: {:?}",
                report.problems
            ));
        }
        report.notes
    }

    async fn check_a(&mut self, to_disk: bool) {
        let repo = self.open(self.sink_a.clone()).await;
        let notes = self.check_verify(&repo, "A").await;
        if notes.iter().any(|n| n.contains("packs it marked")) {
            self.stats.checks_on_marked_packs += 1;
        }
        let (list, _) = repo.snapshots().await.unwrap();
        let ids: BTreeSet<ObjectId> = list.iter().map(|s| s.id).collect();
        let model: BTreeSet<ObjectId> = self.a.iter().map(|(id, _, _)| *id).collect();
        if ids != model {
            self.fail(format!(
                "repository holds {:?}, the model {:?}",
                ids.iter().map(ObjectId::short).collect::<Vec<_>>(),
                model.iter().map(ObjectId::short).collect::<Vec<_>>()
            ));
        }
        let snaps: Vec<(SnapshotRef, Expected)> = self
            .a
            .iter()
            .map(|(id, _, e)| {
                (
                    list.iter().find(|s| s.id == *id).unwrap().clone(),
                    e.clone(),
                )
            })
            .collect();
        for (s, e) in &snaps {
            self.check_snapshot(&repo, s, e, to_disk).await;
        }
    }

    /// Reads a snapshot back (or restores it to disk) and compares every
    /// file with the model.
    async fn check_snapshot(
        &mut self,
        repo: &Arc<Repository>,
        s: &SnapshotRef,
        expected: &Expected,
        to_disk: bool,
    ) {
        self.stats.snapshot_checks += 1;
        let entry = s
            .good("data")
            .unwrap_or_else(|| self.fail(format!("snapshot {} has no good `data`", s.id.short())));
        let artifact = entry.artifact("files").unwrap().clone();
        let mut got: Expected = BTreeMap::new();
        if to_disk {
            self.stats.restores_to_disk += 1;
            let dest = self.scratch.path().join(s.id.short());
            extract::restore_tree(
                repo,
                &artifact,
                &dest,
                &TreeRestoreOptions::default(),
                &Arc::new(Progress::default()),
            )
            .await
            .unwrap_or_else(|e| self.fail(format!("restore of {} failed: {e}", s.id.short())));
            collect_files(&dest, &dest, &mut got);
            std::fs::remove_dir_all(&dest).unwrap();
        } else {
            let mut reader = TreeReader::new(repo.clone(), &artifact).unwrap();
            loop {
                let e = match reader.next_entry().await {
                    Ok(Some(e)) => e,
                    Ok(None) => break,
                    Err(e) => self.fail(format!("tree of {}: {e}", s.id.short())),
                };
                if e.kind != EntryKind::File {
                    continue;
                }
                let mut h = Sha256::new();
                let mut len = 0u64;
                for c in &e.chunks {
                    let b = repo.read_blob(c).await.unwrap_or_else(|err| {
                        self.fail(format!(
                            "snapshot {} file {}: {err}",
                            s.id.short(),
                            e.path.display()
                        ))
                    });
                    len += b.len() as u64;
                    h.update(&b);
                }
                got.insert(e.path.display(), (hex::encode(h.finalize()), len));
            }
        }
        if &got != expected {
            let diff: Vec<String> = expected
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .map(|(k, _)| format!("{k} differs or is missing"))
                .chain(
                    got.keys()
                        .filter(|k| !expected.contains_key(*k))
                        .map(|k| format!("{k} is extra")),
                )
                .take(10)
                .collect();
            self.fail(format!(
                "snapshot {} does not hold what the model says{}: {diff:?}",
                s.id.short(),
                if to_disk { " (restored to disk)" } else { "" }
            ));
        }
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Expected) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            collect_files(root, &p, out);
        } else if m.is_file() {
            let data = std::fs::read(&p).unwrap();
            out.insert(
                p.strip_prefix(root).unwrap().to_string_lossy().into_owned(),
                (hex::encode(Sha256::digest(&data)), data.len() as u64),
            );
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs `ops` operations and checks the counters that prove the run tested
/// what it is for.
async fn run(storage: Storage, default_ops: u64, encrypted: bool) {
    let ops = env_u64("MODEL_OPS").unwrap_or(default_ops);
    let seed = env_u64("MODEL_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    eprintln!("model test: {ops} operations, MODEL_SEED={seed}, encrypted={encrypted}");
    let mut w = World::new(seed, &storage, encrypted).await;
    for step in 0..ops {
        let roll = w.rng.gen_range(0..100);
        w.log.push(format!("#{step}"));
        let op = async {
            match roll {
                0..=39 => w.op_backup().await,
                40..=44 => w.op_backup_beside_prune().await,
                45..=62 => w.op_forget().await,
                63..=84 => w.op_prune().await,
                _ => w.op_copy().await,
            }
            let to_disk = step % 10 == 9 || step + 1 == ops;
            w.check_a(to_disk).await;
        };
        if let Err(panic) = std::panic::AssertUnwindSafe(op).catch_unwind().await {
            // A panic outside `fail` (an unwrap): give the seed and log too.
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            if msg.starts_with("model test failed") {
                std::panic::resume_unwind(panic);
            }
            w.fail(format!("panic: {msg}"));
        }
    }
    eprintln!("model test done (MODEL_SEED={seed}): {:?}", w.stats);
    let s = &w.stats;
    assert!(
        s.backups > 0 && s.forgets > 0 && s.prunes > 0 && s.copies > 0,
        "{s:?}"
    );
    if ops >= 50 {
        assert!(s.crashes > 0, "no operation was crashed: {s:?}");
    }
    if ops >= 150 {
        assert!(
            s.packs_repacked > 0 && s.blobs_rewritten > 0,
            "no prune rewrote a partly used pack (MODEL_SEED={seed}): {s:?}"
        );
        assert!(
            s.backups_beside_prune > 0
                && s.prunes_waiting > 0
                && s.checks_on_marked_packs + s.packs_recovered > 0,
            "no prune ran beside a backup (MODEL_SEED={seed}): {s:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_local_repository() {
    let dir = tempfile::tempdir().unwrap();
    run(Storage::Local(dir.path().to_path_buf()), 300, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_local_encrypted_repository() {
    let dir = tempfile::tempdir().unwrap();
    run(Storage::Local(dir.path().to_path_buf()), 100, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_s3_repository() {
    let moto = respaldo_testing::moto::Moto::start();
    moto.create_bucket("model");
    run(
        Storage::S3 {
            endpoint: moto.endpoint(),
            bucket: "model".into(),
        },
        50,
        false,
    )
    .await;
}
