//! The command line: every command, option and flag (the `--help` text and
//! the man page come from these doc comments).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Back up and restore whole application stacks from one backup.toml.
#[derive(Debug, Parser)]
#[command(name = "respaldo", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (default: $RESPALDO_CONFIG, else ./backup.toml).
    #[arg(short = 'c', long = "config", global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Machine-readable JSON on stdout (and nothing else there).
    #[arg(long, global = true)]
    pub json: bool,
    /// Only errors on stderr; no progress.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail on stderr (repeat for debug output).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Apply the `[env.NAME]` overrides of the configuration (the name in
    /// `environment = "…"` selects the base configuration itself).
    #[arg(long = "env", global = true, env = "RESPALDO_ENV", value_name = "NAME")]
    pub env: Option<String>,
    /// Act on this host's snapshots (`'*'`: every host's). Default: the host
    /// this configuration backs up as (`[backup] host`, $RESPALDO_HOST, else
    /// the hostname).
    #[arg(long = "host", global = true, value_name = "NAME")]
    pub host: Option<String>,
    /// Use `[repositories.NAME]` instead of `[repository]` (`init` creates it).
    #[arg(long = "repository", global = true, value_name = "NAME")]
    pub repository: Option<String>,
    /// Log lines on stderr as text (timestamped when stderr is not a
    /// terminal) or as JSON objects, one per line.
    #[arg(
        long = "log-format",
        global = true,
        env = "RESPALDO_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields.message`).
    Json,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Configuration commands.
    Config {
        /// What to do.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Create the repository, or with --repository NAME one sharing its keys.
    Init,
    /// Back up the configured sources; prints the new snapshot id.
    Backup {
        /// Only this source (repeatable).
        #[arg(long = "source", value_name = "NAME")]
        sources: Vec<String>,
        /// Only sources of this type (repeatable), e.g. `--type postgres`.
        #[arg(long = "type", value_name = "TYPE")]
        types: Vec<String>,
        /// Tag the snapshot (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Check the sources and show what would run; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Skip `verify_after_backup` for this run.
        #[arg(long)]
        no_verify: bool,
    },
    /// List snapshots.
    Snapshots {
        /// Only snapshots holding this source.
        #[arg(long = "source", value_name = "NAME")]
        source: Option<String>,
        /// Only snapshots with this tag.
        #[arg(long = "tag", value_name = "TAG")]
        tag: Option<String>,
    },
    /// Show what a snapshot holds.
    Show {
        /// Snapshot id, unique prefix, or `latest`.
        snapshot: String,
    },
    /// Restore a snapshot into the live systems, somewhere else, or as files.
    Restore {
        /// Snapshot id, unique prefix, or `latest` (each source's latest good backup).
        snapshot: String,
        /// Only this source (repeatable).
        #[arg(long = "source", value_name = "NAME")]
        sources: Vec<String>,
        /// With one --source: restore somewhere else (a directory, a database URL, …).
        #[arg(long, value_name = "WHERE", conflicts_with = "to")]
        target: Option<String>,
        /// Write the artifacts as plain files under DIR/<source>/<artifact>.
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        /// Only these paths of file trees (repeatable), relative to the tree.
        #[arg(long = "path", value_name = "PATH")]
        paths: Vec<String>,
        /// Only part of a source (tables, schemas, keys).
        #[command(flatten)]
        selection: SelectionArgs,
        /// Overwrite existing data. Restoring over live data first takes a
        /// safety snapshot of it, tagged `pre-restore`.
        #[arg(long)]
        force: bool,
        /// With --force into the live system: skip the safety snapshot.
        #[arg(long, requires = "force")]
        no_safety_snapshot: bool,
        /// Show what would be restored where; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Restore each source's latest good backup into a throwaway target (a
    /// scratch database, a temporary server or volume), check it against what
    /// was recorded, remove it, and report the time taken (the RTO).
    TestRestore {
        /// Only this source (repeatable).
        #[arg(long = "source", value_name = "NAME")]
        sources: Vec<String>,
    },
    /// Write an artifact's bytes, a tree's file, or a directory as tar.
    Dump {
        /// Snapshot id, unique prefix, `latest` or `latest~N`.
        snapshot: String,
        /// SOURCE, SOURCE/ARTIFACT, or SOURCE:PATH of a file tree.
        what: String,
        /// Write to this file instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// List a snapshot's sources, a source's contents (tables and their
    /// rows, keys, points), or a tree's entries at PATH.
    Ls {
        /// Snapshot id, unique prefix, `latest` or `latest~N`.
        snapshot: String,
        /// SOURCE or SOURCE:PATH.
        what: Option<String>,
        /// Everything below PATH, not only what is directly in it.
        #[arg(short = 'R', long)]
        recursive: bool,
    },
    /// Find paths matching a glob in every snapshot's trees, each version
    /// once with the snapshots holding it.
    Find {
        /// Glob; without a `/` it matches names in any directory.
        pattern: String,
        /// Only this source.
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Only entries modified after TIME (YYYY-MM-DD or RFC 3339).
        #[arg(long, value_name = "TIME")]
        newer: Option<String>,
        /// Only entries modified before TIME.
        #[arg(long, value_name = "TIME")]
        older: Option<String>,
    },
    /// What changed between two snapshots, source by source.
    Diff {
        /// One snapshot (id, prefix, `latest`, `latest~N`).
        from: String,
        /// The other.
        to: String,
    },
    /// Show every snapshot as a read-only folder until Ctrl-C (FUSE).
    Mount {
        /// The folder to mount on (it must exist).
        dir: std::path::PathBuf,
    },
    /// Repository size against what it holds; each source's growth.
    Stats {
        /// Growth over each source's last N good backups.
        #[arg(long, default_value_t = 10, value_name = "N")]
        last: usize,
    },
    /// Check the repository; --read-data re-reads and re-hashes all data.
    Verify {
        /// Only this snapshot.
        snapshot: Option<String>,
        /// Download and check every pack.
        #[arg(long)]
        read_data: bool,
    },
    /// Apply the retention policy to this host's snapshots (`--host` for
    /// others'), or remove the snapshots given by id.
    Forget {
        /// Remove exactly these snapshots (ids or unique prefixes) instead of
        /// applying the policy.
        ids: Vec<String>,
        /// Prune afterwards.
        #[arg(long)]
        prune: bool,
        /// Show what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// With --prune: see `prune --max-unused`.
        #[arg(long, value_name = "PERCENT", requires = "prune")]
        max_unused: Option<String>,
    },
    /// Remove data no snapshot refers to.
    Prune {
        /// Show what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Rewrite a partly used pack when more than this share of it is
        /// unused (`10%`, the default; `0%` rewrites every partly used pack,
        /// `100%` never rewrites one).
        #[arg(long, value_name = "PERCENT")]
        max_unused: Option<String>,
    },
    /// Remove stale locks (a dead process's, an expired lease's, unreadable
    /// ones older than the lease); --remove-all removes every lock.
    Unlock {
        /// Remove every lock, also those of running commands: only when you
        /// know no other command uses the repository.
        #[arg(long)]
        remove_all: bool,
    },
    /// Repair the repository: rebuild the index, replace damaged snapshots,
    /// rewrite the config from its sound copy.
    Repair {
        /// What to repair.
        #[command(subcommand)]
        action: RepairAction,
    },
    /// Add or remove tags of a snapshot (`keep` protects it from retention).
    Tag {
        /// Snapshot id, unique prefix, or `latest`.
        snapshot: String,
        /// Add this tag (repeatable).
        #[arg(long = "add", value_name = "TAG")]
        add: Vec<String>,
        /// Remove this tag (repeatable).
        #[arg(long = "remove", value_name = "TAG")]
        remove: Vec<String>,
    },
    /// Replicate snapshots to another repository (`[repositories.NAME]`),
    /// sending only the chunks it lacks; snapshots already there are skipped.
    Copy {
        /// The destination: a `[repositories.NAME]`.
        #[arg(long, value_name = "NAME")]
        to: String,
        /// Snapshots (ids, prefixes or `latest`); default: all.
        snapshots: Vec<String>,
    },
    /// Per source: the last good backup, its age, size and duration, and
    /// whether it meets its objectives (rpo, rto); exit 1 when any source is
    /// stale, its last run failed or its last drill missed the rto.
    Status {
        /// Also send the `stale` notifications for stale sources.
        #[arg(long)]
        notify: bool,
        /// Also write the state as Prometheus text to FILE, atomically (for
        /// node exporter's textfile collector).
        #[arg(long, value_name = "FILE")]
        prometheus: Option<std::path::PathBuf>,
    },
    /// Run the [schedule] entries and serve /metrics and /healthz.
    Daemon {
        /// Show the entries, their next runs and commands; run nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Install the [schedule] as systemd timers or cron entries, show it, or
    /// run one entry now.
    Schedule {
        /// What to do.
        #[command(subcommand)]
        action: ScheduleAction,
    },
    /// Encryption keys.
    Key {
        /// What to do.
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Print the completion script for a shell
    /// (`respaldo completions bash > /etc/bash_completion.d/respaldo`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (`respaldo man | man -l -`).
    Man,
}

/// `repair` subcommands.
#[derive(Debug, Subcommand)]
pub enum RepairAction {
    /// Rebuild the index from the packs' self-describing headers (reads
    /// every pack; damaged packs give up only their damaged chunks).
    Index,
    /// Replace every snapshot that refers to lost chunks with one that
    /// keeps everything that survived; the originals stay, tagged `damaged`,
    /// until `forget ID` removes them.
    Snapshots {
        /// Show what would be replaced and dropped; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write the repository config and its copy again from the sound one.
    Config,
}

/// `key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Write a new age identity to FILE (mode 0600, never overwritten) and
    /// print its public recipient (`age1…`) on stdout, for `recipients`.
    Generate {
        /// Where to write the identity.
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
    },
}

/// Partial-restore options; each driver accepts the ones that apply to it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SelectionArgs {
    /// Databases: only this table, `table` or `schema.table` (repeatable).
    #[arg(long = "table", value_name = "TABLE")]
    pub tables: Vec<String>,
    /// Databases: only this schema (repeatable).
    #[arg(long = "schema", value_name = "SCHEMA")]
    pub schemas: Vec<String>,
    /// Databases: definitions only, no data.
    #[arg(long)]
    pub schema_only: bool,
    /// Key-value stores: only keys matching this glob, e.g. 'session:*' (repeatable).
    #[arg(long = "keys", value_name = "PATTERN")]
    pub keys: Vec<String>,
    /// Only this database of a backup that holds several (repeatable).
    #[arg(long = "database", value_name = "NAME")]
    pub databases: Vec<String>,
    /// Docker: only this volume of a backup that holds several (repeatable).
    #[arg(long = "volume", value_name = "NAME")]
    pub volumes: Vec<String>,
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the configuration.
    Check,
}

/// `schedule` subcommands.
#[derive(Debug, Subcommand)]
pub enum ScheduleAction {
    /// Write systemd timer units (default) or cron entries for every
    /// `[schedule]` entry, and enable them.
    Install(InstallTarget),
    /// Remove what `install` wrote.
    Uninstall(InstallTarget),
    /// Each entry's schedule, next and last runs, and whether it is installed.
    Status(InstallTarget),
    /// Run one entry now, as the timers and the daemon do (its backup, tags,
    /// retention, retries; or its verify / test-restore).
    Run {
        /// The `[schedule]` entry.
        entry: String,
        /// Show the commands it would run.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Where the schedule is installed.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallTarget {
    /// Cron instead of systemd timers.
    #[arg(long)]
    pub cron: bool,
    /// The user's systemd instance (~/.config/systemd/user) or crontab,
    /// instead of the system's.
    #[arg(long)]
    pub user: bool,
    /// Write below this directory instead of / (nothing is enabled).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Name in unit and file names (default: the configuration's folder
    /// name, plus the --env).
    #[arg(long)]
    pub name: Option<String>,
    /// A file of VAR=value lines for the secrets the configuration refers to
    /// (systemd EnvironmentFile=; sourced by the cron line).
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
}
