//! A throwaway InfluxDB 1.x server (Debian's `influxdb` package) on free
//! ports in a temp dir, and a small HTTP client for the tests.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::free_port;

/// A running `influxd`, killed on drop.
pub struct Influx {
    child: Child,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    http: reqwest::blocking::Client,
    auth: Option<(String, String)>,
}

fn influxd() -> PathBuf {
    for d in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = PathBuf::from(d).join("influxd");
        if p.exists() {
            return p;
        }
    }
    panic!("influxd not found: install Debian's `influxdb` package (scripts/test.sh does)");
}

impl Influx {
    /// Starts a server; with `auth`, authentication is enabled and an admin
    /// user `admin` with that password is created.
    pub fn start(auth: Option<&str>) -> Influx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (rpc, http) = (free_port(), free_port());
        let conf = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{m}\"\n  logging-enabled = false\n\
             [data]\n  dir = \"{data}\"\n  wal-dir = \"{wal}\"\n  query-log-enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{http}\"\n  log-enabled = false\n  auth-enabled = {a}\n\
             [monitor]\n  store-enabled = false\n\
             [continuous_queries]\n  enabled = false\n",
            m = d.join("meta").display(),
            data = d.join("data").display(),
            wal = d.join("wal").display(),
            a = auth.is_some(),
        );
        std::fs::write(d.join("influxdb.conf"), conf).unwrap();
        let log = std::fs::File::create(d.join("influxd.log")).unwrap();
        let child = Command::new(influxd())
            .arg("-config")
            .arg(d.join("influxdb.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start influxd");
        let mut s = Influx {
            child,
            url: format!("http://127.0.0.1:{http}"),
            _dir: dir,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .unwrap(),
            auth: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = s.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(s._dir.path().join("influxd.log")).unwrap();
                panic!("influxd exited ({st}):\n{log}");
            }
            if let Ok(r) = s.http.get(format!("{}/ping", s.url)).send() {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "influxd did not answer /ping in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(pw) = auth {
            // The first user may be created without credentials.
            s.query(&format!(
                "CREATE USER admin WITH PASSWORD '{pw}' WITH ALL PRIVILEGES"
            ));
            s.auth = Some(("admin".into(), pw.into()));
        }
        s
    }

    fn post(&self, path: &str) -> reqwest::blocking::RequestBuilder {
        let rb = self.http.post(format!("{}{path}", self.url));
        match &self.auth {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
    }

    /// Runs an InfluxQL statement; panics on any error. Returns the JSON.
    pub fn query(&self, q: &str) -> serde_json::Value {
        self.query_on("", q)
    }

    /// Runs an InfluxQL statement in database `db`.
    pub fn query_on(&self, db: &str, q: &str) -> serde_json::Value {
        let r = self
            .post("/query")
            .form(&[("q", q), ("epoch", "ns"), ("db", db)])
            .send()
            .unwrap();
        let status = r.status();
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap();
        assert!(status.is_success(), "{q}: {status} {v}");
        for res in v["results"].as_array().unwrap() {
            assert!(res.get("error").is_none(), "{q}: {v}");
        }
        v
    }

    /// The SHA-256 and byte length of a chunked `SELECT` answer, plus its
    /// number of rows: equal answers have equal digests.
    pub fn digest(&self, db: &str, q: &str) -> (String, usize, u64) {
        let mut r = self
            .post("/query")
            .form(&[
                ("q", q),
                ("db", db),
                ("epoch", "ns"),
                ("chunked", "true"),
                ("chunk_size", "10000"),
            ])
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{q}: {}", r.status());
        let mut body = Vec::new();
        std::io::copy(&mut r, &mut body).unwrap();
        let mut rows = 0;
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            assert!(v["results"][0].get("error").is_none(), "{q}: {v}");
            for s in v["results"][0]["series"].as_array().into_iter().flatten() {
                rows += s["values"].as_array().unwrap().len() as u64;
            }
        }
        (hex::encode(Sha256::digest(&body)), body.len(), rows)
    }

    /// Writes line protocol (gzip'd) into `db`.`rp`.
    pub fn write(&self, db: &str, rp: &str, lines: &[u8]) {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(lines).unwrap();
        let body = gz.finish().unwrap();
        let r = self
            .post("/write")
            .query(&[("db", db), ("rp", rp), ("precision", "ns")])
            .header("Content-Encoding", "gzip")
            .body(body)
            .send()
            .unwrap();
        let status = r.status();
        assert!(status.is_success(), "write: {status} {}", r.text().unwrap());
    }

    /// The databases, sorted.
    pub fn databases(&self) -> Vec<String> {
        let v = self.query("SHOW DATABASES");
        let mut out: Vec<String> = v["results"][0]["series"][0]["values"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r[0].as_str().unwrap().to_string())
            .collect();
        out.sort();
        out
    }
}

impl Drop for Influx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
