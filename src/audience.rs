//! Who watches what: for each stream (the folder of a playlist or segment
//! path), the viewers seen in the last minute and the bytes per second sent
//! to them, for the dashboard's top streams. Bounded: past [`MAX_STREAMS`]
//! streams or [`MAX_VIEWERS`] viewers of one, new ones are not counted.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;

use serde::Serialize;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// A viewer not seen for this long has left.
const VIEWER_GONE_SECS: u64 = 60;
const MAX_STREAMS: usize = 10_000;
const MAX_VIEWERS: usize = 100_000;

/// Maps keyed by a seeded XXH3 of the name or address, taken once: the
/// record runs on every media answer, where SipHash over a path and an
/// address cost several hundred instructions. The seed is per process, so
/// no client can aim at a collision; one would merge two streams' counts.
type ByHash<V> = HashMap<u64, V, BuildHasherDefault<Taken>>;

/// The hasher of a key that is a hash already.
#[derive(Default)]
struct Taken(u64);

impl Hasher for Taken {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys come here (`write_u64`); any other use still hashes.
        self.0 = xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug, Default)]
struct Stream {
    name: Box<str>,
    /// Each viewer (by its address's hash), and when it was last seen (edge seconds).
    viewers: ByHash<u64>,
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

#[derive(Debug)]
pub struct Audience {
    seed: u64,
    streams: Mutex<ByHash<Stream>>,
}

impl Default for Audience {
    fn default() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            seed: xxh3_64_with_seed(&nanos.to_le_bytes(), std::process::id() as u64),
            streams: Mutex::default(),
        }
    }
}

impl Audience {
    /// Counts an answer of `bytes` to `viewer` from `stream`, at `now` (seconds).
    pub fn record(&self, stream: &str, viewer: IpAddr, bytes: u64, now: u64) {
        let key = xxh3_64_with_seed(stream.as_bytes(), self.seed);
        let viewer = match viewer {
            IpAddr::V4(ip) => xxh3_64_with_seed(&ip.octets(), self.seed),
            IpAddr::V6(ip) => xxh3_64_with_seed(&ip.octets(), self.seed),
        };
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let len = streams.len();
        let entry = match streams.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(_) if len >= MAX_STREAMS => return,
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Stream {
                name: stream.into(),
                ..Stream::default()
            }),
        };
        entry.bytes += bytes;
        let viewers = entry.viewers.len();
        match entry.viewers.get_mut(&viewer) {
            Some(seen) => *seen = now,
            None if viewers < MAX_VIEWERS => {
                entry.viewers.insert(viewer, now);
            }
            None => {}
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
            .values()
            .map(|s| StreamFigures {
                stream: s.name.to_string(),
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
