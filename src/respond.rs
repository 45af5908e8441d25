//! Building the client's answer from a stored entry or a fill: conditional
//! requests (304), single byte ranges (206/416), HEAD, and the edge's headers.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_range_header::{ParsedRanges, SyntacticallyCorrectRange};

use crate::body::EdgeBody;
use crate::cache::Head;
use crate::digest;
use crate::error::EdgeError;
use crate::fill::Reader;
use crate::headers::{append_list, number, VIA_VALUE};
use crate::outcome::{CacheStatus, Outcome};
use crate::shared_head::insert_stamps;
pub use crate::shared_head::{merge_shared, SharedHead};

/// Where the body comes from.
pub enum Content {
    /// A complete stored body.
    Stored(Bytes),
    /// A fill still arriving (or just finished).
    Fill(Reader),
    /// An object kept in slices, `total` bytes long: `body` makes the
    /// answer's body for the bytes `start..end` once they are chosen.
    Sliced { total: u64, body: SlicedBody },
}

/// Makes the body of a sliced object's bytes `start..end`.
pub type SlicedBody = Box<dyn FnOnce(u64, u64) -> EdgeBody + Send>;

/// How the answer was obtained, for the edge's own headers.
#[derive(Clone, Copy)]
pub struct Served {
    /// What the cache did, as `Cache-Status` says it.
    pub status: CacheStatus,
    pub now: SystemTime,
}

