//! Helpers shared by the end-to-end tests: the respaldo binary, a project
//! folder with a config, tree generation and comparison.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The respaldo binary: `$RESPALDO_BIN`, else `target/<profile>/respaldo`,
/// built on first use.
pub fn bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("RESPALDO_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("test exe");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "respaldo", "--bin", "respaldo"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo build");
        assert!(st.success(), "building respaldo failed");
        dir.join("respaldo")
    })
}

/// A project folder with a backup.toml, a repository and data.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    /// A new project whose config is `[repository] url = "repo"` plus `extra`.
    pub fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Project { dir };
        p.write_config(extra);
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn repo(&self) -> PathBuf {
        self.path().join("repo")
    }

    pub fn write_config(&self, extra: &str) {
        std::fs::write(
            self.path().join("backup.toml"),
            format!("[repository]\nurl = \"repo\"\n\n{extra}"),
        )
        .unwrap();
    }

    /// Runs respaldo with `-c backup.toml` in the project folder.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(bin())
            .current_dir(self.path())
            .arg("-c")
            .arg(self.path().join("backup.toml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run respaldo");
        out
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "respaldo {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs with --json and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let s = self.ok(&a);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("bad json from {args:?}: {e}: {s}"))
    }

    /// Restores the latest backup of `source` into `out` and asserts that
    /// `out/data` is identical to the project's `data` folder.
    pub fn assert_restores_data(&self, source: &str, out: &Path) {
        self.ok(&[
            "restore",
            "latest",
            "--source",
            source,
            "--target",
            out.to_str().unwrap(),
        ]);
        assert_same_tree(&self.path().join("data"), &out.join("data"));
    }

    /// `backup --json`, returning the parsed output.
    pub fn backup(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["backup"];
        a.extend_from_slice(args);
        self.json(&a)
    }

    /// Total size of the repository's files.
    pub fn repo_size(&self) -> u64 {
        dir_size(&self.repo())
    }
}

pub fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    for e in walk(p) {
        let m = std::fs::symlink_metadata(&e).unwrap();
        if m.is_file() {
            total += m.len();
        }
    }
    total
}

/// Every path below `root` (not following symlinks), sorted.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

// Not every test crate uses every helper.
#[allow(unused_imports)]
pub use respaldo_testing::data::{random_bytes, text_bytes};
#[allow(unused_imports)]
pub use respaldo_testing::is_root;

pub fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

/// Everything about a tree that a restore must preserve: per relative path,
/// type, mode, owner, mtime (ns), size, content hash, link target.
pub fn fingerprint(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut m = BTreeMap::new();
    for p in walk(root) {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let kind = if ft.is_file() {
            format!("file size={} sha={}", md.len(), sha256_file(&p))
        } else if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("symlink -> {:?}", std::fs::read_link(&p).unwrap())
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else {
            "other".to_string()
        };
        let mtime = if ft.is_dir() {
            // A directory's mtime is restored last; compare it too.
            format!("{}.{}", md.mtime(), md.mtime_nsec())
        } else {
            format!("{}.{}", md.mtime(), md.mtime_nsec())
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            md.mode() & 0o7777
        };
        m.insert(
            rel,
            format!(
                "{kind} mode={mode:o} uid={} gid={} mtime={mtime}",
                md.uid(),
                md.gid()
            ),
        );
    }
    m
}

