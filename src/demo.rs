//! `outpost demo`: a synthetic origin (on-demand objects and a live HLS
//! stream whose segments appear over time) with the edge in front of it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Seconds of media per live segment.
pub const SEGMENT_SECONDS: u64 = 2;
/// Segments listed in the live playlist's window.
const WINDOW: u64 = 6;
const SEGMENT_BYTES: usize = 188 * 1000;

/// The synthetic origin, serving until dropped.
pub struct DemoOrigin {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for DemoOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Clock {
    started: Instant,
}

impl DemoOrigin {
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let clock = Arc::new(Clock {
            started: Instant::now(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let clock = Arc::clone(&clock);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let clock = Arc::clone(&clock);
                        async move { Ok::<_, Infallible>(answer(&clock, &req)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn answer(clock: &Clock, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let live_now = clock.started.elapsed().as_secs() / SEGMENT_SECONDS;
    if path == "/live/stream.m3u8" {
        return reply(
            StatusCode::OK,
            "application/vnd.apple.mpegurl",
            "max-age=1",
            live_playlist(live_now),
        );
    }
    if let Some(n) = path
        .strip_prefix("/live/seg-")
        .and_then(|rest| rest.strip_suffix(".ts"))
        .and_then(|n| n.parse::<u64>().ok())
    {
        if n < live_now {
            return reply(StatusCode::OK, "video/mp2t", "max-age=3600", segment(n, SEGMENT_BYTES));
        }
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "max-age=0",
            Bytes::from_static(b"not yet\n"),
        );
    }
    let vod = match path {
        "/vod/small.bin" => Some(64 << 10),
        "/vod/large.bin" => Some(4 << 20),
        _ => None,
    };
    match vod {
        Some(len) => {
            let mut r = reply(
                StatusCode::OK,
                "application/octet-stream",
                "max-age=3600",
                segment(len as u64, len),
            );
            r.headers_mut().insert(
                header::ETAG,
                HeaderValue::from_str(&format!("\"vod-{len}\"")).expect("ascii"),
            );
            r
        }
        None => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "max-age=10",
            Bytes::from_static(b"no such object\n"),
        ),
    }
}

/// A live media playlist of the last `WINDOW` finished segments.
pub fn live_playlist(live_now: u64) -> Bytes {
    let first = live_now.saturating_sub(WINDOW);
    let mut text =
        format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{SEGMENT_SECONDS}\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
    for n in first..live_now {
        text.push_str(&format!("#EXTINF:{SEGMENT_SECONDS}.000,\nseg-{n}.ts\n"));
    }
    Bytes::from(text)
}

/// Deterministic bytes for object `seed`: MPEG-TS null packets carrying the seed.
pub fn segment(seed: u64, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    let mut packet = [0xffu8; 188];
    packet[..4].copy_from_slice(&[0x47, 0x1f, 0xff, 0x10]);
    packet[4..12].copy_from_slice(&seed.to_be_bytes());
    while out.len() < len {
        let take = (len - out.len()).min(188);
        out.extend_from_slice(&packet[..take]);
    }
    Bytes::from(out)
}

fn reply(status: StatusCode, content_type: &'static str, cache: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

/// How long the demo's live stream takes to publish `n` segments.
pub fn time_for_segments(n: u64) -> Duration {
    Duration::from_secs(SEGMENT_SECONDS * n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlist_window_slides() {
        let text = String::from_utf8(live_playlist(10).to_vec()).unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:4"));
        assert!(text.contains("seg-4.ts") && text.contains("seg-9.ts"));
        assert!(!text.contains("seg-10.ts") && !text.contains("seg-3.ts"));
        assert!(!text.contains("#EXT-X-ENDLIST"), "a live playlist has no end");
    }

    #[test]
    fn segments_are_deterministic_and_distinct() {
        assert_eq!(segment(3, 1000), segment(3, 1000));
        assert_ne!(segment(3, 1000), segment(4, 1000));
        assert_eq!(segment(3, 1000).len(), 1000);
    }
}
