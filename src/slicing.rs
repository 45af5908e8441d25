//! Objects too large to keep whole (over `cache.slice`, else over
//! `cache.max_object`), kept as fixed slices fetched with range requests,
//! as nginx's slice module does: a multi-GB VOD file is cached piecewise,
//! and a range request fetches only the slices under it, each once however
//! many clients ask. What the edge knows of such an object (its length,
//! validator and head) is kept here; the slices are ordinary cache entries
//! under keys of their own.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, StatusCode};
use http_cache_semantics::CachePolicy;
use moka::sync::Cache;
use xxhash_rust::xxh3::xxh3_64;

use crate::cache::{CacheKey, Head};
use crate::upstream::exact_range;

/// Sliced objects remembered at once.
const CAPACITY: u64 = 100_000;

/// One sliced object.
#[derive(Debug)]
pub struct SliceMeta {
    /// The object's cache key.
    pub base: String,
    pub total: u64,
    /// Bytes per slice (the last may be shorter).
    pub size: u64,
    /// What every slice's range is conditional on (`If-Range`), and must
    /// come back with.
    pub validator: (HeaderName, HeaderValue),
    /// The whole object's head, as a 200 would carry it.
    pub head: Arc<Head>,
    pub policy: CachePolicy,
    /// The request the edge sent for it.
    pub request: Request<()>,
    pub fresh_until: SystemTime,
}

impl SliceMeta {
    /// When `head` (a 200 to a GET) may be sliced: its length is known,
    /// the origin answers byte ranges, and a validator pins every slice to
    /// one representation.
    pub fn of(
        base: &str,
        head: Arc<Head>,
        policy: CachePolicy,
        request: Request<()>,
        ttl: Duration,
        size: u64,
    ) -> Option<Self> {
        if head.status != StatusCode::OK || !accepts_ranges(&head.headers) {
            return None;
        }
        Some(Self {
            base: base.to_owned(),
            total: head.content_length.filter(|&t| t > 0)?,
            size: size.max(1),
            validator: head.range_validator()?,
            fresh_until: head.received_at + ttl,
            head,
            policy,
            request,
        })
    }

    pub fn is_fresh(&self, now: SystemTime) -> bool {
        now < self.fresh_until
    }

    /// The slice holding byte `offset`.
    pub fn index_of(&self, offset: u64) -> u64 {
        offset / self.size
    }

    /// The first and last byte of slice `index`.
    pub fn bounds(&self, index: u64) -> (u64, u64) {
        let first = index.saturating_mul(self.size);
        (first, first.saturating_add(self.size).min(self.total) - 1)
    }

    /// Slice `index`'s cache key: the object's, marked (a fragment, which
    /// no request target carries) with the slice and the representation's
    /// validator, so that slices of two versions never meet. A purge of
    /// the object's prefix drops it.
    pub fn key(&self, index: u64) -> CacheKey {
        let version = xxh3_64(self.validator.1.as_bytes());
        CacheKey::new(&format!("{}#slice-{index}@{version:016x}", self.base))
    }

    /// Whether `status` and `headers`, the answer to slice `index`'s range,
    /// are exactly that range of this representation.
    pub fn check(&self, index: u64, status: StatusCode, headers: &HeaderMap) -> Result<(), String> {
        exact_range(status, headers, self.bounds(index), self.total, &self.validator)
    }
}

/// Whether the origin says it answers byte ranges (`Accept-Ranges: bytes`).
fn accepts_ranges(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_RANGES)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|unit| unit.trim().eq_ignore_ascii_case("bytes"))
}

/// The sliced objects the edge knows, by cache key.
pub struct Slices {
    metas: Cache<String, Arc<SliceMeta>>,
}

impl Default for Slices {
    fn default() -> Self {
        Self::new()
    }
}

impl Slices {
    pub fn new() -> Self {
        Self {
            metas: Cache::builder().max_capacity(CAPACITY).build(),
        }
    }

