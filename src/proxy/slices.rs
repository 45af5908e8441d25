//! Answers from an object kept in slices (see `crate::slicing`): the slices
//! under the requested bytes are taken from the cache, or fetched with a
//! range request each (once, whoever else asks meanwhile), and streamed to
//! the client one after another, cut exactly at the requested bytes.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::Answer;
use crate::body::{ChannelBody, EdgeBody};
use crate::cache::policy::{Disposition, Grace};
use crate::cache::Entry;
use crate::coalesce::Joined;
use crate::edge::Edge;
use crate::fill::{concat, FillHead, Reader, Writer};
use crate::outcome::{CacheStatus, Outcome};
use crate::respond::{respond, select_range, Content, Served};
use crate::slicing::SliceMeta;
use crate::upstream::{FetchError, UpstreamBody, UpstreamRequest};

/// Slices handed to a slow client ahead of what it has taken: the fills
/// go on regardless, the cache holds what they fetch.
const AHEAD: usize = 2;

/// Answers `parts` from the sliced object `meta`; `like` is the request the
/// edge would send for the whole object.
pub async fn serve(edge: &Arc<Edge>, parts: &Parts, meta: Arc<SliceMeta>, like: UpstreamRequest) -> Answer {
    let now = edge.clock.now();
    // `hit` when the first slice the answer needs is cached.
    let first = select_range(&parts.headers, &meta.head.headers, meta.total)
        .ok()
        .flatten()
        .map_or(0, |(first, _)| first);
    let cached = edge
        .store
        .get(&meta.key(meta.index_of(first)))
        .is_some_and(|e| e.is_fresh(now));
    let outcome = if cached { Outcome::Hit } else { Outcome::Miss };
    let served = Served {
        status: CacheStatus {
            outcome,
            stored: true,
            prefetched: false,
            peer: false,
        },
        now,
    };
    let edge = Arc::clone(edge);
    let object = Arc::clone(&meta);
    let body = Box::new(move |start: u64, end: u64| {
        let (tx, rx) = mpsc::channel(AHEAD);
        tokio::spawn(feed(edge, object, like, start, end, tx));
        EdgeBody::sliced(ChannelBody::new(rx, end - start))
    });
    let content = Content::Sliced {
        total: meta.total,
        body,
    };
    Ok((respond(parts, &meta.head, content, served)?, outcome))
}

/// Sends the object's bytes `start..end` into `tx`, slice by slice, until
/// they are all sent or the client is gone.
async fn feed(
    edge: Arc<Edge>,
    meta: Arc<SliceMeta>,
    like: UpstreamRequest,
    start: u64,
    end: u64,
    tx: mpsc::Sender<Result<Bytes, FetchError>>,
) {
    if start >= end {
        return;
    }
    for index in meta.index_of(start)..=meta.index_of(end - 1) {
        let (first, last) = meta.bounds(index);
        // The part of this slice the client asked for, in slice offsets.
        let from = start.max(first) - first;
        let to = end.min(last + 1) - first;
        let key = meta.key(index);
        let now = edge.clock.now();
        let fresh = || edge.store.get(&key).filter(|e| e.is_fresh(now));
        let reader = match edge.inflight.join(&key, fresh) {
            Joined::Hit(entry) => {
                let piece = entry.body.slice(from as usize..(to as usize).min(entry.body.len()));
                if tx.send(Ok(piece)).await.is_err() {
                    return;
                }
                continue;
            }
            Joined::Started(reader, writer) => {
                tokio::spawn(fetch_slice(
                    Arc::clone(&edge),
                    Arc::clone(&meta),
                    index,
                    like.clone(),
                    writer,
                ));
                reader
            }
            Joined::Collapsed(reader) => reader,
        };
        if !relay(reader, from, to, &tx).await {
            return;
        }
    }
}

