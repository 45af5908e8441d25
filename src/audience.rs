//! Who watches what: for each stream (the folder of a playlist or segment
//! path), the viewers seen in the last minute and the bytes per second sent
//! to them, for the dashboard's top streams. Bounded: past [`MAX_STREAMS`]
//! streams or [`MAX_VIEWERS`] viewers of one, new ones are not counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde::Serialize;

/// A viewer not seen for this long has left.
const VIEWER_GONE_SECS: u64 = 60;
const MAX_STREAMS: usize = 10_000;
const MAX_VIEWERS: usize = 100_000;

#[derive(Debug, Default)]
struct Stream {
    /// Each viewer's address, and when it was last seen (edge seconds).
    viewers: HashMap<IpAddr, u64>,
    bytes: u64,
    bytes_at_tick: u64,
    bytes_per_s: f64,
}

/// One stream on the dashboard.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamFigures {
    pub stream: String,
    pub viewers: usize,
    pub bytes_per_s: f64,
}

#[derive(Debug, Default)]
pub struct Audience {
    streams: Mutex<HashMap<Box<str>, Stream>>,
}

impl Audience {
    /// Counts an answer of `bytes` to `viewer` from `stream`, at `now` (seconds).
    pub fn record(&self, stream: &str, viewer: IpAddr, bytes: u64, now: u64) {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if !streams.contains_key(stream) {
            if streams.len() >= MAX_STREAMS {
                return;
            }
            streams.insert(stream.into(), Stream::default());
        }
        let Some(entry) = streams.get_mut(stream) else { return };
        entry.bytes += bytes;
        if entry.viewers.len() < MAX_VIEWERS || entry.viewers.contains_key(&viewer) {
            entry.viewers.insert(viewer, now);
        }
    }

    /// Ends an interval of `secs` at `now`: rates, viewers gone, streams gone.
    pub fn tick(&self, now: u64, secs: f64) {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.retain(|_, s| {
            s.viewers.retain(|_, seen| now.saturating_sub(*seen) < VIEWER_GONE_SECS);
            s.bytes_per_s = (s.bytes - s.bytes_at_tick) as f64 / secs.max(f64::EPSILON);
            s.bytes_at_tick = s.bytes;
            !s.viewers.is_empty()
        });
    }

    /// The `n` streams with the most viewers, and the `n` sent the most bytes
    /// per second over the last interval.
    pub fn top(&self, n: usize) -> (Vec<StreamFigures>, Vec<StreamFigures>) {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let all: Vec<StreamFigures> = streams
            .iter()
            .map(|(name, s)| StreamFigures {
                stream: name.to_string(),
                viewers: s.viewers.len(),
                bytes_per_s: s.bytes_per_s,
            })
            .collect();
        drop(streams);
        let mut by_viewers = all.clone();
        by_viewers.sort_by(|a, b| b.viewers.cmp(&a.viewers).then_with(|| a.stream.cmp(&b.stream)));
        by_viewers.truncate(n);
        let mut by_bytes = all;
        by_bytes.sort_by(|a, b| {
            b.bytes_per_s
                .total_cmp(&a.bytes_per_s)
                .then_with(|| a.stream.cmp(&b.stream))
        });
        by_bytes.truncate(n);
        (by_viewers, by_bytes)
    }
}

/// The stream a media path belongs to: its folder, with the trailing `/`.
pub fn stream_of(path: &str) -> &str {
    path.rfind('/').map_or("/", |i| &path[..=i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn streams_are_ranked_by_viewers_and_by_bytes() {
        let audience = Audience::default();
        for n in 1..=3 {
            audience.record("/live/a/", ip(n), 100, 0);
        }
        audience.record("/live/b/", ip(9), 10_000, 0);
        audience.record("/live/b/", ip(9), 10_000, 5);
        audience.tick(10, 10.0);
        let (by_viewers, by_bytes) = audience.top(10);
        assert_eq!(by_viewers[0].stream, "/live/a/");
        assert_eq!(by_viewers[0].viewers, 3);
        assert_eq!(by_bytes[0].stream, "/live/b/");
        assert_eq!(by_bytes[0].bytes_per_s, 2000.0);
        // A minute later, the viewers of a have left; b's one was seen again.
        audience.record("/live/b/", ip(9), 0, 65);
        audience.tick(70, 60.0);
        let (by_viewers, _) = audience.top(10);
        assert_eq!(by_viewers.len(), 1);
        assert_eq!(by_viewers[0].stream, "/live/b/");
    }

    #[test]
    fn a_stream_is_its_folder() {
        assert_eq!(stream_of("/live/s1/seg-5.ts"), "/live/s1/");
        assert_eq!(stream_of("/index.m3u8"), "/");
    }
}
