//! `backup.toml`: loading, `${ENV}` interpolation, validation with errors that
//! name the file, the line and the key, and construction of the drivers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use respaldo_core::kit::duration::parse_duration;
use respaldo_core::ops::retention::RetentionPolicy;
use respaldo_core::Source;
use serde::Deserialize;

pub mod daemon;
pub mod error;
pub mod locate;
pub mod restore;
pub mod status;

use error::{typed, KeyError, UsageError};

/// Where the repository is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// A local directory (absolute, or relative to the configuration file's
    /// folder; `file://` accepted), or an object store: `s3://bucket/prefix`,
    /// `gs://bucket/prefix`, `az://container/prefix`. `$RESPALDO_REPOSITORY`,
    /// when set, replaces it.
    pub url: String,
    /// S3 settings (endpoint, region, path style, keys by reference, retries).
    #[serde(default)]
    pub s3: Option<respaldo_sink_object_store::S3Options>,
    /// Run a structural `verify` of every new snapshot right after it is written.
    #[serde(default)]
    pub verify_after_backup: bool,
    /// Encrypt the repository (at `init`) to these age X25519 public keys
    /// (`age1…`, from `respaldo key generate`). A host that has only these can
    /// back up, deduplicate, list snapshots and forget, but cannot read any
    /// backup: restore, dump, verify, prune and copy need `identity_file`.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// The age identity file (`AGE-SECRET-KEY-1…`, mode 0600) that reads an
    /// encrypted repository; `~` is expanded. Default: $RESPALDO_IDENTITY_FILE.
    /// Only where restores run.
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    /// Encrypt with a passphrase instead of recipients (every host that has it
    /// can read and write). By reference: `"${VAR}"`, `{ env = "VAR" }`,
    /// `{ file = "path" }` or `{ command = [...] }`, never inline.
    #[serde(default)]
    pub passphrase: Option<respaldo_core::kit::secret::Secret>,
}

/// Another repository, for `copy --to NAME` (`[repositories.NAME]`). It is
/// created with `respaldo init --repository NAME` and shares the chunking,
/// chunk ids and encryption keys of `[repository]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedRepositoryConfig {
    /// A local directory or `s3://`, `gs://`, `az://` URL, as for `[repository]`.
    pub url: String,
    /// S3 settings (endpoint, region, path style, keys by reference, retries).
    #[serde(default)]
    pub s3: Option<respaldo_sink_object_store::S3Options>,
}

/// Settings of backup runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSettings {
    /// How many sources are backed up at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// zstd level for sources that do not set their own (1–19; 3 is fast and
    /// compresses well).
    #[serde(default = "default_level")]
    pub compression_level: i32,
    /// How long a command waits for another one's repository lock, in seconds.
    #[serde(default = "default_lock_wait")]
    pub lock_wait_secs: u64,
    /// Check each source (`check`: reachability, credentials, client tools)
    /// right before its backup; a source that fails is skipped with the reason.
    #[serde(default = "yes")]
    pub precheck: bool,
    /// Refuse to start a backup when the disk holding a local repository has
    /// less free space than this (`"5GiB"`, `"500MB"`).
    #[serde(default)]
    pub min_free_space: Option<String>,
    /// Warn (log and `warning` notification) when one source's backup is
    /// larger than this (`"5GB"`, `"2GiB"`): a dump that suddenly grew, a
    /// folder that gained a disk image. A source's own `max_backup_size`
    /// wins. The backup itself succeeds.
    #[serde(default)]
    pub max_backup_size: Option<String>,
    /// Warn (log and `warning` notification) after a backup when the
    /// repository stores more than this (seed 000: "alert when the backups
    /// pass 5 GB"). The backup itself succeeds.
    #[serde(default)]
    pub max_repository_size: Option<String>,
    /// The host recorded in this configuration's snapshots, and whose
    /// snapshots `latest`, retention and `status` use by default. Set it
    /// where the machine's name changes (Kubernetes pods) or several
    /// machines are one service. Default: $RESPALDO_HOST, else the hostname.
    #[serde(default)]
    pub host: Option<String>,
}

