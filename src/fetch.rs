//! The upstream fetch behind a fill. It is a task of its own, owned by the
//! fill and not by the client that caused it: it goes on when that client
//! leaves, and it alone decides what is stored.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_cache_semantics::AfterResponse;

use crate::budget::Budget;
use crate::cache::policy::{self, Disposition, Grace};
use crate::cache::{CacheKey, Entry, Head, Store};
use crate::clock::Clock;
use crate::coalesce::Inflight;
use crate::config::Config;
use crate::digest::{self, Expected, Hasher};
use crate::fill::{concat, FillHead, Writer};
use crate::headers;
use crate::media::{self, freshness, Document};
use crate::metrics::{GaugeGuard, Metrics, PrefetchResult};
use crate::outcome::PassReason;
use crate::slicing::{SliceMeta, Slices};
use crate::streams::{stream_of, StreamLimits};
use crate::upstream::{Answered, FetchError, Resume, Source, Upstream, UpstreamBody, UpstreamRequest};

/// What a fetch uses of the edge's state: borrowed from the edge (see
/// `proxy::fills`), or made on its own for a test, without a whole edge.
pub struct Fetcher<'a> {
    pub config: Arc<Config>,
    pub upstream: &'a Upstream,
    pub store: &'a Store,
    pub inflight: &'a Inflight,
    pub fill_budget: &'a Arc<Budget>,
    pub metrics: &'a Metrics,
    pub clock: &'a Clock,
    pub streams: &'a StreamLimits,
    pub slices: &'a Slices,
}

/// What one fill fetches.
pub struct FetchJob {
    /// The key without `Vary` selection, under which variants are filed.
    pub base: CacheKey,
    /// The key the fill is registered under.
    pub key: CacheKey,
    pub request: UpstreamRequest,
    /// A stored entry to revalidate (and to fall back on if the origin fails).
    pub stale: Option<Arc<Entry>>,
    /// Started by the edge ahead of players, not by a client request.
    pub prefetch: bool,
}

/// What a finished fetch leaves behind.
#[derive(Default)]
struct Fetched {
    entry: Option<Arc<Entry>>,
    playlist: Option<Document>,
}

/// Runs a fetch to its end: stores what may be stored, then ends the fill.
/// Returns the playlist it read, if the object was one (for prefetching).
pub async fn run(cx: &Fetcher<'_>, job: FetchJob, writer: Writer) -> Option<Document> {
    let _inflight = GaugeGuard::new(&cx.metrics.inflight_fetches);
    let fill = Arc::clone(writer.fill());
    let playlist = match fetch(cx, &job, &writer).await {
        Ok(fetched) => {
            // Store before leaving the in-flight map: see `Inflight::join`.
            if let Some(entry) = fetched.entry {
                cx.store.insert(&job.base, &job.request.headers, entry);
            }
            writer.finish(Ok(()));
            if job.prefetch {
                cx.metrics.prefetch.inc(PrefetchResult::Fetched);
            }
            fetched.playlist
        }
        Err(FetchError::Sliced) => {
            writer.finish(Err(FetchError::Sliced));
            None
        }
        Err(e) => {
            tracing::warn!(key = job.key.as_str(), error = %e, "upstream fetch failed; nothing stored");
            cx.metrics.upstream_errors.inc(e.kind());
            writer.finish(Err(e));
            if job.prefetch {
                cx.metrics.prefetch.inc(PrefetchResult::Failed);
            }
            None
        }
    };
    cx.inflight.close(&job.key, &fill);
    playlist
}

