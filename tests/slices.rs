//! Objects too large to keep whole are cached in slices fetched with range
//! requests: a range request fetches only the slices under it, each once
//! under concurrency, and a slice boundary inside a range is stitched
//! exactly.

mod support;

use std::collections::BTreeMap;

use bytes::Bytes;
use support::*;

const SLICE: usize = 8 << 20;

/// `len` bytes of a pattern whose period (a prime) is no divisor of the
/// slice size, so that a slice put at the wrong offset shows.
fn object(len: usize) -> Bytes {
    let period = noise(1_000_003, 11);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let take = period.len().min(len - out.len());
        out.extend_from_slice(&period[..take]);
    }
    Bytes::from(out)
}

/// The slice ranges the origin was asked for, with how many times each.
fn slice_requests(origin: &TestOrigin, path: &str) -> BTreeMap<String, usize> {
    let mut asked = BTreeMap::new();
    for headers in origin.requests(path) {
        if let Some(range) = headers.get("range") {
            *asked.entry(range.to_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    asked
}

async fn range(c: &TestClient, url: &str, first: usize, last: usize) -> Got {
    send(c, "GET", url, &[("range", &format!("bytes={first}-{last}"))]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_ranges_of_a_1_gib_object_fetch_each_slice_once() {
    let body = object(1 << 30);
    let origin = TestOrigin::start().await;
    origin.set(
        "/vod/big.mp4",
        Script::ok(body.clone()).header("etag", "\"v1\"").ranges(),
    );
    let edge = start_edge(
        "[cache]\nmemory = \"256MiB\"\nmax_object = \"64MiB\"\nslice = \"8MiB\"\n[[routes]]\nurl = \"{origin}\"\n",
        &origin,
    )
    .await;
    let c = client();
    let u = url(&edge, "/vod/big.mp4");
    // Overlapping ranges, each across slice boundaries (slices 11 to 16).
    let (a, b) = ((100_000_000, 130_000_000), (110_000_000, 140_000_000));
    let (got_a, got_b) = tokio::join!(range(&c, &u, a.0, a.1), range(&c, &u, b.0, b.1));
    for (got, (first, last)) in [(&got_a, a), (&got_b, b)] {
        assert_eq!(got.status, 206);
        assert_eq!(
            got.header("content-range"),
            format!("bytes {first}-{last}/{}", 1u64 << 30)
        );
        assert!(
            got.bytes()[..] == body[first..=last],
            "bytes {first}-{last} stitched exactly"
        );
    }
    let asked = slice_requests(&origin, "/vod/big.mp4");
    let wanted: BTreeMap<String, usize> = (11..=16)
        .map(|i| (format!("bytes={}-{}", i * SLICE, (i + 1) * SLICE - 1), 1))
        .collect();
    assert_eq!(asked, wanted, "the slices under the ranges, once each");
    // Asked again: every slice is cached.
    let again = range(&c, &u, a.0, a.1).await;
    assert!(again.bytes()[..] == body[a.0..=a.1]);
    assert_eq!(again.header("cache-status"), "outpost; hit");
    assert_eq!(slice_requests(&origin, "/vod/big.mp4"), wanted);
    // A range inside the last slice, and the very last byte.
    let tail = range(&c, &u, (1 << 30) - 5, (1 << 30) - 1).await;
    assert_eq!(tail.bytes(), &body.slice((1 << 30) - 5..));
    edge.shutdown().await;
}

#[tokio::test]
async fn a_whole_sliced_object_is_sent_whole_and_its_slices_are_kept() {
    let body = object(3 << 20);
    let origin = TestOrigin::start().await;
    origin.set("/v.mp4", Script::ok(body.clone()).header("etag", "\"v1\"").ranges());
    let edge = start_edge(
        "[admin]\ntoken = \"t\"\n[cache]\nslice = \"1MiB\"\n[[routes]]\nurl = \"{origin}\"\n",
        &origin,
    )
    .await;
    let c = client();
    let whole = get(&c, &url(&edge, "/v.mp4")).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-length"), (3 << 20).to_string());
    assert!(whole.bytes()[..] == body[..]);
    assert_eq!(slice_requests(&origin, "/v.mp4").len(), 3);
    let head = send(&c, "HEAD", &url(&edge, "/v.mp4"), &[]).await;
    assert_eq!(head.header("content-length"), (3 << 20).to_string());
    assert_eq!(head.header("cache-status"), "outpost; hit");
    // A purge of the object drops its slices too: it is fetched again.
    let purge = send(
        &c,
        "POST",
        &admin_url(&edge, &format!("/purge?url={}", url(&edge, "/v.mp4"))),
        &[("authorization", "Bearer t")],
    )
    .await;
    assert_eq!(purge.status, 200, "{}", purge.text());
    assert!(
        purge.text().starts_with("purged 3"),
        "the three slices: {}",
        purge.text()
    );
    let again = get(&c, &url(&edge, "/v.mp4")).await;
    assert!(again.bytes()[..] == body[..]);
    assert_eq!(slice_requests(&origin, "/v.mp4").values().sum::<usize>(), 6);
    edge.shutdown().await;
}

#[tokio::test]
async fn a_slice_of_another_version_is_never_stitched_on() {
    let old = object(3 << 20);
    let origin = TestOrigin::start().await;
    origin.set("/c.mp4", Script::ok(old.clone()).header("etag", "\"v1\"").ranges());
    let edge = start_edge("[cache]\nslice = \"1MiB\"\n[[routes]]\nurl = \"{origin}\"\n", &origin).await;
    let c = client();
    let u = url(&edge, "/c.mp4");
    assert_eq!(range(&c, &u, 0, 99).await.bytes(), &old.slice(0..100));
    // The origin now has another version: the next slice's If-Range fails.
    let new = noise(3 << 20, 12);
    origin.set("/c.mp4", Script::ok(new.clone()).header("etag", "\"v2\"").ranges());
    let broken = range(&c, &u, (1 << 20) - 10, (1 << 20) + 10).await;
    assert_eq!(broken.status, 206);
    assert!(broken.body.is_err(), "cut, never stitched across versions");
    // What the edge knew of the old version is gone: the new one is served.
    let fresh = range(&c, &u, (1 << 20) - 10, (1 << 20) + 10).await;
    assert_eq!(fresh.bytes(), &new.slice((1 << 20) - 10..(1 << 20) + 11));
    edge.shutdown().await;
}