/// Settings of restores.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreSettings {
    /// How long the safety snapshots taken before `restore --force` are kept,
    /// whatever the retention rules say (`"7d"`, `"36h"`). They never count
    /// as a source's last good backup.
    #[serde(default = "default_safety_keep")]
    pub keep_safety_snapshots: String,
}

fn default_safety_keep() -> String {
    "7d".into()
}

impl Default for RestoreSettings {
    fn default() -> Self {
        RestoreSettings {
            keep_safety_snapshots: default_safety_keep(),
        }
    }
}

fn default_concurrency() -> usize {
    2
}
fn default_level() -> i32 {
    3
}
fn default_lock_wait() -> u64 {
    60
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            concurrency: default_concurrency(),
            compression_level: default_level(),
            lock_wait_secs: default_lock_wait(),
            precheck: true,
            min_free_space: None,
            max_backup_size: None,
            max_repository_size: None,
            host: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    repository: RepositoryConfig,
    #[serde(default)]
    repositories: BTreeMap<String, NamedRepositoryConfig>,
    #[serde(default)]
    retention: RetentionPolicy,
    #[serde(default)]
    backup: BackupSettings,
    #[serde(default)]
    restore: RestoreSettings,
    #[serde(default)]
    sources: BTreeMap<String, toml::Value>,
    #[serde(default)]
    schedule: BTreeMap<String, toml::Value>,
    #[serde(default)]
    daemon: daemon::DaemonConfig,
    #[serde(default)]
    status: status::StatusConfig,
    #[serde(default)]
    notify: Vec<toml::Value>,
    #[serde(default)]
    hooks: crate::hooks::HooksConfig,
}

/// Keys every source accepts besides its driver's own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonSourceKeys {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    compression_level: Option<i32>,
    /// The recovery point objective of this source (`"26h"`): `status` calls
    /// it stale when its last good backup is older.
    #[serde(default)]
    rpo: Option<String>,
    /// The recovery time objective of this source (`"30min"`): `status`
    /// fails it when its last test-restore estimated a longer restore, or
    /// failed, or there was none.
    #[serde(default)]
    rto: Option<String>,
    /// Warn when this source's backup is larger than this (`"2GB"`);
    /// default: `[backup] max_backup_size`.
    #[serde(default)]
    max_backup_size: Option<String>,
    /// Hooks around this source's backup.
    #[serde(default)]
    hooks: crate::hooks::HooksConfig,
    /// What happens around this source's restore: hooks, containers to
    /// stop, the health check.
    #[serde(default)]
    restore: restore::RestoreSettingsConfig,
}

fn yes() -> bool {
    true
}

const COMMON_KEYS: [&str; 8] = [
    "type",
    "enabled",
    "compression_level",
    "rpo",
    "rto",
    "max_backup_size",
    "hooks",
    "restore",
];

/// One configured source.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// Its name (`[sources.NAME]`).
    pub name: String,
    /// Driver type.
    pub kind: String,
    /// `enabled = false` leaves it out of runs.
    pub enabled: bool,
    /// zstd level.
    pub compression_level: i32,
    /// Its recovery point objective, if set for it.
    pub rpo: Option<std::time::Duration>,
    /// Its recovery time objective, if set for it.
    pub rto: Option<std::time::Duration>,
    /// Bytes above which its backup is warned about (its own, else
    /// `[backup] max_backup_size`).
    pub max_backup_size: Option<u64>,
    /// The driver (with the source's hooks and pre-check around its backup).
    pub source: Arc<dyn Source>,
    /// Hooks, containers and the health check around its restore.
    pub restore: restore::RestoreSettings,
}

