//! respaldo as a Unix tool: a closed stdout ends the command quietly; log
//! lines carry colour only on a terminal and never with NO_COLOR, a
//! timestamp when stderr is not a terminal, and are JSON with
//! `--log-format json`; completions generate for every shell and the man
//! page renders.

use crate::common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use common::*;

/// A project with one good and one failing source, backed up once.
fn project() -> Project {
    let p = Project::new(
        "[sources.data]\ntype = \"files\"\npaths = [\"data\"]\n\n\
         [sources.dump]\ntype = \"command\"\ncommand = [\"head\", \"-c\", \"300000\", \"/dev/urandom\"]\n",
    );
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    for i in 0..50 {
        std::fs::write(p.path().join(format!("data/f{i}")), random_bytes(i, 1000)).unwrap();
    }
    p.ok(&["init"]);
    for _ in 0..3 {
        p.ok(&["backup"]);
    }
    p
}

/// A pipe whose reading end is already closed: every write gets EPIPE.
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe fills two descriptors we then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fds[0] is ours and not used again.
    unsafe { libc::close(fds[0]) };
    // SAFETY: fds[1] is an open descriptor we own.
    Stdio::from(unsafe { OwnedFd::from_raw_fd(fds[1]) })
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let p = project();
    for args in [
        vec!["snapshots"],
        vec!["--json", "snapshots"],
        vec!["show", "latest"],
        vec!["dump", "latest", "dump/stdout"],
        vec!["status"],
        vec!["completions", "bash"],
        vec!["man"],
    ] {
        let out = Command::new(bin())
            .current_dir(p.path())
            .args(["-c", "backup.toml"])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
}

fn failing_project() -> Project {
    let p =
        Project::new("[sources.bad]\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"exit 3\"]\n");
    p.ok(&["init"]);
    p
}

#[test]
fn log_lines_off_a_terminal_have_timestamps_and_no_colour() {
    let p = failing_project();
    let out = p.run(&["backup"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("ERROR"))
        .unwrap_or_else(|| panic!("no log line: {err}"));
    // 2026-12-02T03:09:29.736918Z ERROR source `bad` (command) failed: …
    let (stamp, rest) = line.split_once(' ').unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
        "no timestamp: {line}"
    );
    assert!(rest.starts_with("ERROR source `bad`"), "{line}");
    assert!(
        !err.contains('\x1b'),
        "escape codes off a terminal: {err:?}"
    );
}

#[test]
fn json_log_lines_parse() {
    let p = failing_project();
    let out = p.run(&["--log-format", "json", "backup"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let logs: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let failed = logs
        .iter()
        .find(|v| v["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no JSON error line: {err}"));
    assert!(failed["fields"]["message"]
        .as_str()
        .unwrap()
        .contains("source `bad` (command) failed"));
    assert!(chrono::DateTime::parse_from_rfc3339(failed["timestamp"].as_str().unwrap()).is_ok());
}

/// Runs the backup under a pseudo-terminal (`script`, util-linux/bsdutils).
fn on_a_terminal(p: &Project, no_color: bool) -> String {
    let cmd = format!("{} -c backup.toml backup", bin().display());
    let mut c = Command::new("script");
    c.args(["-qec", &cmd, "/dev/null"])
        .current_dir(p.path())
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    if no_color {
        c.env("NO_COLOR", "1");
    }
    let out = c.output().expect("script (bsdutils) runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn colour_on_a_terminal_only_without_no_color() {
    let p = failing_project();
    let coloured = on_a_terminal(&p, false);
    assert!(
        coloured.contains("\x1b[31mERROR\x1b[0m"),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = on_a_terminal(&p, true);
    assert!(plain.contains("ERROR source `bad`"), "{plain:?}");
    assert!(
        !plain.contains("\x1b[31m"),
        "colour despite NO_COLOR: {plain:?}"
    );
}

#[test]
fn completions_for_every_shell_and_a_man_page_that_renders() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        for sub in ["backup", "restore", "test-restore", "verify", "prune"] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let page = Command::new(bin()).arg("man").output().unwrap();
    assert!(page.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("respaldo.1");
    std::fs::write(&file, &page.stdout).unwrap();
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&file)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .expect("man (man-db) runs");
    assert!(rendered.status.success(), "{}", stderr(&rendered));
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(text.contains("NAME") && text.contains("respaldo"), "{text}");
    assert!(
        text.contains("SUBCOMMANDS") || text.contains("backup"),
        "{text}"
    );
}
