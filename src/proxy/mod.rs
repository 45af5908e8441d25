//! The life of a client request, top to bottom:
//! route → cache lookup → coalesce (join or start a fill) → respond → log.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::body::{AccessLog, EdgeBody, LogLine, PassBody};
use crate::cache::key::normal_form;
use crate::cache::{CacheKey, Entry};
use crate::coalesce::Joined;
use crate::config::RouteConfig;
use crate::edge::Edge;
use crate::error::EdgeError;
use crate::fetch::FetchJob;
use crate::fill::{Reader, Reading};
use crate::forward::{self, Forwarding, Peer};
use crate::headers::{self, append_list};
use crate::media::{self, cmcd, MediaKind};
use crate::metrics::Refusal;
use crate::outcome::{CacheStatus, Outcome, PassReason};
use crate::plain::rescue;
use crate::respond::{respond, respond_stored, Content, Served};
use crate::route::Target;
use crate::shared_head::Field;
use crate::upcoming::Hold;
use crate::upstream::{FetchError, UpstreamBody, UpstreamRequest};

mod digests;
mod fills;
mod sibling;
mod slices;

type Answer = Result<(Response<EdgeBody>, Outcome), EdgeError>;

/// The most of a request body the edge reads (and drops) to keep a
/// connection: GET and HEAD carry none that means anything.
const BODY_LIMIT: u64 = 16 << 10;

/// Serves one client request that came through hyper. The edge serves GET
/// and HEAD and forwards no request body: one that a client sent anyway is
/// read and dropped up to a small bound, and past it refused with 400 and
/// the connection closed.
pub async fn handle(edge: Arc<Edge>, req: Request<Incoming>, peer: Peer) -> Result<Response<EdgeBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    if let Err(why) = discard_body(body, edge.settings().config.server.header_timeout).await {
        let started = edge.access.enabled().then(Instant::now);
        let mut response = finish(&edge, &mut parts, Err(EdgeError::BadRequest(why)), started, peer);
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(response);
    }
    let mut response = answer(edge, &mut parts, peer).await;
    if let Some(shared) = response.body_mut().take_shared_head() {
        crate::shared_head::merge_shared(&shared, response.headers_mut());
    }
    Ok(response)
}

/// Answers one client request, whichever connection loop read it. Never
/// fails: errors become answers here. The access log takes the request's
/// method and target; its headers stay, for a connection to reuse the map.
pub async fn answer(edge: Arc<Edge>, parts: &mut Parts, mut peer: Peer) -> Response<EdgeBody> {
    let started = edge.access.enabled().then(Instant::now);
    peer.sibling = edge.from_sibling(parts);
    let answered = match peer.sibling {
        // Boxed, as a miss is below: the hit's future stays small, and
        // hyper moves it into a task of its own per request.
        true => Box::pin(sibling::answer(&edge, parts, peer)).await,
        false => route_and_look_up(&edge, parts, peer).await,
    };
    finish(&edge, parts, answered, started, peer)
}

/// The last step of every request: an error becomes its answer, and every
/// answer gets its request id, CORS (not a sibling's: what it is sent is
/// the origin's answer, kept for its own clients), its count and its access
/// log line.
fn finish(
    edge: &Arc<Edge>,
    parts: &mut Parts,
    answered: Answer,
    started: Option<Instant>,
    peer: Peer,
) -> Response<EdgeBody> {
    let id = edge.next_request_id();
    let (mut response, outcome) = match answered {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(id = %id, method = %parts.method, path = parts.uri.path(), error = %e, "request failed");
            match &e {
                EdgeError::BadRequest(_) => edge.metrics.refused.inc(Refusal::BadRequest),
                EdgeError::HeadersTooLarge { .. } => edge.metrics.refused.inc(Refusal::HeadersTooLarge),
                _ => {}
            }
            (rescue(&e, &id.to_string()), Outcome::Error)
        }
    };
    // A plain stored hit carries its per-answer headers beside its shared
    // head (see `respond_stored`), the rest in the response's map.
    let settings = edge.settings();
    let any_origin = settings.cors.is_any() && !peer.sibling;
    let cmsd = edge.cmsd_entry(&peer, &settings.config);
    let apart = match response.body_mut().shared_head_mut() {
        Some(shared) => {
            shared.request_id = Some(id);
            shared.any_origin = any_origin;
            shared.cmsd = cmsd;
            true
        }
        None => {
            Field::RequestId(&id).insert(response.headers_mut());
            if let Some(cmsd) = cmsd {
                Field::Cmsd(cmsd).insert(response.headers_mut());
            }
            false
        }
    };
    if !(peer.sibling || (apart && any_origin)) {
        settings.cors.apply(&parts.headers, response.headers_mut());
    }
    edge.metrics.requests.inc(outcome);
    if !peer.sibling && outcome != Outcome::Error && media::kind_by_path(parts.uri.path()).is_some() {
        use http_body::Body;
        let bytes = response.body().size_hint().exact().unwrap_or(0);
        let stream = crate::audience::stream_of(parts.uri.path());
        let now = edge.second();
        edge.audience.record(stream, peer.ip.to_canonical(), bytes, now);
    }
    let status = response.status().as_u16();
    let line = started.map(|started| LogLine {
        sink: Arc::clone(&edge.access),
        id,
        client: peer.ip,
        method: std::mem::take(&mut parts.method),
        uri: std::mem::take(&mut parts.uri),
        host: parts.headers.get(header::HOST).cloned(),
        status,
        outcome,
        started,
        complete: false,
        error: None,
    });
    let log = AccessLog::new(Arc::clone(&edge.metrics), line);
    response.body_mut().attach_log(log);
    response
}

