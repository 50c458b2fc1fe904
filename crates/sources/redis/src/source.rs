//! The `redis` source: built from its configuration, and the driver's
//! `Source` implementation (check, backup, plan, restore, test-restore).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use respaldo_core::error::BoxError;
use respaldo_core::kit::tls::{client_config, server_name, ClientCert, Verify};
use respaldo_core::source::SelectionPart;
use respaldo_core::source::{
    BackupContext, PlanAction, PlanItem, RestoreContext, RestorePlan, RestoreReport, RestoreTarget,
    Source, TargetState,
};
use tokio::io::AsyncReadExt;

use crate::backup::ExactLen;
use crate::backup::UntilMark;
use crate::endpoint::parse_url;
use crate::endpoint::Endpoint;
use crate::resp::{info_fields, RdbLength, Tls};
use crate::server::function_libraries;
use crate::server::key_patterns;
use crate::server::scope_keys;
use crate::server::summary;
use crate::RedisConfig;
use crate::RedisError;
use crate::Transfer;

/// The `redis` source.
#[derive(Debug)]
pub struct RedisSource {
    pub(crate) config: RedisConfig,
    pub(crate) endpoint: Endpoint,
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
}

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
        ctx.refuse_selection("redis", &[SelectionPart::Keys])?;
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
        Ok(self.drill(ctx).await?)
    }
}

/// What a snapshot's metadata says the server held: each database
/// (`db0`, `db1`, …) with its keys.
pub(crate) fn inventory(
    m: &respaldo_core::inventory::Metadata,
) -> Vec<respaldo_core::inventory::Item> {
    use respaldo_core::inventory::{field, Item};
    let keys: BTreeMap<String, u64> = field(m, "keys").unwrap_or_default();
    let mut dbs: Vec<(u64, u64)> = keys
        .into_iter()
        .filter_map(|(db, n)| Some((db.trim_start_matches("db").parse().ok()?, n)))
        .collect();
    dbs.sort_unstable();
    dbs.into_iter()
        .map(|(db, n)| Item::new(vec![format!("db{db}")], n, "keys"))
        .collect()
}
