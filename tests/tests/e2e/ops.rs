//! Operations: the daemon (schedule, tags, retention, SIGTERM, /metrics and
//! /healthz), repository locks under concurrent writers and killed runs,
//! notifications and `status`, hooks, `schedule install` for systemd and
//! cron, test-restore on healthy and damaged repositories, environments.
//! Everything uses the `files` and `command` sources (no server needed).

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// Waits (polling) until `f` holds, failing after `limit`.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigterm(child: &Child) {
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
}

#[test]
fn notifications_that_may_pass_are_retried_and_others_are_not() {
    // 503, 503, then 200: delivered on the third attempt, both failures
    // logged. A 400 is not retried: the server sees one request.
    let (flaky, flaky_rx) = http_answering(vec![503, 503]);
    let (refusing, refusing_rx) = http_answering(vec![400, 400, 400]);
    let p = Project::new(&format!(
        r#"
[[notify]]
type = "webhook"
url = "http://{flaky}/flaky"
on = ["success"]
retry_delay = "1s"

[[notify]]
type = "webhook"
url = "http://{refusing}/refusing"
on = ["success"]
retry_delay = "1s"

[sources.db]
type = "command"
command = ["echo", "rows"]
"#
    ));
    p.ok(&["init"]);
    let out = p.run(&["backup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "(attempt 1 of 3): 127.0.0.1 answered 503 Service Unavailable; retrying in 1s"
        ),
        "{err}"
    );
    assert!(
        err.contains("(attempt 2 of 3)") && err.contains("retrying in 2s"),
        "{err}"
    );
    assert!(!err.contains("attempt 3 of 3"), "{err}");
    for _ in 0..3 {
        flaky_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("two failed attempts, then the delivered one");
    }
    assert!(flaky_rx.recv_timeout(Duration::from_millis(300)).is_err());
    assert!(
        err.contains("could not send the success notification: 127.0.0.1 answered 400 Bad Request"),
        "{err}"
    );
    refusing_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("one attempt");
    assert!(
        refusing_rx
            .recv_timeout(Duration::from_millis(300))
            .is_err(),
        "a 400 is not retried"
    );
}

/// A plain HTTP GET on 127.0.0.1 (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let r = reqwest::blocking::get(format!("http://{addr}{path}")).expect("GET");
    (r.status().as_u16(), r.text().unwrap())
}

/// A local HTTP server that answers 200 to every request and hands over
/// (path, body) of each.
fn http_listener() -> (String, mpsc::Receiver<(String, String)>) {
    http_answering(Vec::new())
}

/// A local HTTP server that answers the `statuses` in order, then 200, and
/// hands over (path, body) of each request.
fn http_answering(statuses: Vec<u16>) -> (String, mpsc::Receiver<(String, String)>) {
    let mut statuses = statuses.into_iter();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { break };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            r.read_line(&mut first).unwrap();
            let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut len = 0;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let status = statuses.next().unwrap_or(200);
            s.write_all(
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            if tx
                .send((path, String::from_utf8_lossy(&body).into_owned()))
                .is_err()
            {
                break;
            }
        }
    });
    (addr, rx)
}

