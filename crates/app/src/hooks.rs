//! Hooks: commands run before and after a backup run (`[hooks]`) and around
//! one source's backup (`[sources.NAME.hooks]`), with a timeout.
//!
//! * `before` — a failure skips the run (or that source), with the reason;
//! * `after` — after success;
//! * `failure` — after a failure (also when `before` failed);
//! * `finally` — always, last.
//!
//! Each is one command: an array (`["docker", "compose", "stop", "app"]`, run
//! without a shell) or a string run by `sh -c`. They run in the folder of the
//! configuration file with `RESPALDO_HOOK`, `RESPALDO_SOURCE` (source hooks)
//! and, after a failure, `RESPALDO_ERROR` (secrets masked) in their
//! environment.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use respaldo_core::error::BoxError;
use respaldo_core::kit::duration::parse_duration;
use respaldo_core::kit::process::{self, RunOptions};
use respaldo_core::source::{
    BackupContext, RestoreContext, RestorePlan, RestoreReport, RestoreTarget,
};
use respaldo_core::Source;
use serde::Deserialize;

use crate::mask::Masker;

/// How long a hook may run by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// One hook command.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum HookCommand {
    /// Run by `sh -c`.
    Shell(String),
    /// A program and its arguments, no shell.
    Argv(Vec<String>),
}

impl HookCommand {
    /// The program and its arguments (a shell string runs with `sh -c`).
    pub fn argv(&self) -> Vec<String> {
        match self {
            HookCommand::Shell(s) => vec!["sh".into(), "-c".into(), s.clone()],
            HookCommand::Argv(a) => a.clone(),
        }
    }

    /// The command as the user wrote it, for messages.
    pub fn display(&self) -> String {
        match self {
            HookCommand::Shell(s) => s.clone(),
            HookCommand::Argv(a) => a.join(" "),
        }
    }
}

/// `[hooks]` or `[sources.NAME.hooks]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// Runs first; if it fails, the run (or this source) is skipped and
    /// counts as failed, with the hook's error as the reason.
    #[serde(default)]
    pub before: Option<HookCommand>,
    /// Runs after a successful backup (a failure is logged as a warning).
    #[serde(default)]
    pub after: Option<HookCommand>,
    /// Runs after a failed backup (or a failed `before`).
    #[serde(default)]
    pub failure: Option<HookCommand>,
    /// Runs last, whatever happened.
    #[serde(default)]
    pub finally: Option<HookCommand>,
    /// How long each hook may run before it is killed (with its process
    /// group); default `"5min"`.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// Validated hooks.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    before: Option<HookCommand>,
    after: Option<HookCommand>,
    failure: Option<HookCommand>,
    finally: Option<HookCommand>,
    timeout: Duration,
    dir: PathBuf,
    /// Masks secrets in the `RESPALDO_ERROR` given to the hooks.
    masker: Masker,
}

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `before`.
    Before,
    /// `after`.
    After,
    /// `failure`.
    Failure,
    /// `finally`.
    Finally,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Before => "before",
            Stage::After => "after",
            Stage::Failure => "failure",
            Stage::Finally => "finally",
        }
    }
}

impl Hooks {
    /// Validates a hooks table; commands run in `dir`.
    pub fn new(c: HooksConfig, dir: &Path) -> Result<Hooks, (String, String)> {
        for (key, cmd) in [
            ("before", &c.before),
            ("after", &c.after),
            ("failure", &c.failure),
            ("finally", &c.finally),
        ] {
            let empty = match cmd {
                Some(HookCommand::Shell(s)) => s.trim().is_empty(),
                Some(HookCommand::Argv(a)) => a.is_empty() || a[0].is_empty(),
                None => false,
            };
            if empty {
                return Err((key.into(), "is an empty command".into()));
            }
        }
        let timeout =
            match &c.timeout {
                Some(t) => parse_duration(t).map_err(
                    |respaldo_core::kit::duration::DurationError(m)| ("timeout".to_string(), m),
                )?,
                None => DEFAULT_TIMEOUT,
            };
        Ok(Hooks {
            before: c.before,
            after: c.after,
            failure: c.failure,
            finally: c.finally,
            timeout,
            dir: dir.to_path_buf(),
            masker: Masker::default(),
        })
    }

    /// These hooks, with secrets masked (by `masker`) in the error they are
    /// given.
    pub fn with_masker(mut self, masker: Masker) -> Hooks {
        self.masker = masker;
        self
    }

    /// Whether any hook is set.
    pub fn is_empty(&self) -> bool {
        self.before.is_none()
            && self.after.is_none()
            && self.failure.is_none()
            && self.finally.is_none()
    }

    /// `before: …`, `after: …` lines for `--dry-run`.
    pub fn describe(&self) -> Vec<String> {
        [
            (Stage::Before, &self.before),
            (Stage::After, &self.after),
            (Stage::Failure, &self.failure),
            (Stage::Finally, &self.finally),
        ]
        .into_iter()
        .filter_map(|(s, c)| {
            c.as_ref()
                .map(|c| format!("{} hook: {}", s.as_str(), c.display()))
        })
        .collect()
    }

