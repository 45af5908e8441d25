//! Real live DASH from ffmpeg (SegmentTemplate with a SegmentTimeline, two
//! representations), through the edge.

mod support;

use std::time::{Duration, Instant};

use support::*;

/// The number of the newest segment a manifest lists (every representation
/// shares ffmpeg's timeline): `startNumber` plus the timeline's entries and repeats.
fn newest_number(mpd: &str) -> u64 {
    let start: u64 = mpd
        .split("startNumber=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .expect("ffmpeg wrote a startNumber");
    let timeline = mpd.split("</SegmentTimeline>").next().expect("a timeline");
    let entries: u64 = timeline
        .split("<S ")
        .skip(1)
        .map(|s| {
            s.split("r=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map_or(0, |r| r.parse::<u64>().unwrap())
                + 1
        })
        .sum();
    assert!(entries > 0, "the timeline lists segments: {mpd}");
    start + entries - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_dash_is_capped_and_prefetched_for_watched_representations_only() {
    let live = FfmpegLive::start("dash", Packaging::Dash);
    live.wait_file("chunk-stream0-00002.m4s").await;
    live.wait_file("manifest.mpd").await;
    let origin = TestOrigin::start().await;
    origin.serve_dir("/dash/", &live.dir);
    let edge = edge_for(&origin).await;
    let c = client();
    let manifest = url(&edge, "/dash/manifest.mpd");

    // ffmpeg says minimumUpdatePeriod="PT1S": the edge keeps the manifest at
    // most half of that, and 20 players polling every 50 ms for 3 s cost the
    // origin about one request per window.
    let mpd = get(&c, &manifest).await.text();
    assert!(
        mpd.contains(r#"type="dynamic""#) && mpd.contains(r#"minimumUpdatePeriod="PT1S""#),
        "{mpd}"
    );
    let before = origin.hits("/dash/manifest.mpd");
    let started = Instant::now();
    for _ in 0..60 {
        get_many(&c, &manifest, 20).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let polled = started.elapsed().as_secs_f64();
    let fetched = origin.hits("/dash/manifest.mpd") - before;
    let windows = (polled / 0.5).ceil() as usize + 1;
    assert!(
        fetched <= windows,
        "{fetched} manifest requests in {polled:.1} s: at most {windows}"
    );
    assert!(fetched >= 1, "the manifest was refreshed while live");
    // Nobody has watched anything yet: nothing was prefetched.
    assert!(
        !origin.paths().iter().any(|p| p.contains("chunk-")),
        "prefetched before any player chose a representation: {:?}",
        origin.paths()
    );

    // A player picks representation 0 and plays its newest segment.
    let mpd = get(&c, &manifest).await.text();
    assert_eq!(get(&c, &url(&edge, "/dash/init-stream0.m4s")).await.status, 200);
    let first = format!("/dash/chunk-stream0-{:05}.m4s", newest_number(&mpd));
    assert_eq!(get(&c, &url(&edge, &first)).await.status, 200);

    // From now on, each manifest fetch brings that representation's newest
    // segment to the edge before the player asks for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "no prefetch seen; origin saw {:?}",
            origin.paths()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mpd = get(&c, &manifest).await.text();
        let name = format!("chunk-stream0-{:05}.m4s", newest_number(&mpd));
        let path = format!("/dash/{name}");
        if path == first {
            continue;
        }
        let waited = Instant::now();
        while origin.hits(&path) == 0 && waited.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if origin.hits(&path) == 0 {
            continue; // this manifest came from cache; try the next window
        }
        let got = get(&c, &url(&edge, &path)).await;
        live.assert_prefetched_segment(&got, &origin, &path, &name);
        break;
    }
    // The other representation was never watched, so never prefetched.
    let unwatched: Vec<String> = origin.paths().into_iter().filter(|p| p.contains("stream1")).collect();
    assert!(
        unwatched.is_empty(),
        "prefetched an unwatched representation: {unwatched:?}"
    );
    edge.shutdown().await;
}
