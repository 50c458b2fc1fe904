//! # respaldo-source-command
//!
//! The `command` source: backs up the standard output of any command, for
//! tools without a native driver (`mysqldump`, `etcdctl snapshot save
//! /dev/stdout`, `sqlite3 db .dump`, …), and restores by piping the artifact
//! into an optional `restore_command`.
//!
//! The source fails when the command cannot start, exits non-zero or is
//! killed; the error carries the end of its stderr. Output is streamed: it is
//! never held in memory or in a temporary file.
//!
//! ```toml
//! [sources.mysql]
//! type = "command"
//! command = ["mysqldump", "--all-databases", "--single-transaction"]
//! restore_command = ["mysql"]
//! check_empty = ["sh", "-c", "test -z \"$(mysql -N -e 'SHOW DATABASES' | grep -v _schema)\""]
//! env.MYSQL_PWD = { file = "/etc/respaldo/mysql.pw" }
//! ```
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use respaldo_core::error::BoxError;
use respaldo_core::kit::process::{feed_stdin, find_program, store_stdout};
use respaldo_core::kit::secret::Secret;
use respaldo_core::source::{
    BackupContext, PlanAction, PlanItem, RestoreContext, RestorePlan, RestoreReport, RestoreTarget,
    Source, TargetState,
};
use serde::Deserialize;
use tokio::process::Command;

/// Configuration of a `command` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// The program and its arguments (no shell). Its standard output is the
    /// artifact. Use `["sh", "-c", "…"]` for a pipeline.
    pub command: Vec<String>,
    /// Program and arguments that receive the artifact on standard input for
    /// a restore. With `--target WHERE`, `RESPALDO_TARGET=WHERE` is set in its
    /// environment. Without it, restore only works with `--to` or `dump`.
    #[serde(default)]
    pub restore_command: Option<Vec<String>>,
    /// A program that tells whether the restore target is empty, run before
    /// a restore (with `RESPALDO_TARGET` set for `--target`): exit 0 = empty
    /// or absent, 1 = holds data (then `--force` is needed, and the safety
    /// snapshot runs `command` first), anything else = cannot tell (the
    /// restore stops). Without it, a restore always needs `--force`.
    #[serde(default)]
    pub check_empty: Option<Vec<String>>,
    /// A program that receives the artifact on standard input for
    /// `test-restore` (e.g. loads it into a scratch database and checks it);
    /// exit 0 means the drill passed. Without it the source is reported as
    /// not testable.
    #[serde(default)]
    pub test_restore_command: Option<Vec<String>>,
    /// Name of the artifact (its file name with `restore --to`).
    #[serde(default = "default_artifact")]
    pub artifact: String,
    /// Extra environment variables for both commands; values are secrets by
    /// reference (`{ env = "…" }`, `{ file = "…" }`, `{ command = […] }`) or
    /// strings.
    #[serde(default)]
    pub env: BTreeMap<String, Secret>,
    /// Working directory, relative to the configuration file's folder (default:
    /// that folder).
    #[serde(default)]
    pub workdir: Option<PathBuf>,
}

fn default_artifact() -> String {
    "stdout".into()
}

