//! The last hour of the edge's traffic, for the dashboard's charts: a point
//! every [`INTERVAL`] of requests and bytes per second in and out, the hit
//! ratio and the origin offload over that interval.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// How often a point is taken.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Points kept: one hour.
const KEPT: usize = 360;

/// The counters a point is the difference of, read at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Unix time, in seconds.
    pub at: f64,
    /// Client requests, every outcome.
    pub requests: u64,
    /// Answered from the cache: hits, collapsed onto a fetch, stale.
    pub cached: u64,
    /// Answered with content (not an error): what the hit ratio is of.
    pub content: u64,
    pub response_bytes: u64,
    /// Upstream fetches and bytes, origin and siblings together.
    pub upstream_requests: u64,
    pub upstream_bytes: u64,
    pub origin_bytes: u64,
}

/// One interval's figures.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Point {
    /// Unix time at the end of the interval, in seconds.
    pub t: u64,
    pub requests_per_s: f64,
    pub upstream_requests_per_s: f64,
    pub bytes_out_per_s: f64,
    pub bytes_in_per_s: f64,
    /// Of the answers with content; none when there were none.
    pub hit_ratio: Option<f64>,
    /// `1 - origin bytes / response bytes`; none when nothing was sent.
    pub origin_offload: Option<f64>,
}

impl Point {
    /// The figures between two readings; none when no time passed.
    pub fn between(a: &Totals, b: &Totals) -> Option<Self> {
        let secs = b.at - a.at;
        if secs <= 0.0 {
            return None;
        }
        let diff = |f: fn(&Totals) -> u64| f(b).saturating_sub(f(a)) as f64;
        let rate = |f: fn(&Totals) -> u64| diff(f) / secs;
        let content = diff(|t| t.content);
        let served = diff(|t| t.response_bytes);
        Some(Self {
            t: b.at as u64,
            requests_per_s: rate(|t| t.requests),
            upstream_requests_per_s: rate(|t| t.upstream_requests),
            bytes_out_per_s: rate(|t| t.response_bytes),
            bytes_in_per_s: rate(|t| t.upstream_bytes),
            hit_ratio: (content > 0.0).then(|| diff(|t| t.cached) / content),
            origin_offload: (served > 0.0).then(|| 1.0 - diff(|t| t.origin_bytes) / served),
        })
    }
}

/// The points of the last hour, and the reading the next one starts from.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<(VecDeque<Point>, Option<Totals>)>,
}

impl History {
    /// Ends the interval under way at `now` and starts the next.
    pub fn record(&self, now: Totals) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (points, last) = &mut *inner;
        if let Some(point) = last.as_ref().and_then(|last| Point::between(last, &now)) {
            if points.len() == KEPT {
                points.pop_front();
            }
            points.push_back(point);
        }
        *last = Some(now);
    }

    /// The points of the last hour, then one for the interval under way
    /// (up to `now`), so that a chart shows traffic from its first seconds.
    pub fn points(&self, now: Totals) -> Vec<Point> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (points, last) = &*inner;
        let mut out: Vec<Point> = points.iter().copied().collect();
        out.extend(last.as_ref().and_then(|last| Point::between(last, &now)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64, requests: u64, cached: u64, served: u64, origin: u64) -> Totals {
        Totals {
            at: secs,
            requests,
            cached,
            content: requests,
            response_bytes: served,
            upstream_bytes: origin,
            origin_bytes: origin,
            upstream_requests: requests - cached,
        }
    }

    #[test]
    fn a_point_is_the_rate_over_its_interval() {
        let p = Point::between(&at(100.0, 10, 5, 1000, 500), &at(110.0, 110, 95, 11_000, 1000)).unwrap();
        assert_eq!(p.t, 110);
        assert_eq!(p.requests_per_s, 10.0);
        assert_eq!(p.bytes_out_per_s, 1000.0);
        assert_eq!(p.bytes_in_per_s, 50.0);
        assert_eq!(p.hit_ratio, Some(0.9));
        assert_eq!(p.origin_offload, Some(0.95));
        let idle = Point::between(&at(110.0, 110, 95, 11_000, 1000), &at(120.0, 110, 95, 11_000, 1000)).unwrap();
        assert_eq!((idle.hit_ratio, idle.origin_offload), (None, None));
        assert!(Point::between(&at(120.0, 0, 0, 0, 0), &at(120.0, 0, 0, 0, 0)).is_none());
    }

    #[test]
    fn an_hour_is_kept_and_the_interval_under_way_is_shown() {
        let history = History::default();
        assert!(history.points(at(0.0, 0, 0, 0, 0)).is_empty());
        for i in 0..=(KEPT as u64 + 10) {
            history.record(at(i as f64 * 10.0, i, 0, i, 0));
        }
        let now = at((KEPT as f64 + 10.5) * 10.0, KEPT as u64 + 11, 0, 0, 0);
        let points = history.points(now);
        assert_eq!(points.len(), KEPT + 1);
        // 370 intervals ended; the first 10 are gone.
        assert_eq!(points[0].t, 110);
        assert_eq!(points.last().unwrap().t, now.at as u64);
    }
}
