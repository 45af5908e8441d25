//! Prefetch planning: what the edge learnt of the playlists it fetched, and
//! which objects players are about to ask for. These functions only decide;
//! `proxy::fills` starts the fills they name.
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
use crate::config::RouteConfig;
use crate::media::hls::Summary;
use crate::media::{self, Document};

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

    /// The pool prefetches take a permit from.
    pub fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// After the edge fetched the playlist at `playlist_pq` on `route`: for a
    /// live one, its newest segment (and any preload hints); for a VOD one,
    /// nothing yet, but its segments are remembered so that a request for
    /// segment N prefetches the `ahead` after it. Returns what to prefetch now.
    pub fn after_playlist(
        &self,
        route: &RouteConfig,
        playlist_pq: &str,
        document: &Document,
        ahead: usize,
    ) -> Vec<String> {
        let resolve = |uri: &str| resolve(route, playlist_pq, uri);
        let playlist = match document {
            Document::Hls(Summary::Media(playlist)) => playlist,
            Document::Hls(Summary::Master { .. }) => return Vec::new(),
            Document::Dash(manifest) => {
                self.dash_seen.store(true, Ordering::Relaxed);
                // A manifest lists every representation: prefetch only those players are watching.
                return manifest
                    .newest
                    .iter()
                    .filter_map(|u| resolve(u))
                    .filter(|pq| self.recent.contains_key(&media::rendition_of(&key_url(route, pq))))
                    .collect();
            }
        };
        if playlist.live {
            let path = playlist_pq.split('?').next().unwrap_or_default();
            let target = playlist.target_duration.max(Duration::from_secs(1));
            self.targets.insert(key_url(route, path), target);
            let newest = playlist.segments.last().and_then(|u| resolve(u));
            let hints = playlist.preload_hints.iter().filter_map(|u| resolve(u));
            return newest.into_iter().chain(hints).collect();
        }
        if ahead == 0 {
            return Vec::new();
        }
        let segments: Arc<[String]> = playlist.segments.iter().filter_map(|u| resolve(u)).collect();
        for (index, pq) in segments.iter().enumerate() {
            let key = CacheKey::new(&key_url(route, pq));
            let place = Place {
                segments: Arc::clone(&segments),
                index,
            };
            self.places.insert(key, place);
        }
        self.vod_seen.store(true, Ordering::Relaxed);
        Vec::new()
    }

    /// How long the edge waits for the origin to answer an LL-HLS blocking
    /// reload of `path_and_query` (with `_HLS_msn`): three target durations
    /// (draft-pantos-hls-rfc8216bis §6.2.5.2), once the playlist is known.
    pub fn blocking_limit(&self, route: &RouteConfig, path_and_query: &str) -> Option<Duration> {
        let (path, query) = path_and_query.split_once('?')?;
        if !query.split('&').any(|arg| arg.starts_with("_HLS_msn=")) {
            return None;
        }
        let target = self.targets.get(&key_url(route, path));
        Some(target.map_or(route.timeout, |t| 3 * t))
    }

    /// After a player asked for `key`: if it is a VOD segment of a rendition
    /// fetched recently, the `ahead` segments after it (upstream
    /// path-and-query). Also notes the rendition as watched, for DASH.
    pub fn after_segment(&self, key: &str, ahead: usize) -> Vec<String> {
        // A read on most segment requests; a write (cache maintenance) only when a
        // rendition is new or its 30 s have run out.
        if self.dash_seen.load(Ordering::Relaxed) {
            let rendition = media::rendition_of(key);
            if !self.recent.contains_key(&rendition) {
                self.recent.insert(rendition, ());
            }
        }
        if !self.vod_seen.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let Some(place) = self.places.get(key) else {
            return Vec::new();
        };
        place
            .segments
            .iter()
            .skip(place.index + 1)
            .take(ahead)
            .cloned()
            .collect()
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
