//! Throwaway redis-server instances for the redis tests, and a data set with
//! every type in small and large encodings.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use super::free_port;

/// A redis-server on a free port in its own temp dir, killed on drop.
pub struct Redis {
    /// The server's TCP port on 127.0.0.1.
    pub port: u16,
    /// The TLS port, for a server started with [`Redis::start_tls`].
    pub tls_port: Option<u16>,
    /// The server's folder (configuration, RDB file).
    pub dir: tempfile::TempDir,
    password: Option<String>,
    child: Child,
}

fn program(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` not found on PATH: install the redis-server package (scripts/test.sh does)"
        )
    })
}

impl Redis {
    /// Starts a server; `password` sets `requirepass`.
    pub fn start(password: Option<&str>) -> Redis {
        Self::start_with(password, None)
    }

    /// Starts a server that also listens with TLS (`--tls-port`, the
    /// certificates of `certs`, client certificates required); the plain
    /// port stays open for the test's own redis-cli.
    pub fn start_tls(certs: &TestCerts) -> Redis {
        Self::start_with(None, Some(certs))
    }

    fn start_with(password: Option<&str>, tls: Option<&TestCerts>) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new(program("redis-server"));
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--enable-debug-command", "yes"])
            .args(["--enable-protected-configs", "yes"])
            // Compressed quicklist nodes, so LZF-encoded list nodes are covered.
            .args(["--list-compress-depth", "1"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(dir.path().join("log"));
        if let Some(p) = password {
            cmd.args(["--requirepass", p]);
        }
        let tls_port = tls.map(|c| {
            let tp = free_port();
            cmd.args(["--tls-port", &tp.to_string()])
                .arg("--tls-cert-file")
                .arg(c.dir.path().join("server.crt"))
                .arg("--tls-key-file")
                .arg(c.dir.path().join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(c.dir.path().join("ca.crt"))
                .args(["--tls-auth-clients", "yes"]);
            tp
        });
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let mut r = Redis {
            port,
            tls_port,
            dir,
            password: password.map(str::to_string),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = r.child.try_wait() {
                panic!("redis-server on port {port} exited: {st}");
            }
            let o = r.cli_output(&["PING"]);
            if String::from_utf8_lossy(&o.stdout).trim() == "PONG" {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} not ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cli_cmd(&self) -> Command {
        let mut c = Command::new(program("redis-cli"));
        c.args(["-p", &self.port.to_string()]);
        if let Some(p) = &self.password {
            c.env("REDISCLI_AUTH", p);
        }
        c
    }

    fn cli_output(&self, args: &[&str]) -> std::process::Output {
        self.cli_cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs redis-cli and returns its trimmed output.
    pub fn cli(&self, args: &[&str]) -> String {
        let o = self.cli_output(args);
        let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let error = ["ERR", "WRONGPASS", "NOAUTH", "WRONGTYPE"]
            .iter()
            .any(|e| out.starts_with(e));
        assert!(o.status.success() && !error, "redis-cli {args:?}: {o:?}");
        out
    }

    /// `DEBUG DIGEST` of the whole server (every db, values and TTLs).
    pub fn digest(&self) -> String {
        let d = self.cli(&["DEBUG", "DIGEST"]);
        assert_eq!(d.len(), 40, "{d}");
        d
    }

    /// Keys in db `n`.
    pub fn dbsize(&self, n: u32) -> u64 {
        self.cli(&["-n", &n.to_string(), "DBSIZE"]).parse().unwrap()
    }

    /// Feeds commands through `redis-cli --pipe`.
    pub fn pipe(&self, cmds: &[Vec<Vec<u8>>]) {
        let mut buf = Vec::new();
        for c in cmds {
            write!(buf, "*{}\r\n", c.len()).unwrap();
            for a in c {
                write!(buf, "${}\r\n", a.len()).unwrap();
                buf.extend_from_slice(a);
                buf.extend_from_slice(b"\r\n");
            }
        }
        let mut child = self
            .cli_cmd()
            .arg("--pipe")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&buf).unwrap();
        let o = child.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && out.contains("errors: 0"),
            "redis-cli --pipe: {out} {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// The server's folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn c(args: &[&[u8]]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.to_vec()).collect()
}

fn s(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

/// Every data type in small and large encodings, binary data, 200 kB values,
/// TTLs, several dbs and a function library. Returns the keys per db.
pub fn populate(r: &Redis) -> [(u32, u64); 3] {
    let mut cmds = vec![s(&["SELECT", "0"])];
    // Strings: short, integer, binary key and value, 200 kB random and
    // compressible values, a long compressible key.
    for i in 0..50 {
        cmds.push(s(&["SET", &format!("s:{i}"), &format!("value {i}")]));
    }
    cmds.push(s(&["SET", "n:int", "12345"]));
    cmds.push(s(&["SET", "n:neg", "-7"]));
    let bin: Vec<u8> = (0..=255u8).collect();
    cmds.push(c(&[b"SET", b"bin:\x00\xff\r\n", &bin]));
    cmds.push(c(&[
        b"SET",
        b"big:random",
        &crate::data::random_bytes(7, 200_000),
    ]));
    cmds.push(c(&[
        b"SET",
        b"big:text",
        &crate::data::text_bytes(8, 200_000),
    ]));
    cmds.push(s(&["SET", &"k".repeat(300), "long key"]));
    // Hashes: listpack and hashtable.
    cmds.push(s(&["HSET", "h:small", "a", "1", "b", "2", "c", "3"]));
    let mut big = s(&["HSET", "h:big"]);
    for i in 0..1000 {
        big.push(format!("field{i}").into_bytes());
        big.push(format!("{i}").into_bytes());
    }
    cmds.push(big);
    cmds.push(c(&[
        b"HSET",
        b"h:bigvalue",
        b"f",
        &crate::data::random_bytes(9, 1000),
    ]));
    // Lists: listpack quicklist and a long, compressed one.
    cmds.push(s(&["RPUSH", "l:small", "a", "b", "1", "2"]));
    for chunk in 0..10 {
        let mut l = s(&["RPUSH", "l:big"]);
        for i in 0..1000 {
            l.push(format!("item {chunk} {i} some padding to fill nodes").into_bytes());
        }
        cmds.push(l);
    }
    cmds.push(c(&[
        b"RPUSH",
        b"l:hugeitem",
        &crate::data::text_bytes(10, 20_000),
        b"x",
    ]));
    // Sets: intset, small strings, large of both.
    cmds.push(s(&["SADD", "set:int", "1", "2", "3", "-5"]));
    cmds.push(s(&["SADD", "set:small", "a", "b", "c"]));
    let mut si = s(&["SADD", "set:bigint"]);
    let mut ss = s(&["SADD", "set:big"]);
    for i in 0..1000 {
        si.push(format!("{}", i * 7).into_bytes());
        ss.push(format!("member-{i}").into_bytes());
    }
    cmds.push(si);
    cmds.push(ss);
    // Sorted sets: listpack and skiplist, odd scores.
    cmds.push(s(&[
        "ZADD", "z:small", "1", "a", "2.5", "b", "-inf", "c", "inf", "d",
    ]));
    let mut z = s(&["ZADD", "z:big"]);
    for i in 0..1000 {
        z.push(format!("{}", i as f64 / 3.0).into_bytes());
        z.push(format!("m{i}").into_bytes());
    }
    cmds.push(z);
    // Streams: small; large with deletions, groups, pending entries, consumers.
    cmds.push(s(&["XADD", "x:small", "*", "a", "1"]));
    for i in 1..=1000 {
        cmds.push(s(&[
            "XADD",
            "x:big",
            &format!("{i}-1"),
            "f",
            &format!("v{i}"),
            "g",
            "x",
        ]));
    }
    cmds.push(s(&["XDEL", "x:big", "5-1", "6-1"]));
    cmds.push(s(&["XGROUP", "CREATE", "x:big", "g1", "0"]));
    cmds.push(s(&["XGROUP", "CREATE", "x:big", "g2", "$"]));
    cmds.push(s(&[
        "XREADGROUP",
        "GROUP",
        "g1",
        "alice",
        "COUNT",
        "10",
        "STREAMS",
        "x:big",
        ">",
    ]));
    cmds.push(s(&[
        "XREADGROUP",
        "GROUP",
        "g1",
        "bob",
        "COUNT",
        "3",
        "STREAMS",
        "x:big",
        ">",
    ]));
    cmds.push(s(&["XACK", "x:big", "g1", "1-1"]));
    // TTLs.
    cmds.push(s(&["SET", "ttl:ex", "v", "EX", "3600"]));
    cmds.push(s(&["HSET", "ttl:hash", "a", "b"]));
    cmds.push(s(&["PEXPIREAT", "ttl:hash", "4102444800000"]));
    let db0 = 50 + 2 + 1 + 2 + 1 + 3 + 3 + 4 + 2 + 2 + 2;
    // db 1 and db 5.
    cmds.push(s(&["SELECT", "1"]));
    for i in 0..100 {
        cmds.push(s(&["SET", &format!("session:{i}"), &format!("user {i}")]));
    }
    cmds.push(s(&["SET", "other", "x"]));
    cmds.push(s(&["SELECT", "5"]));
    cmds.push(s(&["HSET", "cfg", "a", "1"]));
    cmds.push(s(&["SET", "session:x", "y", "EX", "7200"]));
    r.pipe(&cmds);
    r.cli(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=testlib\nredis.register_function('one', function() return 1 end)",
    ]);
    let counts = [(0, db0), (1, 101), (5, 2)];
    for (db, n) in counts {
        assert_eq!(r.dbsize(db), n, "db{db} populated");
    }
    counts
}

/// A throwaway certificate authority with a server certificate (for
/// `localhost` and `127.0.0.1`) and a client certificate signed by it, plus
/// an unrelated CA; made with the `openssl` command.
pub struct TestCerts {
    /// Where the certificates are.
    pub dir: tempfile::TempDir,
}

impl TestCerts {
    /// A CA, and a server and a client certificate signed by it, for 127.0.0.1.
    #[allow(clippy::new_without_default)] // Creates files: not a default value.
    pub fn new() -> TestCerts {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ssl = |args: &[&str]| {
            let o = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .stdin(Stdio::null())
                .output()
                .expect("run openssl (Debian: openssl)");
            assert!(o.status.success(), "openssl {args:?}: {o:?}");
        };
        for ca in ["ca", "other-ca"] {
            ssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=respaldo test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
            ]);
        }
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for who in ["server", "client"] {
            ssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={who}"),
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
            ]);
            ssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{who}.ext"),
                "-out",
                &format!("{who}.crt"),
            ]);
        }
        TestCerts { dir }
    }

    /// The path of one of the files (`ca.crt`, `server.crt`, `client.key`, …).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
