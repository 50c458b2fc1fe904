//! # respaldo-source-redis
//!
//! The `redis` source. **Backup** takes a consistent RDB snapshot of every
//! database and stores it as the stream artifact `dump.rdb`:
//!
//! * `transfer = "file"`: `BGSAVE` (or waiting for the one in progress),
//!   followed through `INFO persistence` until it finished, then the server's
//!   `dir`/`dbfilename` is read from this host;
//! * `transfer = "replication"`: the RDB is streamed over the replication
//!   protocol (`SYNC`, like `redis-cli --rdb`), which works for a remote
//!   server; the server forks its own snapshot for it;
//! * `transfer = "auto"` (default): the file when the server is on this host
//!   and its dump file is readable, otherwise replication.
//!
//! While it is stored, the RDB is walked: its magic, version, structure and
//! trailing CRC-64 are checked and the keys of each database are counted
//! (recorded in the snapshot with the server version).
//!
//! **Restore** (`restore --source cache [--target redis://host:port[/db]]`)
//! replays every key into a running server with pipelined
//! `RESTORE key ttl payload ABSTTL REPLACE`, the `DUMP` payload built from the
//! RDB's own value encoding; function libraries are loaded with
//! `FUNCTION RESTORE`. Without `--force` a server that holds keys is refused
//! untouched; with `--force` (and no `--keys`) it is flushed first. Keys whose
//! expiry has passed are skipped. Afterwards the keys per database are
//! compared with the counts recorded at backup. `--keys 'session:*'` restores
//! only matching keys; `/N` at the end of the target URL only database N.
//!
//! **TLS.** A `rediss://` URL (the source's, or `--target`'s) connects with
//! TLS (rustls, settings from `respaldo_core::kit::tls`): the server's
//! certificate is checked against `tls_ca_file` or the system's roots and
//! the host name (or `tls_server_name`); `tls_cert_file`/`tls_key_file`
//! present a client certificate. Every path works over it: commands,
//! `BGSAVE`, the replication stream and the pipelined restore.
//!
//! **test-restore** starts a throwaway `redis-server` on a free port, restores
//! into it, compares the counts and stops it.
//!
//! ```toml
//! [sources.cache]
//! type = "redis"
//! url = "redis://localhost:6379"          # or rediss://host:6380 for TLS
//! password = { file = "/etc/respaldo/redis.pw" }
//! # tls_ca_file = "/etc/redis/tls/ca.crt"
//! ```
#![deny(missing_docs)]

mod crc64;
mod rdb;
mod resp;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use respaldo_core::error::BoxError;
use respaldo_core::kit::check::compare_counts;
use respaldo_core::kit::process::{find_program, run};
use respaldo_core::kit::secret::Secret;
use respaldo_core::kit::tls::{client_config, server_name, ClientCert, Verify};
use respaldo_core::source::{
    BackupContext, PlanAction, PlanItem, RestoreContext, RestorePlan, RestoreReport, RestoreTarget,
    Source, TargetState,
};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::rdb::{Item, RdbError, RdbReader};
use crate::resp::{info_fields, Conn, RdbLength, Reply, Tls, EOF_MARK_LEN};

/// The artifact name.
const ARTIFACT: &str = "dump.rdb";

/// How the RDB gets from the server to respaldo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transfer {
    /// The dump file when the server runs on this host and the file is
    /// readable, else replication.
    #[default]
    Auto,
    /// `BGSAVE`, then read the server's dump file (`dir`/`dbfilename`).
    File,
    /// Stream the RDB over the replication protocol (`SYNC`).
    Replication,
}

/// Configuration of a `redis` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The server: `redis://[user@]host[:port]`, or `rediss://…` for TLS.
    /// A password must not be written here: use `password`.
    pub url: String,
    /// ACL user name (overrides a user in `url`); default: the default user.
    #[serde(default)]
    pub username: Option<String>,
    /// The password (`requirepass` or the ACL user's), by reference:
    /// `{ env = "REDIS_PASSWORD" }`, `{ file = "…" }`, `{ command = […] }`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// TLS (`rediss://`): the CA certificates (PEM) the server's certificate
    /// must chain to. Default: the system's trusted roots.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// TLS: a client certificate (PEM), for servers that require one
    /// (`tls-auth-clients yes`). Needs `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// TLS: the client certificate's private key (PEM).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// TLS: the name the server's certificate must carry, when it is not
    /// the host in `url` (for example when connecting by IP address to a
    /// certificate issued for a DNS name). Default: the host in `url`.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// TLS: encrypt but **do not check the server's certificate at all**.
    /// Insecure: anyone who can intercept the connection can pose as the
    /// server and read the backup and the password. Only for a test setup.
    #[serde(default)]
    pub tls_insecure_skip_verify: bool,
    /// `auto` (default), `file` or `replication`; see the crate docs.
    #[serde(default)]
    pub transfer: Transfer,
    /// How long to wait for the server's `BGSAVE` or replication snapshot,
    /// in seconds (default 3600).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Keys sent per pipelined batch of `RESTORE` commands (default 1000).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Restore into the configured server by replacing its dump file
    /// (stop, place the RDB atomically, start, check it loaded) instead of
    /// replaying keys. Used by `restore` without `--target` and `--keys`.
    #[serde(default)]
    pub file_restore: Option<FileRestore>,
}

/// How to restore by file into a server this host manages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRestore {
    /// Program and arguments that stop the server, e.g.
    /// `["systemctl", "stop", "redis-server"]` or `["docker", "stop", "redis"]`.
    pub stop: Vec<String>,
    /// Program and arguments that start it again.
    pub start: Vec<String>,
    /// The server's data directory as seen from this host (default: its
    /// `dir`, from `CONFIG GET`; set it for a server in a container).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Seconds to wait for the server to stop, and to start and load the
    /// snapshot (default 300 each).
    #[serde(default = "default_start_timeout")]
    pub timeout: u64,
}

fn default_start_timeout() -> u64 {
    300
}

fn default_timeout() -> u64 {
    3600
}

fn default_batch() -> usize {
    1000
}

