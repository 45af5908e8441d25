//! The head of a response the edge holds: status and end-to-end headers.

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, StatusCode};

use crate::headers::{content_length, strip_hop_by_hop};

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
}

impl Head {
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