/// The daemon with its stderr lines on a channel.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    fn start(p: &Project) -> Daemon {
        Daemon::start_with_env(p, &[])
    }

    /// The daemon with these extra environment variables.
    fn start_with_env(p: &Project, env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(bin())
            .current_dir(p.path())
            .envs(env.iter().copied())
            .args(["-v", "-c", "backup.toml", "daemon"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    fn line(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no `{needle}` from the daemon within {limit:?}; it said:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The run history records (state_dir = "state").
fn history(p: &Project) -> Vec<serde_json::Value> {
    let dir = p.path().join("state");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|f| f.extension().is_some_and(|e| e == "jsonl"))
        .expect("a history file");
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn snapshots(p: &Project) -> Vec<serde_json::Value> {
    p.json(&["snapshots"]).as_array().unwrap().clone()
}

#[test]
fn daemon_runs_tags_and_prunes_serves_metrics_and_stops_cleanly_on_sigterm() {
    let p = Project::new(
        r#"
[retention]
keep_last = 2

[schedule.fast]
every = "1s"
tags = ["fast"]
prune = true

[daemon]
listen = "127.0.0.1:0"
retry_delay = "1s"

[status]
state_dir = "state"
rpo = "1h"

[sources.docs]
type = "files"
paths = ["data"]

[sources.slow]
type = "command"
command = ["sh", "-c", "if [ -f slow ]; then touch started; sleep 30; fi; date +%s%N"]
"#,
    );
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    std::fs::write(p.path().join("data/a.txt"), "hello").unwrap();
    p.ok(&["init"]);
    let mut d = Daemon::start(&p);
    let line = d.line("/metrics and /healthz on http://", Duration::from_secs(20));
    let addr = line.rsplit("http://").next().unwrap().trim().to_string();
    // Before any backup: unhealthy, naming the sources.
    let (code, body) = get(&addr, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("docs: STALE: never backed up"), "{body}");

    // Runs come every second; each is tagged, and retention keeps two.
    for _ in 0..4 {
        d.line("running: respaldo forget --prune", Duration::from_secs(30));
    }
    wait_for("metrics of a good backup", Duration::from_secs(20), || {
        get(&addr, "/metrics")
            .1
            .contains("respaldo_source_last_success_timestamp_seconds{source=\"docs\"}")
    });
    let (code, body) = get(&addr, "/healthz");
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = get(&addr, "/metrics");
    for needle in [
        "# TYPE respaldo_source_last_success_timestamp_seconds gauge",
        "respaldo_source_size_bytes{source=\"docs\"} 5",
        "respaldo_source_last_success_duration_seconds{source=\"slow\"}",
        "respaldo_source_last_success_bytes_added{source=\"docs\"}",
        "respaldo_source_failures_total{source=\"docs\"} 0",
        "respaldo_source_stale{source=\"docs\"} 0",
        "respaldo_repository_size_bytes ",
        "respaldo_schedule_next_run_timestamp_seconds{entry=\"fast\"}",
        "respaldo_schedule_runs_total{entry=\"fast\",outcome=\"ok\"}",
    ] {
        assert!(metrics.contains(needle), "no `{needle}` in:\n{metrics}");
    }
    assert_eq!(get(&addr, "/nope").0, 404);

    // SIGTERM in the middle of a run: the backup stops, writes nothing, and
    // releases its lock; the daemon exits 0.
    std::fs::write(p.path().join("slow"), "").unwrap();
    wait_for("a run in progress", Duration::from_secs(30), || {
        p.path().join("started").exists()
    });
    sigterm(&d.child);
    let t = Instant::now();
    let st = d.child.wait().unwrap();
    assert!(st.success(), "daemon exit: {st}");
    // Well under the 30 s the step would still take (a loaded CI machine
    // is slow, not that slow).
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "slow to stop: {:?}",
        t.elapsed()
    );
    d.line("respaldo daemon: stopped", Duration::from_secs(15));
    assert!(walk(&p.repo().join("locks")).is_empty(), "lock left behind");
    // The interrupted run is recorded as failed, with no snapshot.
    let last = history(&p)
        .into_iter()
        .rev()
        .find(|r| r["action"] == "backup")
        .unwrap();
    assert_eq!(last["ok"], false, "{last}");
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("interrupted by a signal"),
        "{last}"
    );
    assert!(last.get("snapshot").is_none(), "{last}");
    assert_eq!(last["trigger"], "fast");
    // Retention kept two snapshots, tagged by the entry.
    let snaps = snapshots(&p);
    assert!(
        (1..=2).contains(&snaps.len()),
        "retention not applied: {}",
        snaps.len()
    );
    for s in &snaps {
        assert_eq!(s["tags"], serde_json::json!(["fast"]));
    }
    p.ok(&["verify", "--read-data"]);
}

#[test]
fn daemon_catches_up_a_missed_run_and_reloads_on_sighup() {
    let p = Project::new(
        r#"
[schedule]
daily = "0 2 * * *"

[status]
state_dir = "state"

[sources.docs]
type = "files"
paths = ["data"]
"#,
    );
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    std::fs::write(p.path().join("data/a.txt"), "x").unwrap();
    p.ok(&["init"]);
    // A run recorded two days ago: the one due since was missed.
    let state = p.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    p.ok(&["schedule", "run", "daily"]);
    let hist = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .expect("history file");
    let old = (chrono_like_now_minus_days(2)).to_string();
    let text = std::fs::read_to_string(&hist).unwrap();
    let rewritten: String = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["started"] = serde_json::json!(old);
            v.to_string() + "\n"
        })
        .collect();
    std::fs::write(&hist, rewritten).unwrap();
    let n = snapshots(&p).len();
    let mut d = Daemon::start(&p);
    d.line("a run was missed", Duration::from_secs(20));
    wait_for("the catch-up run", Duration::from_secs(30), || {
        snapshots(&p).len() == n + 1
    });
    // SIGHUP reloads; a broken configuration keeps the running one.
    std::fs::write(
        p.path().join("backup.toml"),
        std::fs::read_to_string(p.path().join("backup.toml")).unwrap()
            + "\n[schedule.extra]\nevery = \"1h\"\n",
    )
    .unwrap();
    // SAFETY: signals our own child.
    unsafe { libc::kill(d.child.id() as libc::pid_t, libc::SIGHUP) };
    d.line(
        "configuration reloaded (2 schedule entries)",
        Duration::from_secs(10),
    );
    std::fs::write(p.path().join("backup.toml"), "[repository]\nbogus = 1\n").unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(d.child.id() as libc::pid_t, libc::SIGHUP) };
    d.line("configuration not reloaded", Duration::from_secs(10));
    sigterm(&d.child);
    assert!(d.child.wait().unwrap().success());
}

/// RFC 3339 time `days` days ago, computed with `date` (no chrono here).
fn chrono_like_now_minus_days(days: u32) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("{days} days ago"),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

const DATA_SOURCE: &str = r#"
[status]
state_dir = "state"

[sources.files]
type = "files"
paths = ["data"]
"#;

