//! Video awareness: playlist freshness, prefetch, CMCD, cache-key control, negative caching.

mod support;

use std::time::Duration;

use support::*;

fn live_playlist(first: u64, count: u64, target: u64) -> String {
    let mut text =
        format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
    for n in first..first + count {
        text.push_str(&format!("#EXTINF:{target}.0,\nseg-{n}.ts\n"));
    }
    text
}

/// A prefetch put the object there, or is still bringing it.
/// Waits until the origin has seen `path` at least once (bounded).
async fn eventually_requested(origin: &TestOrigin, path: &str) {
    origin.wait_hits(path, 1).await;
}

#[tokio::test]
async fn live_playlists_are_capped_and_coalesced() {
    let origin = TestOrigin::start().await;
    // The origin says a minute; a live playlist with 2 s segments is kept at most 1 s.
    origin.set(
        "/live/index.m3u8",
        Script::ok(live_playlist(10, 4, 2))
            .headers(&[
                ("cache-control", "max-age=60"),
                ("content-type", "application/vnd.apple.mpegurl"),
            ])
            .delay(Duration::from_millis(100)),
    );
    for n in 10..14 {
        origin.set(&format!("/live/seg-{n}.ts"), Script::ok(payload(1000, n as u8)));
    }
    let edge = edge_for(&origin).await;
    let c = client();
    for got in get_many(&c, &url(&edge, "/live/index.m3u8"), 100).await {
        assert_eq!(got.status, 200);
    }
    assert_eq!(origin.hits("/live/index.m3u8"), 1, "100 pollers, one origin request");
    assert_eq!(cache_status(&c, &url(&edge, "/live/index.m3u8")).await, "outpost; hit");
    advance(Duration::from_millis(1100)).await;
    get_many(&c, &url(&edge, "/live/index.m3u8"), 50).await;
    assert_eq!(origin.hits("/live/index.m3u8"), 2, "refetched after the 1 s cap, once");
    edge.shutdown().await;
}

#[tokio::test]
async fn vod_playlists_keep_the_origins_lifetime() {
    let origin = TestOrigin::start().await;
    let vod = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:2.0,\na.ts\n#EXT-X-ENDLIST\n";
    origin.set(
        "/vod/index.m3u8",
        Script::ok(vod).headers(&[("cache-control", "max-age=60")]),
    );
    let edge = edge_for(&origin).await;
    let c = client();
    get(&c, &url(&edge, "/vod/index.m3u8")).await;
    advance(Duration::from_millis(1100)).await;
    assert_eq!(cache_status(&c, &url(&edge, "/vod/index.m3u8")).await, "outpost; hit");
    edge.shutdown().await;
}

