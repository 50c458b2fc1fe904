//! Restore: the RDB's keys sent back with pipelined `RESTORE` batches (or,
//! in file mode, the RDB placed for the server to load), and the counts
//! compared.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use respaldo_core::kit::check::compare_counts;
use respaldo_core::kit::process::run;
use respaldo_core::source::{RestoreContext, RestoreReport};

use crate::config::ARTIFACT;
use crate::endpoint::Endpoint;
use crate::rdb::{Item, RdbReader};
use crate::resp::{info_fields, Conn, Reply};
use crate::server::config_get;
use crate::server::key_path;
use crate::server::key_patterns;
use crate::server::keyspace;
use crate::server::scope_keys;
use crate::server::summary;
use crate::FileRestore;
use crate::RedisError;
use crate::RedisSource;

impl RedisSource {
    /// Restores the artifact into `ep`.
    pub(crate) async fn restore_into(
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
    pub(crate) async fn restore_file(
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

/// Pipelined batches of `RESTORE` commands: one is being queued while the
/// replies of the previous one are read, so the server is never idle
/// waiting for the next batch.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) db: Option<u64>,
    /// (db, key) of each queued RESTORE, None for a SELECT.
    pub(crate) keys: Vec<Option<(u64, Vec<u8>)>>,
    /// The same for the batch sent whose replies are not read yet.
    pub(crate) inflight: Vec<Option<(u64, Vec<u8>)>>,
    pub(crate) bytes: usize,
    pub(crate) restored: u64,
    pub(crate) per_db: BTreeMap<String, u64>,
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