/// Reads a request body to its end and drops it; fails when it is larger
/// than [`BODY_LIMIT`] or does not arrive within `patience`.
async fn discard_body(mut body: Incoming, patience: Duration) -> Result<(), &'static str> {
    use http_body::Body;
    use http_body_util::BodyExt;
    const TOO_LARGE: &str = "a GET or HEAD request carries a body; the edge takes none";
    if body.is_end_stream() {
        return Ok(());
    }
    if body.size_hint().lower() > BODY_LIMIT {
        return Err(TOO_LARGE);
    }
    let read = async {
        let mut seen = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| "the request body broke off")?;
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > BODY_LIMIT {
                return Err(TOO_LARGE);
            }
        }
        Ok(())
    };
    tokio::time::timeout(patience, read)
        .await
        .unwrap_or(Err("the request body did not arrive in time"))
}

pub(crate) async fn route_and_look_up(edge: &Arc<Edge>, parts: &Parts, peer: Peer) -> Answer {
    let settings = edge.settings();
    let limit = settings.config.server.max_header_size;
    let size = head_size(parts);
    if size > limit {
        return Err(EdgeError::HeadersTooLarge { size, limit });
    }
    let target = Target::of(parts)?;
    if target.path == digests::PATH {
        return digests::answer(edge, &target, parts);
    }
    let Some((route, path_and_query)) = settings.routes.find(&target) else {
        return Err(EdgeError::Misdirected {
            host: target.host.into_owned(),
            path: target.path.into_owned(),
        });
    };
    if crate::cors::is_preflight(&parts.method) {
        // Answered by the edge itself, without the origin: counted as a hit.
        let answer = settings.cors.preflight(&parts.headers).map(|()| EdgeBody::empty());
        return Ok((answer, Outcome::Hit));
    }
    // Not held across the lookup's waits: a reload's old settings are let
    // go once the requests that read them are routed.
    drop(settings);
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return Err(EdgeError::Method(parts.method.clone()));
    }
    let path_and_query = match &route.signing {
        None => path_and_query,
        Some(signing) => {
            // A sibling's request is the fleet's own (signed with its
            // secret), for a client whose token the sibling checked.
            if !peer.sibling {
                // The wall clock, as the signer's is.
                let now = crate::cluster::unix_secs(SystemTime::now());
                if let Err(denied) = crate::signing::check(signing, &target.path, target.query, &parts.headers, now) {
                    edge.metrics.refused.inc(Refusal::Signature);
                    return Err(EdgeError::Forbidden(denied.reason()));
                }
            }
            crate::signing::without_token(path_and_query, &signing.param)
        }
    };
    // The key's text: a hit looks it up as it is; a `CacheKey` is made only
    // for a request that goes on to the fill machinery. What is fetched is
    // the same normal form.
    let normal = normal_form(&route, &path_and_query);
    let url = route.origin.url(&normal);
    // What a shared fill asks upstream: always GET the whole object (HEAD and
    // ranges are cut from it). Built only when needed: a hit never sends it.
    let fill_request = || UpstreamRequest {
        route: Arc::clone(&route),
        method: Method::GET,
        path_and_query: normal.to_string(),
        headers: upstream_headers(edge, parts, peer, &route, true),
        blocking: edge.prefetcher.blocking_limit(&route, &normal),
        fleet: to_fleet(edge, parts, peer),
    };
    if let Some(next) = cmcd::next_object(&parts.headers, parts.uri.query()) {
        fills::hinted(edge, &fill_request(), &next);
    }
    let variants = edge.store.variants(&url);
    let now = edge.clock.now();
    let fresh = match variants {
        None => edge.store.get(url.as_str()).filter(|e| e.is_fresh(now)),
        Some(_) => None,
    };
    let answer = match fresh {
        Some(entry) => from_entry(parts, &entry, Outcome::Hit, now),
        // Boxed: a miss's future is large, and inline it would be moved
        // (copied) with every hit's.
        None => {
            if let Some(hold) = edge.upcoming.hold(&url) {
                Box::pin(until_listed(edge, &hold, &fill_request())).await;
            }
            Box::pin(lookup(edge, parts, peer, CacheKey::new(&url), variants, fill_request())).await
        }
    };
    if media::kind_by_path(&path_and_query) == Some(MediaKind::Segment) {
        fills::after_segment(edge, &url, fill_request);
    }
    answer
}