/// Errors of the command source.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Invalid configuration.
    #[error("{0}")]
    Config(String),
    /// The program is not installed.
    #[error("`{0}` not found on PATH")]
    NotFound(String),
    /// Running the command failed.
    #[error(transparent)]
    Process(#[from] respaldo_core::kit::process::ProcessError),
    /// A secret could not be resolved.
    #[error("environment variable {name}: {message}")]
    Secret {
        /// The variable.
        name: String,
        /// Why (never the value).
        message: String,
    },
    /// Storing the output failed.
    #[error(transparent)]
    Core(#[from] respaldo_core::Error),
}

/// The `command` source.
#[derive(Debug)]
pub struct CommandSource {
    config: CommandConfig,
    workdir: PathBuf,
}

impl CommandSource {
    /// Builds the source; `base` is the configuration file's folder.
    pub fn new(mut config: CommandConfig, base: &Path) -> Result<Self, CommandError> {
        if config.command.first().is_none_or(|p| p.is_empty()) {
            return Err(CommandError::Config("`command` must name a program".into()));
        }
        for (key, argv) in [
            ("restore_command", &config.restore_command),
            ("check_empty", &config.check_empty),
            ("test_restore_command", &config.test_restore_command),
        ] {
            if argv
                .as_ref()
                .is_some_and(|c| c.first().is_none_or(|p| p.is_empty()))
            {
                return Err(CommandError::Config(format!("`{key}` must name a program")));
            }
        }
        if config.artifact.is_empty() || config.artifact.contains('/') {
            return Err(CommandError::Config(format!(
                "`artifact` must be a plain file name, not `{}`",
                config.artifact
            )));
        }
        for s in config.env.values_mut() {
            s.rebase(base);
        }
        let workdir = base.join(config.workdir.as_deref().unwrap_or(Path::new(".")));
        Ok(CommandSource { config, workdir })
    }

    async fn command(&self, argv: &[String]) -> Result<Command, CommandError> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| CommandError::Config("empty command".into()))?;
        let path = find_program(prog).ok_or_else(|| CommandError::NotFound(prog.clone()))?;
        let mut cmd = Command::new(path);
        cmd.args(args).current_dir(&self.workdir).kill_on_drop(true);
        for (name, secret) in &self.config.env {
            let v = secret
                .resolve()
                .await
                .map_err(|message| CommandError::Secret {
                    name: name.clone(),
                    message: message.to_string(),
                })?;
            cmd.env(name, v.expose());
        }
        Ok(cmd)
    }
}

