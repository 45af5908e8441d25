//! A stored answer's head as one answer sends it: the stored headers shared
//! (prepared once per entry), and the few that differ per answer kept as
//! values until written. Those per-answer headers are one list, [`Field`],
//! with its two spellings: HTTP/1.1 lines for the edge's own loop
//! ([`SharedHead::encode`]), a header map for hyper ([`merge_shared`]) and
//! for answers not made from a stored head.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap};

use crate::cache::Head;
use crate::cmsd::{self, CMSD_DYNAMIC};
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
    /// `CMSD-Dynamic`: set by [`crate::proxy::answer`] (see [`crate::cmsd`]).
    pub cmsd: Option<cmsd::Entry>,
}

/// One header an answer gets for itself, on top of a stored head: the one
/// list of them. Each has its two spellings below, HTTP/1.1 lines
/// ([`Field::encode`]) and a header map entry ([`Field::insert`]), so a new
/// one is a variant here and the compiler asks for both.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    /// `Age`, in seconds.
    Age(u64),
    /// `Cache-Status` (RFC 9211).
    CacheStatus(CacheStatus),
    /// `X-Request-Id`.
    RequestId(&'a RequestId),
    /// The CORS headers when any origin may read the answer.
    AnyOrigin,
    /// `CMSD-Dynamic` (CTA-5006).
    Cmsd(cmsd::Entry),
}

impl Field<'_> {
    /// The field as HTTP/1.1 lines.
    #[inline]
    pub fn encode(self, out: &mut BytesMut) {
        match self {
            Field::Age(age) => {
                out.put_slice(b"age: ");
                out.put_slice(itoa::Buffer::new().format(age).as_bytes());
                out.put_slice(b"\r\n");
            }
            Field::CacheStatus(status) => {
                out.put_slice(b"cache-status: ");
                status.write(out);
                out.put_slice(b"\r\n");
            }
            Field::RequestId(id) => {
                out.put_slice(b"x-request-id: ");
                id.with_text(|text| out.put_slice(text));
                out.put_slice(b"\r\n");
            }
            Field::AnyOrigin => out.put_slice(crate::cors::ANY_ORIGIN_LINES),
            Field::Cmsd(entry) => {
                out.put_slice(b"cmsd-dynamic: ");
                entry.write(out);
                out.put_slice(b"\r\n");
            }
        }
    }

    /// The field in a header map, replacing any value it had (`CMSD-Dynamic`
    /// is added to the origin's entries).
    pub fn insert(self, headers: &mut HeaderMap) {
        match self {
            Field::Age(age) => {
                headers.insert(header::AGE, number(age));
            }
            Field::CacheStatus(status) => {
                headers.insert(CACHE_STATUS, status.value());
            }
            Field::RequestId(id) => {
                headers.insert(X_REQUEST_ID, id.header_value());
            }
            Field::AnyOrigin => crate::cors::insert_any_origin(headers),
            // A list each hop adds its entry to: the origin's stays.
            Field::Cmsd(entry) => {
                headers.append(CMSD_DYNAMIC, entry.value());
            }
        }
    }
}

impl SharedHead {
    /// Calls `each` with this answer's own headers, in the order they are written.
    #[inline]
    pub fn fields(&self, mut each: impl FnMut(Field<'_>)) {
        if let Some(age) = self.age {
            each(Field::Age(age));
        }
        each(Field::CacheStatus(self.cache_status));
        if let Some(id) = &self.request_id {
            each(Field::RequestId(id));
        }
        if self.any_origin {
            each(Field::AnyOrigin);
        }
        if let Some(cmsd) = self.cmsd {
            each(Field::Cmsd(cmsd));
        }
    }

    /// The per-answer headers as HTTP/1.1 lines.
    pub fn encode(&self, out: &mut BytesMut) {
        self.fields(|field| field.encode(out));
    }
}

/// Puts a stored head's prepared headers and its per-answer ones in front of
/// an answer's own, in one map: for a connection that writes maps (hyper),
/// not [`Head::wire`].
pub fn merge_shared(shared: &SharedHead, headers: &mut HeaderMap) {
    let own = std::mem::replace(headers, shared.head.prepared().clone());
    shared.fields(|field| field.insert(headers));
    headers.extend(own);
}

/// `Age` and `Cache-Status` (RFC 9211) of an answer not sent from a shared head.
pub(crate) fn insert_stamps(headers: &mut HeaderMap, age: Option<u64>, cache_status: CacheStatus) {
    if let Some(age) = age {
        Field::Age(age).insert(headers);
    }
    Field::CacheStatus(cache_status).insert(headers);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;

    /// `name: value` lines as pairs.
    fn lines(out: &[u8]) -> Vec<(String, String)> {
        String::from_utf8(out.to_vec())
            .unwrap()
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l.split_once(": ").unwrap();
                (name.to_owned(), value.to_owned())
            })
            .collect()
    }

    #[test]
    fn both_spellings_of_every_field_say_the_same() {
        let id = RequestId::new(0x5f3e_2a1b, 0x2c);
        let status = CacheStatus {
            outcome: Outcome::Hit,
            stored: true,
            prefetched: true,
            peer: false,
        };
        let cmsd = cmsd::Entry {
            etp: Some(9000),
            rtt: Some(3),
            mb: Some(4500),
            du: true,
        };
        for field in [
            Field::Age(42),
            Field::CacheStatus(status),
            Field::RequestId(&id),
            Field::AnyOrigin,
            Field::Cmsd(cmsd),
        ] {
            let mut out = BytesMut::new();
            field.encode(&mut out);
            let mut map = HeaderMap::new();
            field.insert(&mut map);
            let from_map: Vec<(String, String)> = map
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                .collect();
            assert_eq!(lines(&out), from_map, "{field:?}");
        }
    }
}
