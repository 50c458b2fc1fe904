//! The `influxdb` source: built from its configuration (1.x or 2.x, by
//! what the server says), and the driver's `Source` implementation.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use respaldo_core::error::BoxError;
use respaldo_core::kit::duration::parse_duration;
use respaldo_core::source::{
    BackupContext, RestoreContext, RestorePlan, RestoreReport, RestoreTarget, Source,
};
use serde_json::Value;

use crate::client::Client;
use crate::http::{Auth, Http};
use crate::v2::V2;
use crate::InfluxConfig;
use crate::InfluxError;

/// The `influxdb` source.
#[derive(Debug)]
pub struct InfluxSource {
    pub(crate) config: InfluxConfig,
    /// 1 or 2.
    pub(crate) version: u8,
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub(crate) fn str_at(row: &[Value], i: Option<usize>) -> String {
    i.and_then(|i| row.get(i))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl InfluxSource {
    /// Builds the source; `base` is the configuration file's folder.
    pub fn new(mut config: InfluxConfig, base: &Path) -> Result<Self, InfluxError> {
        if !config.url.starts_with("http://") && !config.url.starts_with("https://") {
            return Err(InfluxError::Config(format!(
                "`url` must start with http:// or https://, not `{}`",
                config.url
            )));
        }
        if has_userinfo(&config.url) {
            return Err(InfluxError::Config(
                "`url` must not hold credentials; use `user` and `password`".into(),
            ));
        }
        let v2_keys = config.token.is_some() || config.org.is_some() || !config.buckets.is_empty();
        let version = config
            .version
            .unwrap_or(if config.token.is_some() || config.org.is_some() {
                2
            } else {
                1
            });
        match version {
            1 if v2_keys => {
                return Err(InfluxError::Config(
                    "`token`, `org` and `buckets` are for InfluxDB 2.x (`version = 2`)".into(),
                ))
            }
            1 => {}
            2 => {
                if config.user.is_some()
                    || config.password.is_some()
                    || !config.databases.is_empty()
                {
                    return Err(InfluxError::Config(
                        "`user`, `password` and `databases` are for InfluxDB 1.x; 2.x uses `token`, `org` and `buckets`".into(),
                    ));
                }
                if config.token.is_none() || config.org.is_none() {
                    return Err(InfluxError::Config(
                        "InfluxDB 2.x needs `org` and `token`".into(),
                    ));
                }
            }
            v => {
                return Err(InfluxError::Config(format!(
                    "`version` must be 1 or 2, not {v}"
                )))
            }
        }
        if config.password.is_some() && config.user.is_none() {
            return Err(InfluxError::Config("`password` requires `user`".into()));
        }
        if let Some(s) = &config.since {
            parse_duration(s).map_err(|e| InfluxError::Config(format!("`since`: {e}")))?;
        }
        if config.batch_lines == 0 {
            return Err(InfluxError::Config(
                "`batch_lines` must be at least 1".into(),
            ));
        }
        if let Some(p) = &mut config.password {
            p.rebase(base);
        }
        if let Some(t) = &mut config.token {
            t.rebase(base);
        }
        Ok(InfluxSource { config, version })
    }

    /// A 1.x client for `url`.
    pub(crate) async fn client(&self, url: &str) -> Result<Client, InfluxError> {
        let auth = match (&self.config.user, &self.config.password) {
            (Some(u), Some(p)) => Auth::Basic(
                u.clone(),
                Some(
                    p.resolve()
                        .await
                        .map_err(|e| InfluxError::Secret(format!("password: {e}")))?,
                ),
            ),
            (Some(u), None) => Auth::Basic(u.clone(), None),
            (None, _) => Auth::None,
        };
        Ok(Client {
            http: Http::new(url, auth)?,
        })
    }

    /// A 2.x client for `url`.
    pub(crate) async fn v2(&self, url: &str) -> Result<V2, InfluxError> {
        let token = match &self.config.token {
            Some(t) => t
                .resolve()
                .await
                .map_err(|e| InfluxError::Secret(format!("token: {e}")))?,
            None => return Err(InfluxError::Config("InfluxDB 2.x needs `token`".into())),
        };
        Ok(V2 {
            http: Http::new(url, Auth::Token(token))?,
            org: self.config.org.clone().unwrap_or_default(),
        })
    }

    /// The databases on the server (without `_internal`).
    pub(crate) async fn databases(c: &Client) -> Result<Vec<String>, InfluxError> {
        let series = c.query(None, "SHOW DATABASES").await?;
        Ok(series
            .iter()
            .flat_map(|s| s.values.iter().map(|r| str_at(r, Some(0))))
            .filter(|d| d != "_internal")
            .collect())
    }

    pub(crate) async fn selected(&self, c: &Client) -> Result<Vec<String>, InfluxError> {
        let all = Self::databases(c).await?;
        if self.config.databases.is_empty() {
            return Ok(all);
        }
        for db in &self.config.databases {
            if !all.contains(db) {
                return Err(InfluxError::NoDatabase {
                    url: c.url().to_string(),
                    db: db.clone(),
                });
            }
        }
        Ok(self.config.databases.clone())
    }
}

/// Whether an `http(s)://` URL carries `user[:password]@`.
pub(crate) fn has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/')
        .next()
        .is_some_and(|host| host.contains('@'))
}

/// Where `--target` points: a server URL and an optional database.
pub(crate) fn parse_target(t: &str, live: &str) -> Result<(String, Option<String>), InfluxError> {
    if let Some(rest) = t
        .strip_prefix("http://")
        .map(|r| ("http://", r))
        .or_else(|| t.strip_prefix("https://").map(|r| ("https://", r)))
    {
        let (scheme, rest) = rest;
        let (host, db) = rest.split_once('/').unwrap_or((rest, ""));
        let db = db.trim_matches('/');
        if host.is_empty() || host.contains('@') {
            return Err(InfluxError::Config(
                "--target: expected http://host:port[/database], without credentials".into(),
            ));
        }
        return Ok((
            format!("{scheme}{host}"),
            (!db.is_empty()).then(|| db.to_string()),
        ));
    }
    if t.is_empty() || t.contains('/') {
        return Err(InfluxError::Config(format!(
            "--target `{t}`: expected http://host:8086[/database] or a database name"
        )));
    }
    Ok((live.to_string(), Some(t.to_string())))
}

#[async_trait]
impl Source for InfluxSource {
    fn kind(&self) -> &'static str {
        "influxdb"
    }

