//! A throwaway MariaDB server per test: `mariadb-install-db` in a temp dir,
//! a free port on 127.0.0.1, a root password, stopped and removed on drop.
//! A missing server is a test failure, never a skip.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// The root password of every test server.
pub const PASSWORD: &str = "s3cret-Maria";

fn program(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = PathBuf::from(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("`{name}` not found: install mariadb-server and mariadb-client (scripts/test.sh does)")
}

/// A running server.
pub struct Maria {
    dir: tempfile::TempDir,
    /// The server's TCP port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    tls: bool,
}

impl Maria {
    /// Installs the system tables, starts the server, sets root's password.
    pub fn start() -> Maria {
        Maria::start_with(false)
    }

    /// A server that accepts TCP connections over TLS only
    /// (`require_secure_transport`), with a certificate for 127.0.0.1
    /// signed by a CA of its own (`ca_cert()`).
    pub fn start_tls() -> Maria {
        Maria::start_with(true)
    }

    /// The CA certificate of a `start_tls` server.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn start_with(tls: bool) -> Maria {
        let dir = tempfile::Builder::new()
            .prefix("respaldo-maria")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let mut install = Command::new(program("mariadb-install-db"));
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .env("TMPDIR", &tmp)
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if crate::is_root() {
            install.arg("--user=root");
        }
        let out = install.output().expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if tls {
            super::write_test_certificates(dir.path());
        }
        let mut m = Maria {
            dir,
            port: 0,
            child: None,
            tls,
        };
        m.launch();
        let set = m
            .client_as(None)
            .arg(format!(
                "--execute=ALTER USER root@localhost IDENTIFIED BY '{PASSWORD}'; \
                 CREATE USER IF NOT EXISTS root@'127.0.0.1'; \
                 ALTER USER root@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; \
                 GRANT ALL ON *.* TO root@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;"
            ))
            .output()
            .unwrap();
        assert!(
            set.status.success(),
            "{}",
            String::from_utf8_lossy(&set.stderr)
        );
        m
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn launch(&mut self) {
        for _ in 0..5 {
            let port = free_port();
            let mut c = Command::new(program("mariadbd"));
            c.arg("--no-defaults")
                .arg(format!(
                    "--datadir={}",
                    self.dir.path().join("data").display()
                ))
                .arg(format!("--socket={}", self.socket().display()))
                .arg(format!(
                    "--tmpdir={}",
                    self.dir.path().join("tmp").display()
                ))
                .arg(format!(
                    "--pid-file={}",
                    self.dir.path().join("pid").display()
                ))
                .arg(format!(
                    "--log-error={}",
                    self.dir.path().join("log").display()
                ))
                .arg(format!("--port={port}"))
                .args([
                    "--bind-address=127.0.0.1",
                    "--skip-log-bin",
                    "--innodb-buffer-pool-size=64M",
                    "--innodb-log-file-size=32M",
                    "--innodb-flush-log-at-trx-commit=0",
                    "--innodb-doublewrite=0",
                    "--event-scheduler=OFF",
                    "--max-allowed-packet=64M",
                ]);
            if crate::is_root() {
                c.arg("--user=root");
            }
            if self.tls {
                let d = self.dir.path();
                c.arg(format!("--ssl-ca={}", d.join("ca.crt").display()))
                    .arg(format!("--ssl-cert={}", d.join("server.crt").display()))
                    .arg(format!("--ssl-key={}", d.join("server.key").display()))
                    .arg("--require-secure-transport=ON");
            }
            let child = c
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start mariadbd");
            self.child = Some(child);
            self.port = port;
            if self.wait_ready() {
                return;
            }
            self.stop();
        }
        panic!(
            "mariadbd did not start: {}",
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        );
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.socket().exists()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Stops the server (SIGTERM: a clean shutdown) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
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

    /// `mysql://root@127.0.0.1:PORT/db` (no password: it goes by reference).
    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }

    /// `mysql://root@localhost/db?socket=PATH`: the server's Unix socket.
    pub fn socket_url(&self, db: &str) -> String {
        format!(
            "mysql://root@localhost/{db}?socket={}",
            self.socket().display()
        )
    }

    fn client_as(&self, password: Option<&str>) -> Command {
        let mut c = Command::new(program("mariadb"));
        c.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args([
                "--user=root",
                "--batch",
                "--skip-column-names",
                "--default-character-set=utf8mb4",
            ]);
        if let Some(p) = password {
            c.arg(format!("--password={p}"));
        }
        c
    }

    /// The `mariadb` client, logged in as root over the socket.
    pub fn client(&self) -> Command {
        self.client_as(Some(PASSWORD))
    }

    /// Runs `sql` (in `db`, if given) and returns its output; panics on failure.
    pub fn sql(&self, db: Option<&str>, sql: &str) -> String {
        let mut c = self.client();
        if let Some(db) = db {
            c.arg(format!("--database={db}"));
        }
        let out = c.arg(format!("--execute={sql}")).output().unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a script read from standard input (in `db`, if given).
    pub fn script(&self, db: Option<&str>, sql: &str) {
        use std::io::Write;
        let mut c = self.client();
        if let Some(db) = db {
            c.arg(format!("--database={db}"));
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An independent dump of `db` (mariadb-dump, run by the test, not by
    /// respaldo), normalised for comparison: no comments, no `AUTO_INCREMENT=`
    /// counters, no definers, the database name replaced by `DB`.
    pub fn normalized_dump(&self, db: &str) -> String {
        let out = Command::new(program("mariadb-dump"))
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args([
                "--user=root",
                &format!("--password={PASSWORD}"),
                "--skip-comments",
                "--skip-dump-date",
                "--routines",
                "--triggers",
                "--events",
                "--hex-blob",
                "--order-by-primary",
                "--skip-extended-insert",
                db,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let quoted = format!("`{db}`");
        text.lines()
            .filter(|l| !l.starts_with("/*M!999999"))
            .map(|l| {
                let l = l.replace(&quoted, "`DB`");
                match l.find(" AUTO_INCREMENT=") {
                    Some(i) => {
                        let rest = &l[i + 16..];
                        let end = rest
                            .find(|c: char| !c.is_ascii_digit())
                            .unwrap_or(rest.len());
                        format!("{}{}", &l[..i], &rest[end..])
                    }
                    None => l,
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Maria {
    fn drop(&mut self) {
        self.stop();
    }
}
