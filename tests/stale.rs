//! RFC 5861 through real sockets: stale-while-revalidate answers at once
//! while one refresh runs; stale-if-error covers a failing origin for as
//! long as its grace; a live playlist is never served older than its target
//! duration.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::sync::Notify;

const ROUTE: &str = "[[routes]]\nurl = \"{origin}\"\ntimeout = \"2s\"\ndownload_timeout = \"500ms\"\n";

/// Asks until the answer is a hit (the refresh is in), at most 50 times.
async fn until_hit(c: &TestClient, url: &str) -> Got {
    for _ in 0..50 {
        let got = get(c, url).await;
        if got.header("cache-status") == "outpost; hit" {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} never became a hit");
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_while_one_refresh_reaches_the_origin() {
    let origin = TestOrigin::start().await;
    let cc = [("cache-control", "max-age=1, stale-while-revalidate=30")];
    origin.set("/w.ts", Script::ok("old").headers(&cc));
    let edge = start_edge(ROUTE, &origin).await;
    let c = client();
    get(&c, &url(&edge, "/w.ts")).await;
    advance(Duration::from_millis(1500)).await;
    // The refresh's answer is held at the origin after its first bytes.
    let gate = Arc::new(Notify::new());
    origin.set(
        "/w.ts",
        Script::ok(payload(64 << 10, 3))
            .headers(&cc)
            .throttle(1024, Duration::ZERO)
            .gated(Arc::clone(&gate)),
    );
    // Twenty clients while the refresh is stuck: each gets the stale copy.
    for got in get_many(&c, &url(&edge, "/w.ts"), 20).await {
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "old");
        assert_eq!(got.header("cache-status"), "outpost; fwd=stale");
        assert!(got.header("age").parse::<u64>().unwrap() >= 1, "Age says how stale");
    }
    origin.wait_hits("/w.ts", 2).await;
    assert_eq!(origin.hits("/w.ts"), 2, "one refresh for twenty stale answers");
    gate.notify_one();
    let fresh = until_hit(&c, &url(&edge, "/w.ts")).await;
    assert_eq!(fresh.bytes(), &payload(64 << 10, 3));
    assert_eq!(origin.hits("/w.ts"), 2);
    edge.shutdown().await;
}

#[tokio::test]
async fn the_routes_stale_while_revalidate_applies_when_the_origin_names_none_and_ends_with_its_grace() {
    let origin = TestOrigin::start().await;
    origin.set("/r.ts", Script::ok("one").headers(&[("cache-control", "max-age=1")]));
    let edge = start_edge(&format!("{ROUTE}stale_while_revalidate = \"5s\"\n"), &origin).await;
    let c = client();
    get(&c, &url(&edge, "/r.ts")).await;
    origin.set("/r.ts", Script::ok("two").headers(&[("cache-control", "max-age=1")]));
    advance(Duration::from_millis(1500)).await;
    let stale = get(&c, &url(&edge, "/r.ts")).await;
    assert_eq!(
        (stale.text().as_str(), stale.header("cache-status")),
        ("one", "outpost; fwd=stale")
    );
    assert_eq!(until_hit(&c, &url(&edge, "/r.ts")).await.text(), "two");
    // Past max-age plus the grace the client waits for the origin's answer.
    origin.set("/r.ts", Script::ok("three").headers(&[("cache-control", "max-age=1")]));
    advance(Duration::from_secs(7)).await;
    let late = get(&c, &url(&edge, "/r.ts")).await;
    assert_eq!(late.text(), "three");
    assert_eq!(late.header("cache-status"), "outpost; fwd=miss; stored");
    // Without a grace (the default) a stale entry is never answered at once.
    let plain = start_edge(ROUTE, &origin).await;
    get(&c, &url(&plain, "/r.ts")).await;
    origin.set("/r.ts", Script::ok("four").headers(&[("cache-control", "max-age=1")]));
    advance(Duration::from_millis(1500)).await;
    assert_eq!(get(&c, &url(&plain, "/r.ts")).await.text(), "four");
    plain.shutdown().await;
    edge.shutdown().await;
}

#[tokio::test]
async fn stale_if_error_serves_through_errors_and_timeouts_within_its_grace_only() {
    let origin = TestOrigin::start().await;
    let cc = [("cache-control", "max-age=1, stale-if-error=5"), ("etag", "\"e\"")];
    origin.set("/e.ts", Script::ok("kept").headers(&cc));
    origin.set("/t.ts", Script::ok("kept").headers(&cc));
    let edge = start_edge(
        "[[routes]]\nurl = \"{origin}\"\ntimeout = \"300ms\"\ndownload_timeout = \"300ms\"\n",
        &origin,
    )
    .await;
    let c = client();
    get(&c, &url(&edge, "/e.ts")).await;
    get(&c, &url(&edge, "/t.ts")).await;
    advance(Duration::from_secs(3)).await;
    origin.set("/e.ts", Script::ok("down").status(503).headers(&[]));
    // An origin that does not answer within the route's timeout.
    origin.set("/t.ts", Script::ok("late").headers(&cc).delay(Duration::from_secs(2)));
    for path in ["/e.ts", "/t.ts"] {
        let got = get(&c, &url(&edge, path)).await;
        assert_eq!(got.status, 200, "{path}");
        assert_eq!(got.text(), "kept", "{path}");
        assert_eq!(got.header("cache-status"), "outpost; fwd=stale", "{path}");
    }
    // 7 s after it went stale, 2 s past its grace: the error goes through.
    advance(Duration::from_secs(4)).await;
    let got = get(&c, &url(&edge, "/e.ts")).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.text(), "down");
    edge.shutdown().await;
}

#[tokio::test]
async fn a_route_without_stale_if_error_passes_the_error_on() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/n.ts",
        Script::ok("kept").headers(&[("cache-control", "max-age=1"), ("etag", "\"e\"")]),
    );
    let edge = start_edge(&format!("{ROUTE}stale_if_error = \"0s\"\n"), &origin).await;
    let c = client();
    get(&c, &url(&edge, "/n.ts")).await;
    advance(Duration::from_millis(1500)).await;
    origin.set("/n.ts", Script::ok("down").status(503).headers(&[]));
    assert_eq!(get(&c, &url(&edge, "/n.ts")).await.status, 503);
    edge.shutdown().await;
}

#[tokio::test]
async fn a_live_playlist_is_never_served_older_than_its_target_duration() {
    let origin = TestOrigin::start().await;
    let playlist =
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:4.0,\nseg-7.ts\n";
    // The origin asks for long graces; the playlist's 4 s bound them.
    let cc = [
        (
            "cache-control",
            "max-age=2, stale-while-revalidate=60, stale-if-error=600",
        ),
        ("content-type", "application/vnd.apple.mpegurl"),
        ("etag", "\"p\""),
    ];
    origin.set("/live/index.m3u8", Script::ok(playlist).headers(&cc));
    let edge = start_edge(ROUTE, &origin).await;
    let c = client();
    let u = url(&edge, "/live/index.m3u8");
    get(&c, &u).await;
    origin.set("/live/index.m3u8", Script::ok("down").status(503).headers(&[]));
    // 3 s old, 1 s stale: within the window, served stale.
    advance(Duration::from_secs(3)).await;
    let got = get(&c, &u).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("cache-status"), "outpost; fwd=stale");
    // 5 s old: past its target duration, the origin's error goes through
    // rather than a frozen window.
    advance(Duration::from_secs(2)).await;
    assert_eq!(get(&c, &u).await.status, 503);
    edge.shutdown().await;
}
