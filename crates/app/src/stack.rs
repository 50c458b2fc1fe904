//! The stack an operation works on: the loaded configuration, whose
//! snapshots it acts on (`--host`), the repository and its sinks, the lock
//! around the work, and the [`Observer`] that hears about progress (the
//! command line draws it; a library caller may ignore it).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use respaldo_core::kit::progress::Progress;
use respaldo_core::repo::cache::CacheSink;
use respaldo_core::repo::crypto::KeyMaterial;
use respaldo_core::repo::lock::{LockMode, RepoLock};
use respaldo_core::repo::snapshot::{self, Hosts, SnapshotRef};
use respaldo_core::{Repository, Sink};
use respaldo_sink_local::LocalSink;
use respaldo_sink_object_store::{ObjectStoreSink, S3Options};

use crate::config::Config;
use crate::error::{Error, Result};

/// Hears what a long operation is doing. Every method has a silent default.
pub trait Observer: Send + Sync {
    /// A line for the person running the operation (`stopped containers: web`).
    fn say(&self, _line: &str) {}
    /// Something the person should know that does not stop the operation.
    fn warn(&self, _line: &str) {}
    /// Long work begins, counted in `progress`; it ends when the returned
    /// value is dropped.
    fn progress(&self, _verb: &'static str, _progress: &Arc<Progress>) -> Box<dyn Send> {
        Box::new(())
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Observer for Silent {}

/// The configuration, the host selection and the observer of one operation.
pub struct Stack {
    /// The loaded configuration.
    pub config: Config,
    /// `--host`: whose snapshots to act on (`None`: this configuration's
    /// host; `*`: every host's).
    pub host: Option<String>,
    /// Hears about progress.
    pub observer: Arc<dyn Observer>,
}

impl Stack {
    /// A stack of `config`, acting on its own host's snapshots, silently.
    pub fn new(config: Config) -> Stack {
        Stack {
            config,
            host: None,
            observer: Arc::new(Silent),
        }
    }

    /// A line for the person running the operation.
    pub fn say(&self, line: impl AsRef<str>) {
        self.observer.say(line.as_ref());
    }

    /// Long work counted in `progress` begins; it ends when the value is
    /// dropped.
    pub fn progress(&self, verb: &'static str, progress: &Arc<Progress>) -> Box<dyn Send> {
        self.observer.progress(verb, progress)
    }

    /// How long to wait for another command's lock.
    pub fn lock_wait(&self) -> Duration {
        Duration::from_secs(self.config.backup.lock_wait_secs)
    }

    /// Whose snapshots the operation acts on: `--host`, else this
    /// configuration's host.
    pub fn hosts(&self) -> Hosts {
        match &self.host {
            Some(h) => Hosts::parse(h),
            None => Hosts::Only(self.config.host.clone()),
        }
    }

    /// The keys the repository is opened with.
    pub async fn keys(&self) -> Result<KeyMaterial> {
        crate::keys::material(&self.config.repository).await
    }

    /// The repository's sink.
    pub async fn sink(&self) -> Result<Arc<dyn Sink>> {
        let r = &self.config.repository;
        sink_for(&r.url, r.s3.as_ref()).await
    }

    /// The repository, opened.
    pub async fn repo(&self) -> Result<Arc<Repository>> {
        let keys = self.keys().await?;
        open(self.sink().await?, &self.config.repository.url, &keys).await
    }

    /// A `[repositories.NAME]`, opened.
    pub async fn named_repo(&self, name: &str) -> Result<Arc<Repository>> {
        let keys = self.keys().await?;
        let sink = self.named_sink(name).await?;
        open(sink, &self.config.repositories[name].url, &keys).await
    }

    /// The sink of a `[repositories.NAME]`.
    pub async fn named_sink(&self, name: &str) -> Result<Arc<dyn Sink>> {
        let r = self.config.repositories.get(name).ok_or_else(|| {
            let known: Vec<&str> = self
                .config
                .repositories
                .keys()
                .map(String::as_str)
                .collect();
            Error::usage(format!(
                "no [repositories.{name}] in {} (configured: {})",
                self.config.path.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })?;
        sink_for(&r.url, r.s3.as_ref()).await
    }

    /// The repository's snapshots; damaged snapshot objects are skipped
    /// with a warning.
    pub async fn snapshots(&self, repo: &Repository) -> Result<Vec<SnapshotRef>> {
        let (list, damaged) = repo.snapshots().await?;
        for d in damaged {
            self.observer.warn(&format!(
                "snapshot object {} is damaged ({}); skipped",
                d.key, d.detail
            ));
        }
        Ok(list)
    }

    /// The snapshot `spec` names (`latest`, an id prefix), of `source`,
    /// among the selected hosts'.
    pub fn resolve<'a>(
        &self,
        list: &'a [SnapshotRef],
        spec: &str,
        source: Option<&str>,
    ) -> Result<&'a SnapshotRef> {
        Ok(snapshot::resolve(list, spec, source, &self.hosts())?)
    }

    /// Runs `work` holding a lock on `repo` in `mode`, and
    /// releases it whatever happens; a lock that cannot be refreshed in time
    /// stops the work.
    pub async fn with_lock<T, F>(
        &self,
        repo: &Repository,
        mode: LockMode,
        command: &str,
        work: F,
    ) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let lock = repo.lock(mode, command, self.lock_wait()).await?;
        Self::hold(lock, work).await
    }

    /// Runs `work` holding `lock`, and releases it whatever happens.
    pub async fn hold<T, F>(lock: RepoLock, work: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let mut out = None;
        let held = lock
            .while_held(async {
                out = Some(work.await);
                Ok(())
            })
            .await;
        let released = lock.release().await;
        held?;
        let out = out.expect("the work ran to its end");
        released?;
        out
    }
}

async fn sink_for(url: &str, s3: Option<&S3Options>) -> Result<Arc<dyn Sink>> {
    if ObjectStoreSink::handles(url) {
        let sink = ObjectStoreSink::connect(url, &s3.cloned().unwrap_or_default())
            .await
            .map_err(|e| Error::usage(e.to_string()))?;
        return Ok(Arc::new(sink));
    }
    Ok(Arc::new(LocalSink::new(url)))
}

/// Opens the repository in `sink` (at `url`). An object-store repository
/// keeps its index fragments and snapshot objects in the local cache
/// ([`CacheSink::default_root`], `RESPALDO_CACHE_DIR=off` to go without);
/// a local one needs none.
async fn open(sink: Arc<dyn Sink>, url: &str, keys: &KeyMaterial) -> Result<Arc<Repository>> {
    let root = CacheSink::default_root().filter(|_| ObjectStoreSink::handles(url));
    Ok(match root {
        Some(root) => Repository::open_cached(sink, keys, &root).await?,
        None => Repository::open_with(sink, keys).await?,
    })
}
