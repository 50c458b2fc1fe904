//! Test restore: the backup loaded into a throwaway `redis-server` on a
//! free local port, checked, and the server removed.

use std::time::{Duration, Instant};

use respaldo_core::kit::process::find_program;

use crate::endpoint::Endpoint;
use crate::resp::Conn;
use crate::RedisError;

/// A `redis-server` on a free local port in a temporary directory, killed
/// when dropped.
pub(crate) struct Throwaway {
    pub(crate) child: tokio::process::Child,
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) addr: String,
}

impl Throwaway {
    pub(crate) async fn start() -> Result<Throwaway, RedisError> {
        let err = |m: String| RedisError::Throwaway(m);
        let bin = find_program("redis-server")
            .ok_or_else(|| err("`redis-server` not found on PATH".into()))?;
        let dir = tempfile::tempdir().map_err(|e| err(format!("temporary directory: {e}")))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| err(format!("no free port: {e}")))?
            .port();
        let child = tokio::process::Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| err(format!("cannot start redis-server: {e}")))?;
        let mut t = Throwaway {
            child,
            _dir: dir,
            addr: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = t.child.try_wait() {
                return Err(err(format!(
                    "redis-server on port {port} {}",
                    respaldo_core::kit::process::describe_exit(&st)
                )));
            }
            if let Ok(mut c) = Conn::connect(&format!("redis://{}", t.addr), &t.addr, None).await {
                if c.cmd(&["PING"]).await.is_ok() {
                    return Ok(t);
                }
            }
            if Instant::now() > deadline {
                let _ = t.child.start_kill();
                return Err(err(format!("redis-server on port {port} did not start")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn endpoint(&self) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            addr: self.addr.clone(),
            db: None,
            user: None,
            password: None,
            secure: false,
            tls: None,
        }
    }
}
