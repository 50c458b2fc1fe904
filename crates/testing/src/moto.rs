//! A throwaway S3-compatible server (moto's server mode) on a free port, for
//! tests. A missing `moto_server` is a test failure with the install hint.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server, killed on drop.
pub struct Moto {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Moto {
    /// Starts it and waits until it accepts connections.
    pub fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server not found: install it with `pip install 'moto[server]'` (scripts/test.sh does)");
        let moto = Moto { child, port };
        // Ready once it answers an HTTP request (werkzeug accepts connections
        // a little before it serves them).
        let deadline = Instant::now() + Duration::from_secs(60);
        while moto.request("GET", "/").is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto accepts unsigned requests).
    pub fn create_bucket(&self, name: &str) {
        let resp = self
            .request("PUT", &format!("/{name}"))
            .unwrap_or_else(|e| panic!("create bucket {name}: {e}"));
        assert!(resp.starts_with("HTTP/1.1 200"), "create bucket: {resp}");
    }

    /// How many multipart uploads of `bucket` are in progress (started,
    /// neither completed nor aborted).
    pub fn multipart_uploads(&self, bucket: &str) -> usize {
        let resp = self
            .request("GET", &format!("/{bucket}?uploads"))
            .unwrap_or_else(|e| panic!("list uploads of {bucket}: {e}"));
        assert!(resp.starts_with("HTTP/1.1 200"), "list uploads: {resp}");
        resp.matches("<UploadId>").count()
    }

    /// One unsigned request without a body; the whole response.
    fn request(&self, method: &str, path: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        if resp.starts_with("HTTP/1.") {
            Ok(resp)
        } else {
            Err(std::io::Error::other(format!(
                "not an HTTP response: {resp:?}"
            )))
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