/// A loaded configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Its folder, which relative paths are resolved against.
    pub base: PathBuf,
    /// The repository.
    pub repository: RepositoryConfig,
    /// More repositories (`[repositories.NAME]`), for `copy`.
    pub repositories: BTreeMap<String, NamedRepositoryConfig>,
    /// Retention rules.
    pub retention: RetentionPolicy,
    /// Backup settings.
    pub backup: BackupSettings,
    /// How long safety snapshots are kept.
    pub keep_safety_snapshots: std::time::Duration,
    /// The host this configuration's snapshots are recorded under.
    pub host: String,
    /// Bytes above which the repository is warned about after a backup
    /// (`[backup] max_repository_size`).
    pub max_repository_size: Option<u64>,
    /// Sources, in name order.
    pub sources: Vec<SourceSpec>,
    /// `[schedule]` entries, in name order.
    pub schedule: Vec<crate::schedule::Entry>,
    /// `[daemon]` settings.
    pub daemon: daemon::DaemonSettings,
    /// `[status]` settings and the run history.
    pub status: status::StatusSettings,
    /// `[[notify]]`.
    pub notify: Vec<crate::notify::Notifier>,
    /// `[hooks]` of every backup run.
    pub hooks: crate::hooks::Hooks,
    /// Masks the secrets this configuration refers to.
    pub masker: crate::mask::Masker,
    /// The `--env` applied, if any.
    pub env: Option<String>,
    /// What the file writes that works but should change (each located like
    /// an error); shown as warnings.
    pub warnings: Vec<String>,
    /// The environment variables the configuration reads (`${VAR}` and
    /// `{ env = "VAR" }`), which a scheduled run must be given too.
    pub variables: BTreeSet<String>,
}

impl Config {
    /// Makes `[repositories.NAME]` the repository every command uses
    /// (`--repository NAME`): its URL and S3 settings replace those of
    /// `[repository]`, whose keys, recipients and identity it shares. `None`
    /// keeps `[repository]`.
    pub fn use_repository(&mut self, name: Option<&str>) -> Result<(), UsageError> {
        let Some(name) = name else { return Ok(()) };
        let Some(r) = self.repositories.get(name) else {
            let known: Vec<&str> = self.repositories.keys().map(String::as_str).collect();
            return Err(UsageError(format!(
                "--repository {name}: no [repositories.{name}] in {} (configured: {})",
                self.path.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        self.repository.url = r.url.clone();
        self.repository.s3 = r.s3.clone();
        Ok(())
    }

    /// Finds the configuration: `-c`, else `$RESPALDO_CONFIG`, else `./backup.toml`.
    pub fn locate(flag: Option<&Path>) -> PathBuf {
        if let Some(p) = flag {
            return p.to_path_buf();
        }
        match std::env::var_os("RESPALDO_CONFIG") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from("backup.toml"),
        }
    }

    /// Loads and validates a configuration file, with the `[env.NAME]`
    /// overrides of `env` applied.
    pub fn load(path: &Path, env: Option<&str>) -> Result<Config, UsageError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            UsageError(format!("cannot read configuration {}: {e}", path.display()))
        })?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = abs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        Self::parse(&text, &abs, &base, env)
    }

