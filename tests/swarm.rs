//! The edge as the HTTP tier of peer-assisted delivery: exact range resumes
//! (also of segments still arriving), integrity digests checked against
//! `sha256sum` of real ffmpeg segments, and the hash lists loaders verify
//! peers' segments with.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::BodyExt;
use support::*;
use tokio::sync::Notify;

/// `sha256sum` of `bytes`, in hex: the digest as the coreutils tool computes it.
fn sha256sum(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum runs");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The hex digest in a `Repr-Digest: sha-256=:<base64>:` value.
fn repr_digest_hex(value: &str) -> String {
    let b64 = value
        .strip_prefix("sha-256=:")
        .and_then(|v| v.strip_suffix(':'))
        .expect(value);
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A finished segment of a real ffmpeg stream: its name and bytes.
async fn ffmpeg_segment(live: &FfmpegLive) -> (String, bytes::Bytes) {
    let playlist = live.wait_segments(2).await;
    let name = segment_uris(&playlist)[0].clone();
    let bytes = std::fs::read(live.dir.join(&name)).expect("the segment is on disk");
    (name, bytes.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_of_a_segment_still_arriving_gets_exactly_the_rest() {
    let live = FfmpegLive::start("swarm-resume", Packaging::Ts);
    let (_, segment) = ffmpeg_segment(&live).await;
    let len = segment.len();
    assert!(len > 20_000, "a segment of {len} bytes");
    let origin = TestOrigin::start().await;
    let gate = Arc::new(Notify::new());
    origin.set(
        "/live/seg.ts",
        Script::ok(segment.clone())
            .header("etag", "\"s1\"")
            .throttle(8_192, Duration::ZERO)
            .gated(Arc::clone(&gate)),
    );
    let edge = edge_for(&origin).await;
    let c = client();
    // A viewer starts the fill; only the first 8 KiB are in when the loader resumes.
    let whole = c.request(
        http::Request::get(url(&edge, "/live/seg.ts"))
            .body(Default::default())
            .unwrap(),
    );
    let whole = tokio::spawn(whole);
    origin.wait_hits("/live/seg.ts", 1).await;
    let from = 5_000;
    let cases = [
        (format!("bytes={from}-"), from, len - 1),
        (format!("bytes={from}-{}", from + 9_999), from, from + 9_999),
        ("bytes=20000-".to_owned(), 20_000, len - 1),
    ];
    let mut resumes = Vec::new();
    for (range, first, last) in &cases {
        let response = c
            .request(
                http::Request::get(url(&edge, "/live/seg.ts"))
                    .header("range", range)
                    .header("if-range", "\"s1\"")
                    .header("origin", "https://player.example")
                    .body(Default::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 206, "{range} while the segment arrives");
        let h = response.headers();
        assert_eq!(
            h["content-range"],
            format!("bytes {first}-{last}/{len}").as_str(),
            "{range}"
        );
        assert_eq!(h["content-length"], (last - first + 1).to_string().as_str(), "{range}");
        // A browser loader may read them.
        let exposed = h["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        for name in ["content-length", "content-range", "repr-digest", "cache-status", "age"] {
            assert!(exposed.contains(name), "{name} not exposed: {exposed}");
        }
        resumes.push((response, *first, *last));
    }
    gate.notify_one();
    for (response, first, last) in resumes {
        let got = response.into_body().collect().await.unwrap().to_bytes();
        assert!(got[..] == segment[first..=last], "bytes {first}-{last}");
    }
    let whole = whole
        .await
        .unwrap()
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    assert!(whole[..] == segment[..]);
    // A resume against another version gets the whole new one, never a splice.
    let other = send(
        &c,
        "GET",
        &url(&edge, "/live/seg.ts"),
        &[("range", "bytes=5000-"), ("if-range", "\"s0\"")],
    )
    .await;
    assert_eq!(other.status, 200);
    assert_eq!(other.bytes().len(), len);
    assert_eq!(origin.hits("/live/seg.ts"), 1);
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_complete_answer_carries_the_sha256_that_sha256sum_computes() {
    let live = FfmpegLive::start("swarm-digest", Packaging::Fmp4);
    let playlist = live.wait_segments(2).await;
    let origin = TestOrigin::start().await;
    origin.serve_dir("/live/", &live.dir);
    let edge = edge_for(&origin).await;
    let c = client();
    for name in segment_uris(&playlist).iter().take(2).chain([&"init.mp4".to_owned()]) {
        let on_disk = std::fs::read(live.dir.join(name)).unwrap();
        let path = format!("/live/{name}");
        // The first answer streams from the fill: its digest is not known yet.
        let first = get(&c, &url(&edge, &path)).await;
        assert!(first.bytes()[..] == on_disk[..]);
        let hit = get(&c, &url(&edge, &path)).await;
        assert_eq!(hit.header("cache-status"), "outpost; hit");
        let digest = hit.header("repr-digest").to_owned();
        assert_eq!(repr_digest_hex(&digest), sha256sum(&on_disk), "{name}");
        // The same value on a range, and on HEAD.
        let part = send(&c, "GET", &url(&edge, &path), &[("range", "bytes=10-99")]).await;
        assert_eq!(part.status, 206);
        assert_eq!(part.header("repr-digest"), digest);
        let head = send(&c, "HEAD", &url(&edge, &path), &[]).await;
        assert_eq!(head.header("repr-digest"), digest);
        // Want-Repr-Digest is honoured: wanted, sent; refused, left out.
        let wanted = send(&c, "GET", &url(&edge, &path), &[("want-repr-digest", "sha-256=5")]).await;
        assert_eq!(wanted.header("repr-digest"), digest);
        for refuse in ["sha-256=0", "sha-512=3"] {
            let got = send(&c, "GET", &url(&edge, &path), &[("want-repr-digest", refuse)]).await;
            assert!(got.headers.get("repr-digest").is_none(), "{refuse}");
        }
    }
    edge.shutdown().await;
}

#[tokio::test]
async fn a_body_that_fails_the_origins_digest_is_cut_off_and_never_stored() {
    let origin = TestOrigin::start().await;
    let body = payload(100_000, 4);
    let b64 = |bytes: &[u8]| {
        let sha = ring::digest::digest(&ring::digest::SHA256, bytes);
        base64::engine::general_purpose::STANDARD.encode(sha.as_ref())
    };
    let right = format!("sha-256=:{}:", b64(&body));
    let wrong = format!("sha-256=:{}:", b64(b"another body"));
    for field in ["repr-digest", "content-digest"] {
        let path = format!("/{field}.ts");
        origin.set(&path, Script::ok(body.clone()).header(field, &wrong));
        let edge = edge_for(&origin).await;
        let c = client();
        let got = get(&c, &url(&edge, &path)).await;
        assert!(got.body.is_err(), "{field}: a body that fails its digest is cut off");
        let again = get(&c, &url(&edge, &path)).await;
        assert!(again.body.is_err());
        assert_eq!(origin.hits(&path), 2, "{field}: never stored");
        let metrics = get(&c, &admin_url(&edge, "/metrics")).await.text();
        assert!(
            metrics.contains("outpost_upstream_errors_total{reason=\"digest_mismatch\"} 2"),
            "{metrics}"
        );
        // The right digest: stored, and a range of it carries no Content-Digest of the whole.
        let good = format!("/{field}-good.ts");
        origin.set(&good, Script::ok(body.clone()).header(field, &right));
        assert!(get(&c, &url(&edge, &good)).await.body.is_ok());
        let part = send(&c, "GET", &url(&edge, &good), &[("range", "bytes=0-9")]).await;
        assert_eq!(part.header("cache-status"), "outpost; hit");
        assert!(part.headers.get("content-digest").is_none());
        assert_eq!(part.header("repr-digest"), right);
        edge.shutdown().await;
    }
}

/// The hash list of `playlist` on `edge`.
async fn hash_list(edge: &outpost::RunningEdge, query: &str) -> (u16, serde_json::Value) {
    let got = get(&client(), &url(edge, &format!("/.well-known/outpost/digests?{query}"))).await;
    let status = got.status.as_u16();
    (
        status,
        serde_json::from_slice(got.bytes()).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hash_list_of_a_live_playlist_gains_each_segment_within_one_target_duration() {
    let live = FfmpegLive::start("swarm-list", Packaging::Ts);
    live.wait_segments(2).await;
    let origin = TestOrigin::start().await;
    origin.serve_dir("/live/", &live.dir);
    let edge = edge_for(&origin).await;
    let c = client();
    let (status, _) = hash_list(&edge, "playlist=/live/index.m3u8").await;
    assert_eq!(status, 404, "not seen yet");
    // A player joins: it fetches the playlist and the segments listed then.
    let first = get(&c, &url(&edge, "/live/index.m3u8")).await.text();
    for uri in segment_uris(&first) {
        get(&c, &url(&edge, &format!("/live/{uri}"))).await;
    }
    // From then on no client asks for a segment: the edge's prefetch of each
    // new one is what puts it in the list.
    let mut checked = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        // The player polls the playlist; the edge prefetches what it lists.
        let playlist = get(&c, &url(&edge, "/live/index.m3u8")).await.text();
        let target: f64 = playlist
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
            .and_then(|t| t.trim().parse().ok())
            .unwrap();
        let seen_at = Instant::now();
        for uri in segment_uris(&playlist) {
            if checked.contains(&uri) {
                continue;
            }
            let within = seen_at + Duration::from_secs_f64(target);
            let listed = loop {
                let (status, list) = hash_list(&edge, "playlist=/live/index.m3u8").await;
                assert_eq!(status, 200);
                if let Some(hex) = list[&uri].as_str() {
                    break hex.to_owned();
                }
                assert!(
                    Instant::now() < within,
                    "{uri} not in the hash list within {target} s: {list}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let Ok(on_disk) = std::fs::read(live.dir.join(&uri)) else {
                continue; // ffmpeg has deleted it meanwhile
            };
            assert_eq!(listed, sha256sum(&on_disk), "{uri}");
            checked.insert(uri);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let new = checked.iter().filter(|u| !segment_uris(&first).contains(u)).count();
    assert!(new >= 4, "new segments checked: {checked:?}");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_digests_let_a_loader_check_each_piece() {
    let live = FfmpegLive::start("swarm-chunks", Packaging::Fmp4);
    let playlist = live.wait_segments(2).await;
    let origin = TestOrigin::start().await;
    origin.serve_dir("/live/", &live.dir);
    let edge = edge_for(&origin).await;
    let c = client();
    let uri = segment_uris(&playlist)[0].clone();
    let on_disk = std::fs::read(live.dir.join(&uri)).unwrap();
    get(&c, &url(&edge, "/live/index.m3u8")).await;
    get(&c, &url(&edge, &format!("/live/{uri}"))).await;
    let (status, list) = hash_list(&edge, "playlist=%2Flive%2Findex.m3u8&chunk=16384").await;
    assert_eq!(status, 200);
    let entry = &list[&uri];
    assert_eq!(entry["sha256"], sha256sum(&on_disk));
    assert_eq!(entry["chunk"], 16384);
    let chunks: Vec<String> = on_disk.chunks(16384).map(sha256sum).collect();
    assert_eq!(entry["chunks"], serde_json::json!(chunks));
    // Clean refusals.
    assert_eq!(hash_list(&edge, "playlist=/live/index.m3u8&chunk=10").await.0, 400);
    assert_eq!(hash_list(&edge, "playlist=/live/other.m3u8").await.0, 404);
    assert_eq!(hash_list(&edge, "playlist=/live/../../etc/passwd").await.0, 400);
    assert_eq!(hash_list(&edge, "chunk=16384").await.0, 400);
    edge.shutdown().await;
}

/// The `key=value` parameters of the edge's `CMSD-Dynamic` entry, and whether it says `du`.
fn cmsd_of(got: &Got) -> (std::collections::BTreeMap<String, u64>, bool) {
    let value = got.header("cmsd-dynamic");
    let rest = value
        .strip_prefix("\"outpost\"")
        .unwrap_or_else(|| panic!("not the edge's entry: {value:?}"));
    let mut params = std::collections::BTreeMap::new();
    let mut duress = false;
    for param in rest.split(';').filter(|p| !p.is_empty()) {
        match param.split_once('=') {
            Some((k, v)) => {
                params.insert(k.to_owned(), v.parse().unwrap());
            }
            None if param == "du" => duress = true,
            None => panic!("{value}"),
        }
    }
    (params, duress)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_edges_cmsd_and_says_duress_near_the_bounds() {
    let origin = TestOrigin::start().await;
    origin.set("/v/seg-1.m4s", Script::ok(payload(300_000, 1)));
    let edge = start_edge(
        "[server]\nmax_connections = 10\n[[routes]]\nurl = \"{origin}\"\n",
        &origin,
    )
    .await;
    for c in [client(), h2_client()] {
        // The first answer on a connection knows the round trip; once bytes
        // have gone, the throughput too.
        let first = get(&c, &url(&edge, "/v/seg-1.m4s")).await;
        assert!(
            cmsd_of(&first).0.contains_key("rtt"),
            "{}",
            first.header("cmsd-dynamic")
        );
        // The pool may open a new connection for the next request; within
        // a few, one goes on a connection that has delivered bytes.
        let mut measured = None;
        for _ in 0..10 {
            let hit = get(&c, &url(&edge, "/v/seg-1.m4s")).await;
            let (params, duress) = cmsd_of(&hit);
            assert!(!duress && !params.contains_key("mb"), "an idle edge: {params:?}");
            if let Some(etp) = params.get("etp") {
                measured = Some(*etp);
                break;
            }
        }
        assert!(measured.is_some_and(|etp| etp > 0), "no throughput measured");
    }
    // Nine more connections held open: ten of ten, the edge is under duress
    // and suggests a ceiling below what it measured.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(tokio::net::TcpStream::connect(edge.addrs.listen).await.unwrap());
    }
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(5);
    let (params, duress) = loop {
        let got = get(&c, &url(&edge, "/v/seg-1.m4s")).await;
        let (params, duress) = cmsd_of(&got);
        if duress && params.contains_key("etp") {
            break (params, duress);
        }
        assert!(
            Instant::now() < deadline,
            "no duress with 10 of 10 connections: {params:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(duress);
    assert!(params["mb"] < params["etp"], "{params:?}");
    drop(held);
    // Off: no entry.
    let quiet = start_edge("[media]\ncmsd = false\n[[routes]]\nurl = \"{origin}\"\n", &origin).await;
    let got = get(&client(), &url(&quiet, "/v/seg-1.m4s")).await;
    assert!(got.headers.get("cmsd-dynamic").is_none());
    quiet.shutdown().await;
    edge.shutdown().await;
}

#[tokio::test]
async fn the_origins_cmsd_passes_through_and_the_edges_entry_comes_last() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/object",
        Script::ok(payload(2_000, 1)).headers(&[
            ("cmsd-static", "ot=v,st=l"),
            ("cmsd-dynamic", "\"origin-1\";etp=5000"),
            ("content-type", "application/octet-stream"),
        ]),
    );
    let edge = edge_for(&origin).await;
    let c = client();
    get(&c, &url(&edge, "/object")).await;
    let hit = send(&c, "GET", &url(&edge, "/object"), &[]).await;
    assert_eq!(hit.header("cmsd-static"), "ot=v,st=l");
    let entries: Vec<&str> = hit
        .headers
        .get_all("cmsd-dynamic")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0], "\"origin-1\";etp=5000");
    assert!(entries[1].starts_with("\"outpost\""));
    // The same over hyper's HTTP/2.
    let h2 = get(&h2_client(), &url(&edge, "/object")).await;
    let entries: Vec<&str> = h2
        .headers
        .get_all("cmsd-dynamic")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    // The origin gave no freshness: `ot=v` made the extensionless object a
    // segment, kept for `media.segment_default_ttl`; the same object without
    // it is not a segment, and is not kept.
    assert_eq!(hit.header("cache-status"), "outpost; hit");
    origin.set(
        "/plain",
        Script::ok(payload(2_000, 1)).headers(&[("content-type", "application/octet-stream")]),
    );
    get(&c, &url(&edge, "/plain")).await;
    assert!(!get(&c, &url(&edge, "/plain"))
        .await
        .header("cache-status")
        .contains("hit"));
    edge.shutdown().await;
}
