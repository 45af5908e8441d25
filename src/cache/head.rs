//! The head of a response the edge holds: status and end-to-end headers.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use crate::headers::{append_list, content_length, strip_hop_by_hop, CACHE_STATUS, VIA_VALUE, X_REQUEST_ID};

/// Headers added per answer (`Age`, `Cache-Status`, `X-Request-Id`, CORS, a
/// range's): room kept for them so that adding them does not rehash the map.
const PER_ANSWER: usize = 8;

/// Status and headers of an upstream answer, cleaned for reuse by many clients.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: StatusCode,
    /// End-to-end headers only: hop-by-hop ones are gone.
    pub headers: HeaderMap,
    /// The body length the origin declared, if it did.
    pub content_length: Option<u64>,
    /// When the edge received these headers.
    pub received_at: SystemTime,
    /// The origin's `Age` when it answered.
    pub age_at_receipt: Duration,
    /// `headers` as every client gets them, built on first use (so only once
    /// the head is final and shared): see [`Head::prepared`].
    prepared: OnceLock<HeaderMap>,
    /// `prepared` as HTTP/1.1 writes it: see [`Head::wire`].
    wire: OnceLock<Option<Wire>>,
}

/// [`Head::prepared`] as an HTTP/1.1 head writes it.
#[derive(Debug, Clone)]
pub struct Wire {
    /// `name: value` lines.
    pub fields: Bytes,
    /// The fields hold a `Date` (the origin's), so the edge adds none.
    pub dated: bool,
}

/// Every header an answer gets or changes after [`Head::prepared`]: the
/// edge's own per answer (`respond::stamp`, `proxy::answer`, CORS), a range's,
/// and the starter's cookies. A head that has any of them is not sent from
/// [`Head::wire`], where they could not be replaced. (`Date` is not one: the
/// edge adds it only when the origin gave none.)
pub const PER_ANSWER_NAMES: [HeaderName; 8] = [
    header::AGE,
    CACHE_STATUS,
    X_REQUEST_ID,
    header::VARY,
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::CONTENT_RANGE,
    header::SET_COOKIE,
];

impl Head {
    /// What a range of this representation can be made conditional on
    /// (`If-Range`): its strong `ETag`, else its `Last-Modified`.
    pub fn range_validator(&self) -> Option<(HeaderName, HeaderValue)> {
        let strong_etag = self
            .headers
            .get(header::ETAG)
            .filter(|v| !v.as_bytes().starts_with(b"W/"))
            .map(|v| (header::ETAG, v.clone()));
        let last_modified = || {
            self.headers
                .get(header::LAST_MODIFIED)
                .map(|v| (header::LAST_MODIFIED, v.clone()))
        };
        strong_etag.or_else(last_modified)
    }

    pub fn from_upstream(status: StatusCode, mut headers: HeaderMap, now: SystemTime) -> Self {
        strip_hop_by_hop(&mut headers);
        let age_at_receipt = headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_secs)
            .unwrap_or_default();
        headers.remove(header::AGE);
        Self {
            status,
            content_length: content_length(&headers),
            headers,
            received_at: now,
            age_at_receipt,
            prepared: OnceLock::new(),
            wire: OnceLock::new(),
        }
    }

    /// The headers every client's answer starts from: `headers`, this edge's
    /// `Via`, and `Accept-Ranges` on a 200, in a map with room for the rest.
    /// Made once per stored answer instead of once per request.
    pub fn prepared(&self) -> &HeaderMap {
        self.prepared.get_or_init(|| {
            let mut out = HeaderMap::with_capacity(self.headers.len() + 2 + PER_ANSWER);
            for (name, value) in &self.headers {
                out.append(name.clone(), value.clone());
            }
            append_list(&mut out, header::VIA, VIA_VALUE);
            if self.status == StatusCode::OK {
                out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            }
            out
        })
    }

    /// [`Head::prepared`] as an HTTP/1.1 head writes it (`name: value` lines),
    /// made once: a whole stored answer is sent with these bytes and the few
    /// per-answer headers after them. `None` when the head holds a header in
    /// [`PER_ANSWER_NAMES`] (an origin's `Vary`, say).
    pub fn wire(&self) -> Option<&Wire> {
        self.wire
            .get_or_init(|| {
                let prepared = self.prepared();
                if PER_ANSWER_NAMES.iter().any(|name| prepared.contains_key(name)) {
                    return None;
                }
                let mut out = bytes::BytesMut::new();
                crate::headers::encode_fields(&mut out, prepared);
                Some(Wire {
                    fields: out.freeze(),
                    dated: prepared.contains_key(header::DATE),
                })
            })
            .as_ref()
    }

    /// This head with `name: value` added, for what a fill learns only once
    /// the body is in (a digest of it, say): the stored entry gets the new
    /// head, and every answer from it the header, through [`Head::prepared`]
    /// and [`Head::wire`] like any stored header.
    pub fn with_header(&self, name: HeaderName, value: HeaderValue) -> Self {
        let mut headers = self.headers.clone();
        headers.insert(name, value);
        Self {
            status: self.status,
            headers,
            content_length: self.content_length,
            received_at: self.received_at,
            age_at_receipt: self.age_at_receipt,
            prepared: OnceLock::new(),
            wire: OnceLock::new(),
        }
    }

    /// The `Age` of this answer at `now` (RFC 9111 §4.2.3, without the origin's own clock).
    pub fn age(&self, now: SystemTime) -> Duration {
        self.age_at_receipt + now.duration_since(self.received_at).unwrap_or_default()
    }

    /// Bytes the head takes in memory, roughly, for the cache's budget.
    pub fn weight(&self) -> usize {
        self.headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum::<usize>()
            + 128
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_added_once_the_body_is_in_is_written_both_ways() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
        let head = Head::from_upstream(StatusCode::OK, headers, SystemTime::now());
        // Built before the digest is known, as a fill's head is.
        assert!(head.wire().is_some());
        let digest = HeaderName::from_static("repr-digest");
        let value = HeaderValue::from_static("sha-256=:AAAA:");
        let stored = head.with_header(digest.clone(), value.clone());
        assert_eq!(stored.prepared()[&digest], value);
        let wire = stored.wire().expect("still written from prepared lines");
        let text = String::from_utf8_lossy(&wire.fields);
        assert!(text.contains("repr-digest: sha-256=:AAAA:\r\n"), "{text}");
        assert!(!head.headers.contains_key(&digest), "the fill's own head is unchanged");
    }

    #[test]
    fn age_counts_origin_age_and_residence() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut h = HeaderMap::new();
        h.insert(header::AGE, "7".parse().unwrap());
        h.insert(header::CONNECTION, "close".parse().unwrap());
        let head = Head::from_upstream(StatusCode::OK, h, t0);
        assert!(!head.headers.contains_key(header::AGE));
        assert!(!head.headers.contains_key(header::CONNECTION));
        assert_eq!(head.age(t0), Duration::from_secs(7));
        assert_eq!(head.age(t0 + Duration::from_secs(3)), Duration::from_secs(10));
        // A clock that steps back never yields a negative age.
        assert_eq!(head.age(t0 - Duration::from_secs(5)), Duration::from_secs(7));
    }
}
