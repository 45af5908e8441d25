//! Server data for players (CTA-5006 Common Media Server Data): the edge's
//! own `CMSD-Dynamic` entry on every answer, so that a player (dash.js reads
//! `etp` and `mb`; Shaka `mb`, `etp` and `rtt`) can steer away from an edge
//! before it fails. The origin's `CMSD-Static` is an end-to-end header and
//! passes through as it came.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderName, HeaderValue};

pub const CMSD_DYNAMIC: HeaderName = HeaderName::from_static("cmsd-dynamic");
pub const CMSD_STATIC: HeaderName = HeaderName::from_static("cmsd-static");

/// What the origin's `CMSD-Static` says an object is (its `ot` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// `ot=m`: a manifest or playlist.
    Manifest,
    /// `ot=a`, `v`, `av`, `i`, `c`, `tt`, `k`: media, an init segment,
    /// captions, timed text or a key.
    Media,
}

/// The object type an origin's `CMSD-Static` gives, if it gives one.
pub fn object_type(headers: &http::HeaderMap) -> Option<ObjectType> {
    headers.get_all(CMSD_STATIC).iter().find_map(|value| {
        let text = value.to_str().ok()?;
        text.split([',', ';']).find_map(|member| {
            let (key, value) = member.split_once('=')?;
            if key.trim() != "ot" {
                return None;
            }
            match value.trim() {
                "m" => Some(ObjectType::Manifest),
                "a" | "v" | "av" | "i" | "c" | "tt" | "k" => Some(ObjectType::Media),
                _ => None,
            }
        })
    })
}

/// Past this share of a bound, the edge says it is under duress (`du`).
pub const DURESS: f64 = 0.9;
/// From this share of a bound on, the edge suggests a bitrate ceiling (`mb`).
const LOADED: f64 = 0.75;

/// What the kernel knows of the connection to one client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Path {
    /// Smoothed round-trip time, in milliseconds.
    pub rtt_ms: Option<u64>,
    /// The rate the connection has recently delivered at, in kbit/s.
    pub throughput_kbps: Option<u64>,
}

impl Path {
    /// Reads `TCP_INFO` of the client's socket (Linux); nothing elsewhere or
    /// when the call fails.
    pub fn of_socket(fd: Option<i32>) -> Self {
        #[cfg(target_os = "linux")]
        if let Some(fd) = fd {
            return tcp_info(fd).unwrap_or_default();
        }
        let _ = fd;
        Self::default()
    }
}

/// What the kernel measured of one client connection, read at most once a
/// second of the edge's clock: the figures move with the connection's
/// traffic, not from one request to the next, and reading them is a system
/// call. A reading that has no throughput yet is not kept. Each connection
/// has its own, so no client's figures reach another.
#[derive(Debug)]
pub struct Probe {
    socket: Option<i32>,
    /// The second of the last read, plus one (0: not read yet).
    read_at: AtomicU64,
    /// The last read's figures, each plus one (0: not known).
    rtt_ms: AtomicU64,
    throughput_kbps: AtomicU64,
    /// How many times the socket was asked.
    #[cfg(test)]
    reads: AtomicU64,
}

impl Probe {
    pub fn new(socket: Option<i32>) -> Self {
        Self {
            socket,
            read_at: AtomicU64::new(0),
            rtt_ms: AtomicU64::new(0),
            throughput_kbps: AtomicU64::new(0),
            #[cfg(test)]
            reads: AtomicU64::new(0),
        }
    }

    /// The connection's figures as of `now` (the edge's seconds).
    pub fn path(&self, now: u64) -> Path {
        let known = |v: &AtomicU64| v.load(Ordering::Relaxed).checked_sub(1);
        if self.read_at.load(Ordering::Relaxed) == now + 1 {
            let kept = Path {
                rtt_ms: known(&self.rtt_ms),
                throughput_kbps: known(&self.throughput_kbps),
            };
            // A reading without a throughput (none sent yet when it was
            // taken, as for a connection's first request) is taken again.
            if kept.throughput_kbps.is_some() {
                return kept;
            }
        }
        let path = Path::of_socket(self.socket);
        #[cfg(test)]
        self.reads.fetch_add(1, Ordering::Relaxed);
        let store = |to: &AtomicU64, v: Option<u64>| to.store(v.map_or(0, |v| v.saturating_add(1)), Ordering::Relaxed);
        store(&self.rtt_ms, path.rtt_ms);
        store(&self.throughput_kbps, path.throughput_kbps);
        self.read_at.store(now + 1, Ordering::Relaxed);
        path
    }
}

#[cfg(target_os = "linux")]
fn tcp_info(fd: i32) -> Option<Path> {
    // SAFETY: `info` is a plain C struct the kernel fills up to `len` bytes;
    // `fd` is the socket of a connection the caller is answering on, so it
    // is open for the call's length.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let done = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if done != 0 {
        return None;
    }
    // Older kernels fill less of the struct: the delivery rate (Linux 4.9)
    // is read only when it was written.
    let rate_end = std::mem::offset_of!(libc::tcp_info, tcpi_delivery_rate) + 8;
    let rate = (len as usize >= rate_end && info.tcpi_delivery_rate > 0).then_some(info.tcpi_delivery_rate);
    Some(Path {
        rtt_ms: (info.tcpi_rtt > 0).then(|| u64::from(info.tcpi_rtt).div_ceil(1000)),
        throughput_kbps: rate.map(|bytes_per_sec| bytes_per_sec * 8 / 1000),
    })
}

