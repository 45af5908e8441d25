//! Low-latency HLS: blocking playlist reloads and preload hints.

mod support;

use std::time::{Duration, Instant};

use support::*;

fn ll_playlist(msn: u64, part: u64) -> String {
    format!(
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:1\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.6\n\
         #EXT-X-PART-INF:PART-TARGET=0.2\n#EXT-X-MEDIA-SEQUENCE:{msn}\n#EXTINF:1.0,\nseg-{msn}.mp4\n\
         #EXT-X-PART:DURATION=0.2,URI=\"seg-{next}.part{part}.mp4\"\n\
         #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg-{next}.part{hint}.mp4\"\n",
        next = msn + 1,
        hint = part + 1
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocking_reloads_cost_one_origin_request_each() {
    let origin = TestOrigin::start().await;
    origin.set("/ll/index.m3u8", Script::ok(ll_playlist(5, 0)).headers(&[]));
    for part in [1, 2] {
        // The origin holds each blocking reload until "its" part exists.
        origin.set(
            &format!("/ll/index.m3u8?_HLS_msn=6&_HLS_part={part}"),
            Script::ok(ll_playlist(5, part))
                .headers(&[])
                .delay(Duration::from_millis(300)),
        );
    }
    let edge = edge_for(&origin).await;
    let c = client();
    get(&c, &url(&edge, "/ll/index.m3u8")).await;
    for part in [1, 2] {
        let path = format!("/ll/index.m3u8?_HLS_msn=6&_HLS_part={part}");
        for got in get_many(&c, &url(&edge, &path), 100).await {
            assert_eq!(got.status, 200);
            assert!(
                got.text().contains(&format!("part{part}.mp4")),
                "each directive gets its own answer"
            );
        }
        assert_eq!(
            origin.hits(&path),
            1,
            "100 blocking reloads for {path}: one origin request"
        );
    }
    edge.shutdown().await;
}

#[tokio::test]
async fn preload_hints_are_requested_ahead_of_players() {
    let origin = TestOrigin::start().await;
    origin.set("/ll/index.m3u8", Script::ok(ll_playlist(5, 0)).headers(&[]));
    // The origin holds the hinted part until it is produced.
    origin.set(
        "/ll/seg-6.part1.mp4",
        Script::ok(payload(20_000, 6))
            .headers(&[])
            .delay(Duration::from_millis(400)),
    );
    let edge = edge_for(&origin).await;
    let c = client();
    get(&c, &url(&edge, "/ll/index.m3u8")).await;
    origin.wait_hits("/ll/seg-6.part1.mp4", 1).await;
    // Players asking now join the held request.
    for got in get_many(&c, &url(&edge, "/ll/seg-6.part1.mp4"), 20).await {
        assert_eq!(got.bytes(), &payload(20_000, 6));
        assert!(
            got.header("cache-status").ends_with("detail=prefetch"),
            "{}",
            got.header("cache-status")
        );
    }
    assert_eq!(origin.hits("/ll/seg-6.part1.mp4"), 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn a_reload_held_past_three_target_durations_is_503() {
    let origin = TestOrigin::start().await;
    origin.set("/ll/index.m3u8", Script::ok(ll_playlist(5, 0)).headers(&[]));
    origin.set(
        "/ll/index.m3u8?_HLS_msn=99",
        Script::ok("late").headers(&[]).delay(Duration::from_secs(8)),
    );
    let edge = edge_for(&origin).await; // route timeout 2 s; target duration 1 s
    let c = client();
    get(&c, &url(&edge, "/ll/index.m3u8")).await;
    let started = Instant::now();
    let got = get(&c, &url(&edge, "/ll/index.m3u8?_HLS_msn=99")).await;
    assert_eq!(got.status, 503, "{}", got.text());
    assert_eq!(
        edge.edge
            .metrics()
            .upstream_errors
            .get(outpost::metrics::FetchFailure::Blocked),
        1,
        "counted as a held reload"
    );
    // Bounded by three target durations (3 s), not by the route's 2 s header timeout.
    assert!(started.elapsed() >= Duration::from_secs(3));
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_into_a_part_still_arriving_are_served_as_it_arrives() {
    use http_body_util::BodyExt;
    use std::sync::Arc;

    // The origin is still producing the segment: no Content-Length, the first
    // 10,000 bytes now, the rest when the gate opens.
    let body = payload(30_000, 7);
    let gate = Arc::new(tokio::sync::Notify::new());
    let origin = TestOrigin::start().await;
    origin.set(
        "/ll/seg-7.mp4",
        Script::ok(body.clone())
            .chunked()
            .throttle(10_000, Duration::ZERO)
            .gated(Arc::clone(&gate)),
    );
    let edge = edge_for(&origin).await;
    let c = client();
    let seg = url(&edge, "/ll/seg-7.mp4");

    // A byte range inside what has arrived is complete before the origin goes on.
    let early = ranged(&c, &seg, "bytes=4000-5999").await;
    assert_eq!(early.status(), 206);
    assert_eq!(early.headers()["content-range"], "bytes 4000-5999/*");
    // Its length is known from the range itself; a segment that ended sooner
    // would cut the connection rather than pass a short body off as whole.
    assert_eq!(early.headers()["content-length"], "2000");
    let early = tokio::time::timeout(Duration::from_secs(5), early.into_body().collect())
        .await
        .expect("the range is served from the bytes that arrived")
        .unwrap()
        .to_bytes();
    assert_eq!(early, body.slice(4000..6000));

    // An open-ended range (a byte-range preload hint) gets its head at once
    // and its bytes as the origin sends them (RFC 8673's open end).
    let open = ranged(&c, &seg, "bytes=12000-").await;
    assert_eq!(open.status(), 206);
    assert_eq!(open.headers()["content-range"], "bytes 12000-9007199254740991/*");
    let reading = tokio::spawn(async move { open.into_body().collect().await.map(|b| b.to_bytes()) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!reading.is_finished(), "the open range waits for the origin");
    gate.notify_one();
    let rest = tokio::time::timeout(Duration::from_secs(5), reading)
        .await
        .expect("the open range ends with the segment")
        .unwrap()
        .unwrap();
    assert_eq!(rest, body.slice(12000..));
    assert_eq!(origin.hits("/ll/seg-7.mp4"), 1);

    // Once stored, the length is known and ranges are exact.
    let stored = send(&c, "GET", &seg, &[("range", "bytes=12000-")]).await;
    assert_eq!(stored.header("content-range"), "bytes 12000-29999/30000");
    assert_eq!(stored.bytes(), &body.slice(12000..));
    assert_eq!(origin.hits("/ll/seg-7.mp4"), 1);
    edge.shutdown().await;
}
