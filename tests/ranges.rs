//! Byte ranges: from the cache, and on a miss from the fill as bytes arrive.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use support::*;
use tokio::sync::Notify;

#[tokio::test]
async fn ranges_from_cache() {
    let origin = TestOrigin::start().await;
    let body = payload(10_000, 4);
    origin.set("/r.mp4", Script::ok(body.clone()));
    let edge = edge_for(&origin).await;
    let c = client();
    get(&c, &url(&edge, "/r.mp4")).await;
    let part = send(&c, "GET", &url(&edge, "/r.mp4"), &[("range", "bytes=100-199")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), "bytes 100-199/10000");
    assert_eq!(part.header("content-length"), "100");
    assert_eq!(part.bytes(), &body.slice(100..200));
    let tail = send(&c, "GET", &url(&edge, "/r.mp4"), &[("range", "bytes=-10")]).await;
    assert_eq!(tail.bytes(), &body.slice(9_990..));
    let bad = send(&c, "GET", &url(&edge, "/r.mp4"), &[("range", "bytes=20000-")]).await;
    assert_eq!(bad.status, 416);
    assert_eq!(bad.header("content-range"), "bytes */10000");
    assert_eq!(origin.hits("/r.mp4"), 1);
    assert!(origin.requests("/r.mp4")[0].get("range").is_none());
    edge.shutdown().await;
}

/// A range on a miss joins the whole-object fill and is answered as soon as its bytes arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ranges_on_a_miss_are_cut_from_the_one_fill() {
    let origin = TestOrigin::start().await;
    let gate = Arc::new(Notify::new());
    let body = payload(300_000, 6);
    origin.set(
        "/m.mp4",
        Script::ok(body.clone())
            .throttle(50_000, Duration::ZERO)
            .gated(Arc::clone(&gate)),
    );
    let edge = edge_for(&origin).await;
    let c = client();
    // Bytes within the first origin chunk arrive while the origin holds the rest.
    let early = ranged(&c, &url(&edge, "/m.mp4"), "bytes=1000-1999").await;
    assert_eq!(early.status(), 206);
    assert_eq!(early.headers()["content-range"], "bytes 1000-1999/300000");
    let early_body = tokio::time::timeout(Duration::from_secs(5), early.into_body().collect())
        .await
        .expect("the range is complete before the origin finishes")
        .unwrap()
        .to_bytes();
    assert_eq!(early_body, body.slice(1000..2000));
    // More ranges for later bytes join the same fill.
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let (c, u) = (c.clone(), url(&edge, "/m.mp4"));
            let range = format!("bytes={}-{}", 200_000 + i * 100, 200_000 + i * 100 + 99);
            tokio::spawn(async move { send(&c, "GET", &u, &[("range", range.as_str())]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.notify_one();
    for (i, t) in tasks.into_iter().enumerate() {
        let got = t.await.unwrap();
        assert_eq!(got.status, 206);
        let start = 200_000 + i * 100;
        assert_eq!(got.bytes(), &body.slice(start..start + 100));
    }
    assert_eq!(origin.hits("/m.mp4"), 1, "ranges never cause a second origin fetch");
    assert!(
        origin.requests("/m.mp4")[0].get("range").is_none(),
        "the edge fetched the whole object"
    );
    edge.shutdown().await;
}