    /// Parses configuration text (`file` for messages, `base` for relative
    /// paths, `env` the environment to apply).
    pub fn parse(
        text: &str,
        file: &Path,
        base: &Path,
        env: Option<&str>,
    ) -> Result<Config, UsageError> {
        let shown = file.display().to_string();
        let mut value: toml::Value = toml::from_str(text).map_err(|e| {
            let pos = e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
                    format!(":{line}:{col}")
                })
                .unwrap_or_default();
            UsageError(format!(
                "{shown}{pos}: invalid TOML: {}",
                e.message().trim_end().replace('\n', " ")
            ))
        })?;
        let locator = locate::Locator::new(text);
        let at = |keys: &[String], msg: String| -> UsageError {
            let found = locator.locate(keys, env);
            let line = found.line.map(|l| format!(":{l}")).unwrap_or_default();
            let key = if keys.is_empty() {
                String::new()
            } else {
                format!(" {}:", found.path)
            };
            UsageError(format!("{shown}{line}:{key} {msg}"))
        };
        crate::environments::apply(&mut value, env).map_err(|(keys, msg)| at(&keys, msg))?;
        repository_from_environment(&mut value);
        let masker = crate::mask::Masker::from_config(text, &value, base);
        if let Some(keys) = inline_object_store_key(&value) {
            return Err(at(
                &keys,
                "object-store keys are never written inline: use `${VAR}`, \
                 `{ env = \"VAR\" }`, `{ file = \"path\" }`, `{ command = [...] }`, \
                 an AWS profile or the standard environment"
                    .into(),
            ));
        }
        let mut path = Vec::new();
        let mut variables = BTreeSet::new();
        interpolate(&mut value, &mut path, &mut variables).map_err(|(keys, msg)| at(&keys, msg))?;
        let warnings = months_written_m(&value)
            .into_iter()
            .map(|keys| {
                let e = at(&keys, "`m` is read as months here; write `mo` (elsewhere `m` is refused as ambiguous between minutes and months)".into());
                e.0
            })
            .collect();
        let raw: RawConfig = typed(value, &[]).map_err(|(keys, msg)| at(&keys, msg))?;

        if !(1..=19).contains(&raw.backup.compression_level) {
            return Err(at(
                &["backup".into(), "compression_level".into()],
                format!("{} is out of range (1–19)", raw.backup.compression_level),
            ));
        }
        let size = |key: &str, value: &Option<String>, keys: &[String]| {
            value
                .as_deref()
                .map(crate::precheck::parse_size)
                .transpose()
                .map_err(|m| {
                    at(
                        &[keys.to_vec(), vec![key.to_string()]].concat(),
                        m.to_string(),
                    )
                })
        };
        let backup_keys = ["backup".to_string()];
        size("min_free_space", &raw.backup.min_free_space, &backup_keys)?;
        let max_backup_size = size("max_backup_size", &raw.backup.max_backup_size, &backup_keys)?;
        let max_repository_size = size(
            "max_repository_size",
            &raw.backup.max_repository_size,
            &backup_keys,
        )?;
        let local_repository: Option<PathBuf> = resolve_repository_url(&raw.repository.url, base)
            .ok()
            .filter(|u| !respaldo_sink_object_store::ObjectStoreSink::handles(u))
            .map(PathBuf::from);
        let mut sources = Vec::new();
        for (name, v) in raw.sources {
            let keys = vec!["sources".to_string(), name.clone()];
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(at(
                    &keys,
                    "source names may only use letters, digits, `-` and `_`".into(),
                ));
            }
            let toml::Value::Table(mut table) = v else {
                return Err(at(&keys, "must be a table".into()));
            };
            let mut common = toml::Table::new();
            for k in COMMON_KEYS {
                if let Some(v) = table.remove(k) {
                    common.insert(k.to_string(), v);
                }
            }
            if !common.contains_key("type") {
                return Err(at(
                    &keys,
                    format!(
                        "missing `type` (one of: {})",
                        crate::registry::kinds().join(", ")
                    ),
                ));
            }
            let c: CommonSourceKeys =
                typed(toml::Value::Table(common), &keys).map_err(|(k, m)| at(&k, m))?;
            let level = c.compression_level.unwrap_or(raw.backup.compression_level);
            if !(1..=19).contains(&level) {
                let mut k = keys.clone();
                k.push("compression_level".into());
                return Err(at(&k, format!("{level} is out of range (1–19)")));
            }
            let source = build_driver(&c.kind, table, base, &keys, local_repository.as_deref())
                .map_err(|(k, m)| at(&k, m))?;
            let sub = |k: &str| {
                let mut p = keys.clone();
                p.push(k.to_string());
                p
            };
            let rpo = c
                .rpo
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|m| at(&sub("rpo"), m.to_string()))?;
            let rto = c
                .rto
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|m| at(&sub("rto"), m.to_string()))?;
            let own_max = size("max_backup_size", &c.max_backup_size, &keys)?;
            let hooks = crate::hooks::Hooks::new(c.hooks, base)
                .map_err(|(k, m)| at(&[sub("hooks"), vec![k]].concat(), m))?
                .with_masker(masker.clone());
            let source =
                crate::hooks::HookedSource::wrap(source, &name, hooks, raw.backup.precheck);
            sources.push(SourceSpec {
                name,
                kind: c.kind,
                enabled: c.enabled,
                compression_level: level,
                rpo,
                rto,
                max_backup_size: own_max.or(max_backup_size),
                source,
                restore: restore::RestoreSettings::new(c.restore, base)
                    .map_err(|(k, m)| at(&[keys.clone(), vec!["restore".into(), k]].concat(), m))?,
            });
        }
        if raw.backup.concurrency == 0 {
            return Err(at(
                &["backup".into(), "concurrency".into()],
                "must be at least 1".into(),
            ));
        }
        let mut repository = raw.repository;
        repository.url = resolve_repository_url(&repository.url, base)
            .map_err(|m| at(&["repository".into(), "url".into()], m.to_string()))?;
        for (i, r) in repository.recipients.iter().enumerate() {
            respaldo_core::repo::crypto::check_recipient(r).map_err(|e| {
                at(
                    &["repository".into(), "recipients".into()],
                    format!("entry {}: {e}", i + 1),
                )
            })?;
        }
        if !repository.recipients.is_empty() && repository.passphrase.is_some() {
            return Err(at(
                &["repository".into(), "passphrase".into()],
                "use either `recipients` or `passphrase`, not both".into(),
            ));
        }
        if let Some(p) = &mut repository.passphrase {
            p.rebase(base);
        }
        if let Some(f) = &repository.identity_file {
            repository.identity_file = Some(expand_home(f, base));
        }
        let mut repositories = raw.repositories;
        for (name, r) in &mut repositories {
            r.url = resolve_repository_url(&r.url, base).map_err(|m| {
                at(
                    &["repositories".into(), name.clone(), "url".into()],
                    m.to_string(),
                )
            })?;
        }
        let daemon = daemon::DaemonSettings::new(&raw.daemon)
            .map_err(|(k, m)| at(&[vec!["daemon".to_string()], k].concat(), m))?;
        let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
        let repository_names: Vec<&str> = repositories.keys().map(String::as_str).collect();
        let schedule = crate::schedule::parse(
            raw.schedule,
            &crate::schedule::Defaults {
                timezone: raw.daemon.timezone.as_deref(),
                catch_up: raw.daemon.catch_up,
                retries: raw.daemon.retries,
                retry_delay: daemon.retry_delay,
                retention: !raw.retention.is_empty(),
                repositories: &repository_names,
            },
            &names,
        )
        .map_err(|(k, m)| at(&k, m))?;
        let status = status::StatusSettings::new(raw.status, base, &repository.url)
            .map_err(|(k, m)| at(&[vec!["status".to_string()], k].concat(), m))?;
        let notify = crate::notify::parse(raw.notify, base).map_err(|(k, m)| at(&k, m))?;
        let hooks = crate::hooks::Hooks::new(raw.hooks, base)
            .map_err(|(k, m)| at(&["hooks".to_string(), k], m))?
            .with_masker(masker.clone());
        let keep_safety_snapshots = parse_duration(&raw.restore.keep_safety_snapshots).map_err(
            |respaldo_core::kit::duration::DurationError(m)| {
                at(&["restore".into(), "keep_safety_snapshots".into()], m)
            },
        )?;
        let host = match std::env::var("RESPALDO_HOST") {
            Ok(h) if !h.trim().is_empty() => h.trim().to_string(),
            _ => raw
                .backup
                .host
                .clone()
                .unwrap_or_else(respaldo_core::repo::lock::hostname),
        };
        if host.is_empty() || host == "*" || host.contains(char::is_whitespace) {
            return Err(at(
                &["backup".into(), "host".into()],
                format!("`{host}` is not a host name (no spaces, not `*`)"),
            ));
        }
        Ok(Config {
            path: file.to_path_buf(),
            base: base.to_path_buf(),
            repository,
            repositories,
            retention: raw.retention,
            backup: raw.backup,
            keep_safety_snapshots,
            host,
            max_repository_size,
            sources,
            schedule,
            daemon,
            status,
            notify,
            hooks,
            masker,
            env: env.map(str::to_string),
            warnings,
            variables,
        })
    }

    /// The source with this name.
    pub fn source(&self, name: &str) -> Option<&SourceSpec> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// The `keep_within` durations of `[retention]` (and its tag rules) that
