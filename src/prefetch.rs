//! Prefetch: fetching what players are about to ask for, before they ask.
//!
//! A prefetch is an ordinary fill started by the edge: players who ask while
//! it is under way join it like any other. Prefetches have their own small
//! pool of permits (`media.prefetch_concurrency`), so they never hold back a
//! client's fetch; past that pool a prefetch is skipped, not queued.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use tokio::sync::Semaphore;

use crate::cache::key::key_url;
use crate::cache::CacheKey;
use crate::coalesce::Joined;
use crate::config::RouteConfig;
use crate::edge::Edge;
use crate::fetch::{self, FetchJob};
use crate::media::hls::Summary;
use crate::media::{self, Document};
use crate::upstream::UpstreamRequest;

/// Where a VOD segment sits in the rendition (media playlist) that lists it.
#[derive(Clone)]
struct Place {
    /// Upstream path-and-query of every segment of the rendition, in order.
    segments: Arc<[String]>,
    index: usize,
}

/// Prefetch state shared by the edge, and what it learnt of playlists.
pub struct Prefetcher {
    permits: Arc<Semaphore>,
    /// Target durations of live media playlists, by key URL without query.
    targets: Cache<String, Duration>,
    /// VOD segments of renditions players fetched recently, by cache key.
    places: Cache<CacheKey, Place>,
    /// Renditions (`media::rendition_of`) whose segments players asked for lately.
    recent: Cache<String, ()>,
    /// Whether a DASH manifest, the only reader of `recent`, was ever read,
    /// and whether `places` ever held a segment. Until then a segment request
    /// skips that bookkeeping: two lookups and a string, a quarter of a
    /// segment hit's instructions.
    dash_seen: AtomicBool,
    vod_seen: AtomicBool,
}

impl Prefetcher {
    pub fn new(concurrency: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            targets: Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            // A rendition nobody has asked for in ten minutes is not prefetched.
            places: Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            recent: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(30))
                .build(),
            dash_seen: AtomicBool::new(false),
            vod_seen: AtomicBool::new(false),
        }
    }
}

/// After the edge fetched a media playlist: for a live one, its newest segment
/// (and any preload hints); for a VOD one, remember its segments so that a
/// request for segment N prefetches the ones after it.
pub fn after_playlist(edge: &Arc<Edge>, playlist_request: &UpstreamRequest, document: &Document) {
    let resolve = |uri: &str| resolve(&playlist_request.route, &playlist_request.path_and_query, uri);
    let playlist = match document {
        Document::Hls(Summary::Media(playlist)) => playlist,
        Document::Hls(Summary::Master { .. }) => return,
        Document::Dash(manifest) => {
            edge.prefetcher.dash_seen.store(true, Ordering::Relaxed);
            // A manifest lists every representation: prefetch only those players are watching.
            for pq in manifest.newest.iter().filter_map(|u| resolve(u)) {
                let rendition = media::rendition_of(&key_url(&playlist_request.route, &pq));
                if edge.prefetcher.recent.contains_key(&rendition) {
                    start(edge, playlist_request, pq);
                }
            }
            return;
        }
    };
    if playlist.live {
        let path = playlist_request.path_and_query.split('?').next().unwrap_or_default();
        let target = playlist.target_duration.max(Duration::from_secs(1));
        edge.prefetcher
            .targets
            .insert(key_url(&playlist_request.route, path), target);
        if let Some(newest) = playlist.segments.last().and_then(|u| resolve(u)) {
            start(edge, playlist_request, newest);
        }
        for hint in playlist.preload_hints.iter().filter_map(|u| resolve(u)) {
            start(edge, playlist_request, hint);
        }
        return;
    }
    if edge.config.media.prefetch_ahead == 0 {
        return;
    }
    let segments: Arc<[String]> = playlist.segments.iter().filter_map(|u| resolve(u)).collect();
    for (index, pq) in segments.iter().enumerate() {
        let key = CacheKey::new(&key_url(&playlist_request.route, pq));
        let place = Place {
            segments: Arc::clone(&segments),
            index,
        };
        edge.prefetcher.places.insert(key, place);
    }
    edge.prefetcher.vod_seen.store(true, Ordering::Relaxed);
}

/// How long the edge waits for the origin to answer an LL-HLS blocking
/// reload of `path_and_query` (with `_HLS_msn`): three target durations
/// (draft-pantos-hls-rfc8216bis §6.2.5.2), once the playlist is known.
pub fn blocking_limit(edge: &Edge, route: &RouteConfig, path_and_query: &str) -> Option<Duration> {
    let (path, query) = path_and_query.split_once('?')?;
    if !query.split('&').any(|arg| arg.starts_with("_HLS_msn=")) {
        return None;
    }
    let target = edge.prefetcher.targets.get(&key_url(route, path));
    Some(target.map_or(route.timeout, |t| 3 * t))
}

