//! Keeping secrets out of what respaldo says about a run (notifications, run
//! history, `--json`), and the tail of this process's log that notifications
//! carry.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What replaces a secret.
const MASK: &str = "***";
/// Shorter values are not masked (they would mask ordinary words).
const MIN_SECRET_LEN: usize = 4;
/// How long a `{ command = [...] }` secret may take to print its value for
/// the masker.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Replaces known secret values, and the password of any `scheme://user:pw@`
/// URL, with `***`.
#[derive(Clone, Default)]
pub struct Masker {
    values: Vec<String>,
    /// `{ command = [...] }` secrets: run once, the first time something is
    /// masked (so commands that print nothing never run them).
    commands: Vec<Vec<String>>,
    /// Their values, shared by the clones.
    from_commands: Arc<OnceLock<Vec<String>>>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Masker({} secrets, {} secret commands)",
            self.values.len(),
            self.commands.len()
        )
    }
}

impl Masker {
    /// The secrets a configuration refers to: every `${VAR}` it interpolates
    /// and every `{ env = "VAR" }` / `{ file = "path" }` /
    /// `{ command = [...] }` secret reference. Relative `file` paths are
    /// resolved against `base`, the configuration's folder, as the secret
    /// itself is (`Secret::rebase`).
    pub fn from_config(text: &str, value: &toml::Value, base: &Path) -> Masker {
        let mut values = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            let after = &rest[i + 2..];
            let escaped = i > 0 && rest.as_bytes()[i - 1] == b'$';
            match after.find('}') {
                Some(end) => {
                    if !escaped {
                        if let Ok(v) = std::env::var(&after[..end]) {
                            values.push(v);
                        }
                    }
                    rest = &after[end + 1..];
                }
                None => break,
            }
        }
        let mut commands = Vec::new();
        collect_references(value, base, &mut values, &mut commands);
        let mut m = Masker {
            commands,
            ..Masker::default()
        };
        for v in values {
            m.add(v);
        }
        m
    }

    /// Adds one secret value.
    pub fn add(&mut self, value: String) {
        let v = value.trim().to_string();
        if v.len() >= MIN_SECRET_LEN && !self.values.contains(&v) {
            self.values.push(v);
        }
    }

    /// This masker as the engine's [`respaldo_core::ops::backup::Redactor`].
    pub fn redactor(&self) -> respaldo_core::ops::backup::Redactor {
        let m = self.clone();
        std::sync::Arc::new(move |t: &str| m.mask(t))
    }

    /// `text` with every secret masked.
    ///
    /// The first call runs the `{ command = [...] }` secrets (blocking, at
    /// most [`COMMAND_TIMEOUT`] each); a command that fails masks nothing.
    pub fn mask(&self, text: &str) -> String {
        let from_commands = self.from_commands.get_or_init(|| {
            self.commands
                .iter()
                .filter_map(|c| run_secret_command(c))
                .map(|v| v.trim().to_string())
                .filter(|v| v.len() >= MIN_SECRET_LEN)
                .collect()
        });
        let mut secrets: Vec<&str> = self
            .values
            .iter()
            .chain(from_commands)
            .map(String::as_str)
            .collect();
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let mut out = mask_url_passwords(text);
        for v in secrets {
            if out.contains(v) {
                out = out.replace(v, MASK);
            }
        }
        out
    }
}

/// Secret references in a configuration value: `{ env = "X" }` tables read
/// the variable, `{ file = "p" }` tables the file (when readable; relative
/// to `base`), `{ command = [...] }` tables are kept in `commands`.
fn collect_references(
    value: &toml::Value,
    base: &Path,
    out: &mut Vec<String>,
    commands: &mut Vec<Vec<String>>,
) {
    match value {
        toml::Value::Table(t) => {
            if t.len() == 1 {
                if let Some(toml::Value::String(var)) = t.get("env") {
                    if let Ok(v) = std::env::var(var) {
                        out.push(v);
                    }
                } else if let Some(toml::Value::String(path)) = t.get("file") {
                    if let Ok(v) = std::fs::read_to_string(base.join(path)) {
                        out.push(v);
                    }
                } else if let Some(toml::Value::Array(argv)) = t.get("command") {
                    let argv: Option<Vec<String>> = argv
                        .iter()
                        .map(|a| a.as_str().map(str::to_string))
                        .collect();
                    if let Some(argv) = argv.filter(|a| !a.is_empty()) {
                        if !commands.contains(&argv) {
                            commands.push(argv);
                        }
                    }
                }
            }
            t.values()
                .for_each(|v| collect_references(v, base, out, commands));
        }
        toml::Value::Array(a) => a
            .iter()
            .for_each(|v| collect_references(v, base, out, commands)),
        _ => {}
    }
}

