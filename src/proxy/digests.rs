//! The hash list of a media playlist, for the swarm: `GET
//! /.well-known/outpost/digests?playlist=<path on this edge>[&chunk=<bytes>]`
//! answers the SHA-256 of each of the playlist's segments this edge holds,
//! keyed by the segment URI as the playlist writes it. P2P loaders check
//! segments they got from other viewers against it (PeerTube's
//! `segmentsSha256Url` is the prior art). The list is made from the cache
//! when asked, so it grows as segments arrive.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::Answer;
use crate::cache::key::key_url;
use crate::digest::{self, REPR_DIGEST};
use crate::edge::Edge;
use crate::error::EdgeError;
use crate::media::hls::Summary;
use crate::media::{Document, MediaKind};
use crate::outcome::Outcome;
use crate::plain::text;
use crate::prefetch::resolve;
use crate::route::{normalize_path, Target};

/// Where the hash lists are.
pub const PATH: &str = "/.well-known/outpost/digests";

/// The smallest chunk a list may be asked for: past that, a list is more
/// work than the segment is worth.
const MIN_CHUNK: usize = 1024;

pub fn answer(edge: &Arc<Edge>, target: &Target<'_>, parts: &Parts) -> Answer {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return Err(EdgeError::Method(parts.method.clone()));
    }
    let own = |status, body: String| Ok((text(status, body), Outcome::Hit));
    let query = parts.uri.query().unwrap_or_default();
    let arg = |name: &str| {
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .ok()
                    .map(|v| v.into_owned())
            })?
        })
    };
    let Some(playlist) = arg("playlist") else {
        return own(
            StatusCode::BAD_REQUEST,
            "give ?playlist=<path of a playlist on this edge>\n".into(),
        );
    };
    let chunk = match arg("chunk").map(|c| c.parse::<usize>()) {
        None => None,
        Some(Ok(size)) if size >= MIN_CHUNK => Some(size),
        Some(_) => {
            return own(
                StatusCode::BAD_REQUEST,
                format!("chunk is a byte count of at least {MIN_CHUNK}\n"),
            )
        }
    };
    let (path, playlist_query) = match playlist.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (playlist.as_str(), None),
    };
    let Ok(path) = normalize_path(path) else {
        return own(
            StatusCode::BAD_REQUEST,
            "the playlist path is not a clean absolute path\n".into(),
        );
    };
    let at = Target {
        host: target.host.clone(),
        path,
        query: playlist_query,
    };
    let not_seen = || {
        own(
            StatusCode::NOT_FOUND,
            "this edge has not seen that media playlist\n".into(),
        )
    };
    let Some((route, playlist_pq)) = edge.settings().routes.find(&at) else {
        return not_seen();
    };
    let Some(entry) = edge.store.get(key_url(&route, &playlist_pq).as_str()) else {
        return not_seen();
    };
    let Some(Document::Hls(Summary::Media(media))) =
        Document::read(MediaKind::HlsPlaylist, &entry.body, edge.clock.now())
    else {
        return not_seen();
    };
    let mut list = Map::new();
    for uri in &media.segments {
        let Some(segment_pq) = resolve(&route, &playlist_pq, uri) else {
            continue;
        };
        let Some(segment) = edge.store.get(key_url(&route, &segment_pq).as_str()) else {
            continue;
        };
        let Some(sha256) = segment.head.headers.get(REPR_DIGEST).and_then(digest::sha256_of) else {
            continue;
        };
        let hex = digest::hex(&sha256);
        let value = match chunk {
            None => Value::String(hex),
            Some(size) => json!({
                "sha256": hex,
                "chunk": size,
                "chunks": digest::chunk_digests(&segment.body, size),
            }),
        };
        list.insert(uri.clone(), value);
    }
    let mut response = text(StatusCode::OK, Value::Object(list).to_string());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // It grows as segments arrive: never reused without asking.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok((response, Outcome::Hit))
}