/// After a player asked for `key`: if it is a VOD segment of a rendition
/// fetched recently, prefetch the `media.prefetch_ahead` segments after it.
pub fn after_segment(edge: &Arc<Edge>, key: &str, request: impl FnOnce() -> UpstreamRequest) {
    let prefetcher = &edge.prefetcher;
    // A read on most segment requests; a write (cache maintenance) only when a
    // rendition is new or its 30 s have run out.
    if prefetcher.dash_seen.load(Ordering::Relaxed) {
        let rendition = media::rendition_of(key);
        if !prefetcher.recent.contains_key(&rendition) {
            prefetcher.recent.insert(rendition, ());
        }
    }
    if !prefetcher.vod_seen.load(Ordering::Relaxed) {
        return;
    }
    let Some(place) = prefetcher.places.get(key) else {
        return;
    };
    let ahead = edge.config.media.prefetch_ahead;
    let request = request();
    for pq in place.segments.iter().skip(place.index + 1).take(ahead) {
        start(edge, &request, pq.clone());
    }
}

/// Follows a player's CMCD next-object hint (`nor`, CTA-5004), relative to the object it asked for.
pub fn hinted(edge: &Arc<Edge>, request: &UpstreamRequest, next_object: &str) {
    if let Some(pq) = resolve(&request.route, &request.path_and_query, next_object) {
        start(edge, request, pq);
    }
}

/// Starts a prefetch of `path_and_query` on the request's route, unless the
/// object is cached or on its way, or the prefetch pool is full.
fn start(edge: &Arc<Edge>, like: &UpstreamRequest, path_and_query: String) {
    let base = CacheKey::new(&key_url(&like.route, &path_and_query));
    let key = edge.store.resolve(&base, &like.headers);
    let now = std::time::SystemTime::now();
    let fresh = || edge.store.get(&key).filter(|e| e.is_fresh(now));
    if fresh().is_some() || edge.inflight.contains(&key) || edge.inflight.passed_for(&key).is_some() {
        edge.metrics.prefetch("cached");
        return;
    }
    let Ok(permit) = Arc::clone(&edge.prefetcher.permits).try_acquire_owned() else {
        tracing::debug!(key = key.as_str(), "prefetch pool full; skipped");
        return;
    };
    match edge.inflight.join(&key, fresh) {
        Joined::Started(reader, writer) => {
            // Nobody reads a prefetch yet: players join it when they ask.
            drop(reader);
            let stale = edge.store.get(&key);
            let job = FetchJob {
                base,
                key,
                request: UpstreamRequest {
                    route: Arc::clone(&like.route),
                    method: http::Method::GET,
                    path_and_query,
                    headers: like.headers.clone(),
                    blocking: None,
                },
                stale,
                prefetch: true,
            };
            let edge = Arc::clone(edge);
            tokio::spawn(async move {
                let _permit = permit;
                fetch::run(edge, job, writer).await;
            });
        }
        Joined::Hit(_) | Joined::Collapsed(_) => edge.metrics.prefetch("cached"),
    }
}

/// The upstream path-and-query of `uri` as referenced from `from` (a
/// path-and-query on `route`), if it lies on the same origin.
pub fn resolve(route: &RouteConfig, from: &str, uri: &str) -> Option<String> {
    let origin_base = route.origin.url("");
    let base = url::Url::parse(&route.origin.url(from)).ok()?;
    let target = base.join(uri).ok()?;
    let root = url::Url::parse(&format!("{origin_base}/")).ok()?;
    if target.scheme() != root.scheme()
        || target.host() != root.host()
        || target.port_or_known_default() != root.port_or_known_default()
    {
        return None;
    }
    let prefix = root.path().trim_end_matches('/');
    let path = target.path().strip_prefix(prefix)?;
    if !path.starts_with('/') {
        return None;
    }
    Some(match target.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_within_the_origin_only() {
        let config = crate::config::Config::from_toml("[[routes]]\nurl = \"http://o:9000/base\"\n").unwrap();
        let route = &config.routes[0];
        let cases = [
            ("/live/720p/index.m3u8", "seg-5.ts", Some("/live/720p/seg-5.ts")),
            (
                "/live/720p/index.m3u8?token=1",
                "seg-5.ts?v=2",
                Some("/live/720p/seg-5.ts?v=2"),
            ),
            ("/live/720p/index.m3u8", "../audio/a-5.aac", Some("/live/audio/a-5.aac")),
            ("/live/index.m3u8", "/base/other/x.ts", Some("/other/x.ts")),
            ("/live/index.m3u8", "/elsewhere/x.ts", None),
            ("/live/index.m3u8", "http://o:9000/base/abs.ts", Some("/abs.ts")),
            ("/live/index.m3u8", "https://cdn.example/x.ts", None),
            ("/live/index.m3u8", "http://o:9001/base/x.ts", None),
        ];
        for (from, uri, want) in cases {
            assert_eq!(resolve(route, from, uri).as_deref(), want, "{from} + {uri}");
        }
    }
}
