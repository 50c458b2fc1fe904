//! A throwaway PostgreSQL server per test: initdb in a temp dir, a free
//! port on 127.0.0.1, password authentication, stopped and removed on drop.
//! A missing server is a test failure, never a skip.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// The superuser's password in every test server.
pub const PASSWORD: &str = "s3cret-Pw";

/// Where the server programs are (the newest `/usr/lib/postgresql/N/bin`).
pub fn bin_dir() -> PathBuf {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, d)| d).expect(
        "PostgreSQL server not installed (/usr/lib/postgresql/N/bin/postgres); run scripts/test.sh",
    )
}

/// Runs `program` as the `postgres` OS user when we are root (initdb and
/// postgres refuse to run as root).
fn as_server_user(program: &Path) -> Command {
    if crate::is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A running server.
pub struct Pg {
    dir: tempfile::TempDir,
    /// The server's TCP port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
}

impl Pg {
    /// initdb + start, waiting until it accepts connections.
    pub fn start() -> Pg {
        Pg::start_with(false)
    }

    /// A server that accepts TCP connections only over TLS, with a
    /// self-signed certificate for 127.0.0.1 (`ca_cert()`).
    pub fn start_tls() -> Pg {
        Pg::start_with(true)
    }

    /// The self-signed certificate of a `start_tls` server.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn start_with(tls: bool) -> Pg {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("respaldo-pg")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o644)).unwrap();
        let data = dir.path().join("data");
        let out = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if tls {
            // A CA and a server certificate for 127.0.0.1 signed by it.
            super::write_test_certificates(dir.path());
            for f in ["server.crt", "server.key"] {
                std::fs::rename(dir.path().join(f), data.join(f)).unwrap();
            }
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
            )
            .unwrap();
            std::fs::write(
                data.join("postgresql.auto.conf"),
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            )
            .unwrap();
            if crate::is_root() {
                let st = Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&data)
                    .status()
                    .unwrap();
                assert!(st.success());
            }
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        let mut pg = Pg {
            dir,
            port: 0,
            child: None,
        };
        pg.launch();
        pg
    }

    fn launch(&mut self) {
        let bin = bin_dir();
        for _ in 0..5 {
            let port = free_port();
            let child = as_server_user(&bin.join("postgres"))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(self.dir.path())
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=40",
                    "-c",
                    "shared_buffers=64MB",
                ])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(self.dir.path().join("log")).unwrap())
                .spawn()
                .expect("start postgres");
            self.child = Some(child);
            self.port = port;
            if self.wait_ready() {
                return;
            }
            self.stop();
        }
        panic!(
            "postgres did not start: {}",
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        );
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            let ok = Command::new(bin_dir().join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Stops the server (fast shutdown) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = as_server_user(&bin_dir().join("pg_ctl"))
                .args(["stop", "-s", "-m", "fast", "-D"])
                .arg(self.dir.path().join("data"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again after `stop`, on a new port.
    pub fn restart(&mut self) {
        self.launch();
    }

    /// `postgres://postgres@127.0.0.1:PORT/db` (no password: it goes by reference).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn client(&self, program: &str) -> Command {
        let mut c = Command::new(bin_dir().join(program));
        c.env("PGPASSWORD", PASSWORD)
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres");
        c
    }

    /// Runs SQL with psql (stop on error) and returns the unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .client("psql")
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed on {db}: {sql}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Runs a multi-statement script with psql.
    pub fn script(&self, db: &str, sql: &str) {
        let path = self.dir.path().join("script.sql");
        std::fs::write(&path, sql).unwrap();
        let out = self
            .client("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql script failed on {db}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A plain `pg_dump` of `db`: the independent check of a round trip.
    /// The random `\restrict` key lines pg_dump writes since 15.14 are left
    /// out; a dump too long to print is compared by its digest.
    pub fn dump(&self, db: &str) -> Dump {
        self.dump_with(db, &[])
    }

    /// [`Pg::dump`] with more pg_dump options (`--schema-only`, `-n app`).
    pub fn dump_with(&self, db: &str, extra: &[&str]) -> Dump {
        let out = self
            .client("pg_dump")
            .args(["--format=plain", "--no-owner", "-d", db])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_dump {db} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text: String = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
            .map(|l| format!("{l}\n"))
            .collect();
        Dump(text)
    }

    /// `pg_dumpall --globals-only` (roles), without the superuser's own lines.
    pub fn roles(&self) -> Vec<String> {
        let out = self
            .client("psql")
            .args([
                "-X", "-At", "-d", "postgres", "-c",
                "SELECT rolname || ' ' || rolcanlogin || ' ' || rolcreatedb FROM pg_roles WHERE rolname !~ '^pg_' AND rolname <> 'postgres' ORDER BY 1",
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The databases, templates and `postgres` excluded.
    pub fn databases(&self) -> Vec<String> {
        self.psql(
            "postgres",
            "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY 1",
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// The folder of this server's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A normalized plain dump; `Debug` shows its size, digest and first lines
/// rather than megabytes of data.
#[derive(PartialEq, Eq)]
pub struct Dump(pub String);

impl Dump {
    /// Whether the dump holds `s`.
    pub fn contains(&self, s: &str) -> bool {
        self.0.contains(s)
    }
}

impl std::fmt::Debug for Dump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use sha2::Digest;
        let head: String = self
            .0
            .lines()
            .filter(|l| !l.starts_with("--") && !l.is_empty())
            .take(12)
            .collect::<Vec<_>>()
            .join(" | ");
        write!(
            f,
            "Dump({} bytes, sha256 {}, starts: {head})",
            self.0.len(),
            hex::encode(sha2::Sha256::digest(self.0.as_bytes()))
        )
    }
}