/// write months as the old `m`.
fn months_written_m(value: &toml::Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let Some(retention) = value.get("retention") else {
        return out;
    };
    let mut check = |rules: &toml::Value, keys: Vec<String>| {
        if let Some(toml::Value::String(s)) = rules.get("keep_within") {
            if respaldo_core::ops::retention::KeepWithin::uses_m_for_months(s) {
                out.push([keys, vec!["keep_within".to_string()]].concat());
            }
        }
    };
    check(retention, vec!["retention".into()]);
    if let Some(toml::Value::Table(tags)) = retention.get("tags") {
        for (tag, rules) in tags {
            check(rules, vec!["retention".into(), "tags".into(), tag.clone()]);
        }
    }
    out
}

/// The variable that overrides `[repository] url` (restic's
/// `RESTIC_REPOSITORY`): one configuration, several repositories, e.g. a
/// drill against a copy.
pub const REPOSITORY_VARIABLE: &str = "RESPALDO_REPOSITORY";

/// Applies [`REPOSITORY_VARIABLE`] when it is set and not empty.
fn repository_from_environment(value: &mut toml::Value) {
    let Some(url) = std::env::var(REPOSITORY_VARIABLE)
        .ok()
        .filter(|u| !u.trim().is_empty())
    else {
        return;
    };
    if let Some(root) = value.as_table_mut() {
        let repo = root
            .entry("repository")
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if let Some(t) = repo.as_table_mut() {
            t.insert("url".into(), toml::Value::String(url));
        }
    }
}

