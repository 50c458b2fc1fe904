//! The source itself: the checked configuration, and the [`Source`]
//! implementation that hands each operation to its module.

use async_trait::async_trait;
use respaldo_core::error::BoxError;
use respaldo_core::source::{
    BackupContext, RestoreContext, RestorePlan, RestoreReport, RestoreTarget, Source,
};

use crate::backup::DumpPlan;
use crate::conn::{literal, Client, Endpoint, Program};
use crate::{MysqlConfig, MysqlError};

/// The `mysql` source.
#[derive(Debug)]
pub struct MysqlSource {
    pub(crate) config: MysqlConfig,
    pub(crate) endpoint: Endpoint,
    /// The dump and client programs, found once.
    programs: std::sync::OnceLock<(Program, Program)>,
}

impl MysqlSource {
    /// Checks and builds the source; `base` is the configuration file's folder.
    pub fn new(mut config: MysqlConfig, base: &std::path::Path) -> Result<Self, MysqlError> {
        let endpoint = Endpoint::parse(&config.url)?;
        if let Some(p) = config.password.as_mut() {
            p.rebase(base);
        }
        for p in [
            &mut config.ca_file,
            &mut config.dump_bin,
            &mut config.client_bin,
        ]
        .into_iter()
        .flatten()
        {
            if p.components().count() > 1 {
                *p = base.join(&*p);
            }
        }
        let all = config.databases.iter().any(|d| d == "*");
        if all && config.databases.len() > 1 {
            return Err(MysqlError::Config(
                "`databases = [\"*\"]` means every database; list names or use \"*\" alone".into(),
            ));
        }
        if config.databases.is_empty() && endpoint.database().is_none() {
            return Err(MysqlError::Config(
                "name a database in `url` (mysql://host/db) or set `databases`".into(),
            ));
        }
        Ok(MysqlSource {
            config,
            endpoint,
            programs: std::sync::OnceLock::new(),
        })
    }

    pub(crate) fn all_databases(&self) -> bool {
        self.config.databases.iter().any(|d| d == "*")
    }

    /// The client programs and login, for `endpoint`.
    pub(crate) async fn client_at(&self, endpoint: Endpoint) -> Result<Client, MysqlError> {
        let password = match &self.config.password {
            Some(s) => Some(
                s.resolve()
                    .await
                    .map_err(|m| MysqlError::Config(format!("password: {m}")))?,
            ),
            None => None,
        };
        let (dump, client) = match self.programs.get() {
            Some(p) => p.clone(),
            None => {
                let found = (
                    Program::find(
                        self.config.dump_bin.as_deref(),
                        &["mariadb-dump", "mysqldump"],
                    )?,
                    Program::find(self.config.client_bin.as_deref(), &["mariadb", "mysql"])?,
                );
                self.programs.get_or_init(|| found).clone()
            }
        };
        Client::new(
            endpoint,
            dump,
            client,
            password.as_ref().map(|p| p.expose()),
            self.config.tls,
            self.config.ca_file.as_deref(),
        )
    }

    /// What the configuration says to dump.
    pub(crate) async fn configured_plan(&self, client: &Client) -> Result<DumpPlan, MysqlError> {
        Ok(DumpPlan {
            databases: self.database_names(client).await?,
            users: self.config.users.unwrap_or_else(|| self.all_databases()),
            schema_only: self.config.schema_only,
        })
    }
}

#[async_trait]
impl Source for MysqlSource {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    async fn check(&self) -> Result<(), BoxError> {
        let client = self.client_at(self.endpoint.clone()).await?;
        client.check_version().await?;
        if self.all_databases() {
            return Ok(());
        }
        let wanted = self.database_names(&client).await?;
        let list = wanted
            .iter()
            .map(|d| literal(d))
            .collect::<Vec<_>>()
            .join(", ");
        let found: Vec<String> = client
            .query(
                "looking up the databases",
                None,
                &format!("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ({list})"),
            )
            .await?
            .into_iter()
            .flatten()
            .collect();
        match wanted.iter().find(|d| !found.contains(d)) {
            Some(missing) => Err(MysqlError::Query {
                server: client.endpoint.server(),
                what: format!("looking up database `{missing}`"),
                message: "no such database (or no privilege on it)".into(),
            }
            .into()),
            None => Ok(()),
        }
    }

    async fn backup(&self, ctx: &mut BackupContext) -> Result<(), BoxError> {
        let client = self.client_at(self.endpoint.clone()).await?;
        let plan = self.configured_plan(&client).await?;
        Ok(self.dump(ctx, &client, &plan).await?)
    }

    async fn plan(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestorePlan, BoxError> {
        let steps = self.steps(ctx, target).await?;
        Ok(RestorePlan {
            items: steps.items(),
        })
    }

    async fn restore(
        &self,
        ctx: &RestoreContext,
        target: &RestoreTarget,
    ) -> Result<RestoreReport, BoxError> {
        Ok(self.restore_snapshot(ctx, target).await?)
    }

    /// A full dump of the live databases the restore replaces (and the
    /// accounts, when it replaces some): what a `--force` restore destroys,
    /// whatever the configured backup leaves out.
    async fn safety_backup(
        &self,
        ctx: &mut BackupContext,
        plan: &RestorePlan,
    ) -> Result<(), BoxError> {
        let overwritten: Vec<&str> = plan
            .items
            .iter()
            .filter(|i| i.overwrites_data())
            .map(|i| i.what.as_str())
            .collect();
        let databases: Vec<String> = overwritten
            .iter()
            .filter_map(|w| crate::restore::database_of_item(w))
            .collect();
        let users = overwritten.contains(&crate::restore::USERS_ITEM);
        if databases.is_empty() && !users {
            return Ok(());
        }
        let client = self.client_at(self.endpoint.clone()).await?;
        let plan = DumpPlan {
            databases,
            users,
            schema_only: false,
        };
        Ok(self.dump(ctx, &client, &plan).await?)
    }

    async fn test_restore(&self, ctx: &RestoreContext) -> Result<RestoreReport, BoxError> {
        match self.test_restore_snapshot(ctx).await {
            Err(MysqlError::NotTestable(why)) => Err(respaldo_core::Error::NotTestable(why).into()),
            r => Ok(r?),
        }
    }
}
