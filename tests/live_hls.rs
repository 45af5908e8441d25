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
    let metrics = get(&c, &admin_url(&edge, "/metrics")).await.text();
    assert!(metrics.contains("outpost_stream_restarts_total 1\n"), "{metrics}");
    edge.shutdown().await;
}
