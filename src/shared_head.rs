//! A stored answer's head as one answer sends it: the stored headers shared
//! (prepared once per entry), and the few that differ per answer kept as
//! values until written. Both ways of writing it are here: HTTP/1.1 lines
//! for the edge's own loop ([`SharedHead::encode`]), a header map for
//! hyper ([`merge_shared`]).

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap};

use crate::cache::Head;
use crate::headers::{number, CACHE_STATUS, X_REQUEST_ID};
use crate::outcome::CacheStatus;
use crate::request_id::RequestId;

/// A stored answer's head, shared instead of copied into the response's map,
/// and the headers that differ per answer, kept as values until written.
#[derive(Debug)]
pub struct SharedHead {
    pub head: Arc<Head>,
    /// `Age` in seconds.
    pub age: Option<u64>,
    pub cache_status: CacheStatus,
    /// `X-Request-Id`: set by [`crate::proxy::answer`].
    pub request_id: Option<RequestId>,
    /// The CORS headers for any origin ([`crate::cors::ANY_ORIGIN_LINES`]):
    /// set by [`crate::proxy::answer`] when `server.cors_origins` is `*`.
    pub any_origin: bool,
}

impl SharedHead {
    /// The per-answer headers as HTTP/1.1 lines.
    pub fn encode(&self, out: &mut BytesMut) {
        if let Some(age) = self.age {
            out.put_slice(b"age: ");
            out.put_slice(itoa::Buffer::new().format(age).as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"cache-status: ");
        self.cache_status.write(out);
        out.put_slice(b"\r\n");
        if let Some(id) = &self.request_id {
            out.put_slice(b"x-request-id: ");
            id.with_text(|text| out.put_slice(text));
            out.put_slice(b"\r\n");
        }
        if self.any_origin {
            out.put_slice(crate::cors::ANY_ORIGIN_LINES);
        }
    }
}

/// Puts a stored head's prepared headers and its per-answer ones in front of
/// an answer's own, in one map: for a connection that writes maps (hyper),
/// not [`Head::wire`].
pub fn merge_shared(shared: &SharedHead, headers: &mut HeaderMap) {
    let own = std::mem::replace(headers, shared.head.prepared().clone());
    insert_stamps(headers, shared.age, shared.cache_status);
    if let Some(id) = &shared.request_id {
        headers.insert(X_REQUEST_ID, id.header_value());
    }
    if shared.any_origin {
        crate::cors::insert_any_origin(headers);
    }
    headers.extend(own);
}

/// `Age` and `Cache-Status` (RFC 9211), the per-answer part of a stored head.
pub(crate) fn insert_stamps(headers: &mut HeaderMap, age: Option<u64>, cache_status: CacheStatus) {
    if let Some(age) = age {
        headers.insert(header::AGE, number(age));
    }
    headers.insert(CACHE_STATUS, cache_status.value());
}