/// Flips a byte in the middle of every pack; their file names.
fn damage_every_pack(p: &Project) -> Vec<String> {
    let mut names = Vec::new();
    for f in walk(&p.repo().join("packs")) {
        if f.is_file() {
            let mut bytes = std::fs::read(&f).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&f, bytes).unwrap();
            names.push(f.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    names
}

fn with_data(p: &Project, files: u64, size: usize) {
    let d = p.path().join("data");
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..files {
        std::fs::write(d.join(format!("f{i}")), random_bytes(i + 100, size)).unwrap();
    }
}

#[test]
fn concurrent_backups_and_a_backup_racing_prune_keep_the_repository_sound() {
    let p = Project::new(&format!("[retention]\nkeep_last = 1\n{DATA_SOURCE}"));
    with_data(&p, 4, 4 << 20);
    p.ok(&["init"]);
    p.backup(&[]);
    let spawn = |args: &[&str]| {
        Command::new(bin())
            .current_dir(p.path())
            .args(["-q", "-c", "backup.toml"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    for round in 0..3u64 {
        // New data each round, so the backups really write.
        std::fs::write(
            p.path().join(format!("data/new{round}")),
            random_bytes(round, 6 << 20),
        )
        .unwrap();
        let children = vec![
            spawn(&["backup"]),
            spawn(&["backup"]),
            spawn(&["forget", "--prune"]),
            spawn(&["prune"]),
        ];
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", stderr(&out));
        }
        p.ok(&["verify", "--read-data"]);
    }
    assert!(
        walk(&p.repo().join("locks")).is_empty(),
        "locks left behind"
    );
    let out = p.path().join("out");
    p.assert_restores_data("files", &out);
}

#[test]
fn a_lock_left_by_a_killed_run_is_recovered_and_a_held_one_fails_clearly() {
    let p = Project::new(
        r#"
[backup]
lock_wait_secs = 2

[status]
state_dir = "state"

[sources.slow]
type = "command"
command = ["sh", "-c", "echo $$ > pid; touch started; exec sleep 30"]
"#,
    );
    p.ok(&["init"]);
    let mut child = Command::new(bin())
        .current_dir(p.path())
        .args(["-q", "-c", "backup.toml", "backup"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the backup to start", Duration::from_secs(20), || {
        p.path().join("started").exists()
    });
    child.kill().unwrap(); // SIGKILL: no chance to release the lock
    child.wait().unwrap();
    let sleeper: libc::pid_t = std::fs::read_to_string(p.path().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: the orphaned `sleep` this test started.
    unsafe { libc::kill(sleeper, libc::SIGKILL) };
    assert_eq!(
        walk(&p.repo().join("locks")).len(),
        1,
        "the killed run's lock"
    );
    // Prune needs the exclusive lock: the dead holder's lock is removed.
    let t = Instant::now();
    let out = p.run(&["-v", "prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("removing stale lock"),
        "{}",
        stderr(&out)
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "waited for a dead holder"
    );
    p.ok(&["verify"]);

    // A lock held by a live process: the loser waits, then names the holder.
    let lock = serde_json::json!({
        "host": "some-other-host", "pid": std::process::id(), "command": "prune",
        "exclusive": true, "time": chrono_like_now_minus_days(0),
    });
    std::fs::write(p.repo().join("locks/0123456789abcdef"), lock.to_string()).unwrap();
    p.write_config(&format!("[backup]\nlock_wait_secs = 1\n{DATA_SOURCE}"));
    with_data(&p, 1, 100);
    let t = Instant::now();
    let out = p.run(&["backup"]);
    assert_eq!(out.status.code(), Some(11));
    let err = stderr(&out);
    assert!(
        err.contains("is locked: an exclusive lock held by `prune`")
            && err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert!(t.elapsed() >= Duration::from_secs(1), "did not wait");
    // The same lock from a process that ended: recovered at once.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let lock = serde_json::json!({
        "host": host.trim(), "pid": dead, "command": "prune",
        "exclusive": true, "time": chrono_like_now_minus_days(0),
    });
    std::fs::write(p.repo().join("locks/0123456789abcdef"), lock.to_string()).unwrap();
    p.backup(&[]);
    assert!(walk(&p.repo().join("locks")).is_empty());
}

#[test]
fn a_failing_source_notifies_without_secrets_and_status_fails_until_a_good_run() {
    let (addr, rx) = http_listener();
    let p = Project::new(&format!(
        r#"
[status]
state_dir = "state"
rpo = "1h"

[hooks]
failure = "printf '%s' \"$RESPALDO_ERROR\" > failure-hook.txt"
finally = ["touch", "finally-ran"]

[[notify]]
type = "webhook"
url = "http://{addr}/json"
on = ["failure", "success"]

[[notify]]
type = "webhook"
url = "http://{addr}/slack"
template = '{{"text": "respaldo: {{{{summary}}}}"}}'

[[notify]]
type = "command"
command = ["sh", "-c", "printf '%s' \"$RESPALDO_SOURCE\" > notified-source.txt"]

[sources.db]
type = "command"
command = ["sh", "-c", "if [ -f broken ]; then echo \"login failed for postgres://app:$1@db/shop\" >&2; exit 3; fi; echo rows", "sh", "${{RESPALDO_TEST_DB_PASSWORD}}"]

[sources.docs]
type = "files"
paths = ["data"]
"#
    ));
    let secret = "Tr0ub4dor-and-3";
    let run = |args: &[&str]| {
        Command::new(bin())
            .current_dir(p.path())
            .env("RESPALDO_TEST_DB_PASSWORD", secret)
            .args(["-c", "backup.toml"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    with_data(&p, 2, 1000);
    assert!(run(&["init"]).status.success());
    std::fs::write(p.path().join("broken"), "").unwrap();
    let out = run(&["backup"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!stderr(&out).contains(secret), "{}", stderr(&out));
    // Nor in what the repository stored about the failure.
    let shown = run(&["--json", "show", "latest"]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.contains("postgres://app:***@db"), "{shown}");
    assert!(!shown.contains(secret), "{shown}");

    let mut got = std::collections::BTreeMap::new();
    for _ in 0..2 {
        let (path, body) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("webhook call");
        got.insert(path, body);
    }
    let json: serde_json::Value = serde_json::from_str(&got["/json"]).unwrap();
    assert_eq!(json["event"], "failure");
    assert_eq!(json["source"], "db");
    assert!(
        json["error"].as_str().unwrap().contains("login failed"),
        "{json}"
    );
    assert!(
        json["log_tail"]
            .as_str()
            .unwrap()
            .contains("source `db` (command) failed"),
        "{json}"
    );
    let slack: serde_json::Value = serde_json::from_str(&got["/slack"]).unwrap();
    assert!(
        slack["text"]
            .as_str()
            .unwrap()
            .starts_with("respaldo: backup of db, docs FAILED: db:"),
        "{slack}"
    );
    for body in got.values() {
        assert!(!body.contains(secret), "secret in a notification: {body}");
        assert!(body.contains("postgres://app:***@db"), "{body}");
    }
    assert_eq!(
        std::fs::read_to_string(p.path().join("notified-source.txt")).unwrap(),
        "db"
    );
    let hook = std::fs::read_to_string(p.path().join("failure-hook.txt")).unwrap();
    assert!(hook.contains("db:"), "{hook}");
    assert!(!hook.contains(secret), "secret in RESPALDO_ERROR: {hook}");
    assert!(p.path().join("finally-ran").exists());

    // status: db failed (exit 1), docs fine; nothing secret in --json.
    let out = run(&["--json", "status"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains(secret), "{text}");
    let st: serde_json::Value = serde_json::from_str(&text).unwrap();
    let by: std::collections::BTreeMap<&str, &serde_json::Value> = st
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["source"].as_str().unwrap(), s))
        .collect();
    assert_eq!(by["db"]["failed"], true);
    assert_eq!(by["db"]["stale"], true, "never backed up: {st}");
    assert_eq!(by["docs"]["ok"], true);
    assert!(by["docs"]["last_good"]["size"].as_u64().unwrap() == 2000);
    assert_eq!(by["docs"]["rpo_from"], "global");
    // The history survives: another process still sees the failure.
    assert_eq!(run(&["status"]).status.code(), Some(1));

    // A good run clears it.
    std::fs::remove_file(p.path().join("broken")).unwrap();
    let out = run(&["backup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (path, body) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("success webhook");
    assert_eq!(path, "/json");
    assert!(body.contains("\"event\":\"success\""), "{body}");
    let out = run(&["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_failing_before_hook_skips_its_source_with_the_reason() {
    let p = Project::new(&format!(
        r#"{DATA_SOURCE}
[sources.files.hooks]
before = "test -f ready"
after = "touch after-ran"

[sources.other]
type = "command"
command = ["echo", "fine"]
"#
    ));
    with_data(&p, 1, 10);
    p.ok(&["init"]);
    let out = p.run(&["backup", "--dry-run"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("would back up `files`"));
    let out = p.run(&["--json", "backup"]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = v["sources"]["files"]["error"].as_str().unwrap();
    assert!(
        err.starts_with(
            "skipped: `before` hook of source `files` failed: `sh` exited with status 1"
        ),
        "{err}"
    );
    assert_eq!(v["sources"]["other"]["status"], "ok");
    assert!(!p.path().join("after-ran").exists());
    std::fs::write(p.path().join("ready"), "").unwrap();
    p.backup(&[]);
    assert!(p.path().join("after-ran").exists());
}

/// Checks a cron.d file with a parser of our own: every entry is 5 cron
/// fields, a user and a command that starts with an absolute path.
fn check_cron_d(text: &str) -> usize {
    let mut entries = 0;
    for l in text.lines() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some((k, _)) = l.split_once('=') {
            if !k.contains(' ') {
                assert!(["SHELL", "PATH"].contains(&k), "unexpected variable {k}");
                continue;
            }
        }
        let f: Vec<&str> = l.splitn(7, ' ').collect();
        assert_eq!(f.len(), 7, "bad cron line: {l}");
        let ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
        for (field, (lo, hi)) in f[..5].iter().zip(ranges) {
            for part in field.split(',') {
                let (range, step) = part.split_once('/').unwrap_or((part, "1"));
                assert!(step.parse::<u32>().is_ok(), "bad step in {l}");
                if range == "*" {
                    continue;
                }
                for n in range.split('-') {
                    let v: u32 = match n {
                        "SUN" => 0,
                        _ => n
                            .parse()
                            .unwrap_or_else(|_| panic!("bad field `{field}` in {l}")),
                    };
                    assert!((lo..=hi).contains(&v), "`{field}` out of range in {l}");
                }
            }
        }
        assert_eq!(f[5], "root", "{l}");
        assert!(f[6].starts_with("cd /"), "{l}");
        assert!(
            f[6].contains(" && /") && f[6].contains(" schedule run "),
            "{l}"
        );
        assert!(f[6].contains(">> /var/log/respaldo/"), "{l}");
        entries += 1;
    }
    entries
}

#[test]
fn schedule_install_writes_units_systemd_accepts_and_uninstall_removes_them() {
    let p = Project::new(&format!(
        r#"{DATA_SOURCE}
[retention]
keep_daily = 7

[schedule]
daily = "0 2 * * *"
weekly = "0 3 * * SUN"
monthly = "0 4 1 * *"

[schedule.often]
every = "15min"
action = "verify"

[schedule.madrid]
cron = "30 1 * * 1-5"
timezone = "Europe/Madrid"
action = "test-restore"
"#
    ));
    let root = p.path().join("root");
    let root_arg = root.to_str().unwrap();
    // `schedule ACTION [--cron] --root ROOT --name shop`.
    let schedule = |action: &'static str, cron: bool| {
        let mut args = vec!["schedule", action];
        if cron {
            args.push("--cron");
        }
        args.extend(["--root", root_arg, "--name", "shop"]);
        args
    };
    let assert_installed = |st: &serde_json::Value| {
        assert!(
            st.as_array()
                .unwrap()
                .iter()
                .all(|e| e["installed"] == true),
            "{st}"
        );
    };
    let out = p.ok(&schedule("install", false));
    assert!(out.contains("not enabled (--root)"), "{out}");
    let units_dir = root.join("etc/systemd/system");
    let units: Vec<PathBuf> = walk(&units_dir);
    assert_eq!(units.len(), 10, "{units:?}");
    let service = std::fs::read_to_string(units_dir.join("respaldo-shop-daily.service")).unwrap();
    let config = p.path().join("backup.toml");
    assert!(
        service.contains(&format!(" -c {} schedule run daily", config.display())),
        "{service}"
    );
    let exec = service
        .lines()
        .find(|l| l.starts_with("ExecStart=/"))
        .expect("absolute ExecStart");
    assert!(Path::new(exec[10..].split(' ').next().unwrap()).is_absolute());
    let timer = std::fs::read_to_string(units_dir.join("respaldo-shop-weekly.timer")).unwrap();
    assert!(
        timer.contains("OnCalendar=Sun *-*-* 03:00:00\nPersistent=true"),
        "{timer}"
    );
    let madrid = std::fs::read_to_string(units_dir.join("respaldo-shop-madrid.timer")).unwrap();
    assert!(
        madrid.contains("OnCalendar=Mon..Fri *-*-* 01:30:00 Europe/Madrid"),
        "{madrid}"
    );
    let often = std::fs::read_to_string(units_dir.join("respaldo-shop-often.timer")).unwrap();
    assert!(often.contains("OnUnitActiveSec=900s"), "{often}");
    // systemd's own checker accepts every unit.
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze (Debian package systemd) is needed");
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}",
        stderr(&out)
    );
    // status sees them installed.
    let st = p.json(&schedule("status", false));
    assert_installed(&st);
    assert!(
        st.as_array().unwrap().iter().all(|e| e["next"].is_string()),
        "{st}"
    );
    // A unit written by someone else is left alone.
    std::fs::write(units_dir.join("respaldo-shop-mine.timer"), "[Timer]\n").unwrap();
    p.ok(&schedule("uninstall", false));
    assert_eq!(
        walk(&units_dir),
        vec![units_dir.join("respaldo-shop-mine.timer")]
    );

    // --user units go under ~/.config/systemd/user.
    let home = p.path().join("home");
    let out = Command::new(bin())
        .current_dir(p.path())
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .args([
            "-c",
            "backup.toml",
            "schedule",
            "install",
            "--user",
            "--root",
        ])
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let user_dir = root
        .join(home.strip_prefix("/").unwrap())
        .join(".config/systemd/user");
    assert_eq!(walk(&user_dir).len(), 10);

    // Cron: seconds-free, zone-free entries only.
    let out = p.run(&schedule("install", true));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("schedule `madrid`: cron runs in the system's time zone"),
        "{}",
        stderr(&out)
    );
    p.write_config(&format!(
        "{DATA_SOURCE}\n[schedule]\ndaily = \"0 2 * * *\"\nweekly = \"0 3 * * SUN\"\nmonthly = \"0 4 1 * *\"\n[schedule.often]\nevery = \"15min\"\naction = \"verify\"\n"
    ));
    p.ok(&schedule("install", true));
    let cron_file = root.join("etc/cron.d/respaldo-shop");
    let text = std::fs::read_to_string(&cron_file).unwrap();
    assert_eq!(check_cron_d(&text), 4, "{text}");
    assert!(text.contains("\n*/15 * * * * root "), "{text}");
    let st = p.json(&schedule("status", true));
    assert_installed(&st);
    p.ok(&schedule("uninstall", true));
    assert!(!cron_file.exists());
}

#[test]
fn test_restore_passes_on_a_healthy_repository_and_fails_on_a_damaged_one() {
    let p = Project::new(&format!(
        "{DATA_SOURCE}\n[schedule.drill]\ncron = \"0 5 1 */3 *\"\naction = \"test-restore\"\n"
    ));
    with_data(&p, 3, 200_000);
    p.ok(&["init"]);
    p.backup(&[]);
    let out = p.ok(&["test-restore"]);
    assert!(
        out.contains("1 of 1 sources ok") && out.contains("(RTO)"),
        "{out}"
    );
    let v = p.json(&["test-restore"]);
    assert_eq!(v["ok"], true);
    assert!(v["sources"][0]["duration_ms"].is_u64());
    // As a schedule entry.
    p.ok(&["schedule", "run", "drill"]);

    damage_every_pack(&p);
    let out = p.run(&["test-restore"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr(&out).contains("files: TEST RESTORE FAILED"),
        "{}",
        stderr(&out)
    );
    let out = p.run(&["schedule", "run", "drill"]);
    assert_eq!(out.status.code(), Some(1));
    let st = p.json(&["schedule", "status"]);
    assert_eq!(st[0]["entry"], "drill");
    assert_eq!(st[0]["last"]["ok"], false, "{st}");
}

#[test]
fn a_scheduled_verify_that_finds_damage_notifies_what_it_found() {
    let (addr, hooks) = http_listener();
    let p = Project::new(&format!(
        "{DATA_SOURCE}\n[schedule.check]\ncron = \"0 4 * * 0\"\naction = \"verify\"\nread_data = true\n\n\
         [[notify]]\ntype = \"webhook\"\nurl = \"http://{addr}/hook\"\non = [\"failure\"]\n"
    ));
    with_data(&p, 2, 100_000);
    p.ok(&["init"]);
    p.backup(&[]);
    let damaged: Vec<String> = damage_every_pack(&p)
        .iter()
        .map(|name| name[..8].to_string())
        .collect();
    let out = p.run(&["schedule", "run", "check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (_, body) = hooks
        .recv_timeout(Duration::from_secs(10))
        .expect("the failure notification");
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    let error = event["error"].as_str().unwrap();
    assert_eq!(event["action"], "verify", "{event}");
    assert_eq!(event["trigger"], "check", "{event}");
    assert!(error.starts_with("repository DAMAGED ("), "{error}");
    // Each damaged pack is named (verify's own DAMAGE lines), not only
    // "`respaldo verify` failed".
    for pack in &damaged {
        assert!(error.contains(pack.as_str()), "{pack} not in {error}");
    }
    assert!(error.contains("to repair: "), "{error}");
}

#[test]
fn schedule_install_refuses_a_taken_name_and_a_short_env_file_and_knows_the_system_zone() {
    let config = |zone: &str| {
        format!(
            "{DATA_SOURCE}\n[[notify]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n\
             headers = {{ Authorization = \"${{RESPALDO_TEST_HOOK_TOKEN}}\" }}\n\
             [schedule.nightly]\ncron = \"0 2 * * *\"\ntimezone = \"{zone}\"\n"
        )
    };
    let shop = Project::new(&config("UTC"));
    let other = Project::new(&config("UTC"));
    let root = shop.path().join("root");
    let install = |p: &Project, extra: &[&str]| {
        Command::new(bin())
            .current_dir(p.path())
            .env("RESPALDO_TEST_HOOK_TOKEN", "t0ken-value-long")
            .arg("-c")
            .arg(p.path().join("backup.toml"))
            .args(["schedule", "install", "--cron", "--name", "app", "--root"])
            .arg(&root)
            .args(extra)
            .output()
            .unwrap()
    };
    // No --env-file: installed, with a warning naming what the runs lack.
    let out = install(&shop, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("reads RESPALDO_TEST_HOOK_TOKEN"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The system of an empty root runs cron in UTC, which is the entry's zone.
    let cron_file = root.join("etc/cron.d/respaldo-app");
    let text = std::fs::read_to_string(&cron_file).unwrap();
    assert!(text.contains("\n0 2 * * * root "), "{text}");
    // Another configuration under the same name is refused and changes nothing.
    let out = install(&other, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("the schedule name `app` is already installed for"),
        "{err}"
    );
    assert!(
        err.contains(&shop.path().join("backup.toml").display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&cron_file).unwrap(), text);
    // Reinstalling the same configuration is fine.
    assert!(install(&shop, &[]).status.success());

    // An env file that lacks a variable the configuration reads is refused.
    let env_file = shop.path().join("secrets.env");
    std::fs::write(&env_file, "# secrets\nexport OTHER=1\n").unwrap();
    let out = install(&shop, &["--env-file", env_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .contains("does not set RESPALDO_TEST_HOOK_TOKEN, which the configuration reads"),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        &env_file,
        "OTHER=1\nRESPALDO_TEST_HOOK_TOKEN=t0ken-value-long\n",
    )
    .unwrap();
    let out = install(&shop, &["--env-file", env_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("warning"));

    // A system in Madrid: a UTC entry is refused naming both zones, a Madrid one is installed.
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/timezone"), "Europe/Madrid\n").unwrap();
    let out = install(&shop, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cron runs in the system's time zone (Europe/Madrid), not UTC"),
        "{}",
        stderr(&out)
    );
    shop.write_config(&config("Europe/Madrid"));
    assert!(install(&shop, &[]).status.success());
}

#[test]
fn the_base_configuration_is_named_by_environment_and_months_written_m_warn() {
    let p = Project::new(&format!(
        "{DATA_SOURCE}\n[retention]\nkeep_within = \"6m\"\n[env.staging.repository]\nurl = \"repo-staging\"\n"
    ));
    // `environment` must come before any table.
    let text = std::fs::read_to_string(p.path().join("backup.toml")).unwrap();
    std::fs::write(
        p.path().join("backup.toml"),
        format!("environment = \"production\"\n{text}"),
    )
    .unwrap();
    let out = p.run(&["--env", "production", "--json", "config", "check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["repository"].as_str().unwrap().ends_with("/repo"), "{v}");
    let err = stderr(&out);
    // Its line in the file, counting the `environment` line put first.
    let line = text
        .lines()
        .position(|l| l.starts_with("keep_within"))
        .unwrap()
        + 2;
    assert!(
        err.contains(&format!(
            "backup.toml:{line}: retention.keep_within: `m` is read as months here; write `mo`"
        )),
        "{err}"
    );
    let v = p.json(&["--env", "staging", "config", "check"]);
    assert!(
        v["repository"].as_str().unwrap().ends_with("/repo-staging"),
        "{v}"
    );
    let out = p.run(&["--env", "qa", "config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("(environments: production, staging)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_backup_past_its_size_limits_succeeds_warns_and_notifies() {
    let (addr, rx) = http_listener();
    let p = Project::new(&format!(
        "[backup]\nmax_backup_size = \"10KB\"\nmax_repository_size = \"20KB\"\n{DATA_SOURCE}\n\
         [sources.small]\ntype = \"files\"\npaths = [\"small\"]\nmax_backup_size = \"1MB\"\n\n\
         [[notify]]\ntype = \"webhook\"\nurl = \"http://{addr}/hook\"\n"
    ));
    with_data(&p, 4, 25_000);
    std::fs::create_dir_all(p.path().join("small")).unwrap();
    std::fs::write(p.path().join("small/f"), random_bytes(7, 20_000)).unwrap();
    p.ok(&["init"]);
    let out = p.run(&["backup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("the backup of `files` is"), "{err}");
    assert!(err.contains("over its max_backup_size of"), "{err}");
    assert!(!err.contains("the backup of `small`"), "{err}");
    assert!(err.contains("the repository stores"), "{err}");
    assert!(err.contains("over max_repository_size of"), "{err}");
    // The webhook (failure, stale and warning by default) gets the warning only.
    let (path, body) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a notification");
    assert_eq!(path, "/hook");
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["event"], "warning", "{event}");
    assert_eq!(event["warnings"].as_array().unwrap().len(), 2, "{event}");
    assert!(
        event["summary"].as_str().unwrap().contains("WARNING"),
        "{event}"
    );
    assert!(rx.try_recv().is_err());
    // The run is recorded as good, with its warnings.
    let last = history(&p).pop().unwrap();
    assert_eq!(last["ok"], true, "{last}");
    assert_eq!(last["warnings"].as_array().unwrap().len(), 2, "{last}");
    // A bad size is a located configuration error.
    p.write_config(&format!(
        "[backup]\nmax_repository_size = \"lots\"\n{DATA_SOURCE}"
    ));
    let out = p.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("backup.toml:5: backup.max_repository_size:"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn environments_override_the_base_configuration() {
    let p = Project::new(&format!(
        "{DATA_SOURCE}\n[env.staging.repository]\nurl = \"repo-staging\"\n[env.staging.sources.files]\nenabled = false\n"
    ));
    let v = p.json(&["--env", "staging", "config", "check"]);
    assert!(
        v["repository"].as_str().unwrap().ends_with("/repo-staging"),
        "{v}"
    );
    assert_eq!(v["sources"][0]["enabled"], false);
    let v = p.json(&["config", "check"]);
    assert!(v["repository"].as_str().unwrap().ends_with("/repo"), "{v}");
    let out = p.run(&["--env", "prod", "config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no [env.prod] table (environments: staging)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn every_example_configuration_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    // Every configuration of every example (backup.toml, and the other
    // hosts' files of the multi-host one).
    let configs = std::fs::read_dir(&root).unwrap().flatten().flat_map(|dir| {
        let files = std::fs::read_dir(dir.path()).unwrap().flatten();
        files
            .map(|f| f.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .filter(|p| !p.ends_with("Cargo.toml"))
            .collect::<Vec<_>>()
    });
    for cfg in configs {
        let dir = cfg.parent().unwrap().to_path_buf();
        // The variables an example stack documents in its .env.example, as
        // compose would give them.
        let env_file = std::fs::read_to_string(dir.join(".env.example")).unwrap_or_default();
        let vars = env_file
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='));
        let out = Command::new(bin())
            .envs(vars)
            .arg("-c")
            .arg(&cfg)
            .args(["config", "check"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", cfg.display(), stderr(&out));
        n += 1;
    }
    assert!(n >= 14, "only {n} example configurations");
}

/// A minimal SMTP server that accepts every message and hands over its DATA.
fn smtp_listener() -> (u16, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut s) = stream else { break };
            let mut r = BufReader::new(s.try_clone().unwrap());
            s.write_all(b"220 localhost ESMTP test\r\n").unwrap();
            let mut data: Option<String> = None;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(d) = &mut data {
                    if line == ".\r\n" {
                        let _ = tx.send(std::mem::take(d));
                        data = None;
                        s.write_all(b"250 queued\r\n").unwrap();
                    } else {
                        d.push_str(&line);
                    }
                    continue;
                }
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" | "HELO" => b"250 localhost\r\n",
                    "DATA" => {
                        data = Some(String::new());
                        b"354 go ahead\r\n"
                    }
                    "QUIT" => {
                        s.write_all(b"221 bye\r\n").unwrap();
                        break;
                    }
                    _ => b"250 ok\r\n",
                };
                s.write_all(reply).unwrap();
            }
        }
    });
    (port, rx)
}

#[test]
fn healthchecks_pings_email_and_a_dead_notifier_never_fail_the_run() {
    let (addr, pings) = http_listener();
    let (smtp_port, mails) = smtp_listener();
    // A port nothing listens on: that notifier fails, the run does not.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = Project::new(&format!(
        r#"
[status]
state_dir = "state"

[[notify]]
type = "healthchecks"
url = "http://{addr}/ping/check-1"

[[notify]]
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
tls = "none"
from = "respaldo <backup@example.com>"
to = ["ops@example.com"]
on = ["failure"]

[[notify]]
type = "webhook"
url = "http://127.0.0.1:{dead}/hook"
on = ["failure", "success"]
retries = 0

[sources.db]
type = "command"
command = ["sh", "-c", "if [ -f broken ]; then echo 'connection refused' >&2; exit 3; fi; echo rows"]
"#
    ));
    p.ok(&["init"]);
    std::fs::write(p.path().join("broken"), "").unwrap();
    let out = p.run(&["backup"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("could not send the failure notification"),
        "{}",
        stderr(&out)
    );
    let next = || {
        pings
            .recv_timeout(Duration::from_secs(10))
            .expect("healthchecks ping")
    };
    assert_eq!(next().0, "/ping/check-1/start");
    let (path, body) = next();
    assert_eq!(path, "/ping/check-1/fail");
    assert!(body.contains("connection refused"), "{body}");
    let mail = mails
        .recv_timeout(Duration::from_secs(10))
        .expect("an email");
    assert!(mail.contains("To: ops@example.com"), "{mail}");
    assert!(mail.contains("Subject: [respaldo]"), "{mail}");
    assert!(mail.contains("source: db"), "{mail}");
    assert!(mail.contains("connection refused"), "{mail}");

    // A good run pings start and success; no email (on = failure only), and
    // the dead webhook still does not fail it.
    std::fs::remove_file(p.path().join("broken")).unwrap();
    let out = p.run(&["backup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(next().0, "/ping/check-1/start");
    assert_eq!(next().0, "/ping/check-1");
    assert!(mails.recv_timeout(Duration::from_millis(500)).is_err());
}

#[test]
fn healthz_and_status_mask_a_secret_in_a_failed_sources_error() {
    let p = Project::new(
        r#"
[daemon]
listen = "127.0.0.1:0"

[status]
state_dir = "state"

[sources.db]
type = "command"
command = ["sh", "-c", "echo \"login refused with password $1 for postgres://app:$1@db\" >&2; exit 3", "sh", "${RESPALDO_TEST_HEALTHZ_PW}"]

[sources.docs]
type = "files"
paths = ["data"]
"#,
    );
    let secret = "Healthz-S3cret-Value";
    let env = [("RESPALDO_TEST_HEALTHZ_PW", secret)];
    let run = |args: &[&str]| {
        Command::new(bin())
            .current_dir(p.path())
            .envs(env)
            .args(["-c", "backup.toml"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    with_data(&p, 1, 100);
    assert!(run(&["init"]).status.success());
    // docs succeeds, so a snapshot with db's raw error is written.
    let out = run(&["backup"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = run(&["--json", "snapshots"]);
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");

    for args in [&["status"][..], &["--json", "status"][..]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("login refused with password ***"), "{text}");
        assert!(!text.contains(secret), "secret in `status`: {text}");
    }

    let mut d = Daemon::start_with_env(&p, &env);
    let line = d.line("/metrics and /healthz on http://", Duration::from_secs(20));
    let addr = line.rsplit("http://").next().unwrap().trim().to_string();
    let (code, body) = get(&addr, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("db: FAILED: "), "{body}");
    assert!(body.contains("password ***"), "{body}");
    assert!(!body.contains(secret), "secret in /healthz: {body}");
    sigterm(&d.child);
    assert!(d.child.wait().unwrap().success());
}

#[test]
fn a_scheduled_backup_is_retried_after_a_failure_and_the_retry_succeeds() {
    let p = Project::new(
        r#"
[status]
state_dir = "state"

[schedule.nightly]
cron = "0 2 * * *"
retries = 1
retry_delay = "1s"

[sources.flaky]
type = "command"
command = ["sh", "-c", "if [ ! -f failed-once ]; then touch failed-once; echo 'first try fails' >&2; exit 3; fi; echo rows"]
"#,
    );
    p.ok(&["init"]);
    let t = Instant::now();
    let out = p.run(&["schedule", "run", "nightly"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("backup failed; retry 1 of 1 in 1s"),
        "{}",
        stderr(&out)
    );
    assert!(t.elapsed() >= Duration::from_secs(1), "no retry delay");
    let runs: Vec<serde_json::Value> = history(&p)
        .into_iter()
        .filter(|r| r["action"] == "backup")
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0]["ok"], false, "{}", runs[0]);
    assert_eq!(runs[0]["sources"]["flaky"]["ok"], false);
    assert_eq!(runs[1]["ok"], true, "{}", runs[1]);
    assert_eq!(runs[1]["sources"]["flaky"]["ok"], true);
    for r in &runs {
        assert_eq!(r["trigger"], "nightly");
    }
    assert_eq!(snapshots(&p).len(), 1, "the failed try wrote none");
    p.ok(&["status"]);
}

#[test]
fn a_scheduled_backup_that_dies_unrecorded_fails_its_sources_in_status() {
    let p = Project::new(
        r#"
[status]
state_dir = "state"

[schedule.nightly]
cron = "0 2 * * *"
retries = 0

[sources.db]
type = "command"
# SIGKILLs the `respaldo backup` running it: no chance to record the run.
command = ["sh", "-c", "kill -9 $PPID; sleep 5"]

[sources.off]
type = "command"
command = ["echo", "x"]
enabled = false
"#,
    );
    p.ok(&["init"]);
    let out = p.run(&["schedule", "run", "nightly"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let runs: Vec<serde_json::Value> = history(&p)
        .into_iter()
        .filter(|r| r["action"] == "backup")
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let sources = runs[0]["sources"].as_object().unwrap();
    assert_eq!(
        sources.keys().collect::<Vec<_>>(),
        ["db"],
        "the selected (enabled) sources: {}",
        runs[0]
    );
    assert_eq!(sources["db"]["ok"], false);
    assert!(
        sources["db"]["error"]
            .as_str()
            .unwrap()
            .contains("`respaldo backup` failed"),
        "{}",
        runs[0]
    );
    let st = p.run(&["--json", "status"]);
    assert_eq!(st.status.code(), Some(1));
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st[0]["source"], "db");
    assert_eq!(st[0]["failed"], true, "{st}");
}

#[test]
fn status_notify_sends_a_stale_notification() {
    let (addr, rx) = http_listener();
    let p = Project::new(&format!(
        r#"
[status]
state_dir = "state"
rpo = "1s"

[[notify]]
type = "webhook"
url = "http://{addr}/stale"
on = ["stale"]

[sources.docs]
type = "files"
paths = ["data"]
"#
    ));
    with_data(&p, 1, 10);
    p.ok(&["init"]);
    p.backup(&[]);
    // Only the stale event is wanted: the backup sent nothing.
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    std::thread::sleep(Duration::from_millis(2100));
    let out = p.run(&["status", "--notify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (path, body) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("stale webhook");
    assert_eq!(path, "/stale");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["event"], "stale", "{v}");
    assert_eq!(v["source"], "docs", "{v}");
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .contains("docs: STALE: older than its objective (1s)"),
        "{v}"
    );
    // Without --notify: nothing sent.
    assert_eq!(p.run(&["status"]).status.code(), Some(1));
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
}

#[test]
fn a_hook_that_outlives_its_timeout_is_killed_and_fails_the_run() {
    let p = Project::new(&format!(
        "{DATA_SOURCE}\n[hooks]\nbefore = \"sleep 30\"\ntimeout = \"1s\"\n"
    ));
    with_data(&p, 1, 10);
    p.ok(&["init"]);
    let t = Instant::now();
    let out = p.run(&["backup"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "waited for the hook: {:?}",
        t.elapsed()
    );
    let err = stderr(&out);
    assert!(
        err.contains("`before` hook of the run failed")
            && err.contains("timed out after 1s and was killed")
            && err.contains("nothing was backed up"),
        "{err}"
    );
    assert!(snapshots(&p).is_empty());
}

#[test]
fn min_free_space_stops_a_backup_when_the_disk_is_too_full() {
    let p = Project::new(&format!(
        "[backup]\nmin_free_space = \"1000TiB\"\n{DATA_SOURCE}"
    ));
    with_data(&p, 1, 10);
    p.ok(&["init"]);
    let out = p.run(&["backup"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("below min_free_space = 1000") && err.contains("nothing was backed up"),
        "{err}"
    );
    assert!(snapshots(&p).is_empty());
    let last = history(&p).pop().unwrap();
    assert_eq!(last["ok"], false, "{last}");
}
