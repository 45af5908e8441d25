//! Starting fills: a client's miss, and the prefetches that follow a
//! playlist, a segment or a player's hint. Every fetch task is spawned here,
//! and what a finished fetch leads to (the prefetches its playlist names)
//! is started here too, so the fetch itself knows nothing of prefetching.

use std::collections::HashSet;
use std::sync::Arc;

use crate::cache::key::{key_url, normal_form};
use crate::cache::CacheKey;
use crate::coalesce::Joined;
use crate::edge::Edge;
use crate::fetch::{self, FetchJob, Fetcher};
use crate::fill::Writer;
use crate::media::hls::{MediaPlaylist, Summary};
use crate::media::Document;
use crate::metrics::PrefetchResult;
use crate::prefetch::resolve;
use crate::upstream::UpstreamRequest;

/// Runs the fetch behind a fill as a task of its own, then starts what the
/// playlist it read (if any) says to prefetch.
pub fn spawn(edge: Arc<Edge>, job: FetchJob, writer: Writer) {
    tokio::spawn(run(edge, job, writer));
}

async fn run(edge: Arc<Edge>, job: FetchJob, writer: Writer) {
    let request = job.request.clone();
    if let Some(playlist) = fetch::run(&fetcher(&edge), job, writer).await {
        after_playlist(&edge, &request, &playlist);
    }
}

/// Refreshes a stale entry behind the client's back (stale-while-revalidate):
/// one refresh per key however many clients ask meanwhile. The client that
/// asked has its stale answer already.
pub fn revalidate(edge: &Arc<Edge>, job: FetchJob) {
    let now = edge.clock.now();
    let fresh = || edge.store.get(&job.key).filter(|e| e.is_fresh(now));
    match edge.inflight.join(&job.key, fresh) {
        Joined::Started(reader, writer) => {
            drop(reader);
            spawn(Arc::clone(edge), job, writer);
        }
        Joined::Hit(_) | Joined::Collapsed(_) => {}
    }
}

/// What a fetch uses of the edge.
fn fetcher(edge: &Edge) -> Fetcher<'_> {
    Fetcher {
        config: edge.config(),
        upstream: &edge.upstream,
        store: &edge.store,
        inflight: &edge.inflight,
        fill_budget: &edge.fill_budget,
        metrics: &edge.metrics,
        clock: &edge.clock,
        streams: &edge.streams,
        slices: &edge.slices,
    }
}

/// After the edge fetched a media playlist: drops what it had of the old
/// stream if the stream started over, then see
/// [`crate::prefetch::Prefetcher::after_playlist`].
fn after_playlist(edge: &Arc<Edge>, playlist_request: &UpstreamRequest, document: &Document) {
    if let Document::Hls(Summary::Media(playlist)) = document {
        if playlist.live {
            forget_old_stream(edge, playlist_request, playlist);
            list_newest(edge, playlist_request, playlist);
        }
    }
    let ahead = edge.settings().config.media.prefetch_ahead;
    let route = &playlist_request.route;
    for pq in edge
        .prefetcher
        .after_playlist(route, &playlist_request.path_and_query, document, ahead)
    {
        start(edge, playlist_request, pq);
    }
}

/// When a live playlist shows its stream started over (an encoder restart
/// that reuses segment names), drops every entry of the old stream: the
/// objects in the playlist's folder (not in its subfolders) and the
/// segments either window names, all but the playlist just stored. The old stream's bytes are never
/// served under the new stream's names.
fn forget_old_stream(edge: &Edge, request: &UpstreamRequest, playlist: &MediaPlaylist) {
    let route = &request.route;
    let path = request.path_and_query.split('?').next().unwrap_or_default();
    let playlist_key = key_url(route, path);
    let Some((why, before)) = edge.restarts.observe(&playlist_key, playlist) else {
        return;
    };
    let folder = &playlist_key[..playlist_key.rfind('/').map_or(playlist_key.len(), |i| i + 1)];
    let named: HashSet<String> = before
        .iter()
        .chain(&playlist.segments)
        .filter_map(|uri| resolve(route, &request.path_and_query, uri))
        .map(|pq| key_url(route, &pq))
        .collect();
    // The folder's own objects, not its subfolders': a playlist at an
    // origin's root must not take every other stream with it.
    let in_folder = |key: &str| key.strip_prefix(folder).is_some_and(|rest| !rest.contains('/'));
    let dropped = edge
        .store
        .purge(|key| key != playlist_key && (in_folder(key) || named.contains(key)));
    edge.metrics.stream_restarts.inc();
    tracing::warn!(
        playlist = playlist_key.as_str(),
        why = why.as_str(),
        dropped,
        "live stream started over; its old segments were dropped"
    );
}