/// The edge's `CMSD-Dynamic` entry for one answer: `"outpost"` with `etp`
/// (throughput to this client, kbit/s) and `rtt` (ms) when known; under
/// load `mb`, a bitrate ceiling, and `du` (duress). Kept as numbers until
/// written: an answer from the cache writes it straight into its head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entry {
    pub etp: Option<u64>,
    pub rtt: Option<u64>,
    pub mb: Option<u64>,
    pub du: bool,
}

impl Entry {
    /// The entry for an answer over `path` while the edge's `load` (the
    /// fullest of its bounds, 0 to 1) is what it is: `mb` from 75 % on,
    /// falling from the throughput to a quarter of it at 100 %; `du` from 90 %.
    pub fn new(path: Path, load: f64) -> Self {
        let mb = path.throughput_kbps.filter(|_| load >= LOADED).map(|etp| {
            let share = (1.0 - (load - LOADED) / (1.0 - LOADED) * 0.75).clamp(0.25, 1.0);
            (etp as f64 * share) as u64
        });
        Self {
            etp: path.throughput_kbps,
            rtt: path.rtt_ms,
            mb,
            du: load >= DURESS,
        }
    }

    /// The value's bytes, as an HTTP/1.1 connection writes them.
    pub fn write(&self, out: &mut bytes::BytesMut) {
        use bytes::BufMut;
        out.put_slice(b"\"outpost\"");
        let mut digits = itoa::Buffer::new();
        for (key, value) in [(&b";etp="[..], self.etp), (b";rtt=", self.rtt), (b";mb=", self.mb)] {
            if let Some(value) = value {
                out.put_slice(key);
                out.put_slice(digits.format(value).as_bytes());
            }
        }
        if self.du {
            out.put_slice(b";du");
        }
    }

    pub fn value(&self) -> HeaderValue {
        let mut out = bytes::BytesMut::with_capacity(64);
        self.write(&mut out);
        HeaderValue::from_maybe_shared(out.freeze()).expect("digits and ASCII")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(path: Path, load: f64) -> HeaderValue {
        Entry::new(path, load).value()
    }

    #[test]
    fn the_entry_says_what_is_known_and_how_loaded_the_edge_is() {
        let known = Path {
            rtt_ms: Some(12),
            throughput_kbps: Some(40_000),
        };
        assert_eq!(dynamic(known, 0.1), "\"outpost\";etp=40000;rtt=12");
        assert_eq!(dynamic(known, 0.75), "\"outpost\";etp=40000;rtt=12;mb=40000");
        assert_eq!(dynamic(known, 0.85), "\"outpost\";etp=40000;rtt=12;mb=28000");
        assert_eq!(dynamic(known, 0.95), "\"outpost\";etp=40000;rtt=12;mb=16000;du");
        assert_eq!(dynamic(known, 1.0), "\"outpost\";etp=40000;rtt=12;mb=10000;du");
        assert_eq!(dynamic(Path::default(), 0.0), "\"outpost\"");
        assert_eq!(dynamic(Path::default(), 0.99), "\"outpost\";du");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_real_socket_has_a_round_trip_time() {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.write_all(&[7u8; 100_000]).unwrap();
        let mut buf = vec![0u8; 100_000];
        client.read_exact(&mut buf).unwrap();
        let path = Path::of_socket(Some(server.as_raw_fd()));
        assert!(path.rtt_ms.is_some_and(|rtt| rtt >= 1), "{path:?}");
        assert!(path.throughput_kbps.is_some_and(|t| t > 0), "{path:?}");
        assert_eq!(Path::of_socket(Some(-1)), Path::default());
        assert_eq!(Path::of_socket(None), Path::default());

        // A connection's probe asks the socket once per second of the
        // edge's clock, and gives the same figures in between.
        let probe = Probe::new(Some(server.as_raw_fd()));
        let first = probe.path(5);
        assert!(first.rtt_ms.is_some() && first.throughput_kbps.is_some(), "{first:?}");
        assert_eq!((probe.path(5), probe.path(5)), (first, first));
        assert_eq!(probe.reads.load(Ordering::Relaxed), 1);
        assert!(probe.path(6).rtt_ms.is_some());
        assert_eq!(probe.reads.load(Ordering::Relaxed), 2);
        // A reading with nothing delivered yet is not kept: the next request
        // may know the throughput. Nothing known stays nothing, not a zero.
        let none = Probe::new(None);
        assert_eq!((none.path(1), none.path(1)), (Path::default(), Path::default()));
        assert_eq!(none.reads.load(Ordering::Relaxed), 2);
    }
}