/// Fetches, publishes head and body to the fill, and returns the entry to
/// store, if any. In four steps: ask upstream (a stored entry's validators
/// included), publish the head, stream the body, make the entry.
async fn fetch(cx: &Fetcher<'_>, job: &FetchJob, writer: &Writer) -> Result<Fetched, FetchError> {
    let mut request = job.request.clone();
    if let Some(stale) = &job.stale {
        add_validators(&mut request, stale);
    }
    // One stream's fetches are bounded; a prefetch does not wait for a slot.
    let patience = request.route.timeout;
    let slot = match job.prefetch {
        true => cx.streams.try_take(job.key.as_str()),
        false => cx.streams.wait(job.key.as_str(), patience).await,
    };
    let Ok(_slot) = slot else {
        let busy = FetchError::StreamBusy {
            stream: stream_of(job.key.as_str()).to_owned(),
            limit: cx.config.media.stream_fetches,
            waited: if job.prefetch { Duration::ZERO } else { patience },
        };
        return serve_stale(cx, job, writer).ok_or(busy).map(|_| Fetched::default());
    };
    // And so are one route's (`routes[].max_fetches`).
    let route = &request.route;
    let name = route.name();
    let wait = (!job.prefetch).then_some(patience);
    let Ok(_route_slot) = cx.streams.route_slot(&name, route.max_fetches, wait).await else {
        let busy = FetchError::RouteBusy {
            route: name,
            limit: route.max_fetches,
            waited: wait.unwrap_or_default(),
        };
        return serve_stale(cx, job, writer).ok_or(busy).map(|_| Fetched::default());
    };
    let answered = match cx.upstream.send(&request).await {
        Ok(r) => r,
        Err(e) => return serve_stale(cx, job, writer).ok_or(e).map(|_| Fetched::default()),
    };
    let now = cx.clock.now();
    let Answered { response, source, rest } = answered;
    let (parts, body) = response.into_parts();
    if let Some(stale) = &job.stale {
        if parts.status == StatusCode::NOT_MODIFIED {
            let entry =
                refreshed(stale, &request, &parts, now, writer).or_else(|e| serve_stale(cx, job, writer).ok_or(e))?;
            return Ok(Fetched { entry, playlist: None });
        }
        if parts.status.is_server_error() && serve_stale(cx, job, writer).is_some() {
            return Ok(Fetched::default());
        }
    }
    // Too large to keep whole: kept in slices, which every reader asks for.
    if let Some(meta) = sliced(cx, job, &request, &parts, now) {
        tracing::info!(key = job.key.as_str(), total = meta.total, "caching in slices");
        cx.slices.insert(meta);
        return Err(FetchError::Sliced);
    }
    // The answer must parse up to its first body byte before any client sees
    // its head: a malformed chunk-size line is then a 502 for everyone, not
    // a connection cut after a 200 (and nothing is stored either way).
    let expected = match parts.status {
        StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED => None,
        _ => headers::content_length(&parts.headers),
    };
    let body = UpstreamBody::new(body, &source, &request.route, expected);
    let mut stream = Stream {
        body,
        source,
        rest,
        request: &request,
        resume: None,
    };
    let first = match stream.body.next().await {
        Ok(first) => first,
        Err(e) => return serve_stale(cx, job, writer).ok_or(e).map(|_| Fetched::default()),
    };
    let judged = publish_head(cx, job, &stream, &parts, now, writer);
    stream.resume = resumable(&judged.head);
    // The body reader fails a body short of its announced length, and one
    // whose digest differs from the origin's.
    let (disposition, sha256) = stream_body(cx, job, writer, &mut stream, first, &judged).await?;
    Ok(entry(cx, job, writer, judged, disposition, &sha256, now))
}

/// The upstream body a fill reads, where it comes from, and where its rest
/// can be asked for if it breaks off.
struct Stream<'r> {
    body: UpstreamBody,
    source: Source<'r>,
    /// The sources after `source`, in order.
    rest: Vec<Source<'r>>,
    request: &'r UpstreamRequest,
    /// How to ask for the rest: `None` when the answer cannot be resumed.
    resume: Option<Resume>,
}

impl Stream<'_> {
    /// After the body failed with `error` at `received` bytes: the rest of it
    /// from the next source, if the answer can be resumed and a source is
    /// left; else the error.
    async fn resumed(&mut self, cx: &Fetcher<'_>, error: FetchError, received: u64) -> Result<(), FetchError> {
        if let FetchError::Stalled { .. } = error {
            cx.upstream.source_failed(&self.source, &error);
        }
        let resumable = matches!(
            error,
            FetchError::Broken { .. } | FetchError::Stalled { .. } | FetchError::Short { .. }
        );
        let Some(resume) = self.resume.as_mut().filter(|_| resumable && !self.rest.is_empty()) else {
            return Err(error);
        };
        resume.offset = received;
        tracing::warn!(error = %error, from = received, "upstream body broke off; asking the next source for the rest");
        let rest = std::mem::take(&mut self.rest);
        let answered = cx.upstream.resume(self.request, rest, resume).await?;
        let (parts, body) = answered.response.into_parts();
        let expected = headers::content_length(&parts.headers);
        self.body = UpstreamBody::new(body, &answered.source, &self.request.route, expected);
        self.source = answered.source;
        self.rest = answered.rest;
        Ok(())
    }
}

/// How the rest of an answer with this head would be asked for: its length
/// is known and it has a validator a range can be made conditional on (a
/// strong `ETag`, else `Last-Modified`).
fn resumable(head: &Head) -> Option<Resume> {
    if head.status != StatusCode::OK {
        return None;
    }
    Some(Resume {
        offset: 0,
        total: head.content_length?,
        validator: head.range_validator()?,
    })
}