/// Asserts two fingerprints are equal, showing the first differences.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let fa = fingerprint(a);
    let fb = fingerprint(b);
    if fa != fb {
        let mut diffs = Vec::new();
        for (k, v) in &fa {
            match fb.get(k) {
                None => diffs.push(format!("missing: {k:?}")),
                Some(w) if w != v => diffs.push(format!("differs: {k:?}\n   {v}\n   {w}")),
                _ => {}
            }
        }
        for k in fb.keys() {
            if !fa.contains_key(k) {
                diffs.push(format!("extra: {k:?}"));
            }
        }
        diffs.truncate(20);
        panic!("trees differ:\n{}", diffs.join("\n"));
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Marks a cell of the restore matrix in docs/restore.md as covered by the
/// test code that follows (the table and the suite are compared by
/// `restore_matrix_table_matches_the_suite`).
pub fn cell(id: &str) {
    eprintln!("restore matrix cell {id}");
}

/// Runs and asserts failure with `code`; returns stderr.
pub fn fails(p: &Project, args: &[&str], code: i32) -> String {
    let o = p.run(args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "respaldo {args:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    stderr(&o)
}

/// The ids of the snapshots tagged `tag`.
pub fn tagged(p: &Project, tag: &str) -> Vec<String> {
    p.json(&["--host", "*", "snapshots", "--tag", tag])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// How many snapshots record `source` as backed up well.
pub fn good_backups(p: &Project, source: &str) -> usize {
    p.json(&["snapshots", "--source", source])
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["sources"][source]["status"] == "ok")
        .count()
}

/// Runs a backup that must fail (exit 1) with a message naming the source
/// `db` and saying `expect`, never `secret`; no snapshot beyond the
/// `good_before` earlier ones may claim `db` succeeded.
pub fn assert_backup_fails(p: &Project, good_before: usize, expect: &str, secret: &str) {
    let out = p.run(&["backup"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("db"), "message names the source: {err}");
    assert!(err.contains(expect), "expected `{expect}` in: {err}");
    assert!(!err.contains(secret), "secret leaked: {err}");
    assert_eq!(
        good_backups(p, "db"),
        good_before,
        "a failed run was recorded as good"
    );
}

/// A tmpfs of `size` (`24m`) mounted on the new folder `dir` (needs root),
/// unmounted when dropped: a repository disk that fills up.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Creates `dir` and mounts the tmpfs there.
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        assert!(
            is_root(),
            "this test mounts a small tmpfs and needs root (run the suite as root, as CI does)"
        );
        std::fs::create_dir(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Runs `cmd` to its end, sampling its peak resident memory (`VmHWM`) every
/// 50 ms; returns its output and the peak in KiB (0 if never sampled).
pub fn run_with_peak_rss(cmd: &mut Command) -> (Output, u64) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    while child.try_wait().expect("wait").is_none() {
        if let Ok(s) = std::fs::read_to_string(&status_file) {
            if let Some(v) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak_kib = peak_kib.max(v);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (child.wait_with_output().expect("output"), peak_kib)
}

/// Whether `dir` is a mount point now (per /proc/self/mountinfo).
pub fn is_mounted(dir: &Path) -> bool {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(m) == dir)
}

/// `respaldo mount DIR` running in a project: started and waited for until
/// the view is there; stopped by a signal; never left mounted.
pub struct MountedView {
    pub dir: PathBuf,
    child: Option<std::process::Child>,
}

impl MountedView {
    pub fn start(p: &Project, dir: &Path) -> MountedView {
        std::fs::create_dir_all(dir).unwrap();
        let child = Command::new(bin())
            .current_dir(p.path())
            .args(["-c", "backup.toml", "mount"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn respaldo mount");
        let mut m = MountedView {
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        let t0 = std::time::Instant::now();
        while !(is_mounted(dir) && dir.join("snapshots").is_dir()) {
            if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
                let o = m.child.take().unwrap().wait_with_output().unwrap();
                panic!("respaldo mount ended ({st}): {}", stderr(&o));
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(60),
                "not mounted after 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        m
    }

    /// The mounting process's peak resident memory so far, in MiB.
    pub fn peak_mib(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM")
            / 1024
    }

    /// Sends `signal` and waits for the process to end.
    pub fn stop(mut self, signal: i32) -> Output {
        let child = self.child.take().expect("running");
        // SAFETY: a signal to a child process this value owns.
        unsafe { libc::kill(child.id() as i32, signal) };
        child.wait_with_output().unwrap()
    }
}

impl Drop for MountedView {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}
