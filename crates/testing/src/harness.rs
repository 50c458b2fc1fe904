//! Drivers tested in-process: a repository in memory, a driver built from
//! its registry entry and a TOML table (as the application builds it), and
//! backup → plan → restore → test-restore through the same core calls the
//! application makes — no binary, no configuration file.
//!
//! ```
//! use respaldo_core::source::RestoreTarget;
//! use respaldo_testing::harness::{runtime, Harness, RestoreOptions};
//!
//! let rt = runtime();
//! let h = rt.block_on(Harness::new());
//! let source = h
//!     .source(
//!         &respaldo_source_command::DRIVER,
//!         r#"command = ["echo", "hello"]
//!            restore_command = ["sh", "-c", "test \"$(cat)\" = hello"]"#,
//!     )
//!     .unwrap();
//! let backup = rt.block_on(h.backup_with("greeting", source.clone())).unwrap();
//! // The live target of a command source may hold data: `force` says so.
//! let force = RestoreOptions { force: true, ..Default::default() };
//! rt.block_on(h.restore_with(&backup, source.as_ref(), RestoreTarget::Live, force))
//!     .unwrap();
//! rt.block_on(h.verify());
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use respaldo_core::kit::progress::Progress;
use respaldo_core::ops::backup::{self, BackupJob, BackupOptions};
use respaldo_core::ops::verify::{self, VerifyOptions};
use respaldo_core::registry::{BuildContext, Driver};
use respaldo_core::repo::snapshot::SourceEntry;
use respaldo_core::repo::tree::RawPath;
use respaldo_core::source::{RestoreContext, RestorePlan, RestoreReport, RestoreTarget, Selection};
use respaldo_core::{ObjectId, Repository, Sink, Source};

use crate::memory::MemorySink;

/// A runtime for tests whose fixtures block (the server fixtures use
/// blocking clients, which must not run inside a runtime): fixtures run on
/// the test's thread, harness calls in `runtime().block_on(…)`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// An error from the harness or the driver, as text (tests print it).
pub type HarnessError = Box<dyn std::error::Error + Send + Sync>;

/// A repository in memory and what a driver test needs around it.
#[derive(Debug)]
pub struct Harness {
    repo: Arc<Repository>,
    sink: Arc<MemorySink>,
    base: PathBuf,
}

/// One source's part of a snapshot the harness wrote.
#[derive(Debug, Clone)]
pub struct Backup {
    /// The snapshot.
    pub snapshot: ObjectId,
    /// The source's entry: artifacts, metadata (row counts, digests), stats.
    pub entry: SourceEntry,
    /// The source's name.
    pub name: String,
}

/// How a restore is asked for (the CLI's `--force`, `--path`, `--table`…).
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Overwrite existing data (`--force`).
    pub force: bool,
    /// Only these paths of tree artifacts (`--path`).
    pub paths: Vec<RawPath>,
    /// Only this part of the source (`--table`, `--keys`, …).
    pub selection: Selection,
}

impl Harness {
    /// A new, empty, unencrypted repository in memory; relative paths in
    /// driver configurations are relative to the current directory.
    pub async fn new() -> Self {
        let sink = Arc::new(MemorySink::new());
        let repo = Repository::init(sink.clone() as Arc<dyn Sink>)
            .await
            .expect("a repository in memory");
        Harness {
            repo,
            sink,
            base: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        }
    }

    /// Relative paths in driver configurations are relative to `base`.
    pub fn with_base(mut self, base: &Path) -> Self {
        self.base = base.to_path_buf();
        self
    }

    /// The repository.
    pub fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// The objects stored.
    pub fn sink(&self) -> &Arc<MemorySink> {
        &self.sink
    }

    /// Builds a source from its registry entry and the body of its
    /// `[sources.NAME]` table (without `type`), as the application does.
    pub fn source(&self, driver: &Driver, table: &str) -> Result<Arc<dyn Source>, HarnessError> {
        let value: toml::Value = toml::from_str(table)?;
        let json = serde_json::to_value(value)?;
        let ctx = BuildContext {
            base: &self.base,
            local_repository: None,
        };
        Ok((driver.build)(json, &ctx)?)
    }

    /// Backs `source` up as source `name` into a new snapshot. A failed
    /// source is an error with its message.
    pub async fn backup_with(
        &self,
        name: &str,
        source: Arc<dyn Source>,
    ) -> Result<Backup, HarnessError> {
        let opts = BackupOptions {
            tags: Vec::new(),
            concurrency: 1,
            host: "harness".into(),
            redact: None,
            verify: true,
            cancel: None,
        };
        let job = BackupJob::new(name, source, 3);
        let outcome =
            backup::backup(&self.repo, vec![job], &opts, Arc::new(Progress::default())).await?;
        let entry = outcome.snapshot.sources[name].clone();
        if let Some(e) = &entry.error {
            return Err(format!("source `{name}` failed: {e}").into());
        }
        let snapshot = outcome
            .snapshot_id
            .ok_or_else(|| format!("no snapshot was written for `{name}`"))?;
        Ok(Backup {
            snapshot,
            entry,
            name: name.to_string(),
        })
    }

    fn context(&self, backup: &Backup, opts: &RestoreOptions) -> RestoreContext {
        RestoreContext {
            repo: self.repo.clone(),
            snapshot_id: backup.snapshot,
            source_name: backup.name.clone(),
            entry: backup.entry.clone(),
            force: opts.force,
            paths: opts.paths.clone(),
            selection: opts.selection.clone(),
            progress: Arc::new(Progress::default()),
        }
    }

    /// What a restore of `backup` into `target` would do (nothing changes).
    pub async fn plan_with(
        &self,
        backup: &Backup,
        source: &dyn Source,
        target: RestoreTarget,
        opts: RestoreOptions,
    ) -> Result<RestorePlan, HarnessError> {
        source.plan(&self.context(backup, &opts), &target).await
    }

    /// Restores `backup` into `target` as the CLI does: the plan first, and
    /// a plan that refuses is an error that changed nothing.
    pub async fn restore_with(
        &self,
        backup: &Backup,
        source: &dyn Source,
        target: RestoreTarget,
        opts: RestoreOptions,
    ) -> Result<RestoreReport, HarnessError> {
        let ctx = self.context(backup, &opts);
        let plan = source.plan(&ctx, &target).await?;
        if let Some(refused) = plan.refused(&backup.name) {
            return Err(refused.into());
        }
        source.restore(&ctx, &target).await
    }

    /// Drills `backup` with the driver's `test-restore` (a throwaway target,
    /// checked, removed).
    pub async fn test_restore_with(
        &self,
        backup: &Backup,
        source: &dyn Source,
    ) -> Result<RestoreReport, HarnessError> {
        source
            .test_restore(&self.context(backup, &RestoreOptions::default()))
            .await
    }

    /// Panics unless `verify --read-data` finds the repository sound.
    pub async fn verify(&self) {
        let report = verify::verify(
            &self.repo,
            &VerifyOptions {
                read_data: true,
                snapshots: None,
            },
            &Arc::new(Progress::default()),
        )
        .await
        .expect("verify runs");
        assert!(report.is_ok(), "verify --read-data: {:?}", report.problems);
    }
}