/// Sends a slice fill's bytes `from..to` into `tx` as they arrive; false
/// when the client is gone or the fill failed (the error is sent on).
async fn relay(mut reader: Reader, from: u64, to: u64, tx: &mpsc::Sender<Result<Bytes, FetchError>>) -> bool {
    if let Err(e) = reader.head().await {
        let _ = tx.send(Err(e)).await;
        return false;
    }
    let mut body = reader.into_body(from, Some(to));
    while let Some(frame) = body.frame().await {
        let sent = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => tx.send(Ok(data)).await,
                Err(_) => continue,
            },
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return false;
            }
        };
        if sent.is_err() {
            return false;
        }
    }
    true
}

/// Fetches slice `index` of `meta` with a range request conditional on the
/// object's validator, streams it into the fill, and stores it.
async fn fetch_slice(edge: Arc<Edge>, meta: Arc<SliceMeta>, index: u64, like: UpstreamRequest, writer: Writer) {
    let key = meta.key(index);
    let fill = Arc::clone(writer.fill());
    match slice(&edge, &meta, index, like, &writer).await {
        Ok(entry) => {
            if let Some(entry) = entry {
                edge.store.insert(&key, &http::HeaderMap::new(), entry);
            }
            writer.finish(Ok(()));
        }
        Err(e) => {
            tracing::warn!(key = key.as_str(), error = %e, "slice fetch failed; nothing stored");
            edge.metrics.upstream_errors.inc(e.kind());
            if let FetchError::Unspliceable { .. } = e {
                // The object changed: what is known of it, and its slices
                // of the old version, go.
                edge.purge(&meta.base, true);
            }
            writer.finish(Err(e));
        }
    }
    edge.inflight.close(&key, &fill);
}

async fn slice(
    edge: &Edge,
    meta: &SliceMeta,
    index: u64,
    mut request: UpstreamRequest,
    writer: &Writer,
) -> Result<Option<Arc<Entry>>, FetchError> {
    let (first, last) = meta.bounds(index);
    let range = format!("bytes={first}-{last}");
    request
        .headers
        .insert(header::RANGE, HeaderValue::from_str(&range).expect("digits"));
    request.headers.insert(header::IF_RANGE, meta.validator.1.clone());
    // Slices come from the origin: a sibling would fetch the whole object.
    request.fleet = false;
    let answered = edge.upstream.send(&request).await?;
    let source = answered.source.name();
    let (parts, body) = answered.response.into_parts();
    meta.check(index, parts.status, &parts.headers)
        .map_err(|reason| FetchError::Unspliceable {
            origin: source.clone(),
            offset: first,
            reason,
        })?;
    let length = last - first + 1;
    let ttl = meta.fresh_until.duration_since(edge.clock.now()).unwrap_or_default();
    let keep = writer.reserve(&edge.fill_budget, length);
    writer.head(Arc::new(FillHead {
        head: Arc::clone(&meta.head),
        disposition: if keep {
            Disposition::Store { ttl }
        } else {
            Disposition::NoRoom
        },
        revalidated: false,
        prefetched: false,
        from_peer: false,
        request_headers: request.headers.clone(),
        starter_cookies: Vec::new(),
    }));
    if !keep {
        writer.stop_keeping();
    }
    let mut body = UpstreamBody::new(body, &answered.source, &request.route, Some(length));
    while let Some(chunk) = body.next().await? {
        edge.metrics
            .upstream_bytes
            .inc_by(answered.source.kind(), chunk.len() as u64);
        writer.push(chunk);
    }
    let Some(chunks) = writer.body_chunks().filter(|_| keep) else {
        return Ok(None);
    };
    let bytes = concat(chunks.iter());
    writer.rebase(&bytes);
    Ok(Some(Arc::new(Entry {
        head: Arc::clone(&meta.head),
        body: bytes,
        policy: meta.policy.clone(),
        request: clone_request(&meta.request),
        fresh_until: meta.fresh_until,
        keep_stale: std::time::Duration::ZERO,
        grace: Grace::default(),
        prefetched: false,
        from_peer: false,
    })))
}

fn clone_request(request: &http::Request<()>) -> http::Request<()> {
    let mut copy = http::Request::new(());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
}
