//! Entry points for the fuzz targets in `benches/fuzz` and for the replay of
//! their corpora in `tests/fuzz.rs`: each feeds arbitrary bytes to one of
//! the edge's readers of untrusted input, and checks what must hold of its
//! answer beyond not panicking. Not part of the edge's interface.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, StatusCode};

use crate::cache::key::key_url;
use crate::cache::policy::{self, Grace};
use crate::config::Config;
use crate::media::{self, cmcd, dash, hls, Document, MediaKind};
use crate::respond::{open_range, select_range};

/// One fuzz target: it reads `data`, and panics when something that must
/// hold does not.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (the corpus folders under `tests/fuzz/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("request_head", request_head),
    ("range", range),
    ("cache_control", cache_control),
    ("hls", hls_playlist),
    ("dash", dash_manifest),
    ("cmcd", cmcd_data),
    ("config", config),
];

/// Runs the target named `name` on `data` (what each fuzzer in
/// `benches/fuzz/fuzz_targets` calls).
pub fn run(name: &str, data: &[u8]) {
    let (_, target) = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"));
    target(data);
}

/// A fixed instant, so that a crash replays the same.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000)
}

/// The HTTP/1.1 loop's request-head reader, over bytes as a client sends
/// them (several heads pipelined, or one cut short).
pub fn request_head(data: &[u8]) {
    crate::http1::read_heads(data);
}

/// `Range` (first line of `data`) and `If-Range` (the second) against an
/// object whose length is the third line's number (else 1000).
pub fn range(data: &[u8]) {
    let mut lines = data.splitn(3, |b| *b == b'\n');
    let (range, if_range, total) = (lines.next(), lines.next(), lines.next());
    let total = total
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(1000);
    let mut request = HeaderMap::new();
    for (name, value) in [(header::RANGE, range), (header::IF_RANGE, if_range)] {
        if let Some(value) = value.and_then(|v| HeaderValue::from_bytes(v).ok()) {
            request.insert(name, value);
        }
    }
    let mut response = HeaderMap::new();
    response.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
    if let Ok(Some((first, last))) = select_range(&request, &response, total) {
        assert!(first <= last && last < total, "{first}-{last} of {total}");
    }
    if let Some((first, Some(last))) = open_range(&request, &response) {
        assert!(first <= last, "{first}-{last}");
    }
}

/// An origin's `Cache-Control` (and `Expires`, `Age` on later lines):
/// storability, freshness and the stale graces.
pub fn cache_control(data: &[u8]) {
    let mut headers = HeaderMap::new();
    let names = [header::CACHE_CONTROL, header::EXPIRES, header::AGE, header::VARY];
    for (name, line) in names.into_iter().zip(data.split(|b| *b == b'\n')) {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.insert(name, value);
        }
    }
    let request = Request::get("http://origin/a.ts").body(()).expect("a fixed request");
    let now = now();
    let policy = policy::policy(&request, StatusCode::OK, &headers, now);
    let _ = policy::judge(&request, &policy, &headers, now, 1 << 20);
    let route = Grace {
        while_revalidate: Duration::from_secs(1),
        if_error: Duration::from_secs(1),
    };
    let grace = policy::grace(&headers, route);
    let _ = grace.at_most(Duration::from_secs(2)).longest();
}

/// An HLS playlist, and what the edge derives from it.
pub fn hls_playlist(data: &[u8]) {
    if let Some(summary) = hls::parse(data) {
        let document = Document::Hls(summary);
        let _ = (document.live_cap(), document.live_period());
        if let Document::Hls(hls::Summary::Media(playlist)) = &document {
            let restarts = crate::restarts::Restarts::new();
            let _ = restarts.observe("k", playlist);
            let _ = restarts.observe("k", playlist);
        }
    }
    let _ = Document::read(MediaKind::HlsPlaylist, data, now());
}

/// A DASH manifest.
pub fn dash_manifest(data: &[u8]) {
    if let Some(manifest) = dash::parse(data, now().into()) {
        let _ = Document::Dash(manifest).live_cap();
    }
}

/// CMCD, as a `CMCD-Request` header, as the `CMCD` query argument, and in a
/// request target made into a cache key.
pub fn cmcd_data(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(data) {
        headers.insert(cmcd::CMCD_REQUEST, value);
    }
    let _ = cmcd::next_object(&headers, Some(&text));
    let _ = cmcd::next_object(&HeaderMap::new(), Some(&text));
    let route = Config::from_toml("[[routes]]\nurl = \"http://o/v\"\nignore_query = [\"token\"]\n")
        .expect("a fixed config")
        .routes
        .remove(0);
    let target = format!("/live/seg-1.ts?{text}");
    let key = key_url(&route, &target);
    let query = key.split_once('?').map_or("", |(_, q)| q);
    assert!(
        query.split('&').all(|argument| !argument.starts_with("CMCD=")),
        "CMCD stays out of the key: {key}"
    );
    let _ = media::numbered(&key);
    let _ = media::rendition_of(&key);
}

/// A configuration file.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_toml(text);
    }
}