/// The standard output of a secret command, as `Secret::resolve` runs it
/// (no stdin, stderr discarded); `None` when it fails or takes longer than
/// [`COMMAND_TIMEOUT`] (it is then killed).
fn run_secret_command(argv: &[String]) -> Option<String> {
    let (prog, args) = argv.split_first()?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    // Read on a thread, so a large output cannot block the child.
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).map(|_| buf)
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    let out = reader.join().ok()?.ok()?;
    if !status.success() {
        return None;
    }
    String::from_utf8(out).ok()
}

/// `postgres://app:hunter2@db/x` → `postgres://app:***@db/x`.
fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon + 1]);
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// How many log lines are kept for notifications.
const TAIL_LINES: usize = 40;
/// Longest line kept.
const TAIL_LINE_MAX: usize = 1000;

/// The last lines this process logged (info and above), for notifications.
#[derive(Debug, Clone, Default)]
pub struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    /// The process-wide tail the log subscriber writes to.
    pub fn global() -> &'static LogTail {
        static TAIL: OnceLock<LogTail> = OnceLock::new();
        TAIL.get_or_init(LogTail::default)
    }

    /// Adds one line, dropping the oldest beyond the limit.
    pub fn push(&self, line: &str) {
        let mut line = line.trim_end().to_string();
        if line.is_empty() {
            return;
        }
        if line.len() > TAIL_LINE_MAX {
            let mut cut = TAIL_LINE_MAX;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        if let Ok(mut q) = self.0.lock() {
            if q.len() == TAIL_LINES {
                q.pop_front();
            }
            q.push_back(line);
        }
    }

    /// The kept lines, oldest first, joined by newlines.
    pub fn text(&self) -> String {
        self.0
            .lock()
            .map(|q| q.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}

/// A `tracing` writer that appends each formatted event to [`LogTail::global`].
#[derive(Debug, Default)]
pub struct TailWriter(Vec<u8>);

impl Write for TailWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for TailWriter {
    fn drop(&mut self) {
        for line in String::from_utf8_lossy(&self.0).lines() {
            LogTail::global().push(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_values_and_url_passwords() {
        let mut m = Masker::default();
        m.add("s3cr3t-token".into());
        m.add("ab".into()); // too short to mask
        assert_eq!(
            m.mask("auth s3cr3t-token failed for postgres://app:pw@db:5432/x and ab"),
            "auth *** failed for postgres://app:***@db:5432/x and ab"
        );
        assert_eq!(m.mask("http://host/x?a=b"), "http://host/x?a=b");
    }

    #[test]
    fn config_references_are_secrets() {
        std::env::set_var("RESPALDO_MASK_TEST_A", "value-from-env");
        std::env::set_var("RESPALDO_MASK_TEST_B", "value-by-ref");
        let text = "password = \"${RESPALDO_MASK_TEST_A}\"\nx = \"$${LITERAL}\"\n";
        let value: toml::Value =
            toml::from_str("p = { env = \"RESPALDO_MASK_TEST_B\" }\n").unwrap();
        let m = Masker::from_config(text, &value, Path::new("."));
        assert_eq!(m.mask("value-from-env value-by-ref"), "*** ***");
    }

    #[test]
    fn command_secrets_are_masked() {
        let value: toml::Value = toml::from_str(
            "a = { command = [\"echo\", \"from-a-command\"] }\n\
             b = { command = [\"sh\", \"-c\", \"echo never-printed; exit 1\"] }\n",
        )
        .unwrap();
        let m = Masker::from_config("", &value, Path::new("."));
        assert_eq!(
            m.mask("token from-a-command, never-printed"),
            "token ***, never-printed"
        );
        // Clones share the values: the command ran once.
        assert_eq!(m.clone().mask("from-a-command"), "***");
    }

    #[test]
    fn relative_secret_files_are_read_from_the_config_folder() {
        let dir = std::env::temp_dir().join(format!("respaldo-mask-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("db-password"), "file-secret-value\n").unwrap();
        let value: toml::Value = toml::from_str("p = { file = \"db-password\" }\n").unwrap();
        // The current directory is not `dir`: the path is resolved against it.
        assert!(!Path::new("db-password").exists());
        let m = Masker::from_config("", &value, &dir);
        assert_eq!(m.mask("auth file-secret-value"), "auth ***");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tail_is_bounded() {
        let t = LogTail::default();
        for i in 0..100 {
            t.push(&format!("line {i}"));
        }
        let text = t.text();
        assert_eq!(text.lines().count(), TAIL_LINES);
        assert!(text.ends_with("line 99"));
    }
}
