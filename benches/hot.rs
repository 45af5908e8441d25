//! Micro-benchmarks of the per-request hot paths, one function each: cache
//! key building, routing a path, a cache lookup, assembling a hit's response
//! headers, and parsing the playlists the edge reads on every live reload.
//! Run with `cargo bench --bench hot`; criterion keeps the previous run in
//! `target/criterion` and prints the change against it.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use outpost::cache::key::key_url;
use outpost::cache::{policy, CacheKey, Entry, Head, Store};
use outpost::config::RouteConfig;
use outpost::media::{Document, MediaKind};
use outpost::outcome::{CacheStatus, Outcome};
use outpost::request_id::RequestId;
use outpost::respond::{merge_shared, respond, respond_stored, Content, Served, SharedHead};

fn route() -> RouteConfig {
    let config = outpost::Config::from_toml(
        r#"
        [[routes]]
        url = "https://origin.example/video"
        ignore_query = ["token"]
        "#,
    )
    .expect("bench config");
    config.routes[0].clone()
}

/// A stored 1 KiB segment with the headers a CDN origin typically sends.
fn entry(now: SystemTime) -> Entry {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("content-type", "video/mp2t"),
        ("content-length", "1024"),
        ("cache-control", "public, max-age=3600"),
        ("etag", "\"5f3e-1024-abc\""),
        ("last-modified", "Tue, 24 Nov 2026 10:00:00 GMT"),
        ("date", "Tue, 24 Nov 2026 10:00:01 GMT"),
        ("server", "origin"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    let request = Request::get("https://origin.example/video/live/720p/seg-1234.ts")
        .body(())
        .expect("request");
    let policy = policy::policy(&request, StatusCode::OK, &h, now);
    Entry {
        head: Arc::new(Head::from_upstream(StatusCode::OK, h, now)),
        body: Bytes::from(vec![7u8; 1024]),
        policy,
        request,
        fresh_until: now + Duration::from_secs(3600),
        keep_stale: Duration::ZERO,
        grace: policy::Grace::default(),
        prefetched: false,
        from_peer: false,
    }
}

fn keys(c: &mut Criterion) {
    let route = route();
    c.bench_function("key: plain segment path", |b| {
        b.iter(|| CacheKey::new(&key_url(&route, black_box("/live/720p/seg-1234.ts"))))
    });
    c.bench_function("key: query with ignored and CMCD arguments", |b| {
        b.iter(|| {
            CacheKey::new(&key_url(
                &route,
                black_box("/live/720p/seg-1234.ts?token=abc123&CMCD=bl%3D2000%2Csid%3D%22x%22&v=2"),
            ))
        })
    });
    c.bench_function("route: normalise a path", |b| {
        b.iter(|| outpost::route::normalize_path(black_box("/live/720p/seg-1234.ts")))
    });
    let parts = segment_request("edge.example:8080", None);
    c.bench_function("route: a request's target (host without port, path)", |b| {
        b.iter(|| outpost::route::Target::of(black_box(&parts)).map(|t| t.host.len()))
    });
}

fn lookup(c: &mut Criterion) {
    let now = SystemTime::now();
    let route = route();
    let store = Store::new(1 << 30);
    let stored = Arc::new(entry(now));
    for i in 0..10_000 {
        let base = CacheKey::new(&key_url(&route, &format!("/live/720p/seg-{i}.ts")));
        store.insert(&base, &HeaderMap::new(), Arc::clone(&stored));
    }
    // Looked up as the request path does: by the key's text.
    let key = key_url(&route, "/live/720p/seg-1234.ts");
    c.bench_function("lookup: fresh hit among 10,000 entries", |b| {
        b.iter(|| {
            let base = black_box(key.as_str());
            let vary = store.variants(base);
            (vary, store.get(base).filter(|e| e.is_fresh(now)))
        })
    });
}

/// A player's GET for a segment, with a `Range` if given.
fn segment_request(host: &str, range: Option<&str>) -> http::request::Parts {
    let mut request = Request::get("/live/720p/seg-1234.ts").header(header::HOST, host);
    if let Some(range) = range {
        request = request.header(header::RANGE, range);
    }
    request.body(()).expect("request").into_parts().0
}

fn response_headers(c: &mut Criterion) {
    let now = SystemTime::now();
    let stored = entry(now);
    let served = Served {
        status: CacheStatus {
            outcome: Outcome::Hit,
            stored: true,
            prefetched: false,
            peer: false,
        },
        now,
    };
    for (name, range) in [
        ("respond: 200 from a stored entry", None),
        ("respond: 206 range from a stored entry", Some("bytes=100-499")),
    ] {
        let parts = segment_request("edge.example", range);
        c.bench_function(name, |b| {
            b.iter(|| {
                respond(
                    black_box(&parts),
                    &stored.head,
                    Content::Stored(stored.body.clone()),
                    served,
                )
            })
        });
    }
    // What a plain hit takes now: the entry's head is shared, and only the
    // per-answer headers are built.
    let parts = segment_request("edge.example", None);
    c.bench_function("respond: 200 from a stored entry, prepared head", |b| {
        b.iter(|| respond_stored(black_box(&parts), &stored.head, stored.body.clone(), served))
    });
    // What a hit over HTTP/2 adds: hyper takes one map, so the shared head and
    // the per-answer headers (`Age`, `Cache-Status`, the id, CORS, CMSD) go into one.
    let shared = SharedHead {
        head: Arc::clone(&stored.head),
        age: Some(12),
        cache_status: served.status,
        request_id: Some(RequestId::new(0x5f3e_2a1b, 0x2c)),
        any_origin: true,
        cmsd: Some(outpost::cmsd::Entry {
            etp: Some(52_000),
            rtt: Some(3),
            mb: None,
            du: false,
        }),
    };
    c.bench_function(
        "respond: a stored head and per-answer headers in one map (HTTP/2)",
        |b| {
            b.iter(|| {
                let mut map = HeaderMap::new();
                merge_shared(black_box(&shared), &mut map);
                map
            })
        },
    );
}

/// A live LL-HLS media playlist: `segments` segments of four parts each.
fn ll_hls_playlist(segments: usize) -> String {
    let mut p = String::from(
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.5\n\
         #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5\n#EXT-X-MEDIA-SEQUENCE:1000\n",
    );
    for s in 1000..1000 + segments {
        for part in 0..4 {
            p.push_str(&format!(
                "#EXT-X-PART:DURATION=0.5,URI=\"seg-{s}.{part}.m4s\"{}\n",
                if part == 0 { ",INDEPENDENT=YES" } else { "" }
            ));
        }
        p.push_str(&format!("#EXTINF:2.0,\nseg-{s}.m4s\n"));
    }
    p.push_str(&format!(
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg-{}.0.m4s\"\n",
        1000 + segments
    ));
    p
}

fn vod_playlist(segments: usize) -> String {
    let mut p = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n#EXT-X-PLAYLIST-TYPE:VOD\n");
    for s in 0..segments {
        p.push_str(&format!("#EXTINF:6.0,\nseg-{s}.ts\n"));
    }
    p.push_str("#EXT-X-ENDLIST\n");
    p
}

const DASH_LIVE: &str = r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" minimumUpdatePeriod="PT2S" availabilityStartTime="2026-11-01T00:00:00Z" profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <Period id="1" start="PT0S">
    <AdaptationSet mimeType="video/mp4">
      <SegmentTemplate timescale="1000" media="$RepresentationID$/t-$Time$.m4s" initialization="$RepresentationID$/init.mp4">
        <SegmentTimeline><S t="100000" d="2000" r="29"/></SegmentTimeline>
      </SegmentTemplate>
      <Representation id="1080p" bandwidth="5000000"/>
      <Representation id="720p" bandwidth="2000000"/>
      <Representation id="360p" bandwidth="600000"/>
    </AdaptationSet>
  </Period>
</MPD>"#;

fn playlists(c: &mut Criterion) {
    let live = ll_hls_playlist(10);
    c.bench_function("playlist: live LL-HLS, 10 segments of 4 parts", |b| {
        b.iter(|| {
            Document::read(
                MediaKind::HlsPlaylist,
                black_box(live.as_bytes()),
                std::time::SystemTime::now(),
            )
            .expect("parses")
        })
    });
    let vod = vod_playlist(600);
    c.bench_function("playlist: VOD HLS, 600 segments", |b| {
        b.iter(|| {
            Document::read(
                MediaKind::HlsPlaylist,
                black_box(vod.as_bytes()),
                std::time::SystemTime::now(),
            )
            .expect("parses")
        })
    });
    c.bench_function("playlist: live DASH, 3 representations, 30-entry timeline", |b| {
        b.iter(|| {
            Document::read(
                MediaKind::DashManifest,
                black_box(DASH_LIVE.as_bytes()),
                std::time::SystemTime::now(),
            )
            .expect("parses")
        })
    });
}

criterion_group!(hot, keys, lookup, response_headers, playlists);
criterion_main!(hot);
