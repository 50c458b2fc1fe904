//! The source itself: the checked configuration, and the [`Source`]
//! implementation that hands each operation to its module.

use async_trait::async_trait;
use respaldo_core::error::BoxError;
use respaldo_core::kit::secret::SecretValue;
use respaldo_core::source::{
    BackupContext, RestoreContext, RestorePlan, RestoreReport, RestoreTarget, Source,
};

use crate::backup;
use crate::tools;
use crate::{Endpoint, Format, Mode, PgError, PostgresConfig};

/// The `postgres` source.
#[derive(Debug)]
pub struct PostgresSource {
    pub(crate) config: PostgresConfig,
    pub(crate) endpoint: Endpoint,
}

impl PostgresSource {
    /// Checks and builds the source; `base` is the configuration file's folder.
    pub fn new(mut config: PostgresConfig, base: &std::path::Path) -> Result<Self, PgError> {
        let endpoint = Endpoint::parse(&config.url)?;
        if let Some(p) = config.password.as_mut() {
            p.rebase(base);
        }
        if let Some(b) = config.bin_dir.as_mut() {
            *b = base.join(&*b);
        }
        if config.schema_only && config.data_only {
            return Err(PgError::Config(
                "`schema_only` and `data_only` exclude each other".into(),
            ));
        }
        let all = config.databases.iter().any(|d| d == "*");
        if all && config.databases.len() > 1 {
            return Err(PgError::Config(
                "`databases = [\"*\"]` means every database; list names or use \"*\" alone".into(),
            ));
        }
        if config.databases.is_empty() && endpoint.database().is_none() {
            return Err(PgError::Config(
                "name a database in `url` (postgres://host/db) or set `databases`".into(),
            ));
        }
        if config.mode == Mode::Csv {
            if config.tables.is_empty() {
                return Err(PgError::Config(
                    "csv mode needs `tables` (the tables to export)".into(),
                ));
            }
            if !config.databases.is_empty() || config.globals == Some(true) {
                return Err(PgError::Config(
                    "csv mode exports from the URL's database; `databases` and `globals` do not apply"
                        .into(),
                ));
            }
            if endpoint.database().is_none() {
                return Err(PgError::Config("csv mode needs a database in `url`".into()));
            }
        } else if config.where_clause.is_some() {
            return Err(PgError::Config("`where` applies to csv mode only".into()));
        }
        Ok(PostgresSource { config, endpoint })
    }

    pub(crate) fn all_databases(&self) -> bool {
        self.config.databases.iter().any(|d| d == "*")
    }

    pub(crate) fn dump_globals(&self) -> bool {
        self.config.globals.unwrap_or_else(|| self.all_databases())
    }

    pub(crate) async fn password(&self) -> Result<Option<String>, PgError> {
        let configured: Option<SecretValue> = match &self.config.password {
            Some(s) => Some(
                s.resolve()
                    .await
                    .map_err(|m| PgError::Config(format!("password: {m}")))?,
            ),
            None => None,
        };
        Ok(self.endpoint.password(configured.as_ref()))
    }

    pub(crate) fn maintenance(&self) -> Endpoint {
        self.endpoint.with_database(&self.config.maintenance_db)
    }
}

#[async_trait]
impl Source for PostgresSource {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn check(&self) -> Result<(), BoxError> {
        let password = self.password().await?;
        let ep = match self.endpoint.database() {
            Some(_) if !self.all_databases() => self.endpoint.clone(),
            _ => self.maintenance(),
        };
        let client = ep.connect(password.as_deref()).await?;
        if self.config.mode == Mode::Dump {
            let server = backup::server_major(&client, &ep).await?;
            let tools = tools::Tools::find(self.config.bin_dir.as_deref())?;
            tools.check_version(server, &ep.display()).await?;
        }
        Ok(())
    }

    async fn backup(&self, ctx: &mut BackupContext) -> Result<(), BoxError> {
        match self.config.mode {
            Mode::Dump => self.backup_dump(ctx).await?,
            Mode::Csv => self.backup_csv(ctx).await?,
        }
        Ok(())
    }

    async fn plan(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestorePlan, BoxError> {
        Ok(self.plan_snapshot(ctx, target).await?)
    }

    async fn restore(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestoreReport, BoxError> {
        Ok(self.restore_snapshot(ctx, target).await?)
    }

    /// A full, unfiltered dump of the target databases that exist: what a
    /// `--force` restore may replace (a data-only or filtered backup does not
    /// hold all of it). csv mode: the same rows the restore deletes.
    async fn safety_backup(
        &self,
        ctx: &mut BackupContext,
        plan: &RestorePlan,
    ) -> Result<(), BoxError> {
        if self.config.mode == Mode::Csv {
            return self.backup(ctx).await;
        }
        let dbs: Vec<String> = plan
            .items
            .iter()
            .filter(|i| i.overwrites_data())
            .filter_map(|i| i.what.strip_prefix("database ").map(str::to_string))
            .collect();
        if dbs.is_empty() {
            return Ok(());
        }
        let config = PostgresConfig {
            databases: dbs,
            globals: Some(false),
            format: Format::Custom,
            schema_only: false,
            data_only: false,
            schemas: Vec::new(),
            exclude_schemas: Vec::new(),
            tables: Vec::new(),
            exclude_tables: Vec::new(),
            ..self.config.clone()
        };
        let whole = PostgresSource {
            config,
            endpoint: self.endpoint.clone(),
        };
        Ok(whole.backup_dump(ctx).await?)
    }

    async fn test_restore(&self, ctx: &RestoreContext) -> Result<RestoreReport, BoxError> {
        match self.test_restore_snapshot(ctx).await {
            Err(PgError::NotTestable(why)) => Err(respaldo_core::Error::NotTestable(why).into()),
            r => Ok(r?),
        }
    }
}