/// Errors of the redis source. Messages name the server, never a password.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// Invalid configuration or target.
    #[error("{0}")]
    Config(String),
    /// The server cannot be reached.
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// Why.
        message: String,
    },
    /// The connection failed.
    #[error("connection to {addr} failed: {message}")]
    Io {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// Why.
        message: String,
    },
    /// The server answered something unexpected.
    #[error("{addr}: {message}")]
    Protocol {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// What.
        message: String,
    },
    /// Authentication failed or is needed.
    #[error("authentication to {addr} failed: {message}")]
    Auth {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// The server's answer.
        message: String,
    },
    /// A command failed.
    #[error("{command} on {addr} failed: {message}")]
    Command {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// The command name.
        command: String,
        /// The server's answer.
        message: String,
    },
    /// The server's snapshot failed.
    #[error("BGSAVE on {addr} failed: {message}")]
    Bgsave {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// What the server reported.
        message: String,
    },
    /// The target holds keys and `--force` was not given.
    #[error("{addr} is not empty ({summary}); nothing was changed (use --force to flush it and restore)")]
    NotEmpty {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// Keys per db.
        summary: String,
    },
    /// The RDB is invalid.
    #[error("RDB from {addr}: {source}")]
    Rdb {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// What is wrong.
        #[source]
        source: RdbError,
    },
    /// A key could not be restored.
    #[error("restoring key `{key}` (db {db}) into {addr} failed: {message}")]
    Restore {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// db
        db: u64,
        /// The key.
        key: String,
        /// The server's answer.
        message: String,
    },
    /// Counts after the restore differ from the backup's.
    #[error("{addr}: {line}")]
    Counts {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// The comparison.
        line: String,
    },
    /// A file-mode restore step failed.
    #[error("file restore into {addr}: {message}")]
    FileRestore {
        /// `redis://host:port` or `rediss://host:port`
        addr: String,
        /// What failed.
        message: String,
    },
    /// A throwaway server for test-restore could not be run.
    #[error("test-restore server: {0}")]
    Throwaway(String),
    /// Storing or reading the repository failed.
    #[error(transparent)]
    Core(#[from] respaldo_core::Error),
}

/// Where to connect, with credentials.
#[derive(Clone)]
struct Endpoint {
    host: String,
    addr: String,
    db: Option<u64>,
    user: Option<String>,
    password: Option<String>,
    /// `rediss://`: TLS.
    secure: bool,
    /// The TLS settings, set for a `rediss://` endpoint before connecting.
    tls: Option<Tls>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Parses `redis[s]://[user[:password]@]host[:port][/db]`.
fn parse_url(url: &str) -> Result<Endpoint, RedisError> {
    let bad = |m: &str| RedisError::Config(format!("bad redis URL: {m}"));
    let (secure, rest) = match url.strip_prefix("rediss://") {
        Some(rest) => (true, rest),
        None => (
            false,
            url.strip_prefix("redis://")
                .ok_or_else(|| bad("it must start with redis:// or rediss:// (TLS)"))?,
        ),
    };
    let (auth, hostpart) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let (hostport, db) = match hostpart.split_once('/') {
        Some((h, "")) => (h, None),
        Some((h, d)) => (
            h,
            Some(
                d.parse::<u64>()
                    .map_err(|_| bad("the path must be a database number"))?,
            ),
        ),
        None => (hostpart, None),
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, p) = h.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        (h.to_string(), p.strip_prefix(':').unwrap_or(""))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (hostport.to_string(), ""),
        }
    };
    let host = if host.is_empty() {
        "localhost".to_string()
    } else {
        host
    };
    let port: u16 = if port.is_empty() {
        6379
    } else {
        port.parse().map_err(|_| bad("bad port"))?
    };
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let (user, password) = match auth {
        None => (None, None),
        Some(a) => match a.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| unescape(u)), Some(unescape(p))),
            None => ((!a.is_empty()).then(|| unescape(a)), None),
        },
    };
    Ok(Endpoint {
        host,
        addr,
        db,
        user,
        password,
        secure,
        tls: None,
    })
}

/// Percent-decoding of URL user names and passwords (`%40` is `@`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Endpoint {
    /// `redis://host:port` or `rediss://host:port`, for messages.
    fn name(&self) -> String {
        let scheme = if self.secure { "rediss" } else { "redis" };
        format!("{scheme}://{}", self.addr)
    }

    /// Connects (with TLS for `rediss://`) and authenticates.
    async fn connect(&self) -> Result<Conn, RedisError> {
        let mut c = Conn::connect(&self.name(), &self.addr, self.tls.as_ref()).await?;
        let auth_err = |e: RedisError| match e {
            RedisError::Command { addr, message, .. } => RedisError::Auth { addr, message },
            e => e,
        };
        match (&self.user, &self.password) {
            (Some(u), Some(p)) => {
                c.cmd(&["AUTH", u, p]).await.map_err(auth_err)?;
            }
            (None, Some(p)) => {
                c.cmd(&["AUTH", p]).await.map_err(auth_err)?;
            }
            _ => {
                c.cmd(&["PING"]).await.map_err(auth_err)?;
            }
        }
        Ok(c)
    }

    fn is_local(&self) -> bool {
        matches!(self.host.as_str(), "localhost" | "127.0.0.1" | "::1")
    }
}

/// The `redis` source.
#[derive(Debug)]
pub struct RedisSource {
    config: RedisConfig,
    endpoint: Endpoint,
}

impl RedisSource {
    /// Builds the source; `base` is the configuration file's folder.
    pub fn new(mut config: RedisConfig, base: &std::path::Path) -> Result<Self, RedisError> {
        let endpoint = parse_url(&config.url)?;
        if endpoint.password.is_some() {
            return Err(RedisError::Config(
                "`url` must not contain a password; use `password = { env = \"…\" }`".into(),
            ));
        }
        if endpoint.db.is_some() {
            return Err(RedisError::Config(
                "`url` must not name a database: every database is backed up".into(),
            ));
        }
        if config.batch == 0 {
            return Err(RedisError::Config("`batch` must be at least 1".into()));
        }
        let tls_keys = config.tls_ca_file.is_some()
            || config.tls_cert_file.is_some()
            || config.tls_key_file.is_some()
            || config.tls_server_name.is_some()
            || config.tls_insecure_skip_verify;
        if tls_keys && !endpoint.secure {
            return Err(RedisError::Config(
                "`tls_*` settings need a TLS URL: `rediss://…`".into(),
            ));
        }
        if config.tls_cert_file.is_some() != config.tls_key_file.is_some() {
            return Err(RedisError::Config(
                "`tls_cert_file` and `tls_key_file` go together".into(),
            ));
        }
        if config.tls_insecure_skip_verify && config.tls_ca_file.is_some() {
            return Err(RedisError::Config(
                "`tls_insecure_skip_verify` checks no certificate: drop `tls_ca_file` or it".into(),
            ));
        }
        for p in [
            &mut config.tls_ca_file,
            &mut config.tls_cert_file,
            &mut config.tls_key_file,
        ]
        .into_iter()
        .flatten()
        {
            *p = base.join(&*p);
        }
        if let Some(p) = config.password.as_mut() {
            p.rebase(base);
        }
        if let Some(f) = config.file_restore.as_mut() {
            if f.stop.first().is_none_or(|p| p.is_empty())
                || f.start.first().is_none_or(|p| p.is_empty())
            {
                return Err(RedisError::Config(
                    "`file_restore.stop` and `file_restore.start` must name a program".into(),
                ));
            }
            if let Some(d) = f.dir.as_mut() {
                *d = base.join(&*d);
            }
        }
        let mut source = RedisSource { config, endpoint };
        // Built now, so a missing or unreadable certificate file is a
        // configuration error.
        source.endpoint = source.secured(source.endpoint.clone())?;
        Ok(source)
    }