/// What the origin's head says may be done with its answer.
struct Judged {
    head: Arc<Head>,
    policy: http_cache_semantics::CachePolicy,
    /// The request as sent, kept with the entry.
    sent: http::Request<()>,
    disposition: Disposition,
    kind: media::MediaKind,
    origin_spoke: bool,
    /// A sibling sent it.
    from_peer: bool,
    /// The digest the origin sent for the body, to check it against.
    expected: Option<Expected>,
}

/// The slices an answer is kept in, when it is a storable 200 to a GET over
/// `cache.slice` (or `cache.max_object`) that can be asked for by range.
fn sliced(
    cx: &Fetcher<'_>,
    job: &FetchJob,
    request: &UpstreamRequest,
    parts: &http::response::Parts,
    now: SystemTime,
) -> Option<SliceMeta> {
    let length = headers::content_length(&parts.headers)?;
    let cache = &cx.config.cache;
    if parts.status != StatusCode::OK
        || request.method != http::Method::GET
        || length <= cache.slice_above()
        || parts.headers.contains_key(header::VARY)
    {
        return None;
    }
    let sent = request.to_request();
    let mut origin_headers = headers::detached(&parts.headers);
    let policy = policy::policy(&sent, parts.status, &origin_headers, now);
    let Disposition::Store { ttl } = policy::judge(&sent, &policy, &origin_headers, now, u64::MAX) else {
        return None;
    };
    // The edge checks no digest of a sliced body: it passes on none.
    origin_headers.remove(digest::CONTENT_DIGEST);
    origin_headers.remove(digest::REPR_DIGEST);
    let head = Arc::new(Head::from_upstream(parts.status, origin_headers, now));
    SliceMeta::of(job.base.as_str(), head, policy, sent, ttl, cache.slice_size())
}

/// Judges the origin's head, reserves room for a body that will be kept, and
/// publishes the head to the fill's readers.
fn publish_head(
    cx: &Fetcher<'_>,
    job: &FetchJob,
    stream: &Stream<'_>,
    parts: &http::response::Parts,
    now: SystemTime,
    writer: &Writer,
) -> Judged {
    let request = stream.request;
    let received = stream.body.received();
    let from_peer = matches!(stream.source, Source::Sibling(_));
    let sent = request.to_request();
    // The policy sees the origin's headers as sent, `Age` included.
    let origin_headers = headers::detached(&parts.headers);
    let policy = policy::policy(&sent, parts.status, &origin_headers, now);
    let mut head = Head::from_upstream(parts.status, origin_headers, now);
    let judged = policy::judge(&sent, &policy, &head.headers, now, cx.config.cache.max_object);
    let kind = media::kind_of(&request.path_and_query, &head.headers);
    let origin_spoke = freshness::origin_spoke(&head.headers);
    let expected = (head.status == StatusCode::OK)
        .then(|| Expected::of(&head.headers))
        .flatten();
    // A digest of this message's content would be wrong on a range cut from
    // it; the edge's own `Repr-Digest` is about the representation.
    head.headers.remove(digest::CONTENT_DIGEST);
    let mut disposition = freshness::at_head(kind, head.status, &head.headers, judged, &cx.config.media);
    if shared(disposition) {
        // A kept body is counted from its first byte; an announced length is
        // asked for at once, so that fills racing for the last room do not
        // all get part of it and none finish.
        let announced = head.content_length.unwrap_or(0).max(received);
        if !writer.reserve(cx.fill_budget, announced) {
            disposition = Disposition::NoRoom;
        }
    }
    let mut starter_cookies = Vec::new();
    if disposition != Disposition::Private {
        // Shared only because the origin said public: one viewer's cookie is never handed to others.
        if let header::Entry::Occupied(cookies) = head.headers.entry(header::SET_COOKIE) {
            starter_cookies = cookies.remove_entry_mult().1.collect();
        }
    }
    let head = Arc::new(head);
    writer.head(Arc::new(FillHead {
        head: Arc::clone(&head),
        disposition,
        revalidated: false,
        prefetched: job.prefetch,
        from_peer,
        request_headers: request.headers.clone(),
        starter_cookies,
    }));
    match disposition {
        Disposition::Private => stop_sharing(cx, job, writer, PassReason::Private),
        Disposition::TooLarge => stop_sharing(cx, job, writer, PassReason::TooLarge),
        Disposition::NoRoom => no_room(cx, job, writer),
        _ => {}
    }
    Judged {
        head,
        policy,
        sent,
        disposition,
        kind,
        origin_spoke,
        from_peer,
        expected,
    }
}