/// Tells requests held for the next segment what the playlist lists now.
fn list_newest(edge: &Edge, request: &UpstreamRequest, playlist: &MediaPlaylist) {
    let route = &request.route;
    let Some(newest) = playlist
        .segments
        .last()
        .and_then(|uri| resolve(route, &request.path_and_query, uri))
    else {
        return;
    };
    // Refreshed without a blocking reload's directives: a held request
    // wants the playlist as it is now.
    let pq = &request.path_and_query;
    let refresh = match pq.contains("_HLS_") {
        true => pq.split('?').next().unwrap_or_default(),
        false => pq.as_str(),
    };
    edge.upcoming
        .listed(&key_url(route, &newest), playlist.target_duration, refresh);
}

/// Refreshes the playlist at `path_and_query` on `like`'s route if it is
/// stale and no fetch of it is under way (a request is held for a segment
/// it should list).
pub fn refresh_playlist(edge: &Arc<Edge>, like: &UpstreamRequest, path_and_query: &str) {
    fetch_ahead(edge, like, path_and_query.to_owned(), false);
}

/// After a player asked for the segment keyed `key`: the VOD segments after it.
pub fn after_segment(edge: &Arc<Edge>, key: &str, request: impl FnOnce() -> UpstreamRequest) {
    let next = edge
        .prefetcher
        .after_segment(key, edge.settings().config.media.prefetch_ahead);
    if next.is_empty() {
        return;
    }
    let request = request();
    for pq in next {
        start(edge, &request, pq);
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
    if !fetch_ahead(edge, like, path_and_query, true) {
        edge.metrics.prefetch.inc(PrefetchResult::Cached);
    }
}

/// Fetches `path_and_query` on the request's route ahead of any client
/// (`prefetch`: as a prefetch, counted and marked so), unless the object is
/// fresh or on its way (then false), or the prefetch pool is full (then
/// true: there was something to fetch).
fn fetch_ahead(edge: &Arc<Edge>, like: &UpstreamRequest, path_and_query: String, prefetch: bool) -> bool {
    let base = CacheKey::new(&key_url(&like.route, &path_and_query));
    let key = edge.store.resolve(&base, &like.headers);
    let now = edge.clock.now();
    let fresh = || edge.store.get(&key).filter(|e| e.is_fresh(now));
    if fresh().is_some() || edge.inflight.contains(&key) || edge.inflight.passed_for(&key).is_some() {
        return false;
    }
    let Ok(permit) = Arc::clone(edge.prefetcher.permits()).try_acquire_owned() else {
        tracing::debug!(key = key.as_str(), "prefetch pool full; skipped");
        return true;
    };
    match edge.inflight.join(&key, fresh) {
        Joined::Started(reader, writer) => {
            // Nobody reads it yet: players join it when they ask.
            drop(reader);
            let stale = edge.store.get(&key);
            let job = FetchJob {
                base,
                key,
                request: UpstreamRequest {
                    route: Arc::clone(&like.route),
                    method: http::Method::GET,
                    // Fetched as keyed.
                    path_and_query: normal_form(&like.route, &path_and_query).into_owned(),
                    headers: like.headers.clone(),
                    blocking: None,
                    // The edge's own decision, whoever's request led to it:
                    // asked of the key's owner like any fill.
                    fleet: edge.cluster().is_some(),
                },
                stale,
                prefetch,
            };
            let edge = Arc::clone(edge);
            tokio::spawn(async move {
                let _permit = permit;
                run(edge, job, writer).await;
            });
            true
        }
        Joined::Hit(_) | Joined::Collapsed(_) => false,
    }
}
