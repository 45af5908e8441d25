//! Real live HLS from ffmpeg (MPEG-TS and fMP4), through the edge.

mod support;

use std::time::{Duration, Instant};

use support::*;

async fn ttl_and_prefetch(name: &str, packaging: Packaging) {
    let live = FfmpegLive::start(name, packaging);
    live.wait_segments(2).await;
    let origin = TestOrigin::start().await;
    origin.serve_dir("/live/", &live.dir);
    let edge = edge_for(&origin).await;
    let c = client();

    // Polling: 100 players every 100 ms for 3 s. The playlist's target duration
    // bounds the edge's TTL (half of it), so the origin sees about one request
    // per TTL window, whatever the number of players.
    let playlist = get(&c, &url(&edge, "/live/index.m3u8")).await.text();
    let target: f64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
        .and_then(|t| t.trim().parse().ok())
        .expect("ffmpeg wrote a target duration");
    let ttl = target / 2.0;
    let before = origin.hits("/live/index.m3u8");
    let started = Instant::now();
    for _ in 0..30 {
        get_many(&c, &url(&edge, "/live/index.m3u8"), 100).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let polled = started.elapsed().as_secs_f64();
    let fetched = origin.hits("/live/index.m3u8") - before;
    let windows = (polled / ttl).ceil() as usize + 1;
    assert!(
        fetched <= windows,
        "{fetched} origin playlist requests in {polled:.1} s, TTL {ttl} s: at most {windows}"
    );
    assert!(fetched >= 1, "the playlist was refreshed while live");

    // A player fetches the playlist; the newest segment reaches the edge before it asks.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no prefetch seen");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let text = get(&c, &url(&edge, "/live/index.m3u8")).await.text();
        let newest = segment_uris(&text).pop().expect("segments listed");
        let path = format!("/live/{newest}");
        // Give the prefetch its head start, bounded; then the player asks.
        let waited = Instant::now();
        while origin.hits(&path) == 0 && waited.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if origin.hits(&path) == 0 {
            continue; // the playlist came from cache: no fetch, no prefetch; try the next window
        }
        let got = get(&c, &url(&edge, &path)).await;
        live.assert_prefetched_segment(&got, &origin, &path, &newest);
        break;
    }
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpeg_ts_live_stream() {
    ttl_and_prefetch("ts", Packaging::Ts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fmp4_live_stream() {
    ttl_and_prefetch("fmp4", Packaging::Fmp4).await;
}

/// `EXT-X-MEDIA-SEQUENCE` of a playlist (0 when absent).
fn media_sequence(playlist: &str) -> u64 {
    playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_encoder_never_yields_the_old_streams_segments() {
    let mut live = FfmpegLive::start("restart", Packaging::Ts);
    live.wait_segments(1).await;
    let origin = TestOrigin::start().await;
    origin.serve_dir("/live/", &live.dir);
    let edge = edge_for(&origin).await;
    let c = client();
    let playlist = url(&edge, "/live/index.m3u8");
    // Another stream below this one's folder: a restart leaves it alone.
    origin.set("/live/other/seg-0.ts", Script::ok("another stream"));
    get(&c, &url(&edge, "/live/other/seg-0.ts")).await;
    // Watch the first stream until its window has slid, so that the edge
    // holds every segment it listed (for 10 minutes: no caching headers).
    let mut old = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the first stream never slid: {old:?}");
        let text = get(&c, &playlist).await.text();
        for uri in segment_uris(&text) {
            if let std::collections::hash_map::Entry::Vacant(slot) = old.entry(uri) {
                let got = get(&c, &url(&edge, &format!("/live/{}", slot.key()))).await;
                if got.status == 200 {
                    slot.insert(got.bytes().clone());
                }
            }
        }
        if media_sequence(&text) >= 2 && old.contains_key("seg-0.ts") && old.contains_key("seg-1.ts") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The encoder restarts under the same names.
    live.restart(Packaging::Ts);
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        assert!(Instant::now() < deadline, "the edge never showed the new stream");
        let text = get(&c, &playlist).await.text();
        if media_sequence(&text) == 0 && segment_uris(&text).len() >= 2 {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Five players fetch every segment the new playlist lists: each gets
    // what the new encoder wrote, never the old stream's bytes of that name.
    let mut reused = 0;
    for uri in segment_uris(&text) {
        let written = std::fs::read(live.dir.join(&uri)).unwrap();
        for got in get_many(&c, &url(&edge, &format!("/live/{uri}")), 5).await {
            assert_eq!(got.status, 200, "{uri}");
            assert!(got.bytes()[..] == written[..], "{uri}: not the new stream's bytes");
        }
        if let Some(before) = old.get(&uri) {
            assert!(
                before[..] != written[..],
                "{uri}: the two encoders wrote the same bytes"
            );
            reused += 1;
        }
    }
    assert!(reused >= 2, "the new stream reused {reused} of the old names");
    assert_eq!(
        cache_status(&c, &url(&edge, "/live/other/seg-0.ts")).await,
        "outpost; hit",
        "a stream in a subfolder keeps its entries"
    );
    let metrics = get(&c, &admin_url(&edge, "/metrics")).await.text();
    assert!(metrics.contains("outpost_stream_restarts_total 1\n"), "{metrics}");
    edge.shutdown().await;
}

/// A live playlist of `seg-{first}.ts` ..= `seg-{last}.ts`, target duration 4 s.
fn window(first: u64, last: u64) -> Script {
    let mut text = format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
    for n in first..=last {
        text.push_str(&format!("#EXTINF:4.0,\nseg-{n}.ts\n"));
    }
    // No caching headers: the edge keeps it half a target duration (2 s).
    Script::ok(text).headers(&[("content-type", "application/vnd.apple.mpegurl")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_the_next_live_segment_are_held_until_it_is_listed_and_fetched_once() {
    let origin = TestOrigin::start().await;
    origin.set("/live/index.m3u8", window(10, 12));
    origin.set("/live/seg-13.ts", Script::ok("not yet").status(404).headers(&[]));
    let edge = edge_for(&origin).await;
    let c = client();
    get(&c, &url(&edge, "/live/index.m3u8")).await;
    // 50 players ask for seg-13 before it exists; 200 ms later the origin
    // publishes it and lists it. The edge refreshes the playlist when it
    // goes stale (2 s after it was read), within the 2 s each is held.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let segment = url(&edge, "/live/seg-13.ts");
    let players = get_many(&c, &segment, 50);
    let publish = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        origin.set("/live/seg-13.ts", Script::ok(payload(40_000, 13)));
        origin.set("/live/index.m3u8", window(11, 13));
    };
    let (got, ()) = tokio::join!(players, publish);
    let held = asked.elapsed();
    for g in &got {
        assert_eq!(g.status, 200, "a held request got {}", g.status);
        assert_eq!(g.bytes(), &payload(40_000, 13));
    }
    assert_eq!(
        origin.hits("/live/seg-13.ts"),
        1,
        "one origin fetch for fifty held requests"
    );
    eprintln!("50 early requests answered after {held:?}");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_segment_that_never_comes_gets_a_short_404_after_half_a_target_duration() {
    let origin = TestOrigin::start().await;
    origin.set("/live/index.m3u8", window(10, 12));
    origin.set("/live/seg-13.ts", Script::ok("not yet").status(404).headers(&[]));
    origin.set("/live/seg-20.ts", Script::ok("not yet").status(404).headers(&[]));
    let edge = edge_for(&origin).await;
    let c = client();
    get(&c, &url(&edge, "/live/index.m3u8")).await;
    let playlist_fetches = origin.hits("/live/index.m3u8");
    // As a player would: a moment after it read the playlist.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = get_many(&c, &url(&edge, "/live/seg-13.ts"), 10).await;
    assert!(got.iter().all(|g| g.status == 404));
    assert_eq!(origin.hits("/live/seg-13.ts"), 1, "the held requests share the fetch");
    // The edge refreshed the playlist while holding them.
    assert!(origin.hits("/live/index.m3u8") > playlist_fetches);
    // A segment far ahead of the window is not held: straight to the origin.
    assert_eq!(get(&c, &url(&edge, "/live/seg-20.ts")).await.status, 404);
    assert_eq!(origin.hits("/live/seg-20.ts"), 1);
    edge.shutdown().await;
}