/// Streams the body into the fill from its first piece; returns what may
/// be done with it now that all of it is in. A body that breaks off is
/// finished from the next source when it can be (see [`Stream::resumed`]).
async fn stream_body(
    cx: &Fetcher<'_>,
    job: &FetchJob,
    writer: &Writer,
    stream: &mut Stream<'_>,
    first: Option<Bytes>,
    judged: &Judged,
) -> Result<(Disposition, Vec<u8>), FetchError> {
    let patience = cx.config.server.send_timeout;
    let max_object = cx.config.cache.max_object;
    let expected = judged.expected.as_ref();
    let mut disposition = judged.disposition;
    let mut hasher = Hasher::new(expected);
    // With a digest to check, the last piece is held back until the body is
    // checked: a client that had every byte would take it for whole.
    let mut held: Option<Bytes> = None;
    let mut received = 0u64;
    let mut next = first;
    while let Some(data) = next {
        received += data.len() as u64;
        hasher.update(&data);
        cx.metrics
            .upstream_bytes
            .inc_by(stream.source.kind(), data.len() as u64);
        if disposition.is_stored() && received > max_object {
            // Bigger than its headers said (or than they could say, chunked).
            disposition = Disposition::TooLarge;
            stop_sharing(cx, job, writer, PassReason::TooLarge);
        }
        if shared(disposition) && !writer.reserve(cx.fill_budget, received) {
            disposition = Disposition::NoRoom;
            no_room(cx, job, writer);
        }
        match expected {
            Some(_) => {
                if let Some(before) = held.replace(data) {
                    writer.push(before);
                }
            }
            None => writer.push(data),
        }
        if !shared(disposition) {
            // Nothing is kept: read the origin no faster than the readers
            // take it, and stop when nobody is left to read an answer that
            // will not be kept.
            writer.room(LAG_LIMIT, patience).await;
            if writer.readers() == 0 {
                return Err(FetchError::Abandoned);
            }
        }
        next = loop {
            match stream.body.next().await {
                Ok(next) => break next,
                Err(e) => stream.resumed(cx, e, received).await?,
            }
        };
    }
    let sha256 = hasher.finish(expected).map_err(|reason| FetchError::DigestMismatch {
        origin: stream.source.name(),
        reason,
    })?;
    if let Some(last) = held {
        writer.push(last);
    }
    Ok((disposition, sha256))
}

/// The entry to store for a whole body, if it may be stored; a playlist's
/// freshness comes from what it says.
fn entry(
    cx: &Fetcher<'_>,
    job: &FetchJob,
    writer: &Writer,
    judged: Judged,
    disposition: Disposition,
    sha256: &[u8],
    now: SystemTime,
) -> Fetched {
    let Disposition::Store { mut ttl } = disposition else {
        return Fetched::default();
    };
    let keep_copies = cx.upstream.cluster().is_none_or(|c| c.keep_copies);
    if judged.from_peer && !keep_copies {
        // `cluster.keep_copies = false`: the owner's copy is the fleet's only one.
        return Fetched::default();
    }
    let Some(chunks) = writer.body_chunks() else {
        return Fetched::default();
    };
    let body = stored_body(cx, &chunks);
    writer.rebase(&body);
    let playlist = match judged.head.status {
        StatusCode::OK => Document::read(judged.kind, &body, now),
        _ => None,
    };
    let route = &job.request.route;
    let mut grace = policy::grace(
        &judged.head.headers,
        Grace {
            while_revalidate: route.stale_while_revalidate,
            if_error: route.stale_if_error,
        },
    );
    if let Some(document) = &playlist {
        ttl = freshness::playlist_ttl(document, ttl, judged.origin_spoke, &cx.config.media);
        // A player must not be handed a frozen live window: a live playlist
        // is never served older than its target duration.
        if let Some(period) = document.live_period() {
            grace = grace.at_most(period.saturating_sub(ttl));
        }
    }
    // Known only now that the body is in: every answer from the entry has it.
    let head = Arc::new(
        judged
            .head
            .with_header(digest::REPR_DIGEST, digest::repr_digest(sha256)),
    );
    let entry = Arc::new(Entry {
        head,
        body,
        policy: judged.policy,
        request: judged.sent,
        fresh_until: now + ttl,
        keep_stale: cx.config.cache.keep_stale,
        grace,
        prefetched: job.prefetch,
        from_peer: judged.from_peer,
    });
    Fetched {
        entry: Some(entry),
        playlist,
    }
}

