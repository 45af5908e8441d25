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
    assert!(
        got.text().contains("blocking playlist reload past 3s"),
        "{}",
        got.text()
    );
    // Bounded by three target durations (3 s), not by the route's 2 s header timeout.
    assert!(started.elapsed() >= Duration::from_secs(3));
    edge.shutdown().await;
}
