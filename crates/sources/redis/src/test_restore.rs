//! Test restore: the backup loaded into a throwaway `redis-server` on a
//! free local port, checked, and the server removed.

use std::time::{Duration, Instant};

use respaldo_core::kit::process::find_program;
use respaldo_core::kit::scratch::Scratch;
use respaldo_core::source::{RestoreContext, RestoreReport};

use crate::endpoint::Endpoint;
use crate::resp::Conn;
use crate::RedisError;
use crate::RedisSource;

impl RedisSource {
    /// The drill of `ctx`'s snapshot: restored into a throwaway server,
    /// which is stopped and removed whatever happened.
    pub(crate) async fn drill(&self, ctx: &RestoreContext) -> Result<RestoreReport, RedisError> {
        let server = Throwaway::start().await?;
        let scratch = Scratch::named("redis-server", server.addr.clone())
            .reported_as("throwaway redis-server stopped and removed");
        let (mut report, line) = scratch
            .drill(self.restore_into(ctx, &server.endpoint(), false), |_| {
                server.stop()
            })
            .await?;
        report.lines.push(line);
        Ok(report)
    }
}

/// A `redis-server` on a free local port in a temporary directory, killed
/// when dropped.
struct Throwaway {
    child: tokio::process::Child,
    dir: tempfile::TempDir,
    addr: String,
}

impl Throwaway {
    async fn start() -> Result<Throwaway, RedisError> {
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
            dir,
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

    /// Kills the server and removes its folder.
    async fn stop(mut self) -> Result<(), RedisError> {
        self.child.kill().await.map_err(|e| {
            RedisError::Throwaway(format!("stopping redis-server on {}: {e}", self.addr))
        })?;
        self.dir
            .close()
            .map_err(|e| RedisError::Throwaway(format!("removing the server's folder: {e}")))
    }

    fn endpoint(&self) -> Endpoint {
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