/// Holds a request for the live segment after the newest listed until a
/// refresh of its playlist lists it, for at most half a target duration;
/// then it is looked up as usual (by then most often a prefetch of it is
/// under way, and every held request joins that one fetch). The playlist is
/// refreshed as soon as it goes stale meanwhile.
async fn until_listed(edge: &Arc<Edge>, hold: &Hold, like: &UpstreamRequest) {
    const RECHECK: Duration = Duration::from_millis(100);
    let deadline = tokio::time::Instant::now() + hold.patience();
    while !hold.is_listed() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            tracing::debug!(playlist = hold.playlist(), "early segment request: not listed in time");
            return;
        }
        fills::refresh_playlist(edge, like, hold.playlist());
        let _ = tokio::time::timeout(left.min(RECHECK), hold.changed()).await;
    }
}

async fn lookup(
    edge: &Arc<Edge>,
    parts: &Parts,
    peer: Peer,
    base: CacheKey,
    variants: Option<Arc<[HeaderName]>>,
    upstream: UpstreamRequest,
) -> Answer {
    let now = edge.clock.now();
    let key = match variants {
        Some(names) => base.variant(&names, &upstream.headers),
        None => base.clone(),
    };
    // `route_and_look_up` read a non-varying key already; a miss reads it once more, which
    // is nothing next to the fetch, and keeps this function whole.
    let cached = edge.store.get(&key);
    if let Some(entry) = cached.as_ref().filter(|e| e.is_fresh(now)) {
        return from_entry(parts, entry, Outcome::Hit, now);
    }
    if let Some(meta) = edge.slices.get(base.as_str(), now) {
        return slices::serve(edge, parts, meta, upstream).await;
    }
    if let Some(entry) = cached.as_ref().filter(|e| e.serves_while_revalidating(now)) {
        let job = FetchJob {
            base,
            key,
            request: upstream,
            stale: Some(Arc::clone(entry)),
            prefetch: false,
        };
        fills::revalidate(edge, job);
        return from_entry(parts, entry, Outcome::Stale, now);
    }
    if let Some(why) = edge.inflight.passed_for(&key) {
        tracing::debug!(key = key.as_str(), why = why.as_str(), "hit-for-pass");
        return pass(edge, parts, peer, upstream, PassReason::Remembered).await;
    }
    let joined = edge
        .inflight
        .join(&key, || edge.store.get(&key).filter(|e| e.is_fresh(now)));
    match joined {
        Joined::Hit(entry) => from_entry(parts, &entry, Outcome::Hit, now),
        Joined::Started(reader, writer) => {
            let job = FetchJob {
                base,
                key,
                request: upstream.clone(),
                stale: cached,
                prefetch: false,
            };
            fills::spawn(Arc::clone(edge), job, writer);
            from_fill(edge, parts, peer, reader, upstream, Outcome::Miss).await
        }
        Joined::Collapsed(reader) => from_fill(edge, parts, peer, reader, upstream, Outcome::Collapsed).await,
    }
}

fn from_entry(parts: &Parts, entry: &Entry, outcome: Outcome, now: SystemTime) -> Answer {
    let served = Served {
        status: CacheStatus {
            outcome,
            stored: true,
            prefetched: entry.prefetched,
            peer: entry.from_peer,
        },
        now,
    };
    let response = respond_stored(parts, &entry.head, entry.body.clone(), served)?;
    Ok((response, outcome))
}