    /// The object keyed `base`, while it is fresh (a stale one is
    /// forgotten: the next request asks the origin again).
    pub fn get(&self, base: &str, now: SystemTime) -> Option<Arc<SliceMeta>> {
        let meta = self.metas.get(base)?;
        if meta.is_fresh(now) {
            return Some(meta);
        }
        self.metas.invalidate(base);
        None
    }

    pub fn insert(&self, meta: SliceMeta) {
        self.metas.insert(meta.base.clone(), Arc::new(meta));
    }

    /// Forgets every object `matches` names (a purge).
    pub fn purge(&self, matches: impl Fn(&str) -> bool) {
        let names: Vec<Arc<String>> = self.metas.iter().map(|(k, _)| k).filter(|k| matches(k)).collect();
        for name in names {
            self.metas.invalidate(name.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)], length: u64) -> Arc<Head> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        map.insert(header::CONTENT_LENGTH, length.into());
        Arc::new(Head::from_upstream(StatusCode::OK, map, SystemTime::UNIX_EPOCH))
    }

    fn meta(headers: &[(&str, &str)], length: u64) -> Option<SliceMeta> {
        let request = Request::get("http://o/big.mp4").body(()).unwrap();
        let policy = CachePolicy::new(&request, &http::Response::new(()));
        SliceMeta::of(
            "http://o/big.mp4",
            head(headers, length),
            policy,
            request,
            Duration::from_secs(60),
            1000,
        )
    }

    const RANGED: [(&str, &str); 2] = [("accept-ranges", "bytes"), ("etag", "\"v1\"")];

    #[test]
    fn only_a_ranged_answer_with_a_validator_and_a_length_is_sliced() {
        assert!(meta(&RANGED, 2500).is_some());
        assert!(meta(&[("etag", "\"v1\"")], 2500).is_none(), "no Accept-Ranges");
        assert!(meta(&[("accept-ranges", "none"), ("etag", "\"v1\"")], 2500).is_none());
        assert!(
            meta(&[("accept-ranges", "bytes"), ("etag", "W/\"v1\"")], 2500).is_none(),
            "weak"
        );
        assert!(meta(
            &[
                ("accept-ranges", "bytes"),
                ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT")
            ],
            2500
        )
        .is_some());
        assert!(meta(&RANGED, 0).is_none());
    }

    #[test]
    fn slices_cover_the_object_exactly() {
        let m = meta(&RANGED, 2500).unwrap();
        assert_eq!(m.bounds(0), (0, 999));
        assert_eq!(m.bounds(2), (2000, 2499));
        assert_eq!((m.index_of(999), m.index_of(1000), m.index_of(2499)), (0, 1, 2));
        assert!(m.key(2).as_str().starts_with("http://o/big.mp4#slice-2@"));
        assert_ne!(m.key(2), m.key(1));
    }

    #[test]
    fn a_slice_answer_must_be_that_range_of_that_representation() {
        let m = meta(&RANGED, 2500).unwrap();
        let answer = |range: &str, etag: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_RANGE, range.parse().unwrap());
            h.insert(header::ETAG, etag.parse().unwrap());
            h
        };
        let ok = answer("bytes 1000-1999/2500", "\"v1\"");
        assert_eq!(m.check(1, StatusCode::PARTIAL_CONTENT, &ok), Ok(()));
        assert!(m.check(1, StatusCode::OK, &ok).is_err());
        assert!(m.check(2, StatusCode::PARTIAL_CONTENT, &ok).is_err());
        let other = answer("bytes 1000-1999/2500", "\"v2\"");
        assert!(m.check(1, StatusCode::PARTIAL_CONTENT, &other).is_err());
        let longer = answer("bytes 1000-1999/9999", "\"v1\"");
        assert!(m.check(1, StatusCode::PARTIAL_CONTENT, &longer).is_err());
    }
}