/// The answer to `request` from `head` and its body.
pub fn respond(
    request: &Parts,
    head: &Head,
    content: Content,
    served: Served,
) -> Result<Response<EdgeBody>, EdgeError> {
    if head.status == StatusCode::OK && not_modified(&request.headers, &head.headers) {
        return Ok(not_modified_response(head, served));
    }
    let total = match &content {
        Content::Stored(body) => Some(body.len() as u64),
        Content::Fill(_) => head.content_length,
        Content::Sliced { total, .. } => Some(*total),
    };
    let ranged = head.status == StatusCode::OK && request.method == Method::GET;
    let range = match total {
        Some(total) if ranged => select_range(&request.headers, &head.headers, total)?,
        _ => None,
    };
    // A body still arriving with no length yet (a low-latency part, say):
    // a range from a known offset is served as its bytes arrive.
    let open = match total {
        None if ranged => open_range(&request.headers, &head.headers),
        _ => None,
    };
    let mut headers = head.prepared().clone();
    if !digest::wanted(&request.headers) {
        headers.remove(digest::REPR_DIGEST);
    }
    let mut status = head.status;
    let (start, end) = match (open, range, total) {
        (Some((first, last)), _, _) => {
            status = StatusCode::PARTIAL_CONTENT;
            let content_range = format!("bytes {first}-{}/*", last.unwrap_or(LIVE_END));
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&content_range).expect("digits are valid"),
            );
            headers.remove(header::CONTENT_LENGTH);
            (first, last.map(|l| l + 1))
        }
        (None, Some((first, last)), Some(total)) => {
            status = StatusCode::PARTIAL_CONTENT;
            let content_range = format!("bytes {first}-{last}/{total}");
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&content_range).expect("digits are valid"),
            );
            headers.insert(header::CONTENT_LENGTH, number(last - first + 1));
            (first, Some(last + 1))
        }
        (None, _, Some(total)) => {
            if head.content_length != Some(total) {
                headers.insert(header::CONTENT_LENGTH, number(total));
            }
            (0, Some(total))
        }
        (None, _, None) => {
            headers.remove(header::CONTENT_LENGTH);
            (0, None)
        }
    };
    stamp(&mut headers, head, served);
    let bodyless =
        request.method == Method::HEAD || status == StatusCode::NOT_MODIFIED || status == StatusCode::NO_CONTENT;
    let body = match content {
        _ if bodyless => EdgeBody::empty(),
        Content::Stored(bytes) => {
            let end = end.map_or(bytes.len(), |e| e as usize);
            EdgeBody::full(bytes.slice(start as usize..end))
        }
        Content::Fill(reader) => EdgeBody::fill(reader.into_body(start, end)),
        Content::Sliced { total, body } => body(start, end.unwrap_or(total)),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// The answer to `request` from a stored entry. In the usual case (a 200 sent
/// whole, no validators or range in the request) no header goes in the
/// response's map: the body carries a [`SharedHead`], the entry's head and
/// the few headers written per answer, and an HTTP/1.1 connection writes the
/// head's prepared bytes ([`Head::wire`]) and those few straight out. That
/// saves cloning and re-encoding a dozen headers, and building a map, per
/// hit. Every other case is [`respond`]'s.
pub fn respond_stored(
    request: &Parts,
    head: &Arc<Head>,
    body: Bytes,
    served: Served,
) -> Result<Response<EdgeBody>, EdgeError> {
    // One pass over the request's few names, not a hashed lookup per name.
    let conditional_or_range = request.headers.keys().any(|name| {
        name == header::RANGE
            || name == header::IF_NONE_MATCH
            || name == header::IF_MODIFIED_SINCE
            || name == digest::WANT_REPR_DIGEST
    });
    let plain = head.status == StatusCode::OK
        && head.content_length == Some(body.len() as u64)
        && !conditional_or_range
        && head.wire().is_some();
    if !plain {
        return respond(request, head, Content::Stored(body), served);
    }
    let (age, cache_status) = stamps(head, served);
    let shared = SharedHead {
        head: Arc::clone(head),
        age,
        cache_status,
        request_id: None,
        any_origin: false,
        cmsd: None,
    };
    let body = if request.method == Method::HEAD {
        EdgeBody::empty()
    } else {
        EdgeBody::full(body)
    };
    let mut response = Response::new(body);
    response.body_mut().set_shared_head(shared);
    Ok(response)
}

/// `Age`, `Via` and `Cache-Status` (RFC 9211).
pub fn decorate(headers: &mut HeaderMap, head: &Head, served: Served) {
    append_list(headers, header::VIA, VIA_VALUE);
    stamp(headers, head, served);
}

/// The per-answer part of [`decorate`]: `Age` and `Cache-Status`.
fn stamp(headers: &mut HeaderMap, head: &Head, served: Served) {
    let (age, cache_status) = stamps(head, served);
    insert_stamps(headers, age, cache_status);
}

/// `Age` (none for a pass) and `Cache-Status` of an answer from `head`.
fn stamps(head: &Head, served: Served) -> (Option<u64>, CacheStatus) {
    let age = (!matches!(served.status.outcome, Outcome::Pass(_))).then(|| head.age(served.now).as_secs());
    (age, served.status)
}

fn not_modified_response(head: &Head, served: Served) -> Response<EdgeBody> {
    // RFC 9110 §15.4.5: the headers a 200 would have carried that describe the representation.
    const KEEP: [header::HeaderName; 6] = [
        header::ETAG,
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::EXPIRES,
        header::VARY,
    ];
    let mut headers = HeaderMap::new();
    for name in KEEP.iter().chain([&header::LAST_MODIFIED]) {
        for value in head.headers.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    decorate(&mut headers, head, served);
    let mut response = Response::new(EdgeBody::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    *response.headers_mut() = headers;
    response
}

/// Whether the client's validators match (RFC 9110 §13.1.2–3): If-None-Match
/// by weak comparison, else If-Modified-Since against Last-Modified.
pub fn not_modified(request: &HeaderMap, response: &HeaderMap) -> bool {
    if let Some(inm) = request.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(etag) = response.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        return inm.trim() == "*" || inm.split(',').any(|tag| weak_eq(tag.trim(), etag.trim()));
    }
    let since = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let modified = response
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

fn weak_eq(a: &str, b: &str) -> bool {
    a.trim_start_matches("W/") == b.trim_start_matches("W/")
}

/// The last-byte-pos that stands for "to the end, wherever that will be"
/// (RFC 8673 §2: 2^53 - 1, the largest integer JavaScript players hold exactly).
pub const LIVE_END: u64 = 9_007_199_254_740_991;

/// The single byte range to answer with, as inclusive offsets, if the request
/// has one that applies. A malformed or multi-range header is ignored (the
/// whole object is sent, as RFC 9110 §14.2 allows); an unsatisfiable one is 416.
pub fn select_range(request: &HeaderMap, response: &HeaderMap, total: u64) -> Result<Option<(u64, u64)>, EdgeError> {
    let Some(parsed) = single_range(request, response) else {
        return Ok(None);
    };
    match parsed.validate(total) {
        Ok(ranges) => Ok(ranges.first().map(|r| (*r.start(), *r.end()))),
        Err(_) => Err(EdgeError::Range { len: total }),
    }
}

/// For a body whose length is not known yet: the requested range's first
/// offset and its last, if given (RFC 8673 random access to live content).
/// A suffix range needs the end, so it is ignored (the whole body is sent).
pub fn open_range(request: &HeaderMap, response: &HeaderMap) -> Option<(u64, Option<u64>)> {
    match single_range(request, response)?.into_ranges().first()? {
        SyntacticallyCorrectRange::FromStart(first) => Some((*first, None)),
        SyntacticallyCorrectRange::Indexed(first, last) => Some((*first, Some(*last).filter(|l| *l < LIVE_END))),
        SyntacticallyCorrectRange::FromLast(_) => None,
    }
}

/// The request's one byte range, when it has exactly one and If-Range allows it.
fn single_range(request: &HeaderMap, response: &HeaderMap) -> Option<ParsedRanges> {
    let raw = request.get(header::RANGE)?.to_str().ok()?;
    if let Some(if_range) = request.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        if !if_range_matches(if_range.trim(), response) {
            return None;
        }
    }
    http_range_header::parse_range_header(raw)
        .ok()
        .filter(|parsed| parsed.len() == 1)
}

/// If-Range (RFC 9110 §13.1.5): a strong ETag match, or the exact Last-Modified date.
fn if_range_matches(if_range: &str, response: &HeaderMap) -> bool {
    let get = |name| response.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    if if_range.starts_with('"') {
        get(header::ETAG).is_some_and(|etag| etag == if_range)
    } else if if_range.starts_with("W/") {
        false
    } else {
        get(header::LAST_MODIFIED).is_some_and(|lm| lm == if_range)
    }
}

#[cfg(test)]
mod tests;