/// Answers from a fill as its bytes arrive.
async fn from_fill(
    edge: &Arc<Edge>,
    parts: &Parts,
    peer: Peer,
    mut reader: Reader,
    upstream: UpstreamRequest,
    joined: Outcome,
) -> Answer {
    let fill_head = match reader.head().await {
        Ok(head) => head,
        // Too large to keep whole: this client is answered slice by slice.
        Err(FetchError::Sliced) => {
            let base = upstream.route.origin.url(&upstream.path_and_query);
            let sliced = edge.slices.get(&base, edge.clock.now());
            return match sliced {
                Some(meta) => slices::serve(edge, parts, meta, upstream).await,
                None => Err(FetchError::Abandoned.into()),
            };
        }
        Err(e) => return Err(e.into()),
    };
    let same = same_variant(&fill_head.head.headers, &upstream.headers, &fill_head.request_headers);
    let status = match fill_head.reading(joined, same) {
        Reading::Read(status) => status,
        Reading::Pass(why) => {
            drop(reader);
            return pass(edge, parts, peer, upstream, why).await;
        }
    };
    let outcome = status.outcome;
    let served = Served {
        status,
        now: edge.clock.now(),
    };
    // Set-Cookie of a shared answer goes to the client whose request fetched it only.
    let cookies = match joined {
        Outcome::Miss => fill_head.starter_cookies.clone(),
        _ => Vec::new(),
    };
    let mut response = respond(parts, &fill_head.head, Content::Fill(reader), served)?;
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok((response, outcome))
}

/// The size of a request head as written on the wire, near enough.
fn head_size(parts: &Parts) -> usize {
    let target = parts.uri.path_and_query().map_or(1, |p| p.as_str().len());
    let fields: usize = parts.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    parts.method.as_str().len() + target + 12 + fields
}

/// Whether two requests select the same variant of an answer with these headers.
fn same_variant(response: &HeaderMap, ours: &HeaderMap, theirs: &HeaderMap) -> bool {
    let names = crate::cache::store::vary_names(response);
    names.is_empty()
        || names
            .iter()
            .all(|n| ours.get_all(n).iter().eq(theirs.get_all(n).iter()))
}

/// Sends the client's own request upstream and streams the answer back, uncached.
async fn pass(
    edge: &Arc<Edge>,
    parts: &Parts,
    peer: Peer,
    mut upstream: UpstreamRequest,
    reason: PassReason,
) -> Answer {
    upstream.method = parts.method.clone();
    upstream.headers = upstream_headers(edge, parts, peer, &upstream.route, false);
    // One client's own answer: nothing for the fleet to share.
    upstream.fleet = false;
    let counted = |e: crate::upstream::FetchError| {
        edge.metrics.upstream_errors.inc(e.kind());
        e
    };
    let answered = edge.upstream.send(&upstream).await.map_err(counted)?;
    let (mut head, body) = answered.response.into_parts();
    let has_body = parts.method != Method::HEAD && !matches!(head.status.as_u16(), 204 | 304);
    let expected = if has_body {
        headers::content_length(&head.headers)
    } else {
        None
    };
    // As for a fill: an answer that does not parse to its first body byte
    // is a 502, not a cut-off connection.
    let mut body = UpstreamBody::new(body, &answered.source, &upstream.route, expected);
    let first = body.next().await.map_err(counted)?;
    headers::strip_hop_by_hop(&mut head.headers);
    let outcome = Outcome::Pass(reason);
    append_list(&mut head.headers, header::VIA, headers::VIA_VALUE);
    head.headers.insert(headers::CACHE_STATUS, outcome.cache_status(false));
    let body = PassBody::new(body, first, Arc::clone(&edge.metrics));
    Ok((Response::from_parts(head, EdgeBody::pass(body)), outcome))
}

/// Whether a fill for this request may ask the sibling that owns its key:
/// not when this edge is alone, the request is a sibling's (it is never
/// sent on to a third member, even when members disagree on who owns what),
/// or it has passed through this fleet already (`CDN-Loop`).
fn to_fleet(edge: &Edge, parts: &Parts, peer: Peer) -> bool {
    edge.cluster()
        .is_some_and(|cluster| !peer.sibling && !cluster.looped(&parts.headers))
}

/// The headers sent upstream for this request (see [`forward`]).
fn upstream_headers(edge: &Edge, parts: &Parts, peer: Peer, route: &RouteConfig, shared: bool) -> HeaderMap {
    let to = Forwarding {
        route,
        trusted: &edge.settings().config.server.trusted_proxies,
        shared,
    };
    let mut headers = forward::upstream_headers(&parts.headers, peer, &to);
    if let Some(signing) = &route.signing {
        crate::signing::strip_cookie(&mut headers, &signing.param);
    }
    headers
}
