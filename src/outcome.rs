//! What the cache did for a request: one type for `Cache-Status`, the log line and the metric label.

use bytes::{BufMut, BytesMut};
use http::HeaderValue;

/// Why a request went to the origin without the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassReason {
    /// The origin's answer may not be shared (private, no-store, Set-Cookie, Vary: *).
    Private,
    /// The object is larger than `cache.max_object`.
    TooLarge,
    /// The key was recently uncacheable (hit-for-pass).
    Remembered,
    /// The fetch under way selects another variant (`Vary`) than this request.
    Vary,
}

/// The cache outcome of one client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from a fresh cache entry.
    Hit,
    /// Started the upstream fetch.
    Miss,
    /// Joined a fetch already under way.
    Collapsed,
    /// Served a stored entry after revalidating it (or because the origin failed).
    Stale,
    /// Went upstream, uncached.
    Pass(PassReason),
    /// The edge answered with an error.
    Error,
}

impl Outcome {
    /// The metric label (`outpost_requests_total{cache=...}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Collapsed => "collapsed",
            Outcome::Stale => "stale",
            Outcome::Pass(_) => "pass",
            Outcome::Error => "error",
        }
    }

    /// The RFC 9211 `Cache-Status` value; `stored` says whether the answer was kept.
    pub fn cache_status(self, stored: bool) -> HeaderValue {
        // Constants: `from_static` called at run time checks every byte, on
        // every answer.
        const HIT: HeaderValue = HeaderValue::from_static("outpost; hit");
        const MISS_STORED: HeaderValue = HeaderValue::from_static("outpost; fwd=miss; stored");
        const MISS: HeaderValue = HeaderValue::from_static("outpost; fwd=miss");
        const COLLAPSED: HeaderValue = HeaderValue::from_static("outpost; fwd=miss; collapsed");
        const STALE: HeaderValue = HeaderValue::from_static("outpost; fwd=stale");
        const PASS: HeaderValue = HeaderValue::from_static("outpost; fwd=uri-miss");
        match (self, stored) {
            (Outcome::Hit, _) => HIT,
            (Outcome::Miss, true) => MISS_STORED,
            (Outcome::Miss, false) | (Outcome::Error, _) => MISS,
            (Outcome::Collapsed, _) => COLLAPSED,
            (Outcome::Stale, _) => STALE,
            (Outcome::Pass(_), _) => PASS,
        }
    }

    /// One outcome of each label, in the order of their series.
    pub const ALL: [Outcome; 6] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Collapsed,
        Outcome::Stale,
        Outcome::Pass(PassReason::Private),
        Outcome::Error,
    ];

    /// The place of this outcome's label in [`Outcome::ALL`].
    pub fn index(self) -> usize {
        match self {
            Outcome::Hit => 0,
            Outcome::Miss => 1,
            Outcome::Collapsed => 2,
            Outcome::Stale => 3,
            Outcome::Pass(_) => 4,
            Outcome::Error => 5,
        }
    }
}

/// An answer's `Cache-Status`, kept as what it says until it is written: a
/// stored hit carries it beside its shared head, where a `HeaderValue` would
/// make every hit's answer larger to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStatus {
    pub outcome: Outcome,
    /// Whether the answer is (or will be) kept.
    pub stored: bool,
    /// A prefetch fetched it: `; detail=prefetch`.
    pub prefetched: bool,
    /// A sibling edge sent it: `; detail=peer` (both: `detail=prefetch+peer`).
    pub peer: bool,
}

impl CacheStatus {
    /// The `detail` parameter, if any (RFC 9211 §2.8 allows one).
    fn detail(self) -> &'static [u8] {
        match (self.prefetched, self.peer) {
            (false, false) => b"",
            (true, false) => b"; detail=prefetch",
            (false, true) => b"; detail=peer",
            (true, true) => b"; detail=prefetch+peer",
        }
    }

    pub fn value(self) -> HeaderValue {
        let status = self.outcome.cache_status(self.stored);
        let detail = self.detail();
        if detail.is_empty() {
            return status;
        }
        let detailed = [status.as_bytes(), detail].concat();
        HeaderValue::from_bytes(&detailed).unwrap_or(status)
    }

    /// The value's bytes, as an HTTP/1.1 connection writes them.
    pub fn write(self, out: &mut BytesMut) {
        out.put_slice(self.outcome.cache_status(self.stored).as_bytes());
        out.put_slice(self.detail());
    }
}

impl PassReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PassReason::Private => "private",
            PassReason::TooLarge => "too-large",
            PassReason::Remembered => "hit-for-pass",
            PassReason::Vary => "vary",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_indexes_its_own_label() {
        for outcome in Outcome::ALL.into_iter().chain([Outcome::Pass(PassReason::Vary)]) {
            assert_eq!(Outcome::ALL[outcome.index()].as_str(), outcome.as_str());
        }
    }

    #[test]
    fn a_cache_status_writes_the_bytes_of_its_value() {
        for outcome in Outcome::ALL {
            for (stored, prefetched, peer) in (0..8).map(|b| (b & 1 != 0, b & 2 != 0, b & 4 != 0)) {
                let status = CacheStatus {
                    outcome,
                    stored,
                    prefetched,
                    peer,
                };
                let mut out = BytesMut::new();
                status.write(&mut out);
                assert_eq!(&out[..], status.value().as_bytes(), "{status:?}");
                let text = String::from_utf8(out.to_vec()).unwrap();
                let detail = text.split("; detail=").nth(1).unwrap_or_default();
                assert_eq!(detail.contains("prefetch"), prefetched, "{status:?}");
                assert_eq!(detail.contains("peer"), peer, "{status:?}");
            }
        }
        let miss = |prefetched, peer| {
            CacheStatus {
                outcome: Outcome::Miss,
                stored: true,
                prefetched,
                peer,
            }
            .value()
        };
        assert_eq!(miss(true, false), "outpost; fwd=miss; stored; detail=prefetch");
        assert_eq!(miss(false, true), "outpost; fwd=miss; stored; detail=peer");
        assert_eq!(miss(true, true), "outpost; fwd=miss; stored; detail=prefetch+peer");
    }
}