    /// Runs one hook if set. `source` names the source for source hooks;
    /// `error` is the failure being reported. The error names the hook.
    pub async fn run(
        &self,
        stage: Stage,
        source: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), HookError> {
        let cmd = match stage {
            Stage::Before => &self.before,
            Stage::After => &self.after,
            Stage::Failure => &self.failure,
            Stage::Finally => &self.finally,
        };
        let Some(cmd) = cmd else { return Ok(()) };
        let mut env = vec![("RESPALDO_HOOK".to_string(), stage.as_str().to_string())];
        if let Some(s) = source {
            env.push(("RESPALDO_SOURCE".into(), s.to_string()));
        }
        if let Some(e) = error {
            env.push(("RESPALDO_ERROR".into(), self.masker.mask(e)));
        }
        let whose = match source {
            Some(s) => format!("source `{s}`"),
            None => "the run".to_string(),
        };
        tracing::info!(
            "running the {} hook of {whose}: {}",
            stage.as_str(),
            cmd.display()
        );
        let opts = RunOptions {
            env,
            dir: Some(self.dir.clone()),
            timeout: Some(self.timeout),
        };
        process::run_with(&cmd.argv(), &opts)
            .await
            .map_err(|error| HookError {
                stage: stage.as_str(),
                whose,
                error,
            })
    }

    /// Runs the hooks that follow a run: `after` or `failure`, then
    /// `finally`. Their failures are logged; an `after` failure is returned
    /// as a warning.
    pub async fn conclude(&self, source: Option<&str>, error: Option<&str>) -> Option<HookError> {
        let mut warning = None;
        let stage = if error.is_some() {
            Stage::Failure
        } else {
            Stage::After
        };
        if let Err(e) = self.run(stage, source, error).await {
            tracing::error!("{e}");
            warning = Some(e);
        }
        if let Err(e) = self.run(Stage::Finally, source, error).await {
            tracing::error!("{e}");
            warning.get_or_insert(e);
        }
        warning
    }
}

/// A hook that failed: which one, and why.
#[derive(Debug, thiserror::Error)]
#[error("`{stage}` hook of {whose} failed: {error}")]
pub struct HookError {
    /// `before`, `after`, `failure` or `finally`.
    pub stage: &'static str,
    /// Whose hook it is: a source (source `NAME`) or the run.
    pub whose: String,
    /// What the command did.
    #[source]
    pub error: respaldo_core::kit::process::ProcessError,
}

/// A source with its hooks and pre-check: `before` hook, then `check`
/// (when `precheck`), then the backup, then `after`/`failure` and `finally`.
#[derive(Debug)]
pub struct HookedSource {
    inner: Arc<dyn Source>,
    name: String,
    hooks: Hooks,
    precheck: bool,
}

impl HookedSource {
    /// Wraps `inner` (named `name`) when it has hooks or a pre-check.
    pub fn wrap(
        inner: Arc<dyn Source>,
        name: &str,
        hooks: Hooks,
        precheck: bool,
    ) -> Arc<dyn Source> {
        if hooks.is_empty() && !precheck {
            return inner;
        }
        Arc::new(HookedSource {
            inner,
            name: name.to_string(),
            hooks,
            precheck,
        })
    }
}

#[async_trait]
impl Source for HookedSource {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn check(&self) -> Result<(), BoxError> {
        self.inner.check().await
    }

    async fn backup(&self, ctx: &mut BackupContext) -> Result<(), BoxError> {
        let name = Some(self.name.as_str());
        let result: Result<(), BoxError> = async {
            self.hooks
                .run(Stage::Before, name, None)
                .await
                .map_err(|e| format!("skipped: {e}"))?;
            if self.precheck {
                self.inner
                    .check()
                    .await
                    .map_err(|e| format!("skipped: pre-check failed: {e}"))?;
            }
            self.inner.backup(ctx).await
        }
        .await;
        let error = result
            .as_ref()
            .err()
            .map(|e| respaldo_core::ops::backup::error_chain(e.as_ref()));
        if let Some(w) = self.hooks.conclude(name, error.as_deref()).await {
            ctx.warn(w.to_string());
        }
        result
    }

    async fn plan(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestorePlan, BoxError> {
        self.inner.plan(ctx, target).await
    }

    async fn restore(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestoreReport, BoxError> {
        self.inner.restore(ctx, target).await
    }

    /// The backup hooks do not run for a safety snapshot: the restore's
    /// own `before` hook has already quiesced what needs it.
    async fn safety_backup(
        &self,
        ctx: &mut BackupContext,
        plan: &RestorePlan,
    ) -> Result<(), BoxError> {
        self.inner.safety_backup(ctx, plan).await
    }

    async fn test_restore(&self, ctx: &RestoreContext) -> Result<RestoreReport, BoxError> {
        self.inner.test_restore(ctx).await
    }
}
