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

/// The browser tests take turns, whether the runner gives each its own
/// process (nextest) or thread (cargo test): ten Chromium players and five
/// P2P viewers on the same two cores starve each other into stalls that
/// say nothing of the edge. Held until dropped.
fn browser_turn() -> std::fs::File {
    let path = std::env::temp_dir().join("outpost-browser-tests.lock");
    let file = std::fs::File::create(path).expect("the browser tests' lock file");
    file.lock().expect("the browser tests' turn");
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_players_play_live_hls_through_the_edge_and_the_origin_sends_each_segment_once() {
    let _turn = browser_turn();
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
    let _turn = browser_turn();
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

/// A 30 s VOD stream of 2 s segments made by ffmpeg in `dir` (`index.m3u8`, `seg-N.ts`).
fn ffmpeg_vod(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x180:rate=25", "-t", "30"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "50",
            "-sc_threshold",
            "0",
        ])
        .args([
            "-f",
            "hls",
            "-hls_time",
            "2",
            "-hls_playlist_type",
            "vod",
            "-hls_segment_filename",
        ])
        .arg(dir.join("seg-%d.ts"))
        .arg(dir.join("index.m3u8"))
        .status()
        .expect("ffmpeg runs (apt-get install ffmpeg)");
    assert!(status.success(), "ffmpeg made no VOD stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_media_loader_plays_from_the_edge_and_checks_peers_against_its_hash_list() {
    let _turn = browser_turn();
    let vod = std::env::temp_dir().join(format!("outpost-p2p-vod-{}", std::process::id()));
    ffmpeg_vod(&vod);
    let origin = TestOrigin::start().await;
    origin.serve_dir("/vod/", &vod);
    let dir = browser_dir();
    let modules = dir.join("node_modules");
    let js = |path: &str| {
        Script::ok(std::fs::read(modules.join(path)).unwrap()).header("content-type", "application/javascript")
    };
    origin.set(
        "/p2p.html",
        Script::ok(std::fs::read(dir.join("p2p.html")).unwrap()).header("content-type", "text/html"),
    );
    origin.set("/p2p/hls.min.js", js("hls.js/dist/hls.min.js"));
    origin.set(
        "/p2p/core.js",
        js("p2p-media-loader-core/dist/p2p-media-loader-core.es.js"),
    );
    origin.set(
        "/p2p/hlsjs.js",
        js("p2p-media-loader-hlsjs/dist/p2p-media-loader-hlsjs.es.js"),
    );
    // The page's own query (the tracker, the fake peer's mark) is for the page's script.
    let edge = start_edge(
        "[[routes]]\nurl = \"{origin}\"\nignore_query = [\"tracker\", \"tamper\", \"stall\", \"checkhttp\"]\n",
        &origin,
    )
    .await;
    let report = node("p2p.mjs", vec![url(&edge, "/p2p.html")]).await;
    let _ = std::fs::remove_dir_all(&vod);
    let scene = |name: &str| {
        let s = &report[name];
        assert!(s.is_object(), "no {name} in {report}");
        assert_eq!(s["fatal"], serde_json::json!([]), "{name}: fatal player errors: {s}");
        s.clone()
    };
    let list = |s: &serde_json::Value, key: &str| -> Vec<String> {
        s[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    // WebRTC unavailable: the stream plays from the edge alone.
    let alone = scene("alone");
    assert!(alone["played"].as_f64().unwrap() >= 6.0, "{alone}");
    assert_eq!(alone["p2p"], 0);
    assert!(alone["http"].as_u64().unwrap() > 0);
    // Two viewers in one swarm: the second takes segments from the first,
    // and each passes the check against the edge's hash list.
    let leecher = scene("leecher");
    assert!(leecher["p2p"].as_u64().unwrap() > 0, "no bytes from a peer: {leecher}");
    assert!(list(&leecher, "accepted").len() >= 2, "{leecher}");
    assert!(list(&leecher, "rejected").is_empty(), "{leecher}");
    // A fake peer's flipped bytes fail the check, and the viewer fetches
    // those segments from the edge instead.
    let (fake, honest) = (scene("fake"), scene("honest"));
    assert!(
        fake["uploaded"].as_u64().unwrap() >= 1,
        "the fake peer sent nothing: {fake}"
    );
    let rejected = list(&honest, "rejected");
    assert!(!rejected.is_empty(), "nothing was rejected: {honest}");
    let fetched: Vec<&str> = honest["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    for uri in &rejected {
        assert!(
            fetched.contains(&uri.as_str()),
            "{uri} rejected but not fetched from the edge: {honest}"
        );
    }
    assert!(honest["played"].as_f64().unwrap() >= 6.0, "{honest}");
    // A peer that goes quiet after 16 KiB of a segment: the viewer finishes
    // it from the edge with `Range: bytes=16384-`, gets a 206 that starts
    // there, and the joined segment passes the check against the hash list.
    let (staller, resumer) = (scene("staller"), scene("resumer"));
    assert!(
        staller["uploaded"].as_u64().unwrap() >= 1,
        "the stalling peer sent nothing: {staller}"
    );
    let resumes: Vec<&serde_json::Value> = resumer["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["range"].is_string())
        .collect();
    assert!(!resumes.is_empty(), "no range request reached the edge: {resumer}");
    for r in &resumes {
        let from = r["range"]
            .as_str()
            .unwrap()
            .strip_prefix("bytes=")
            .and_then(|v| v.strip_suffix('-'))
            .unwrap_or_else(|| panic!("not an open range: {r}"));
        assert_ne!(from, "0", "a resume from the start: {r}");
        assert_eq!(r["status"], 206, "{r}");
        let content_range = r["contentRange"].as_str().unwrap_or_default();
        assert!(content_range.starts_with(&format!("bytes {from}-")), "{r}");
        let uri = r["uri"].as_str().unwrap().to_owned();
        assert!(
            list(&resumer, "accepted").contains(&uri),
            "{uri} resumed but not checked: {resumer}"
        );
    }
    assert!(list(&resumer, "rejected").is_empty(), "{resumer}");
    assert!(resumer["played"].as_f64().unwrap() >= 6.0, "{resumer}");
    // Seven viewers, one origin fetch per segment.
    let segments: Vec<String> = origin
        .paths()
        .into_iter()
        .filter(|p| p.starts_with("/vod/seg-"))
        .collect();
    assert!(segments.len() >= 4, "{segments:?}");
    for path in segments {
        assert_eq!(origin.hits(&path), 1, "{path}");
    }
    eprintln!(
        "p2p: alone {} HTTP bytes; leecher {} bytes from a peer, {} segments checked; honest rejected {rejected:?}; resumed {:?}",
        alone["http"],
        leecher["p2p"],
        list(&leecher, "accepted").len(),
        resumes.iter().map(|r| format!("{} {}", r["uri"], r["range"])).collect::<Vec<_>>()
    );
    edge.shutdown().await;
}

/// Where tests keep what a person may want to look at afterwards.
fn artefacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_charts_the_traffic_in_chromium() {
    let _turn = browser_turn();
    let origin = TestOrigin::start().await;
    for n in 0..20 {
        origin.set(&format!("/live/s1/seg-{n}.ts"), Script::ok(vec![7u8; 32 << 10]));
    }
    origin.set("/live/s2/seg-0.ts", Script::ok(vec![7u8; 1 << 10]));
    let edge = edge_for(&origin).await;
    let c = client();
    // Each segment fetched once and served three times: two thirds hits.
    for n in 0..20 {
        for _ in 0..3 {
            assert_eq!(get(&c, &url(&edge, &format!("/live/s1/seg-{n}.ts"))).await.status, 200);
        }
    }
    assert_eq!(get(&c, &url(&edge, "/live/s2/seg-0.ts")).await.status, 200);
    // Wait for a recorded point beside the one under way (bounded).
    let mut points = Vec::new();
    for _ in 0..250 {
        let status: serde_json::Value =
            serde_json::from_slice(get(&c, &admin_url(&edge, "/status.json")).await.bytes()).unwrap();
        points = status["series"]["points"].as_array().unwrap().clone();
        if points.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(points.len() >= 2, "no recorded point in 25 s: {points:?}");
    let shot = artefacts().join("status.png");
    let _ = std::fs::remove_file(&shot);
    let report = node(
        "status.mjs",
        vec![admin_url(&edge, "/status"), shot.display().to_string()],
    )
    .await;
    assert_eq!(
        report["outside"],
        serde_json::json!([]),
        "the page asked for something off this machine"
    );
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    let charts = &report["charts"];
    for chart in ["offload", "hit-ratio", "requests", "bytes"] {
        assert!(charts[chart]["points"].as_u64().unwrap() >= 1, "{chart}: {report}");
    }
    // What the page drew is what the edge counted: 61 requests and 20 origin
    // fetches fell in the intervals drawn, and 40 were hits.
    let drawn = |chart: &str, series: &str| -> Vec<(f64, f64)> {
        charts[chart]["series"][series]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
            .collect()
    };
    let requests = drawn("requests", "requests_per_s");
    assert!(requests.iter().any(|&(_, v)| v > 0.0), "{report}");
    let hit = drawn("hit-ratio", "hit_ratio");
    assert!(hit.iter().any(|&(_, v)| (v - 40.0 / 61.0).abs() < 1e-9), "{report}");
    let offload = drawn("offload", "origin_offload");
    assert!(offload.iter().any(|&(_, v)| v > 0.6 && v < 0.7), "{report}");
    assert!(
        drawn("bytes", "bytes_out_per_s").iter().any(|&(_, v)| v > 0.0),
        "{report}"
    );
    assert!(
        drawn("bytes", "bytes_in_per_s").iter().any(|&(_, v)| v > 0.0),
        "{report}"
    );
    // Top streams: s1 sent the most bytes; one viewer (this test) each.
    let by_bytes = report["byBytes"].as_array().unwrap();
    assert_eq!(by_bytes[0][0], "/live/s1/", "{report}");
    let by_viewers = report["byViewers"].as_array().unwrap();
    assert_eq!(by_viewers.len(), 2, "{report}");
    assert!(by_viewers.iter().all(|row| row[1] == "1"), "{report}");
    let png = std::fs::read(&shot).expect("the screenshot is kept");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_plays_offline_with_a_local_hls_js_and_says_so_when_it_has_none() {
    let _turn = browser_turn();
    let (path, player) = outpost::demo::local_player().expect("a local hls.js (npm ci --prefix tests/browser)");
    assert!(path.ends_with("hls.js/dist/hls.min.js"), "{}", path.display());
    for local in [true, false] {
        let origin = DemoOrigin::start_with_player(([127, 0, 0, 1], 0).into(), local.then(|| player.clone()))
            .await
            .unwrap();
        let edge = start_edge_at("[[routes]]\nurl = \"{origin}\"\n", &origin.url()).await;
        origin.attach(edge.edge.clone());
        let dashboard = admin_url(&edge, "/status");
        origin.show_dashboard(dashboard.clone());
        let report = node("demo.mjs", vec![url(&edge, "/")]).await;
        assert_eq!(report["dashboard"], dashboard.as_str(), "{report}");
        if local {
            // Offline, from the copy the origin serves through the edge.
            assert_eq!(report["player"], "local", "{report}");
            assert_eq!(report["playing"], true, "{report}");
            assert!(report["segments"].as_u64().unwrap() > 0, "{report}");
            assert_eq!(report["banner"], serde_json::Value::Null, "{report}");
            assert_eq!(report["outside"], serde_json::json!([]), "{report}");
        } else {
            // No local copy, the CDN out of reach: tried, and the page says so.
            assert_eq!(report["player"], serde_json::Value::Null, "{report}");
            let outside = report["outside"].as_array().unwrap();
            assert!(outside.iter().any(|u| u.as_str().unwrap().contains("hls")), "{report}");
            let banner = report["banner"].as_str().expect("a banner");
            match report["native"].as_bool().unwrap() {
                true => assert!(banner.contains("its own HLS player"), "{banner}"),
                false => assert!(banner.contains("No player could be loaded"), "{banner}"),
            }
            assert!(banner.contains("npm ci --prefix tests/browser"), "{banner}");
        }
        edge.shutdown().await;
    }
}