    /// The configured server with its credentials resolved.
    /// `ep` with its TLS settings when it is a `rediss://` endpoint.
    fn secured(&self, mut ep: Endpoint) -> Result<Endpoint, RedisError> {
        if !ep.secure {
            return Ok(ep);
        }
        let c = &self.config;
        let verify = if c.tls_insecure_skip_verify {
            Verify::Nothing
        } else {
            Verify::Full {
                ca_file: c.tls_ca_file.clone(),
            }
        };
        let client = match (&c.tls_cert_file, &c.tls_key_file) {
            (Some(cert_file), Some(key_file)) => Some(ClientCert {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            }),
            _ => None,
        };
        let tls_err = |e: respaldo_core::kit::tls::TlsError| {
            RedisError::Config(format!("TLS for {}: {e}", ep.name()))
        };
        let config = client_config(&verify, client.as_ref()).map_err(tls_err)?;
        let name =
            server_name(c.tls_server_name.as_deref().unwrap_or(&ep.host)).map_err(tls_err)?;
        ep.tls = Some(Tls {
            config: std::sync::Arc::new(config),
            name,
        });
        Ok(ep)
    }

    async fn live(&self) -> Result<Endpoint, RedisError> {
        let mut e = self.endpoint.clone();
        if let Some(u) = &self.config.username {
            e.user = Some(u.clone());
        }
        if let Some(p) = &self.config.password {
            let v = p
                .resolve()
                .await
                .map_err(|m| RedisError::Config(format!("password: {m}")))?;
            e.password = Some(v.expose().to_string());
        }
        Ok(e)
    }

    /// `BGSAVE` (or the one in progress), followed until it finished.
    async fn bgsave(&self, c: &mut Conn) -> Result<(), RedisError> {
        let deadline = Instant::now() + Duration::from_secs(self.config.timeout);
        let failed = |c: &Conn| {
            RedisError::Bgsave {
            addr: c.addr.clone(),
            message: "the server reports rdb_last_bgsave_status:err (is its `dir` writable, is the disk full? its log has the reason)".into(),
        }
        };
        let mut wait = Duration::from_millis(5);
        // `started`: our BGSAVE forked (it runs from its reply on).
        let mut started = false;
        loop {
            let p = info_fields(&c.text(&["INFO", "persistence"]).await?);
            let busy = p.get("rdb_bgsave_in_progress").map(String::as_str) == Some("1");
            let ok = p.get("rdb_last_bgsave_status").map(String::as_str) == Some("ok");
            if started && !busy {
                return if ok { Ok(()) } else { Err(failed(c)) };
            }
            if !started && !busy {
                // A save that was running (another backup's, or a replica's,
                // possibly diskless) was waited for; an AOF rewrite is waited
                // for too (BGSAVE is retried); then ours starts.
                match c.cmd(&["BGSAVE"]).await {
                    Ok(_) => {
                        started = true;
                        continue;
                    }
                    Err(RedisError::Command { message, .. })
                        if message.contains("in progress") || message.contains("child process") => {
                    }
                    Err(RedisError::Command { addr, message, .. }) => {
                        return Err(RedisError::Bgsave { addr, message })
                    }
                    Err(e) => return Err(e),
                }
            }
            if Instant::now() > deadline {
                return Err(RedisError::Bgsave {
                    addr: c.addr.clone(),
                    message: format!("not finished after {} s", self.config.timeout),
                });
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(20));
        }
    }

    /// The server's dump file, opened, when it is on this host, readable,
    /// and written when the server's last save finished (so a file of
    /// another server at the same path, e.g. one in a container, is not
    /// taken for it).
    async fn local_dump(c: &mut Conn) -> Option<(PathBuf, std::fs::File)> {
        let dir = config_get(c, "dir").await.ok()??;
        let name = config_get(c, "dbfilename").await.ok()??;
        let last = lastsave(c).await.ok()?;
        let p = PathBuf::from(dir).join(name);
        let f = std::fs::File::open(&p).ok()?;
        let mtime = f
            .metadata()
            .and_then(|m| m.modified())
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs() as i64;
        ((mtime - last).abs() <= 2).then_some((p, f))
    }

    /// Stores `reader` as the artifact while walking it (structure,
    /// checksum, keys per db). Returns the keys per db and the RDB version.
    async fn store(
        &self,
        ctx: &mut BackupContext,
        addr: &str,
        mut reader: impl AsyncRead + Unpin + Send,
    ) -> Result<(BTreeMap<String, u64>, u16), RedisError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let (ptx, prx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let parser = tokio::spawn(async move {
            let mut r = RdbReader::new(channel_reader(prx), false).await?;
            let mut keys = BTreeMap::new();
            while let Some(item) = r.next().await? {
                if let Item::Key { db, .. } = item {
                    *keys.entry(format!("db{db}")).or_insert(0u64) += 1;
                }
            }
            Ok::<_, RdbError>((keys, r.version))
        });
        let pump = async move {
            loop {
                let mut buf = bytes::BytesMut::with_capacity(1 << 20);
                match reader.read_buf(&mut buf).await {
                    Ok(0) => return,
                    Ok(_) => {
                        let b = buf.freeze();
                        if ptx.send(Ok(b.clone())).await.is_err() {
                            let _ = tx
                                .send(Err(std::io::Error::other("the RDB is invalid")))
                                .await;
                            return;
                        }
                        if tx.send(Ok(b)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(std::io::Error::new(e.kind(), e.to_string())))
                            .await;
                        let _ = ptx.send(Err(e)).await;
                        return;
                    }
                }
            }
        };
        let (stored, ()) = tokio::join!(ctx.add_stream(ARTIFACT, channel_reader(rx)), pump);
        let parsed = parser.await.map_err(|e| RedisError::Io {
            addr: addr.to_string(),
            message: format!("RDB check task failed: {e}"),
        })?;
        let parsed = parsed.map_err(|source| RedisError::Rdb {
            addr: addr.to_string(),
            source,
        });
        match (stored, parsed) {
            (
                Err(e),
                Err(RedisError::Rdb {
                    source: RdbError::Io(_),
                    ..
                }),
            ) => Err(e.into()),
            (_, Err(e)) => Err(e),
            (Err(e), _) => Err(e.into()),
            (Ok(_), Ok(v)) => Ok(v),
        }
    }

