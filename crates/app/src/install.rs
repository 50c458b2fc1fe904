//! `schedule install|uninstall|status|run`: the `[schedule]` entries as
//! systemd timers (a `.service` + `.timer` per entry, system-wide or
//! `--user`) or cron lines (`/etc/cron.d/respaldo-NAME`, or the user's
//! crontab with `--user`), each running `respaldo -c CONFIG schedule run
//! ENTRY` with absolute paths; systemd logs to the journal, cron to a log
//! file per entry. `--root DIR` writes below DIR (for packaging and tests)
//! and leaves systemctl and crontab alone.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::schedule::{Entry, When};

/// Where the schedule is installed.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Cron instead of systemd timers.
    pub cron: bool,
    /// The user's systemd instance (~/.config/systemd/user) or crontab,
    /// instead of the system's.
    pub user: bool,
    /// Write below this directory instead of / (nothing is enabled).
    pub root: Option<PathBuf>,
    /// Name in unit and file names (default: the configuration's folder
    /// name, plus the --env).
    pub name: Option<String>,
    /// A file of VAR=value lines for the secrets the configuration refers to
    /// (systemd EnvironmentFile=; sourced by the cron line).
    pub env_file: Option<PathBuf>,
}

/// One `[schedule]` entry's state, for `schedule status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EntryState {
    /// The entry's name.
    pub entry: String,
    /// What it runs (`backup`, `verify`, …).
    pub action: &'static str,
    /// When (`cron 0 3 * * *`, `every 6h`).
    pub schedule: String,
    /// Its next run.
    pub next: Option<DateTime<Utc>>,
    /// Whether its timer or cron line is installed.
    pub installed: bool,
    /// Its last recorded run.
    pub last: Option<LastRun>,
}

/// An entry's last recorded run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastRun {
    /// When it started.
    pub time: DateTime<Utc>,
    /// Whether it succeeded.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
}

/// First line of every file written, and what `uninstall` looks for.
const MARKER: &str =
    "# Written by `respaldo schedule install`; `respaldo schedule uninstall` removes it.";

fn usage(msg: impl Into<String>) -> Error {
    Error::usage(msg)
}

/// Whether two IANA names are the same zone (`UTC`, `Etc/UTC`, `Zulu`, … are).
fn same_zone(a: &str, b: &str) -> bool {
    const UTC: [&str; 8] = [
        "UTC",
        "Etc/UTC",
        "Etc/UCT",
        "UCT",
        "Etc/Universal",
        "Universal",
        "Etc/Zulu",
        "Zulu",
    ];
    a == b || (UTC.contains(&a) && UTC.contains(&b))
}

/// The variables an environment file (`VAR=value` lines, `export VAR=…`,
/// `#` comments: systemd's `EnvironmentFile=` and the shell's `.`) sets.
fn env_file_names(text: &str) -> std::collections::BTreeSet<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(name, _)| name.trim())
        .collect()
}

/// Writes, removes and inspects the installed schedule of a configuration.
pub struct Installer<'a> {
    config: &'a Config,
    target: Target,
    name: String,
    exe: PathBuf,
    root: PathBuf,
}

/// `systemd-escape`-like quoting of one ExecStart= argument.
fn systemd_quote(arg: &str) -> String {
    let escaped = arg
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    if escaped.is_empty() || escaped.contains(|c: char| c.is_whitespace() || c == '\'' || c == ';')
    {
        format!("\"{escaped}\"")
    } else {
        escaped
    }
}

