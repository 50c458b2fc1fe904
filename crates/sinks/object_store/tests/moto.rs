//! The sink conformance suite against a real S3-compatible server (moto's
//! server mode, installed by scripts/test.sh) and against object_store's
//! in-memory store. A missing moto_server fails the test.

use std::sync::Arc;

use respaldo_core::kit::secret::Secret;
use respaldo_sink_object_store::{ObjectStoreSink, S3Options};
use respaldo_testing::moto::Moto;

async fn sink(moto: &Moto, bucket: &str, prefix: &str) -> ObjectStoreSink {
    moto.create_bucket(bucket);
    sink_at(&moto.endpoint(), bucket, prefix).await
}

async fn sink_at(endpoint: &str, bucket: &str, prefix: &str) -> ObjectStoreSink {
    let opts = S3Options {
        endpoint: Some(endpoint.to_string()),
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

/// A part that fails for good in the middle of a multipart upload: the put
/// fails, no object appears and the upload is aborted (no parts left behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_part_aborts_the_upload() {
    use respaldo_core::sink::Sink;
    use respaldo_testing::s3proxy::{FaultProxy, HttpFault};

    let moto = Moto::start();
    moto.create_bucket("repo");
    let proxy = FaultProxy::start(moto.port, |r| {
        if r.method == "PUT" && r.target.contains("partNumber=2") {
            HttpFault::Status(403)
        } else {
            HttpFault::Pass
        }
    });
    let sink = sink_at(&proxy.endpoint(), "repo", "").await;
    let data = bytes::Bytes::from(vec![1u8; 20 << 20]);
    let err = sink
        .put("packs/ab/pack", respaldo_core::sink::once(data))
        .await
        .expect_err("the put must fail");
    assert!(err.to_string().contains("packs/ab/pack"), "{err}");
    assert!(proxy.faults_injected() >= 1);
    assert!(sink.get("packs/ab/pack").await.is_err());
    assert_eq!(
        moto.multipart_uploads("repo"),
        0,
        "the upload was not aborted"
    );
}
