//! The sink conformance suite against a real S3-compatible server (moto's
//! server mode, installed by scripts/test.sh) and against object_store's
//! in-memory store. A missing moto_server fails the test.

use std::sync::Arc;

use respaldo_core::secret::Secret;
use respaldo_sink_object_store::{ObjectStoreSink, S3Options};
use respaldo_testing::moto::Moto;

async fn sink(moto: &Moto, bucket: &str, prefix: &str) -> ObjectStoreSink {
    moto.create_bucket(bucket);
    let opts = S3Options {
        endpoint: Some(moto.endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some(Secret::Value("testing".into())),
        secret_access_key: Some(Secret::Value("testing".into())),
        ..Default::default()
    };
    ObjectStoreSink::connect(&format!("s3://{bucket}/{prefix}"), &opts)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_s3() {
    let moto = Moto::start();
    respaldo_testing::conformance::run(&sink(&moto, "repo", "").await).await;
    respaldo_testing::conformance::run(&sink(&moto, "prefixed", "team/shop").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_memory() {
    let sink = ObjectStoreSink::with_store(
        Arc::new(object_store::memory::InMemory::new()),
        "some/prefix",
        "memory://",
    );
    respaldo_testing::conformance::run(&sink).await;
}