/// Why a repository URL is refused.
#[derive(Debug, thiserror::Error)]
enum UrlError {
    #[error("must not be empty")]
    Empty,
    #[error(
        "`{0}://` repositories are not supported (a directory, file://, s3://, gs:// or az://)"
    )]
    Scheme(String),
}

fn resolve_repository_url(url: &str, base: &Path) -> Result<String, UrlError> {
    if url.is_empty() {
        return Err(UrlError::Empty);
    }
    if respaldo_sink_object_store::ObjectStoreSink::handles(url) {
        return Ok(url.to_string());
    }
    if let Some((scheme, _)) = url.split_once("://") {
        if scheme != "file" {
            return Err(UrlError::Scheme(scheme.to_string()));
        }
    }
    let p = url.strip_prefix("file://").unwrap_or(url);
    Ok(base.join(p).to_string_lossy().into_owned())
}

fn build_driver(
    kind: &str,
    table: toml::Table,
    base: &Path,
    keys: &[String],
    local_repository: Option<&Path>,
) -> Result<Arc<dyn Source>, KeyError> {
    let Some(driver) = crate::registry::driver(kind) else {
        let mut k = keys.to_vec();
        k.push("type".into());
        return Err((
            k,
            format!(
                "unknown source type `{kind}` (this build knows: {})",
                crate::registry::kinds().join(", ")
            ),
        ));
    };
    let value = serde_json::to_value(&table).map_err(|e| (keys.to_vec(), e.to_string()))?;
    let cx = respaldo_core::registry::BuildContext {
        base,
        local_repository,
    };
    (driver.build)(value, &cx).map_err(|e| {
        let mut k = keys.to_vec();
        k.extend(e.keys);
        (k, e.message)
    })
}