impl CommandSource {
    /// The target's state by `check_empty` (see [`CommandConfig::check_empty`]).
    async fn target_state(&self, target: &RestoreTarget) -> Result<TargetState, CommandError> {
        let Some(argv) = &self.config.check_empty else {
            return Ok(TargetState::Holds(
                "cannot tell: no `check_empty` command is configured".into(),
            ));
        };
        let mut cmd = self.command(argv).await?;
        if let RestoreTarget::Other(t) = target {
            cmd.env("RESPALDO_TARGET", t);
        }
        let out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| CommandError::Config(format!("check_empty `{}`: {e}", argv[0])))?;
        match out.status.code() {
            Some(0) => Ok(TargetState::Empty),
            Some(1) => Ok(TargetState::Holds(format!(
                "`{}` says it holds data",
                argv[0]
            ))),
            _ => Err(CommandError::Config(format!(
                "check_empty `{}` could not tell ({}): {}",
                argv[0],
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
        }
    }

    async fn plan_restore(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestorePlan, CommandError> {
        ctx.refuse_selection("command", &[])?;
        let where_ = match target {
            RestoreTarget::Live => "the live system".to_string(),
            RestoreTarget::Other(t) => t.clone(),
        };
        let what = format!("`{}`", self.config.artifact);
        let item = match &self.config.restore_command {
            None => PlanItem::new(
                what,
                where_,
                TargetState::Holds("unknown".into()),
                PlanAction::Refuse(format!(
                    "source `{}` has no restore_command; use `restore --to DIR` or `dump`",
                    ctx.source_name
                )),
            ),
            Some(_) => PlanItem::decide(what, where_, self.target_state(target).await?, ctx.force),
        };
        Ok(RestorePlan { items: vec![item] })
    }

    /// Feeds the artifact to `argv`; fails when the program did not read it
    /// all (a loader that stopped early restored only part of it).
    async fn feed(
        &self,
        ctx: &RestoreContext,
        argv: &[String],
        target: &RestoreTarget,
        what: &str,
    ) -> Result<String, CommandError> {
        let program = argv[0].clone();
        let artifact = ctx.artifact(&self.config.artifact)?.clone();
        let mut cmd = self.command(argv).await?;
        if let RestoreTarget::Other(t) = target {
            cmd.env("RESPALDO_TARGET", t);
        }
        let n = feed_stdin(ctx, &artifact, cmd, &format!("{what} `{program}`")).await?;
        if n != artifact.size {
            return Err(CommandError::Config(format!(
                "{what} `{program}` exited after reading {n} of {} bytes: only part of the \
                 backup went in",
                artifact.size
            )));
        }
        Ok(format!("piped {n} bytes into `{program}`"))
    }
}

/// The driver's registry entry: what the application's one list of
/// drivers holds. It builds a source from the `[sources.NAME]` table (as
/// JSON, `type` taken out), naming the key of any error:
///
/// ```
/// use respaldo_core::registry::BuildContext;
/// let ctx = BuildContext { base: std::path::Path::new("/srv/app"), local_repository: None };
/// let table = serde_json::json!({"command": ["sh", "-c", "sqlite3 app.db .dump"], "restore_command": ["sqlite3", "app.db"]});
/// let source = (respaldo_source_command::DRIVER.build)(table, &ctx).unwrap();
/// assert_eq!(source.kind(), "command");
///
/// let bad = serde_json::json!({"no_such_key": 1});
/// let err = (respaldo_source_command::DRIVER.build)(bad, &ctx).err().unwrap();
/// assert!(err.to_string().contains("no_such_key"), "{err}");
/// ```
pub const DRIVER: respaldo_core::registry::Driver = respaldo_core::registry::Driver {
    kind: "command",
    build: |value, cx| respaldo_core::registry::build_with(value, |c| CommandSource::new(c, cx.base)),
    example: "type = \"command\"\ncommand = [\"sh\", \"-c\", \"sqlite3 app.db .dump\"]\nrestore_command = [\"sqlite3\", \"app.db\"]\ncheck_empty = [\"sh\", \"-c\", \"test ! -s app.db\"]\n",
    inventory: respaldo_core::inventory::nothing,
};

#[async_trait]
impl Source for CommandSource {
    fn kind(&self) -> &'static str {
        "command"
    }

    async fn check(&self) -> Result<(), BoxError> {
        for argv in
            std::iter::once(&self.config.command).chain(self.config.restore_command.as_ref())
        {
            find_program(&argv[0]).ok_or_else(|| CommandError::NotFound(argv[0].clone()))?;
        }
        if !self.workdir.is_dir() {
            return Err(CommandError::Config(format!(
                "workdir {} is not a directory",
                self.workdir.display()
            ))
            .into());
        }
        Ok(())
    }

    async fn backup(&self, ctx: &mut BackupContext) -> Result<(), BoxError> {
        let program = self.config.command[0].clone();
        let cmd = self.command(&self.config.command).await?;
        let artifact =
            store_stdout(ctx, &self.config.artifact, cmd, &format!("`{program}`")).await?;
        ctx.set_metadata("command", program);
        ctx.set_metadata("bytes", artifact.size);
        Ok(())
    }

    async fn plan(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestorePlan, BoxError> {
        Ok(self.plan_restore(ctx, target).await?)
    }

    async fn restore(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestoreReport, BoxError> {
        let plan = self.plan_restore(ctx, target).await?;
        if let Some(e) = plan.refused(&ctx.source_name) {
            return Err(e.into());
        }
        let argv = self
            .config
            .restore_command
            .as_ref()
            .expect("the plan refuses without one");
        let line = self.feed(ctx, argv, target, "restore command").await?;
        Ok(RestoreReport { lines: vec![line] })
    }

    async fn test_restore(&self, ctx: &RestoreContext) -> Result<RestoreReport, BoxError> {
        let Some(argv) = &self.config.test_restore_command else {
            return Err(respaldo_core::Error::NotTestable(format!(
                "source `{}` has no `test_restore_command`",
                ctx.source_name
            ))
            .into());
        };
        let line = self
            .feed(ctx, argv, &RestoreTarget::Live, "test-restore command")
            .await?;
        Ok(RestoreReport {
            lines: vec![format!("{line}; it reported success")],
        })
    }
}
