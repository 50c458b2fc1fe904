//! The sink conformance suite: call [`run`] with an empty sink.

use bytes::Bytes;
use respaldo_core::error::Error;
use respaldo_core::sink::{self, ByteStream, Sink};

fn stream_of(parts: Vec<&'static [u8]>) -> ByteStream {
    Box::pin(futures::stream::iter(
        parts.into_iter().map(|p| Ok(Bytes::from_static(p))),
    ))
}

/// Runs every conformance check against an empty sink; panics on the first
/// violation with a message naming the rule.
pub async fn run(sink: &dyn Sink) {
    // Empty listing.
    assert!(
        sink.list("").await.unwrap().is_empty(),
        "a new sink lists nothing"
    );

    // Put and get, streamed in several parts.
    sink.put("packs/aa/one", stream_of(vec![b"hello ", b"world"]))
        .await
        .unwrap();
    assert_eq!(
        &sink.get("packs/aa/one").await.unwrap()[..],
        b"hello world",
        "get returns what put wrote"
    );

    // Ranged get.
    assert_eq!(
        &sink.get_range("packs/aa/one", 6..11).await.unwrap()[..],
        b"world",
        "ranged get"
    );
    assert_eq!(
        &sink.get_range("packs/aa/one", 0..1).await.unwrap()[..],
        b"h",
        "ranged get at 0"
    );
    assert!(
        sink.get_range("packs/aa/one", 5..50).await.is_err(),
        "a range past the end is an error"
    );

    // Missing objects.
    match sink.get("packs/aa/missing").await {
        Err(Error::NotFound { .. }) => {}
        other => panic!("get of a missing object must be NotFound, got {other:?}"),
    }

    // Overwrite replaces whole.
    sink.put("config", sink::once(Bytes::from_static(b"v1 longer")))
        .await
        .unwrap();
    sink.put("config", sink::once(Bytes::from_static(b"v2")))
        .await
        .unwrap();
    assert_eq!(
        &sink.get("config").await.unwrap()[..],
        b"v2",
        "overwrite replaces the object whole"
    );

    // Empty object.
    sink.put("index/empty", stream_of(vec![])).await.unwrap();
    assert_eq!(
        sink.get("index/empty").await.unwrap().len(),
        0,
        "empty objects"
    );

    // Listing by prefix, with sizes, nested keys.
    sink.put("packs/bb/two", sink::once(Bytes::from_static(b"12345")))
        .await
        .unwrap();
    let mut packs: Vec<_> = sink
        .list("packs/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    packs.sort();
    assert_eq!(
        packs,
        vec![
            ("packs/aa/one".to_string(), 11),
            ("packs/bb/two".to_string(), 5)
        ],
        "list by prefix returns nested keys with sizes"
    );
    let all = sink.list("").await.unwrap();
    assert_eq!(all.len(), 4, "list of everything: {all:?}");
    assert!(
        sink.list("snapshots/").await.unwrap().is_empty(),
        "an empty prefix lists nothing"
    );

    // A failing stream publishes nothing: early, and after more than a
    // part's worth of data (object stores are in a multipart upload then).
    for before_failure in [7usize, 20 << 20] {
        let data = Bytes::from(vec![7u8; before_failure]);
        let failing: ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(data),
            Err(std::io::Error::other("source broke")),
        ]));
        assert!(
            sink.put("snapshots/broken", failing).await.is_err(),
            "a put whose stream fails after {before_failure} bytes fails"
        );
        assert!(
            sink.get("snapshots/broken").await.is_err(),
            "a failed put leaves no object"
        );
        assert!(
            sink.list("snapshots/").await.unwrap().is_empty(),
            "a failed put is not listed"
        );
    }

    // Larger object, many stream chunks and (object stores) several upload
    // parts, the last one short.
    let big: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
    let parts: Vec<std::io::Result<Bytes>> = big
        .chunks(65536)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    sink.put("packs/cc/big", Box::pin(futures::stream::iter(parts)))
        .await
        .unwrap();
    assert_eq!(
        sink.get("packs/cc/big").await.unwrap(),
        Bytes::from(big.clone()),
        "large objects"
    );
    assert_eq!(
        &sink
            .get_range("packs/cc/big", 16_777_200..16_777_300)
            .await
            .unwrap()[..],
        &big[16_777_200..16_777_300],
        "ranged get inside a large object"
    );

    // Delete, idempotent.
    sink.delete("packs/aa/one").await.unwrap();
    sink.delete("packs/aa/one").await.unwrap();
    assert!(
        sink.get("packs/aa/one").await.is_err(),
        "deleted objects are gone"
    );
    let left: Vec<_> = sink
        .list("packs/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(
        !left.contains(&"packs/aa/one".to_string()),
        "deleted objects are not listed"
    );

    // Concurrent puts of distinct keys.
    let puts = (0..16).map(|i| async move {
        let key = format!("locks/{i:02}");
        sink.put(&key, sink::once(Bytes::from(vec![i as u8; 1000])))
            .await
            .unwrap();
    });
    futures::future::join_all(puts).await;
    assert_eq!(
        sink.list("locks/").await.unwrap().len(),
        16,
        "concurrent puts"
    );

    sink.reclaim_incomplete().await.unwrap();
}