#[tokio::test]
async fn the_newest_live_segment_is_prefetched_before_players_ask() {
    let origin = TestOrigin::start().await;
    origin.set("/live/index.m3u8", Script::ok(live_playlist(20, 3, 2)).headers(&[]));
    for n in 20..23 {
        origin.set(
            &format!("/live/seg-{n}.ts"),
            Script::ok(payload(50_000, n as u8)).headers(&[]),
        );
    }
    let edge = edge_for(&origin).await;
    let c = client();
    get(&c, &url(&edge, "/live/index.m3u8")).await;
    // Only the newest segment, and without any player asking for it.
    eventually_requested(&origin, "/live/seg-22.ts").await;
    assert_eq!(origin.hits("/live/seg-21.ts"), 0);
    let got = get(&c, &url(&edge, "/live/seg-22.ts")).await;
    assert_eq!(got.bytes(), &payload(50_000, 22));
    assert_prefetched(got.header("cache-status"));
    assert_eq!(origin.hits("/live/seg-22.ts"), 1);
    let metrics = get(&c, &admin_url(&edge, "/metrics")).await.text();
    assert!(
        metrics.contains("outpost_prefetch_total{result=\"fetched\"} 1"),
        "{metrics}"
    );
    // Fetching the playlist again finds the newest segment cached: nothing more to fetch.
    advance(Duration::from_millis(1100)).await;
    get(&c, &url(&edge, "/live/index.m3u8")).await;
    assert_eq!(origin.hits("/live/index.m3u8"), 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = get(&c, &admin_url(&edge, "/metrics")).await.text();
        if metrics.contains("outpost_prefetch_total{result=\"cached\"} 1") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(origin.hits("/live/seg-22.ts"), 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn vod_segment_requests_prefetch_the_next_ones() {
    let origin = TestOrigin::start().await;
    let mut vod = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n");
    for n in 0..6 {
        vod.push_str(&format!("#EXTINF:2.0,\nv-{n}.ts\n"));
        origin.set(&format!("/vod/v-{n}.ts"), Script::ok(payload(10_000, n)));
    }
    vod.push_str("#EXT-X-ENDLIST\n");
    origin.set("/vod/index.m3u8", Script::ok(vod));
    let edge = edge_for(&origin).await; // media.prefetch_ahead = 2
    let c = client();
    get(&c, &url(&edge, "/vod/index.m3u8")).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(origin.total(), 1, "a VOD playlist alone prefetches nothing");
    get(&c, &url(&edge, "/vod/v-1.ts")).await;
    eventually_requested(&origin, "/vod/v-2.ts").await;
    eventually_requested(&origin, "/vod/v-3.ts").await;
    assert_eq!(origin.hits("/vod/v-4.ts"), 0, "only prefetch_ahead segments");
    assert_eq!(origin.hits("/vod/v-0.ts"), 0, "nothing behind the player");
    // The player moves on: the window moves with it, and what it asks for was prefetched.
    assert_prefetched(&cache_status(&c, &url(&edge, "/vod/v-2.ts")).await);
    eventually_requested(&origin, "/vod/v-4.ts").await;
    assert_eq!(origin.hits("/vod/v-5.ts"), 0);
    assert_eq!(
        origin.hits("/vod/v-3.ts"),
        1,
        "already cached or on its way: not fetched twice"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn cmcd_next_object_hints_are_followed_and_never_keyed() {
    let origin = TestOrigin::start().await;
    origin.set("/v/a.m4s", Script::ok("a"));
    origin.set("/v/b.m4s", Script::ok("b"));
    let edge = edge_for(&origin).await;
    let c = client();
    send(
        &c,
        "GET",
        &url(&edge, "/v/a.m4s"),
        &[("cmcd-request", "bl=2000,nor=\"b.m4s\"")],
    )
    .await;
    eventually_requested(&origin, "/v/b.m4s").await;
    // The CMCD query argument is forwarded but is not part of the cache key.
    let with_query = "/v/a.m4s?CMCD=bl%3D2000%2Cnor%3D%22b.m4s%22";
    assert_eq!(cache_status(&c, &url(&edge, with_query)).await, "outpost; hit");
    assert_eq!(origin.hits("/v/b.m4s"), 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn ignored_query_arguments_share_one_entry() {
    let origin = TestOrigin::start().await;
    origin.set("/t.ts", Script::ok("shared"));
    origin.set("/t.ts?token=alice", Script::ok("alice's own"));
    let edge = start_edge("[[routes]]\nurl = \"{origin}\"\nignore_query = [\"token\"]\n", &origin).await;
    let c = client();
    assert_eq!(get(&c, &url(&edge, "/t.ts?token=alice")).await.text(), "shared");
    assert_eq!(cache_status(&c, &url(&edge, "/t.ts?token=bob")).await, "outpost; hit");
    // What is stored under the key is what was fetched for it: the key's own
    // URL, without the argument it ignores.
    assert_eq!(origin.paths(), ["/t.ts"]);
    edge.shutdown().await;
}

#[tokio::test]
async fn unpublished_segments_are_negative_cached_briefly() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/live/seg-99.ts",
        Script::ok("not yet")
            .status(404)
            .headers(&[])
            .delay(Duration::from_millis(100)),
    );
    let edge = edge_for(&origin).await; // media.negative_ttl = 250ms
    let c = client();
    for got in get_many(&c, &url(&edge, "/live/seg-99.ts"), 50).await {
        assert_eq!(got.status, 404);
    }
    assert_eq!(cache_status(&c, &url(&edge, "/live/seg-99.ts")).await, "outpost; hit");
    assert_eq!(origin.hits("/live/seg-99.ts"), 1);
    // Published now: served as soon as the 250 ms are up.
    origin.set("/live/seg-99.ts", Script::ok("here").headers(&[]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = get(&c, &url(&edge, "/live/seg-99.ts")).await;
    assert_eq!((got.status.as_u16(), got.text()), (200, "here".to_string()));
    // Segments without caching headers are kept (media.segment_default_ttl).
    assert_eq!(cache_status(&c, &url(&edge, "/live/seg-99.ts")).await, "outpost; hit");
    edge.shutdown().await;
}
