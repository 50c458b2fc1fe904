//! Builds a repository with many small chunks for `bench/scale.sh`: a folder
//! of random files (1 MiB each) backed up through the real files source into
//! a repository whose chunker makes chunks of about 256 bytes (the smallest
//! FastCDC allows), so that a few GiB of data give millions of index
//! entries. Prints the number of blobs in the index.
//!
//! `cargo run --release -p respaldo-testing --example scale_repo -- REPO DATA CHUNKS`

use std::path::PathBuf;
use std::sync::Arc;

use rand::{RngCore, SeedableRng};
use respaldo_core::kit::progress::Progress;
use respaldo_core::ops::backup::{self, BackupJob, BackupOptions};
use respaldo_core::repo::crypto::KeyMaterial;
use respaldo_core::repo::format::ChunkerParams;
use respaldo_core::{Repository, Sink};
use respaldo_sink_local::LocalSink;
use respaldo_source_files::{FilesConfig, FilesSource};

/// Average chunk size the chunker gives on random data with these params.
const CHUNK: u64 = 300;
const FILE: usize = 1 << 20;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, repo, data, chunks] = args.as_slice() else {
        eprintln!("usage: scale_repo REPO DATA CHUNKS");
        std::process::exit(2);
    };
    let (repo, data) = (PathBuf::from(repo), PathBuf::from(data));
    let chunks: u64 = chunks.parse().expect("CHUNKS: a number");
    let files = (chunks * CHUNK).div_ceil(FILE as u64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut buf = vec![0u8; FILE];
    for i in 0..files {
        let dir = data.join(format!("d{:03}", i % 100));
        std::fs::create_dir_all(&dir).unwrap();
        rng.fill_bytes(&mut buf);
        std::fs::write(dir.join(format!("f{i:06}.bin")), &buf).unwrap();
    }
    let sink: Arc<dyn Sink> = Arc::new(LocalSink::new(&repo));
    let params = ChunkerParams {
        min: 64,
        avg: 256,
        max: 1024,
    };
    let r = Repository::init_with_chunker(sink, &KeyMaterial::default(), params)
        .await
        .expect("init");
    let source = FilesSource::new(
        FilesConfig {
            paths: vec![data.clone()],
            exclude: vec![],
            max_age: None,
            one_file_system: false,
        },
        data.parent().unwrap(),
    )
    .expect("files source");
    let opts = BackupOptions {
        tags: vec![],
        concurrency: 2,
        host: "scale".into(),
        redact: None,
        verify: false,
        cancel: None,
    };
    let job = BackupJob::new("data", Arc::new(source), 3);
    let out = backup::backup(&r, vec![job], &opts, Arc::new(Progress::default()))
        .await
        .expect("backup");
    assert!(out.failures().is_empty());
    let r = Repository::open(Arc::new(LocalSink::new(&repo)))
        .await
        .unwrap();
    let blobs = r.with_index(|i| i.len()).await.unwrap();
    println!("{blobs}");
}