/// Single-quoting for the shell of a cron line.
fn sh_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:@,+".contains(c))
    {
        return arg.to_string();
    }
    format!("'{}'", arg.replace('\'', "'\\''")).replace('%', "\\%")
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl<'a> Installer<'a> {
    /// The installer of `config`'s schedule at `target`.
    pub fn new(config: &'a Config, target: &Target) -> Result<Installer<'a>> {
        if config.schedule.is_empty() {
            return Err(usage(format!(
                "{} has no [schedule] entries",
                config.path.display()
            )));
        }
        let name = match &target.name {
            Some(n) => sanitize(n),
            None => {
                let folder = config
                    .base
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "backup".into());
                match &config.env {
                    Some(e) => sanitize(&format!("{folder}-{e}")),
                    None => sanitize(&folder),
                }
            }
        };
        let exe = std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(|e| Error::io("cannot find the respaldo executable", e))?;
        Ok(Installer {
            config,
            target: target.clone(),
            name,
            exe,
            root: target.root.clone().unwrap_or_else(|| PathBuf::from("/")),
        })
    }

    /// `path` below the root.
    fn rooted(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn home() -> Result<PathBuf> {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .ok_or_else(|| Error::failed("$HOME is not set"))
    }

    fn unit_dir(&self) -> Result<PathBuf> {
        Ok(if self.target.user {
            let config_home = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
                Some(d) => PathBuf::from(d),
                None => Self::home()?.join(".config"),
            };
            self.rooted(&config_home.join("systemd/user"))
        } else {
            self.rooted(Path::new("/etc/systemd/system"))
        })
    }

    fn unit(&self, entry: &Entry) -> String {
        format!("respaldo-{}-{}", self.name, sanitize(&entry.name))
    }

    fn cron_file(&self) -> PathBuf {
        self.rooted(&PathBuf::from(format!(
            "/etc/cron.d/respaldo-{}",
            self.name
        )))
    }

    fn log_dir(&self) -> PathBuf {
        if self.target.user {
            crate::history::default_state_dir().join("logs")
        } else {
            PathBuf::from("/var/log/respaldo")
        }
    }

    /// The command line of an entry.
    fn argv(&self, entry: &Entry) -> Vec<String> {
        let mut a = vec![
            self.exe.display().to_string(),
            "-c".into(),
            self.config.path.display().to_string(),
        ];
        if let Some(env) = &self.config.env {
            a.push("--env".into());
            a.push(env.clone());
        }
        a.extend(["schedule".into(), "run".into(), entry.name.clone()]);
        a
    }

    /// The `.service` and `.timer` of an entry.
    fn unit_paths(&self, entry: &Entry) -> Result<[PathBuf; 2]> {
        let dir = self.unit_dir()?;
        let unit = self.unit(entry);
        Ok([
            dir.join(format!("{unit}.service")),
            dir.join(format!("{unit}.timer")),
        ])
    }

    fn files(&self, entry: &Entry) -> Result<Vec<(PathBuf, String)>> {
        let unit = self.unit(entry);
        let config = self.config.path.display();
        let exec: Vec<String> = self.argv(entry).iter().map(|a| systemd_quote(a)).collect();
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        let env_file = self
            .target
            .env_file
            .as_ref()
            .map(|f| {
                let f = std::path::absolute(f).unwrap_or_else(|_| f.clone());
                format!("EnvironmentFile={}\n", f.display())
            })
            .unwrap_or_default();
        let service = format!(
            "{MARKER}\n{}\n[Unit]\nDescription=respaldo: {} `{}` of {config}\nWants=network-online.target\nAfter=network-online.target\n\n\
             [Service]\nType=oneshot\nWorkingDirectory={}\nExecStart={}\nEnvironment={}\n{env_file}\
             # SIGTERM reaches respaldo first, which stops its running step cleanly.\nKillMode=mixed\nTimeoutStopSec=2min\nNice=10\nIOSchedulingClass=best-effort\nIOSchedulingPriority=7\n",
            self.owner_line(),
            entry.action.as_str(),
            entry.name,
            systemd_quote(&self.config.base.display().to_string()),
            exec.join(" "),
            systemd_quote(&format!("PATH={path}")),
        );
        let when = match &entry.when {
            When::Cron { expr, zone, .. } => {
                let mut s = String::new();
                for c in
                    crate::schedule::to_on_calendar(expr, zone.name().as_deref()).map_err(|m| {
                        usage(format!(
                            "schedule `{}`: {m}; use `respaldo daemon` instead",
                            entry.name
                        ))
                    })?
                {
                    s.push_str(&format!("OnCalendar={c}\n"));
                }
                if entry.catch_up {
                    s.push_str("Persistent=true\n");
                }
                s.push_str("AccuracySec=1s\n");
                s
            }
            When::Every(d) => format!(
                "OnActiveSec={0}s\nOnUnitActiveSec={0}s\nAccuracySec=1s\n",
                d.as_secs().max(1)
            ),
        };
        let timer = format!(
            "{MARKER}\n{}\n[Unit]\nDescription=respaldo: `{}` ({}) of {config}\n\n[Timer]\n{when}Unit={unit}.service\n\n[Install]\nWantedBy=timers.target\n",
            self.owner_line(),
            entry.name,
            entry.describe(),
        );
        let [service_path, timer_path] = self.unit_paths(entry)?;
        Ok(vec![(service_path, service), (timer_path, timer)])
    }

    /// The time zone cron runs in on the target system (below `--root`):
    /// `/etc/timezone`, else the zone `/etc/localtime` links to, else UTC
    /// when there is no `/etc/localtime`.
    fn system_zone(&self) -> Option<String> {
        if let Ok(t) = std::fs::read_to_string(self.rooted(Path::new("/etc/timezone"))) {
            if !t.trim().is_empty() {
                return Some(t.trim().to_string());
            }
        }
        let localtime = self.rooted(Path::new("/etc/localtime"));
        match std::fs::read_link(&localtime) {
            Ok(target) => {
                let t = target.to_string_lossy();
                t.split_once("zoneinfo/").map(|(_, zone)| zone.to_string())
            }
            Err(_) if !localtime.exists() => Some("UTC".into()),
            Err(_) => None,
        }
    }

    fn cron_expr(&self, entry: &Entry) -> Result<String> {
        match &entry.when {
            When::Cron { expr, zone, .. } => {
                if expr.split_whitespace().count() == 6 {
                    return Err(usage(format!(
                        "schedule `{}`: cron has no seconds field; use systemd timers or `respaldo daemon`",
                        entry.name
                    )));
                }
                if let Some(z) = zone.name() {
                    let system = self.system_zone();
                    if !system.as_deref().is_some_and(|s| same_zone(s, &z)) {
                        return Err(usage(format!(
                            "schedule `{}`: cron runs in the system's time zone ({}), not {z}; \
                             use systemd timers or `respaldo daemon`",
                            entry.name,
                            system.as_deref().unwrap_or("unknown")
                        )));
                    }
                }
                Ok(expr.clone())
            }
            When::Every(d) => {
                let m = d.as_secs() / 60;
                if d.as_secs() % 60 == 0 && (1..60).contains(&m) && 60 % m == 0 {
                    Ok(format!("*/{m} * * * *"))
                } else if d.as_secs() % 3600 == 0
                    && 24 % (d.as_secs() / 3600) == 0
                    && d.as_secs() < 86400
                {
                    Ok(format!("0 */{} * * *", d.as_secs() / 3600))
                } else {
                    Err(usage(format!(
                        "schedule `{}`: `every = {}` has no cron equivalent; use systemd timers or `respaldo daemon`",
                        entry.name,
                        entry.describe()
                    )))
                }
            }
        }
    }

    /// The cron lines (without the user field for a user crontab).
    fn cron_text(&self) -> Result<String> {
        let log_dir = self.log_dir();
        let mut s = format!(
            "{MARKER}\n{}\n# respaldo schedule of {}\nSHELL=/bin/sh\nPATH={}\n",
            self.owner_line(),
            self.config.path.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
        );
        for e in &self.config.schedule {
            let cmd: Vec<String> = self.argv(e).iter().map(|a| sh_quote(a)).collect();
            let log = log_dir.join(format!("{}-{}.log", self.name, sanitize(&e.name)));
            let source_env = self
                .target
                .env_file
                .as_ref()
                .map(|f| {
                    let f = std::path::absolute(f).unwrap_or_else(|_| f.clone());
                    format!(
                        "set -a && . {} && set +a && ",
                        sh_quote(&f.display().to_string())
                    )
                })
                .unwrap_or_default();
            s.push_str(&format!(
                "# {}: {}\n{} {}cd {} && {source_env}{} >> {} 2>&1\n",
                e.name,
                e.describe(),
                self.cron_expr(e)?,
                if self.target.user { "" } else { "root " },
                sh_quote(&self.config.base.display().to_string()),
                cmd.join(" "),
                sh_quote(&log.display().to_string())
            ));
        }
        Ok(s)
    }

    fn systemctl(&self, args: &[&str]) -> Result<()> {
        let mut cmd = std::process::Command::new("systemctl");
        if self.target.user {
            cmd.arg("--user");
        }
        let st = cmd
            .args(args)
            .status()
            .map_err(|e| Error::io("cannot run systemctl (use --cron, or `respaldo daemon`)", e))?;
        if !st.success() {
            return Err(Error::failed(format!(
                "systemctl {} failed ({st})",
                args.join(" ")
            )));
        }
        Ok(())
    }

    fn crontab_read() -> Result<String> {
        let out = std::process::Command::new("crontab")
            .arg("-l")
            .stderr(Stdio::null())
            .output()
            .map_err(|e| {
                Error::io(
                    "cannot run crontab (install cron, or use systemd timers)",
                    e,
                )
            })?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn crontab_write(text: &str) -> Result<()> {
        use std::io::Write;
        let io = |e| Error::io("cannot run crontab", e);
        let mut child = std::process::Command::new("crontab")
            .arg("-")
            .stdin(Stdio::piped())
            .spawn()
            .map_err(io)?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())
            .map_err(io)?;
        let st = child.wait().map_err(io)?;
        if !st.success() {
            return Err(Error::failed(format!("crontab - failed ({st})")));
        }
        Ok(())
    }

    fn block_markers(&self) -> (String, String) {
        (
            format!("# BEGIN respaldo {}", self.name),
            format!("# END respaldo {}", self.name),
        )
    }

    /// The user crontab without this installation's block.
    fn without_block(&self, text: &str) -> String {
        let (begin, end) = self.block_markers();
        let mut out = String::new();
        let mut inside = false;
        for l in text.lines() {
            if l == begin {
                inside = true;
            } else if l == end {
                inside = false;
            } else if !inside {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    fn write(path: &Path, text: &str, done: &mut Vec<String>) -> Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("cannot create {}", d.display()), e))?;
        }
        std::fs::write(path, text)
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        done.push(format!("wrote {}", path.display()));
        Ok(())
    }

    /// The line of every file written that says which configuration (and
    /// `--env`) it runs, so that another one installed under the same name
    /// is refused instead of overwriting it.
    fn owner_line(&self) -> String {
        match &self.config.env {
            Some(e) => format!("# Configuration: {} --env {e}", self.config.path.display()),
            None => format!("# Configuration: {}", self.config.path.display()),
        }
    }

    /// Refuses to overwrite what was installed under this name for another
    /// configuration (two projects in folders of the same name), or what
    /// respaldo did not write.
    fn check_name_is_free(&self) -> Result<()> {
        let mine = self.owner_line();
        let taken = |where_: &str, text: &str| -> Result<()> {
            if !text.starts_with(MARKER) {
                return Err(usage(format!(
                    "{where_} exists and was not written by respaldo; left alone (choose another name with --name)"
                )));
            }
            match text.lines().find(|l| l.starts_with("# Configuration: ")) {
                Some(theirs) if theirs != mine => Err(usage(format!(
                    "the schedule name `{}` is already installed for {} ({where_}); \
                     give this configuration another name with --name, or uninstall that one first",
                    self.name,
                    theirs.trim_start_matches("# Configuration: "),
                ))),
                _ => Ok(()),
            }
        };
        if self.target.cron && self.target.user {
            let (begin, end) = self.block_markers();
            let crontab = Self::crontab_read()?;
            let block: String = crontab
                .lines()
                .skip_while(|l| *l != begin)
                .skip(1)
                .take_while(|l| *l != end)
                .map(|l| format!("{l}\n"))
                .collect();
            return taken("the user's crontab", &format!("{MARKER}\n{block}"));
        }
        let mut paths = if self.target.cron {
            vec![self.cron_file()]
        } else {
            let mut p = self.installed_units()?;
            for e in &self.config.schedule {
                p.extend(self.unit_paths(e)?);
            }
            p
        };
        paths.dedup();
        for p in paths {
            if let Ok(text) = std::fs::read_to_string(&p) {
                taken(&p.display().to_string(), &text)?;
            }
        }
        Ok(())
    }

    /// Checks that the `--env-file` sets every variable the configuration
    /// reads (a scheduled run does not see this shell's environment); without
    /// one, returns a warning naming them.
    fn check_environment(&self) -> Result<Option<String>> {
        const GIVEN: [&str; 4] = ["HOME", "LOGNAME", "PATH", "USER"];
        let needed: Vec<&String> = self
            .config
            .variables
            .iter()
            .filter(|v| !GIVEN.contains(&v.as_str()))
            .collect();
        if needed.is_empty() {
            return Ok(None);
        }
        let list = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        let Some(file) = &self.target.env_file else {
            return Ok(Some(format!(
                "warning: the configuration reads {}; scheduled runs do not see this shell's \
                 environment: give them with --env-file FILE (VAR=value lines)",
                list(&needed)
            )));
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| usage(format!("cannot read --env-file {}: {e}", file.display())))?;
        let set = env_file_names(&text);
        let missing: Vec<&String> = needed
            .into_iter()
            .filter(|v| !set.contains(v.as_str()))
            .collect();
        if !missing.is_empty() {
            return Err(usage(format!(
                "--env-file {} does not set {}, which the configuration reads: every scheduled run would fail",
                file.display(),
                list(&missing)
            )));
        }
        Ok(None)
    }

    /// Writes the timers (and enables them) or the cron entries; returns
    /// what was done, line by line.
    pub fn install(&self) -> Result<Vec<String>> {
        self.check_name_is_free()?;
        let mut done: Vec<String> = self.check_environment()?.into_iter().collect();
        let live = self.target.root.is_none();
        if self.target.cron {
            let text = self.cron_text()?;
            let log_dir = if live {
                self.log_dir()
            } else {
                self.rooted(&self.log_dir())
            };
            std::fs::create_dir_all(&log_dir)
                .map_err(|e| Error::io(format!("cannot create {}", log_dir.display()), e))?;
            if self.target.user {
                if !live {
                    return Err(usage(
                        "--root applies to system cron (/etc/cron.d) and systemd units",
                    ));
                }
                let (begin, end) = self.block_markers();
                let current = self.without_block(&Self::crontab_read()?);
                Self::crontab_write(&format!("{current}{begin}\n{text}{end}\n"))?;
                done.push(format!(
                    "installed {} entr(ies) in the user's crontab",
                    self.config.schedule.len()
                ));
            } else {
                Self::write(&self.cron_file(), &text, &mut done)?;
            }
            done.push(format!("logs: {}", self.log_dir().display()));
            return Ok(done);
        }
        let mut timers = Vec::new();
        for e in &self.config.schedule {
            for (path, text) in self.files(e)? {
                Self::write(&path, &text, &mut done)?;
            }
            timers.push(format!("{}.timer", self.unit(e)));
        }
        if live {
            self.systemctl(&["daemon-reload"])?;
            let mut args = vec!["enable", "--now"];
            args.extend(timers.iter().map(String::as_str));
            self.systemctl(&args)?;
            done.push(format!(
                "enabled {}; logs: journalctl {}-u 'respaldo-{}-*'",
                timers.join(", "),
                if self.target.user { "--user " } else { "" },
                self.name
            ));
        } else {
            done.push(format!(
                "not enabled (--root): systemctl {}enable --now {}",
                if self.target.user { "--user " } else { "" },
                timers.join(" ")
            ));
        }
        Ok(done)
    }

    /// Our unit files in the unit folder (any entry name: also those removed
    /// from the configuration since).
    fn installed_units(&self) -> Result<Vec<PathBuf>> {
        let dir = self.unit_dir()?;
        let prefix = format!("respaldo-{}-", self.name);
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&prefix)
                    && (n.ends_with(".service") || n.ends_with(".timer"))
                    && std::fs::read_to_string(e.path()).is_ok_and(|t| t.starts_with(MARKER))
                {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes what `install` wrote (and disables the timers); returns what
    /// was done, line by line.
    pub fn uninstall(&self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let live = self.target.root.is_none();
        if self.target.cron {
            if self.target.user {
                if !live {
                    return Err(usage(
                        "--root applies to system cron (/etc/cron.d) and systemd units",
                    ));
                }
                let current = Self::crontab_read()?;
                Self::crontab_write(&self.without_block(&current))?;
                done.push(format!(
                    "removed the respaldo {} block from the user's crontab",
                    self.name
                ));
            } else {
                let f = self.cron_file();
                match std::fs::read_to_string(&f) {
                    Ok(t) if t.starts_with(MARKER) => {
                        std::fs::remove_file(&f)
                            .map_err(|e| Error::io(format!("cannot remove {}", f.display()), e))?;
                        done.push(format!("removed {}", f.display()));
                    }
                    Ok(_) => {
                        return Err(Error::failed(format!(
                            "{} was not written by respaldo; left alone",
                            f.display()
                        )))
                    }
                    Err(_) => done.push(format!("nothing installed at {}", f.display())),
                }
            }
            return Ok(done);
        }
        let units = self.installed_units()?;
        if units.is_empty() {
            done.push(format!(
                "nothing installed in {}",
                self.unit_dir()?.display()
            ));
            return Ok(done);
        }
        if live {
            let timers: Vec<String> = units
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "timer"))
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            let mut args = vec!["disable", "--now"];
            args.extend(timers.iter().map(String::as_str));
            if let Err(e) = self.systemctl(&args) {
                tracing::warn!("{e}");
            }
        }
        for u in &units {
            std::fs::remove_file(u)
                .map_err(|e| Error::io(format!("cannot remove {}", u.display()), e))?;
            done.push(format!("removed {}", u.display()));
        }
        if live {
            self.systemctl(&["daemon-reload"])?;
        }
        Ok(done)
    }

    /// Each entry's schedule, next and last runs, and whether it is installed.
    pub fn status(&self) -> Result<Vec<EntryState>> {
        let history = self.config.status.history.read_or_warn();
        let now = Utc::now();
        let cron_text = if self.target.cron {
            if self.target.user && self.target.root.is_none() {
                Self::crontab_read().unwrap_or_default()
            } else {
                std::fs::read_to_string(self.cron_file()).unwrap_or_default()
            }
        } else {
            String::new()
        };
        let mut states = Vec::new();
        for e in &self.config.schedule {
            let installed = if self.target.cron {
                let needle = format!(" schedule run {}", sh_quote(&e.name));
                cron_text
                    .lines()
                    .any(|l| !l.starts_with('#') && l.contains(&needle))
            } else {
                self.unit_dir()?
                    .join(format!("{}.timer", self.unit(e)))
                    .exists()
            };
            let last = history
                .iter()
                .filter(|r| r.trigger.as_deref() == Some(e.name.as_str()))
                .max_by_key(|r| r.started);
            states.push(EntryState {
                entry: e.name.clone(),
                action: e.action.as_str(),
                schedule: e.describe(),
                next: e.next_after(now),
                installed,
                last: last.map(|r| LastRun {
                    time: r.started,
                    ok: r.ok,
                    error: r.error.clone(),
                }),
            });
        }
        Ok(states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(systemd_quote("/usr/bin/respaldo"), "/usr/bin/respaldo");
        assert_eq!(systemd_quote("/my dir/50%"), "\"/my dir/50%%\"");
        assert_eq!(sh_quote("/a/b.toml"), "/a/b.toml");
        assert_eq!(sh_quote("it's 100%"), "'it'\\''s 100\\%'");
    }
}