/// The body as the cache keeps it: one buffer, mapped for sendfile when large.
fn stored_body(cx: &Fetcher<'_>, chunks: &[Bytes]) -> Bytes {
    #[cfg(target_os = "linux")]
    if cx.config.server.sendfile {
        if let Some(mapped) = crate::mapped::store(chunks) {
            return mapped;
        }
    }
    concat(chunks.iter())
}

/// What a fill that keeps nothing may hold for its slowest reader before
/// the origin is read no further.
const LAG_LIMIT: u64 = 512 << 10;

fn shared(d: Disposition) -> bool {
    matches!(d, Disposition::Store { .. } | Disposition::Share)
}

/// The fill budget is spent: this fill goes on for the readers it has, and
/// the next request for the key starts a fill of its own (which may find room).
fn no_room(cx: &Fetcher<'_>, job: &FetchJob, writer: &Writer) {
    tracing::info!(
        key = job.key.as_str(),
        "no room in the fill budget; streaming through uncached"
    );
    cx.inflight.close(&job.key, writer.fill());
    writer.stop_keeping();
}

/// No one else may join this fill, and the key goes straight upstream for a while.
fn stop_sharing(cx: &Fetcher<'_>, job: &FetchJob, writer: &Writer, reason: PassReason) {
    cx.inflight.close(&job.key, writer.fill());
    cx.inflight.remember_pass(&job.key, reason);
    writer.stop_keeping();
}

fn add_validators(request: &mut UpstreamRequest, stale: &Entry) {
    for (have, ask) in [
        (header::ETAG, header::IF_NONE_MATCH),
        (header::LAST_MODIFIED, header::IF_MODIFIED_SINCE),
    ] {
        if let Some(v) = stale.head.headers.get(&have) {
            request.headers.insert(ask, v.clone());
        }
    }
}

/// The origin confirmed the stored entry (304): refresh its headers and freshness, keep its body.
fn refreshed(
    stale: &Entry,
    request: &UpstreamRequest,
    parts: &http::response::Parts,
    now: SystemTime,
    writer: &Writer,
) -> Result<Option<Arc<Entry>>, FetchError> {
    let sent = request.to_request();
    let AfterResponse::NotModified(policy, merged) = stale.policy.after_response(&sent, parts, now) else {
        return Err(FetchError::Broken {
            origin: format!("origin {}", request.route.origin.authority),
            received: 0,
            reason: "304 Not Modified did not match the stored validators".into(),
        });
    };
    let mut headers = headers::detached(&merged.headers);
    headers.remove(header::WARNING);
    headers.remove(digest::CONTENT_DIGEST);
    // The body is the one stored: so is its digest.
    if let Some(ours) = stale.head.headers.get(digest::REPR_DIGEST) {
        headers.insert(digest::REPR_DIGEST, ours.clone());
    }
    let mut head = Head::from_upstream(stale.head.status, headers, now);
    head.content_length = Some(stale.body.len() as u64);
    head.headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(stale.body.len()));
    let ttl = policy.time_to_live(now);
    let entry = Arc::new(Entry {
        head: Arc::new(head),
        body: stale.body.clone(),
        policy,
        request: stale.request.clone(),
        fresh_until: now + ttl,
        keep_stale: stale.keep_stale,
        grace: stale.grace,
        prefetched: stale.prefetched,
        from_peer: stale.from_peer,
    });
    publish_entry(writer, &entry, Disposition::Store { ttl });
    Ok(Some(entry))
}

/// Serves the stored entry when the origin failed, if it is within its
/// `stale-if-error` grace (none when the origin forbade serving it stale,
/// RFC 9111 §4.2.4). Returns `Some(None)`: served, nothing new to store.
fn serve_stale(cx: &Fetcher<'_>, job: &FetchJob, writer: &Writer) -> Option<Option<Arc<Entry>>> {
    let stale = job.stale.as_ref()?;
    if !stale.serves_on_error(cx.clock.now()) {
        return None;
    }
    tracing::warn!(key = job.key.as_str(), "origin failed; serving the stored entry stale");
    publish_entry(writer, stale, Disposition::Share);
    Some(None)
}

fn publish_entry(writer: &Writer, entry: &Entry, disposition: Disposition) {
    writer.head(Arc::new(FillHead {
        head: Arc::clone(&entry.head),
        disposition,
        revalidated: true,
        prefetched: false,
        from_peer: false,
        request_headers: entry.request.headers().clone(),
        starter_cookies: Vec::new(),
    }));
    writer.push(Bytes::clone(&entry.body));
}

#[cfg(test)]
mod tests;
