//! respaldo as a library: backs up one PostgreSQL database into a
//! repository on S3, then restores that snapshot into another database —
//! with `respaldo-core`, the PostgreSQL source and the object-store sink
//! only (no CLI, no other driver compiled).
//!
//! ```text
//! embed SOURCE_DB_URL s3://BUCKET/PREFIX TARGET_DB_URL
//! ```
//!
//! The database password comes from `$PGPASSWORD` (by reference, never in
//! the URL); S3 credentials from `$AWS_ACCESS_KEY_ID` /
//! `$AWS_SECRET_ACCESS_KEY`, and an S3-compatible server from
//! `$S3_ENDPOINT`. The repository is created when it does not exist.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use respaldo_core::kit::progress::Progress;
use respaldo_core::ops::backup::{self, BackupJob, BackupOptions};
use respaldo_core::registry::BuildContext;
use respaldo_core::repo::lock::LockMode;
use respaldo_core::source::{RestoreContext, RestoreTarget};
use respaldo_core::{Error, Repository, Sink};
use respaldo_sink_object_store::{ObjectStoreSink, S3Options};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("embed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db_url, repo_url, target_url] = args.as_slice() else {
        return Err("usage: embed SOURCE_DB_URL s3://BUCKET/PREFIX TARGET_DB_URL".into());
    };

    // The repository: an object-store sink, opened or created.
    let s3 = S3Options {
        endpoint: std::env::var("S3_ENDPOINT").ok(),
        ..Default::default()
    };
    let sink: Arc<dyn Sink> = Arc::new(ObjectStoreSink::connect(repo_url, &s3).await?);
    let repo = match Repository::open(sink.clone()).await {
        Ok(r) => r,
        Err(Error::NotInitialized(_)) => Repository::init(sink).await?,
        Err(e) => return Err(e.into()),
    };

    // The source, built from the same table a backup.toml would hold.
    let table = serde_json::json!({ "url": db_url, "password": { "env": "PGPASSWORD" } });
    let ctx = BuildContext {
        base: Path::new("."),
        local_repository: None,
    };
    let source = (respaldo_source_postgres::DRIVER.build)(table, &ctx)?;
    source.check().await?;

    // Back up, under the repository's shared lock.
    let lock = repo
        .lock(LockMode::Shared, "embed backup", Duration::from_secs(60))
        .await?;
    let opts = BackupOptions {
        tags: vec!["embed".into()],
        concurrency: 1,
        host: "embed".into(),
        redact: None,
        verify: true,
        cancel: None,
    };
    let job = BackupJob::new("db", source.clone(), 3);
    let outcome = lock
        .while_held(backup::backup(
            &repo,
            vec![job],
            &opts,
            Arc::new(Progress::default()),
        ))
        .await;
    lock.release().await?;
    let outcome = outcome?;
    let entry = outcome.snapshot.sources["db"].clone();
    if let Some(e) = &entry.error {
        return Err(format!("backup failed: {e}").into());
    }
    let snapshot_id = outcome.snapshot_id.ok_or("no snapshot was written")?;
    println!(
        "backed up {db_url} as snapshot {} ({} bytes added)",
        snapshot_id.short(),
        outcome.snapshot.stats.bytes_added
    );

    // Restore it into the target database: plan first, refuse what the plan
    // refuses, then restore (the driver checks the row counts).
    let lock = repo
        .lock(LockMode::Shared, "embed restore", Duration::from_secs(60))
        .await?;
    let rctx = RestoreContext {
        repo: repo.clone(),
        snapshot_id,
        source_name: "db".into(),
        entry,
        force: false,
        paths: Vec::new(),
        selection: Default::default(),
        progress: Arc::new(Progress::default()),
    };
    let target = RestoreTarget::Other(target_url.clone());
    let restored = async {
        let plan = source.plan(&rctx, &target).await?;
        if let Some(refused) = plan.refused("db") {
            return Err(refused.into());
        }
        source.restore(&rctx, &target).await
    }
    .await;
    lock.release().await?;
    for line in restored?.lines {
        println!("{line}");
    }
    println!(
        "restored snapshot {} into {target_url}",
        snapshot_id.short()
    );
    Ok(())
}