/// The first `access_key_id` / `secret_access_key` of `[repository.s3]` or a
/// `[repositories.NAME.s3]` written as a literal string (before `${VAR}`
/// interpolation), as a key path.
fn inline_object_store_key(v: &toml::Value) -> Option<Vec<String>> {
    let mut tables: Vec<(Vec<String>, &toml::Value)> = Vec::new();
    if let Some(s3) = v.get("repository").and_then(|r| r.get("s3")) {
        tables.push((vec!["repository".into(), "s3".into()], s3));
    }
    if let Some(toml::Value::Table(named)) = v.get("repositories") {
        for (name, r) in named {
            if let Some(s3) = r.get("s3") {
                tables.push((vec!["repositories".into(), name.clone(), "s3".into()], s3));
            }
        }
    }
    tables.into_iter().find_map(|(path, s3)| {
        ["access_key_id", "secret_access_key"]
            .iter()
            .find_map(|k| match s3.get(*k) {
                Some(toml::Value::String(s)) if !s.contains("${") => {
                    Some([path.clone(), vec![k.to_string()]].concat())
                }
                _ => None,
            })
    })
}

/// Replaces `${NAME}` in every string with the environment variable; `$${`
/// stays a literal `${`. A missing variable is an error naming the key.
/// Replaces `${VAR}` in every string, and records in `names` every variable
/// the configuration reads (`${VAR}` and `{ env = "VAR" }`).
fn interpolate(
    v: &mut toml::Value,
    path: &mut Vec<String>,
    names: &mut BTreeSet<String>,
) -> Result<(), KeyError> {
    match v {
        toml::Value::String(s) => {
            *s = expand(s, names).map_err(|m| (path.clone(), m.to_string()))?;
        }
        toml::Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                path.push(i.to_string());
                interpolate(x, path, names)?;
                path.pop();
            }
        }
        toml::Value::Table(t) => {
            if let (1, Some(toml::Value::String(name))) = (t.len(), t.get("env")) {
                if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    names.insert(name.clone());
                }
            }
            for (k, x) in t.iter_mut() {
                path.push(k.clone());
                interpolate(x, path, names)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

/// Why a `${VAR}` reference cannot be expanded.
#[derive(Debug, thiserror::Error)]
enum InterpolationError {
    #[error("unterminated `${{` in `{0}`")]
    Unterminated(String),
    #[error("`${{{0}}}` is not a valid variable reference")]
    BadName(String),
    #[error("environment variable {0} is not set")]
    Unset(String),
}

fn expand(s: &str, names: &mut BTreeSet<String>) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(r) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = r;
        } else if let Some(r) = after.strip_prefix("${") {
            let end = r
                .find('}')
                .ok_or_else(|| InterpolationError::Unterminated(s.to_string()))?;
            let name = &r[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(InterpolationError::BadName(name.to_string()));
            }
            names.insert(name.to_string());
            let val =
                std::env::var(name).map_err(|_| InterpolationError::Unset(name.to_string()))?;
            out.push_str(&val);
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `~/x` → `$HOME/x`; a relative path is taken from the configuration's folder.
pub fn expand_home(path: &Path, base: &Path) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    if path.is_relative() {
        base.join(path)
    } else {
        path.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_env() {
        std::env::set_var("RESPALDO_TEST_X", "v");
        assert_eq!(
            expand("a${RESPALDO_TEST_X}b$${LIT}$", &mut BTreeSet::new()).unwrap(),
            "avb${LIT}$"
        );
        assert!(expand("${RESPALDO_TEST_MISSING_VAR}", &mut BTreeSet::new()).is_err());
        assert!(expand("${unterminated", &mut BTreeSet::new()).is_err());
    }
}

#[cfg(test)]
mod located_errors;
