//! A real player: headless Debian Chromium plays the demo's live stream with
//! hls.js through the edge (`tests/browser/play.mjs`, driven by playwright-core).

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use outpost::demo::DemoOrigin;
use support::*;

const PLAYERS: usize = 10;
const SECONDS: u64 = 30;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_players_play_live_hls_through_the_edge_and_the_origin_sends_each_segment_once() {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").exists() && dir.join("node_modules/hls.js").exists(),
        "the browser test needs its npm packages: `npm ci --prefix tests/browser` (.ci/run does it)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists() || std::env::var_os("CHROMIUM").is_some(),
        "the browser test needs Debian's chromium (.ci/run installs it)"
    );
    let origin = DemoOrigin::start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let edge = start_edge_at("[[routes]]\nurl = \"{origin}\"\n", &origin.url()).await;
    origin.attach(edge.edge.clone());

    let page = url(&edge, "/");
    let run = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(dir.join("play.mjs"))
            .args([page, PLAYERS.to_string(), SECONDS.to_string()])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("node runs (apt-get install nodejs npm)")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "play.mjs failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("play.mjs prints JSON");
    let watched = report["watched"].as_f64().unwrap();
    let players = report["players"].as_array().unwrap();
    assert_eq!(players.len(), PLAYERS);

    for (i, p) in players.iter().enumerate() {
        let advanced = p["advanced"].as_f64().unwrap();
        assert_eq!(p["fatal"].as_array().unwrap().len(), 0, "player {i}: fatal errors: {p}");
        assert_eq!(p["stalls"].as_u64(), Some(0), "player {i} stalled after it began: {p}");
        // Without stalls, playback keeps pace with the clock; allow for a slow start of sampling.
        assert!(
            advanced >= watched - 5.0,
            "player {i} advanced {advanced:.1} s in {watched:.1} s: {p}"
        );
        let loaded = p["segments"].as_array().unwrap();
        assert!(
            loaded.len() >= (SECONDS / 2) as usize,
            "player {i} loaded {} segments",
            loaded.len()
        );
        for s in loaded {
            let status = s["cacheStatus"].as_str().unwrap_or_default();
            assert!(status.starts_with("outpost; "), "player {i}: {s}");
        }
    }

    // Ten players, one origin fetch per segment.
    let hits = origin.all_hits();
    let segments: Vec<(&String, &u64)> = hits.iter().filter(|(p, _)| p.starts_with("/live/seg-")).collect();
    assert!(
        segments.len() >= (SECONDS / 2) as usize,
        "segments fetched: {segments:?}"
    );
    for (path, n) in &segments {
        assert_eq!(**n, 1, "the origin sent {path} {n} times");
    }
    // The edge fetches each new segment when it refreshes the playlist, before players ask.
    let loads: Vec<&str> = players
        .iter()
        .flat_map(|p| p["segments"].as_array().unwrap())
        .map(|s| s["cacheStatus"].as_str().unwrap_or_default())
        .collect();
    let prefetched = loads.iter().filter(|s| s.ends_with("detail=prefetch")).count();
    assert!(
        prefetched * 10 >= loads.len() * 8,
        "{prefetched} of {} segment loads were prefetched: {loads:?}",
        loads.len()
    );
    let stats = outpost::admin::status_json(&edge.edge);
    let offload = stats["origin_offload"].as_f64().unwrap();
    assert!(
        offload > 0.85,
        "origin offload {offload:.3} with {PLAYERS} players: {stats}"
    );
    eprintln!(
        "{PLAYERS} players for {watched:.1} s: {} segments, each sent once by the origin; \
         {prefetched} of {} segment loads prefetched; origin offload {offload:.4}",
        segments.len(),
        loads.len()
    );
    edge.shutdown().await;
}

/// Runs `script` (in tests/browser) with node and returns the JSON it prints.
async fn node(script: &'static str, args: Vec<String>) -> serde_json::Value {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").exists() && dir.join("node_modules/dashjs").exists(),
        "the browser tests need their npm packages: `npm ci --prefix tests/browser` (.ci/run does it)"
    );
    let run = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(dir.join(script))
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("node runs (apt-get install nodejs npm)")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{script} failed: {stderr}");
    serde_json::from_slice(&run.stdout).unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dash_js_player_receives_the_edges_cmsd() {
    let live = FfmpegLive::start("cmsd", Packaging::Dash);
    live.wait_file("manifest.mpd").await;
    let origin = TestOrigin::start().await;
    origin.serve_dir("/live/", &live.dir);
    let dir = browser_dir();
    let page = std::fs::read(dir.join("cmsd.html")).unwrap();
    origin.set("/cmsd.html", Script::ok(page).header("content-type", "text/html"));
    let dash_js = std::fs::read(dir.join("node_modules/dashjs/dist/modern/umd/dash.all.min.js")).unwrap();
    origin.set(
        "/dash.all.min.js",
        Script::ok(dash_js).header("content-type", "application/javascript"),
    );
    let edge = edge_for(&origin).await;
    let report = node("cmsd.mjs", vec![url(&edge, "/cmsd.html"), "40".into()]).await;
    let received = report["received"].as_array().unwrap();
    let parsed = report["parsed"].as_array().unwrap();
    assert!(parsed.len() >= 3, "dash.js kept CMSD for too few segments: {report}");
    // Every response the player took from the edge carried the edge's entry.
    for r in received {
        let header = r["header"].as_str().unwrap_or_default();
        assert!(header.starts_with("\"outpost\""), "{r}");
    }
    // What dash.js parsed: the round trip on every answer, a throughput once
    // the connection has delivered some bytes, and no duress on an idle edge.
    for p in parsed {
        let dynamic = &p["dynamic"];
        assert!(dynamic["rtt"].as_u64().is_some(), "{p}");
        assert!(dynamic.get("du").is_none() && dynamic.get("mb").is_none(), "{p}");
    }
    assert!(
        parsed
            .iter()
            .any(|p| p["dynamic"]["etp"].as_u64().is_some_and(|etp| etp > 0)),
        "no throughput in {report}"
    );
    edge.shutdown().await;
}