    async fn check(&self) -> Result<(), BoxError> {
        if self.version == 2 {
            let v2 = self.v2(&self.config.url).await?;
            let org_id = v2.org_id().await?;
            v2.selected(&org_id, &self.config.buckets).await?;
        } else {
            let c = self.client(&self.config.url).await?;
            self.selected(&c).await?;
        }
        Ok(())
    }

    async fn backup(&self, ctx: &mut BackupContext) -> Result<(), BoxError> {
        if self.version == 2 {
            self.backup_v2(ctx).await?;
        } else {
            self.backup_v1(ctx).await?;
        }
        if let Some(s) = &self.config.since {
            ctx.set_metadata("since", s.clone());
        }
        Ok(())
    }

    async fn plan(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestorePlan, BoxError> {
        Ok(self.plan_any(ctx, target).await?)
    }

    async fn restore(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestoreReport, BoxError> {
        Ok(self.restore_any(ctx, target).await?)
    }

    /// A full export (no `since` window) of the databases that exist: what a
    /// `--force` restore may replace.
    async fn safety_backup(
        &self,
        ctx: &mut BackupContext,
        _plan: &RestorePlan,
    ) -> Result<(), BoxError> {
        let mut config = self.config.clone();
        config.since = None;
        if self.version == 1 {
            let c = self.client(&self.config.url).await?;
            let existing = Self::databases(&c).await?;
            let wanted: Vec<String> = if config.databases.is_empty() {
                existing.clone()
            } else {
                config
                    .databases
                    .iter()
                    .filter(|d| existing.contains(d))
                    .cloned()
                    .collect()
            };
            if wanted.is_empty() {
                return Ok(());
            }
            config.databases = wanted;
        }
        // Paths in `config` were made absolute when this source was built.
        InfluxSource::new(config, Path::new("/"))?.backup(ctx).await
    }

    async fn test_restore(&self, ctx: &RestoreContext) -> Result<RestoreReport, BoxError> {
        self.same_version(ctx)?;
        Ok(if self.version == 2 {
            self.test_restore_v2(ctx).await?
        } else {
            self.test_restore_v1(ctx).await?
        })
    }
}