    /// Restores the artifact into `ep`.
    async fn restore_into(
        &self,
        ctx: &RestoreContext,
        ep: &Endpoint,
        force: bool,
    ) -> Result<RestoreReport, RedisError> {
        let addr = ep.name();
        let artifact = ctx.artifact(ARTIFACT)?.clone();
        let patterns = key_patterns(&ctx.selection.keys)?;
        let partial = !ctx.selection.keys.is_empty() || ep.db.is_some();
        let mut c = ep.connect().await?;
        let mut lines = Vec::new();

        // What the restore replaces: the whole server, one db, or the keys
        // that match the selection.
        let live = scope_keys(&mut c, ep, &ctx.selection.keys, &patterns).await?;
        let existing = live.count;
        if existing > 0 {
            if !force {
                return Err(RedisError::NotEmpty {
                    addr,
                    summary: live.summary.clone(),
                });
            }
            if ctx.selection.keys.is_empty() {
                match ep.db {
                    None => {
                        c.cmd(&["FLUSHALL"]).await?;
                        lines.push(format!("flushed {addr} ({existing} keys) before restoring"));
                    }
                    Some(db) => {
                        c.cmd(&["SELECT", &db.to_string()]).await?;
                        c.cmd(&["FLUSHDB"]).await?;
                        lines.push(format!(
                            "flushed db{db} of {addr} ({existing} keys) before restoring"
                        ));
                    }
                }
            }
        }
        let mut restored_keys: std::collections::HashSet<(u64, Vec<u8>)> = Default::default();

        let mut r = RdbReader::new(ctx.open_stream(&artifact), true)
            .await
            .map_err(|source| RedisError::Rdb {
                addr: addr.clone(),
                source,
            })?;
        let rdb = |source| RedisError::Rdb {
            addr: addr.clone(),
            source,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut batch = Batch::default();
        let mut selected: BTreeMap<String, u64> = BTreeMap::new();
        let mut expired: BTreeMap<String, u64> = BTreeMap::new();
        let mut functions = 0u64;
        let mut module_aux = 0u64;
        let started = Instant::now();
        while let Some(item) = r.next().await.map_err(rdb)? {
            match item {
                Item::Key {
                    db,
                    key,
                    expire_ms,
                    value,
                } => {
                    if ep.db.is_some_and(|d| d != db) {
                        continue;
                    }
                    if !ctx.selection.keys.is_empty() && !patterns.is_match(key_path(&key)) {
                        continue;
                    }
                    *selected.entry(format!("db{db}")).or_insert(0) += 1;
                    if expire_ms.is_some_and(|t| t <= now) {
                        *expired.entry(format!("db{db}")).or_insert(0) += 1;
                        continue;
                    }
                    let payload = r.payload(value);
                    if !ctx.selection.keys.is_empty() {
                        restored_keys.insert((db, key.clone()));
                    }
                    batch.add(&mut c, db, key, expire_ms, &payload).await?;
                    if batch.keys.len() >= self.config.batch || batch.bytes >= 16 << 20 {
                        batch.send(&mut c, r.version).await?;
                    }
                }
                // Functions are server-wide: a partial restore leaves them.
                Item::Function(_) if partial => {}
                Item::Function(f) => {
                    batch.drain(&mut c, r.version).await?;
                    let payload = r.payload(f);
                    let mut args: Vec<&[u8]> = vec![b"FUNCTION", b"RESTORE", &payload];
                    if force {
                        args.push(b"REPLACE");
                    }
                    c.send(&args).await?;
                    c.flush().await?;
                    if let Reply::Error(e) = c.read().await? {
                        return Err(RedisError::Command {
                            addr: addr.clone(),
                            command: "FUNCTION RESTORE".into(),
                            message: e,
                        });
                    }
                    functions += 1;
                }
                Item::ModuleAux => module_aux += 1,
            }
        }
        batch.drain(&mut c, r.version).await?;
        if partial && selected.values().sum::<u64>() == 0 {
            return Err(RedisError::Config(format!(
                "the selection ({}) matches no key of the backup; nothing was restored",
                match (ep.db, ctx.selection.keys.is_empty()) {
                    (Some(db), true) => format!("db {db}"),
                    _ => ctx.selection.keys.join(", "),
                }
            )));
        }
        // With --keys and --force, the matching keys become exactly the
        // backup's: those it does not have go.
        if force && !ctx.selection.keys.is_empty() {
            let mut removed = 0u64;
            for (db, key) in &live.keys {
                if restored_keys.contains(&(*db, key.clone())) {
                    continue;
                }
                c.cmd(&["SELECT", &db.to_string()]).await?;
                c.send(&[b"UNLINK", key]).await?;
                c.flush().await?;
                c.read().await?;
                removed += 1;
            }
            if removed > 0 {
                lines.push(format!(
                    "removed {removed} matching keys the backup does not have"
                ));
            }
        }
        let secs = started.elapsed().as_secs_f64().max(0.001);
        lines.push(format!(
            "restored {} keys into {addr} in {secs:.1} s ({:.0} keys/s)",
            batch.restored,
            batch.restored as f64 / secs
        ));
        let n_expired: u64 = expired.values().sum();
        if n_expired > 0 {
            lines.push(format!(
                "{n_expired} keys had expired since the backup and were not restored"
            ));
        }
        if functions > 0 {
            lines.push(format!("restored {functions} function libraries"));
        }
        if module_aux > 0 {
            lines.push(format!(
                "skipped {module_aux} module auxiliary records (module data is not restored)"
            ));
        }

        // Counts: the whole backup against the server, or (partial) what was
        // selected against what the server accepted.
        let (recorded, mut restored, strict) = if partial {
            (selected, batch.per_db.clone(), existing == 0)
        } else {
            let recorded: BTreeMap<String, u64> = ctx
                .entry
                .metadata
                .get("keys")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            (recorded, keyspace(&mut c).await?, true)
        };
        for (db, n) in &expired {
            *restored.entry(db.clone()).or_insert(0) += n;
        }
        let check = compare_counts(&recorded, &restored, |_| true, strict);
        let line = check.line("key", "databases");
        if !check.ok() {
            return Err(RedisError::Counts { addr, line });
        }
        lines.push(if n_expired > 0 {
            format!("{line}, expired keys counted as restored")
        } else {
            line
        });
        Ok(RestoreReport { lines })
    }
}

impl RedisSource {
    /// File mode: stop the server, place the RDB atomically, start it,
    /// wait until it loaded, compare the counts.
    async fn restore_file(
        &self,
        ctx: &RestoreContext,
        ep: &Endpoint,
        f: &FileRestore,
    ) -> Result<RestoreReport, RedisError> {
        use tokio::io::AsyncWriteExt;
        let addr = ep.name();
        let fail = |message: String| RedisError::FileRestore {
            addr: addr.clone(),
            message,
        };
        let artifact = ctx.artifact(ARTIFACT)?.clone();
        let mut c = ep.connect().await?;
        let before = keyspace(&mut c).await?;
        if before.values().sum::<u64>() > 0 && !ctx.force {
            return Err(RedisError::NotEmpty {
                addr,
                summary: summary(&before),
            });
        }
        if config_get(&mut c, "appendonly").await?.as_deref() == Some("yes") {
            return Err(fail(
                "the server runs with `appendonly yes`: its AOF would be loaded instead of the restored RDB; nothing was changed (turn appendonly off for the restore, or restore live with --target)".into(),
            ));
        }
        let name = config_get(&mut c, "dbfilename")
            .await?
            .ok_or_else(|| fail("CONFIG GET dbfilename gave nothing".into()))?;
        let dir = match &f.dir {
            Some(d) => d.clone(),
            None => PathBuf::from(
                config_get(&mut c, "dir")
                    .await?
                    .ok_or_else(|| fail("CONFIG GET dir gave nothing".into()))?,
            ),
        };
        drop(c);
        let dest = dir.join(&name);
        let tmp = dir.join(format!(".{name}.respaldo-{}", std::process::id()));
        let written = async {
            let mut out = tokio::fs::File::create(&tmp).await?;
            tokio::io::copy(&mut ctx.open_stream(&artifact), &mut out).await?;
            out.flush().await?;
            out.sync_all().await?;
            let owner = std::fs::metadata(&dest).or_else(|_| std::fs::metadata(&dir))?;
            use std::os::unix::fs::MetadataExt;
            std::os::unix::fs::chown(&tmp, Some(owner.uid()), Some(owner.gid()))?;
            Ok::<_, std::io::Error>(())
        }
        .await;
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail(format!("writing {}: {e}", tmp.display())));
        }
        let mut lines = Vec::new();
        if let Err(e) = run(&f.stop).await {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail(format!("stop command: {e}; nothing was changed")));
        }
        let deadline = Instant::now() + Duration::from_secs(f.timeout);
        // A TCP connection is enough to tell the server still listens.
        while Conn::connect(&ep.name(), &ep.addr, None).await.is_ok() {
            if Instant::now() > deadline {
                let _ = std::fs::remove_file(&tmp);
                return Err(fail(format!(
                    "the server still answers {} s after the stop command",
                    f.timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let placed = std::fs::rename(&tmp, &dest)
            .and_then(|()| std::fs::File::open(&dir).and_then(|d| d.sync_all()));
        let started = run(&f.start).await;
        placed.map_err(|e| fail(format!("placing {}: {e}", dest.display())))?;
        started.map_err(|e| fail(format!("start command: {e}")))?;
        lines.push(format!(
            "placed the snapshot as {} and restarted the server",
            dest.display()
        ));
        // Wait until it answers and has loaded the file.
        let deadline = Instant::now() + Duration::from_secs(f.timeout);
        let mut c = loop {
            let up = match ep.connect().await {
                Ok(mut c) => match c.text(&["INFO", "persistence"]).await {
                    Ok(i) if info_fields(&i).get("loading").map(String::as_str) == Some("0") => {
                        Some(c)
                    }
                    _ => None,
                },
                Err(_) => None,
            };
            if let Some(c) = up {
                break c;
            }
            if Instant::now() > deadline {
                return Err(fail(format!(
                    "the server did not come back within {} s",
                    f.timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let recorded: BTreeMap<String, u64> = ctx
            .entry
            .metadata
            .get("keys")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let check = compare_counts(&recorded, &keyspace(&mut c).await?, |_| true, true);
        let line = check.line("key", "databases");
        if !check.ok() {
            return Err(RedisError::Counts { addr, line });
        }
        lines.push(line);
        Ok(RestoreReport { lines })
    }
}

/// `CONFIG GET name`: its value, if the server has it.
async fn config_get(c: &mut Conn, name: &str) -> Result<Option<String>, RedisError> {
    Ok(match c.cmd(&["CONFIG", "GET", name]).await? {
        Reply::Array(Some(v)) => v.get(1).and_then(Reply::text),
        _ => None,
    })
}

/// `LASTSAVE`: when the last successful save finished.
async fn lastsave(c: &mut Conn) -> Result<i64, RedisError> {
    match c.cmd(&["LASTSAVE"]).await? {
        Reply::Int(t) => Ok(t),
        r => Err(RedisError::Protocol {
            addr: c.addr.clone(),
            message: format!("unexpected LASTSAVE reply {r:?}"),
        }),
    }
}

/// The live keys a restore would replace.
struct Scope {
    count: u64,
    summary: String,
    /// With `--keys`: the matching keys (db, name).
    keys: Vec<(u64, Vec<u8>)>,
}

/// The keys of `ep` that a restore with these `--keys` patterns replaces:
/// every key of the server, of its db (`/N`), or those matching.
async fn scope_keys(
    c: &mut Conn,
    ep: &Endpoint,
    selection: &[String],
    patterns: &globset::GlobSet,
) -> Result<Scope, RedisError> {
    let space = keyspace(c).await?;
    let dbs: Vec<u64> = space
        .iter()
        .filter(|(_, n)| **n > 0)
        .filter_map(|(k, _)| k.strip_prefix("db").and_then(|n| n.parse().ok()))
        .filter(|db| ep.db.is_none_or(|d| d == *db))
        .collect();
    if selection.is_empty() {
        let per: BTreeMap<String, u64> = space
            .into_iter()
            .filter(|(k, _)| dbs.iter().any(|d| *k == format!("db{d}")))
            .collect();
        return Ok(Scope {
            count: per.values().sum(),
            summary: summary(&per),
            keys: Vec::new(),
        });
    }
    let mut keys = Vec::new();
    for db in dbs {
        c.cmd(&["SELECT", &db.to_string()]).await?;
        let mut cursor = "0".to_string();
        loop {
            let reply = c.cmd(&["SCAN", &cursor, "COUNT", "1000"]).await?;
            let Reply::Array(Some(mut parts)) = reply else {
                return Err(RedisError::Config(format!("SCAN answered {reply:?}")));
            };
            let batch = parts.pop();
            cursor = match parts.pop() {
                Some(Reply::Bulk(Some(b))) => String::from_utf8_lossy(&b).into_owned(),
                other => return Err(RedisError::Config(format!("SCAN cursor {other:?}"))),
            };
            if let Some(Reply::Array(Some(items))) = batch {
                for it in items {
                    if let Reply::Bulk(Some(k)) = it {
                        if patterns.is_match(key_path(&k)) {
                            keys.push((db, k));
                        }
                    }
                }
            }
            if cursor == "0" {
                break;
            }
        }
    }
    Ok(Scope {
        count: keys.len() as u64,
        summary: format!("{} keys match {}", keys.len(), selection.join(", ")),
        keys,
    })
}

/// Keys per db from `INFO keyspace`.
async fn keyspace(c: &mut Conn) -> Result<BTreeMap<String, u64>, RedisError> {
    let info = c.text(&["INFO", "keyspace"]).await?;
    Ok(info_fields(&info)
        .into_iter()
        .filter(|(k, _)| k.starts_with("db"))
        .map(|(k, v)| {
            let n = v
                .split(',')
                .find_map(|f| f.strip_prefix("keys="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            (k, n)
        })
        .collect())
}

/// How many function libraries the server holds (0 before Redis 7).
async fn function_libraries(c: &mut Conn) -> Result<u64, RedisError> {
    match c.cmd(&["FUNCTION", "LIST"]).await? {
        Reply::Array(Some(libs)) => Ok(libs.len() as u64),
        _ => Ok(0),
    }
}

/// The `--keys` globs.
fn key_patterns(keys: &[String]) -> Result<globset::GlobSet, RedisError> {
    let mut b = globset::GlobSetBuilder::new();
    for p in keys {
        let g = globset::GlobBuilder::new(p)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| RedisError::Config(format!("--keys `{p}`: {e}")))?;
        b.add(g);
    }
    b.build()
        .map_err(|e| RedisError::Config(format!("--keys: {e}")))
}

fn summary(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .filter(|(_, n)| **n > 0)
        .map(|(db, n)| format!("{db}: {n} keys"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn key_path(key: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(key))
}

/// An `AsyncRead` over a channel of byte chunks.
fn channel_reader(
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl AsyncRead + Send + Unpin + 'static {
    let s = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    tokio_util::io::StreamReader::new(Box::pin(s))
}

/// Pipelined batches of `RESTORE` commands: one is being queued while the
/// replies of the previous one are read, so the server is never idle
/// waiting for the next batch.
#[derive(Default)]
struct Batch {
    db: Option<u64>,
    /// (db, key) of each queued RESTORE, None for a SELECT.
    keys: Vec<Option<(u64, Vec<u8>)>>,
    /// The same for the batch sent whose replies are not read yet.
    inflight: Vec<Option<(u64, Vec<u8>)>>,
    bytes: usize,
    restored: u64,
    per_db: BTreeMap<String, u64>,
}

impl Batch {
    async fn add(
        &mut self,
        c: &mut Conn,
        db: u64,
        key: Vec<u8>,
        expire_ms: Option<i64>,
        payload: &[u8],
    ) -> Result<(), RedisError> {
        if self.db != Some(db) {
            c.send(&[b"SELECT", db.to_string().as_bytes()]).await?;
            self.keys.push(None);
            self.db = Some(db);
        }
        let ttl = expire_ms.unwrap_or(0).to_string();
        c.send(&[
            b"RESTORE",
            &key,
            ttl.as_bytes(),
            payload,
            b"ABSTTL",
            b"REPLACE",
        ])
        .await?;
        self.bytes += payload.len() + key.len();
        self.keys.push(Some((db, key)));
        Ok(())
    }

    /// Sends the queued batch, then reads the replies of the previous one.
    async fn send(&mut self, c: &mut Conn, version: u16) -> Result<(), RedisError> {
        c.flush().await?;
        let previous = std::mem::replace(&mut self.inflight, std::mem::take(&mut self.keys));
        self.bytes = 0;
        self.replies(c, previous, version).await
    }

    /// Sends everything and reads every reply.
    async fn drain(&mut self, c: &mut Conn, version: u16) -> Result<(), RedisError> {
        self.send(c, version).await?;
        let last = std::mem::take(&mut self.inflight);
        self.replies(c, last, version).await
    }

    async fn replies(
        &mut self,
        c: &mut Conn,
        keys: Vec<Option<(u64, Vec<u8>)>>,
        version: u16,
    ) -> Result<(), RedisError> {
        let mut first_err = None;
        for k in keys {
            let reply = c.read().await?;
            match (reply, k) {
                (Reply::Error(e), Some((db, key))) => {
                    if first_err.is_none() {
                        let hint = if e.contains("payload version") {
                            format!(" (the snapshot's RDB version {version} may be newer than this server supports)")
                        } else {
                            String::new()
                        };
                        first_err = Some(RedisError::Restore {
                            addr: c.addr.clone(),
                            db,
                            key: String::from_utf8_lossy(&key).into_owned(),
                            message: format!("{e}{hint}"),
                        });
                    }
                }
                (Reply::Error(e), None) => {
                    first_err.get_or_insert(RedisError::Command {
                        addr: c.addr.clone(),
                        command: "SELECT".into(),
                        message: e,
                    });
                }
                (_, Some((db, _))) => {
                    self.restored += 1;
                    *self.per_db.entry(format!("db{db}")).or_insert(0) += 1;
                }
                (_, None) => {}
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A `redis-server` on a free local port in a temporary directory, killed
/// when dropped.
struct Throwaway {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
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

/// The driver's registry entry: what the application's one list of
/// drivers holds. It builds a source from the `[sources.NAME]` table (as
/// JSON, `type` taken out), naming the key of any error:
///
/// ```
/// use respaldo_core::registry::BuildContext;
/// let ctx = BuildContext { base: std::path::Path::new("/srv/app"), local_repository: None };
/// let table = serde_json::json!({"url": "redis://localhost:6379", "timeout": 30});
/// let source = (respaldo_source_redis::DRIVER.build)(table, &ctx).unwrap();
/// assert_eq!(source.kind(), "redis");
///
/// let bad = serde_json::json!({"no_such_key": 1});
/// let err = (respaldo_source_redis::DRIVER.build)(bad, &ctx).err().unwrap();
/// assert!(err.to_string().contains("no_such_key"), "{err}");
/// ```
pub const DRIVER: respaldo_core::registry::Driver = respaldo_core::registry::Driver {
    kind: "redis",
    build: |value, cx| respaldo_core::registry::build_with(value, |c| RedisSource::new(c, cx.base)),
    example: "type = \"redis\"\nurl = \"redis://localhost:6379\"\n",
};

#[async_trait]
impl Source for RedisSource {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn check(&self) -> Result<(), BoxError> {
        let ep = self.live().await?;
        ep.connect().await?;
        Ok(())
    }

    async fn backup(&self, ctx: &mut BackupContext) -> Result<(), BoxError> {
        let ep = self.live().await?;
        let mut c = ep.connect().await?;
        let server = info_fields(&c.text(&["INFO", "server"]).await?);
        let version = server.get("redis_version").cloned().unwrap_or_default();

        let file = match self.config.transfer {
            Transfer::Replication => None,
            Transfer::Auto if !ep.is_local() => None,
            t => {
                self.bgsave(&mut c).await?;
                match Self::local_dump(&mut c).await {
                    Some(p) => Some(p),
                    None if t == Transfer::File => {
                        return Err(RedisError::Config(format!(
                            "transfer = \"file\": the dump file of {} is not readable on this host (or is not the one its last BGSAVE wrote)",
                            ep.name()
                        ))
                        .into())
                    }
                    None => None,
                }
            }
        };
        let (keys, rdb_version, how) = match file {
            Some((p, f)) => {
                let (k, v) = self
                    .store(ctx, &ep.name(), tokio::fs::File::from_std(f))
                    .await?;
                (k, v, format!("file {}", p.display()))
            }
            None => {
                let mut s = ep.connect().await?;
                // Streamed while the server produces it (diskless) when the
                // server is set up for it, like `redis-cli --rdb`; Redis ≥ 7:
                // a snapshot only, no command stream afterwards.
                let _ = s.cmd(&["REPLCONF", "capa", "eof"]).await;
                let _ = s.cmd(&["REPLCONF", "rdb-only", "1"]).await;
                s.send(&[b"SYNC"]).await?;
                s.flush().await?;
                let len =
                    tokio::time::timeout(Duration::from_secs(self.config.timeout), s.rdb_header())
                        .await
                        .map_err(|_| RedisError::Bgsave {
                            addr: ep.name(),
                            message: format!("no snapshot after {} s", self.config.timeout),
                        })??;
                let addr = ep.name();
                match len {
                    RdbLength::Exact(len) => {
                        let body = ExactLen {
                            inner: (&mut s.r).take(len),
                            left: len,
                        };
                        let (k, v) = self.store(ctx, &addr, body).await?;
                        (k, v, "replication (SYNC)".to_string())
                    }
                    RdbLength::UntilMark(mark) => {
                        let body = UntilMark::new(&mut s.r, mark);
                        let (k, v) = self.store(ctx, &addr, body).await?;
                        (k, v, "replication (SYNC, diskless)".to_string())
                    }
                }
            }
        };
        ctx.set_metadata("redis_version", version);
        ctx.set_metadata("rdb_version", rdb_version);
        ctx.set_metadata("transfer", how);
        ctx.set_metadata("keys_total", keys.values().sum::<u64>());
        ctx.set_metadata(
            "keys",
            serde_json::to_value(&keys).unwrap_or(serde_json::Value::Null),
        );
        Ok(())
    }

    async fn plan(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestorePlan, BoxError> {
        ctx.refuse_selection("redis", &["--keys"])?;
        let ep = match target {
            RestoreTarget::Live => self.live().await?,
            RestoreTarget::Other(url) => self.secured(parse_url(url)?)?,
        };
        let what = match ep.db {
            Some(db) => format!("keys of db{db}"),
            None if ctx.selection.keys.is_empty() => "every key".to_string(),
            None => format!("keys matching {}", ctx.selection.keys.join(", ")),
        };
        if let Some(db) = ep.db {
            let recorded: BTreeMap<String, u64> = ctx
                .entry
                .metadata
                .get("keys")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            if recorded.get(&format!("db{db}")).copied().unwrap_or(0) == 0 {
                let item = PlanItem::new(
                    what,
                    ep.name(),
                    TargetState::Absent,
                    PlanAction::Refuse(format!(
                        "the backup holds no keys in db{db} (it has {}); name a db it holds",
                        summary(&recorded)
                    )),
                );
                return Ok(RestorePlan { items: vec![item] });
            }
        }
        let mut c = match ep.connect().await {
            Ok(c) => c,
            Err(e) => {
                let item = PlanItem::new(
                    what,
                    ep.name(),
                    TargetState::Absent,
                    PlanAction::Refuse(format!(
                        "the server is not reachable ({e}); start it (an empty one will do), then restore"
                    )),
                );
                return Ok(RestorePlan { items: vec![item] });
            }
        };
        let patterns = key_patterns(&ctx.selection.keys)?;
        let live = scope_keys(&mut c, &ep, &ctx.selection.keys, &patterns).await?;
        let partial = !ctx.selection.keys.is_empty() || ep.db.is_some();
        // A whole-server restore brings the function libraries back too:
        // those the server has are data as well.
        let libraries = if partial {
            0
        } else {
            function_libraries(&mut c).await?
        };
        let state = match (live.count, libraries) {
            (0, 0) => TargetState::Empty,
            (0, n) => TargetState::Holds(format!("{n} function libraries")),
            (_, 0) => TargetState::Holds(live.summary),
            (_, n) => TargetState::Holds(format!("{}, {n} function libraries", live.summary)),
        };
        let mut item = PlanItem::decide(what, ep.name(), state, ctx.force);
        if partial && item.action == PlanAction::Overwrite {
            item.action = PlanAction::Partial;
        }
        Ok(RestorePlan { items: vec![item] })
    }

    async fn restore(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestoreReport, BoxError> {
        let plan = self.plan(ctx, target).await?;
        if let Some(e) = plan.refused(&ctx.source_name) {
            return Err(e.into());
        }
        let ep = match target {
            RestoreTarget::Live => self.live().await?,
            RestoreTarget::Other(url) => self.secured(parse_url(url)?)?,
        };
        match &self.config.file_restore {
            Some(f) if *target == RestoreTarget::Live && ctx.selection.keys.is_empty() => {
                Ok(self.restore_file(ctx, &ep, f).await?)
            }
            _ => Ok(self.restore_into(ctx, &ep, ctx.force).await?),
        }
    }

    async fn test_restore(&self, ctx: &RestoreContext) -> Result<RestoreReport, BoxError> {
        let t = Throwaway::start().await?;
        let mut report = self.restore_into(ctx, &t.endpoint(), false).await?;
        report
            .lines
            .push("throwaway redis-server stopped and removed".into());
        drop(t);
        Ok(report)
    }
}

/// The bytes of a diskless snapshot: everything up to the server's 40-byte
/// end mark (held back until it is clear they are not the mark); a stream
/// that ends before the mark is an error.
struct UntilMark<R> {
    inner: R,
    mark: [u8; EOF_MARK_LEN],
    /// Received, not yet returned; the mark is searched here.
    held: Vec<u8>,
    /// The mark was found: `held` is the rest of the snapshot.
    done: bool,
}

impl<R> UntilMark<R> {
    fn new(inner: R, mark: [u8; EOF_MARK_LEN]) -> Self {
        UntilMark {
            inner,
            mark,
            held: Vec::with_capacity(64 * 1024 + EOF_MARK_LEN),
            done: false,
        }
    }

    /// Moves up to `n` held bytes into `buf`.
    fn emit(&mut self, buf: &mut tokio::io::ReadBuf<'_>, n: usize) {
        let n = n.min(buf.remaining());
        buf.put_slice(&self.held[..n]);
        self.held.drain(..n);
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for UntilMark<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            if this.done {
                let n = this.held.len();
                this.emit(buf, n);
                return Poll::Ready(Ok(()));
            }
            // Bytes that cannot be the start of the mark go out first.
            let safe = this.held.len().saturating_sub(EOF_MARK_LEN - 1);
            if safe > 0 {
                this.emit(buf, safe);
                return Poll::Ready(Ok(()));
            }
            let before = this.held.len();
            this.held.resize(before + 64 * 1024, 0);
            let mut rb = tokio::io::ReadBuf::new(&mut this.held[before..]);
            let r = std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            this.held.truncate(before + n);
            match r {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if n == 0 => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the replication stream before its end mark",
                    )))
                }
                Poll::Ready(Ok(())) => {
                    let from = before.saturating_sub(EOF_MARK_LEN - 1);
                    if let Some(at) = this.held[from..]
                        .windows(EOF_MARK_LEN)
                        .position(|w| w == this.mark)
                    {
                        this.held.truncate(from + at);
                        this.done = true;
                    }
                }
            }
        }
    }
}

/// A reader that fails when fewer than the announced bytes arrive.
struct ExactLen<R> {
    inner: R,
    left: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for ExactLen<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = r {
            let n = (buf.filled().len() - before) as u64;
            if n == 0 && self.left > 0 {
                return std::task::Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "the server closed the replication stream {} bytes early",
                        self.left
                    ),
                )));
            }
            self.left -= n;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The diskless snapshot ends at the mark wherever the reads split it,
    /// and a stream without the mark is an error.
    #[tokio::test]
    async fn until_mark_stops_at_the_mark_across_read_boundaries() {
        use tokio::io::AsyncReadExt;
        let mark = *b"0123456789abcdef0123456789abcdef01234567";
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8).collect();
        let mut wire = body.clone();
        wire.extend_from_slice(&mark);
        wire.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        for split in [1usize, 39, 40, 41, 4096, 65_536] {
            let mut b = tokio_test_reader(&wire, split);
            let mut got = Vec::new();
            UntilMark::new(&mut b, mark)
                .read_to_end(&mut got)
                .await
                .unwrap();
            assert_eq!(got, body, "reads of {split} bytes");
        }
        let mut cut = tokio_test_reader(&body, 4096);
        let err = UntilMark::new(&mut cut, mark)
            .read_to_end(&mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    /// A reader over `data` that returns at most `n` bytes per read.
    fn tokio_test_reader(data: &[u8], n: usize) -> impl AsyncRead + Unpin {
        let chunks: Vec<std::io::Result<Bytes>> = data
            .chunks(n)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        tokio_util::io::StreamReader::new(futures::stream::iter(chunks))
    }

    #[test]
    fn urls() {
        let e = parse_url("redis://app:pw@example.org:6380/2").unwrap();
        assert_eq!(e.addr, "example.org:6380");
        assert_eq!(e.db, Some(2));
        assert_eq!(e.user.as_deref(), Some("app"));
        assert_eq!(e.password.as_deref(), Some("pw"));
        assert_eq!(format!("{e:?}"), "redis://example.org:6380");
        let e = parse_url("redis://:p%40ss%20x@h").unwrap();
        assert_eq!(e.password.as_deref(), Some("p@ss x"));
        let e = parse_url("redis://localhost").unwrap();
        assert_eq!((e.addr.as_str(), e.db), ("localhost:6379", None));
        assert!(e.is_local());
        assert_eq!(parse_url("redis://[::1]:7000").unwrap().addr, "[::1]:7000");
        assert!(parse_url("http://x").is_err());
        let e = parse_url("rediss://cache.example:6380").unwrap();
        assert!(e.secure);
        assert_eq!(e.name(), "rediss://cache.example:6380");
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("redis://x/abc").is_err());
    }
}
