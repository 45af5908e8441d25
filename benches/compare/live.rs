//! Live fan-out: simulated players follow a live HLS playlist through a
//! proxy while the origin publishes a segment every two seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use crate::common::percentile;
use crate::support::{payload, Script, TestOrigin};

pub const SEGMENT_SECONDS: u64 = 2;
/// 1 Mbit/s of video.
pub const SEGMENT_BYTES: usize = 250_000;
const WINDOW: u64 = 5;
/// How often each player reloads the playlist.
pub const POLL: Duration = Duration::from_millis(100);

pub struct Fanout {
    /// Origin requests per segment published while the players watched.
    pub origin_max: usize,
    pub origin_mean: f64,
    /// From a segment's publication to a player's first byte of it.
    pub delay_p50: Duration,
    pub delay_p99: Duration,
    /// Segment downloads by all players, and those that failed or came short.
    pub downloads: usize,
    pub errors: usize,
}

type Published = Arc<Mutex<HashMap<u64, Instant>>>;

fn publish(origin: &TestOrigin, stream: &str, n: u64, body: &Bytes, published: &Published) {
    origin.set(
        &format!("/{stream}/seg-{n}.ts"),
        Script::ok(body.clone()).headers(&[("cache-control", "max-age=3600"), ("content-type", "video/mp2t")]),
    );
    let first = (n + 1).saturating_sub(WINDOW);
    let mut text =
        format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{SEGMENT_SECONDS}\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
    for i in first..=n {
        text.push_str(&format!("#EXTINF:{SEGMENT_SECONDS}.000,\nseg-{i}.ts\n"));
    }
    origin.set(
        &format!("/{stream}/index.m3u8"),
        Script::ok(text).headers(&[
            ("cache-control", "max-age=1"),
            ("content-type", "application/vnd.apple.mpegurl"),
        ]),
    );
    published.lock().unwrap().insert(n, Instant::now());
}

/// `players` players follow `/{stream}/index.m3u8` for `seconds`, player `i`
/// through `bases[i % bases.len()]` (one proxy, or the members of a fleet).
pub async fn fan_out(origin: &Arc<TestOrigin>, bases: &[String], stream: &str, players: usize, seconds: u64) -> Fanout {
    let body = payload(SEGMENT_BYTES, 9);
    let published: Published = Arc::default();
    for n in 0..WINDOW {
        publish(origin, stream, n, &body, &published);
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let delays = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(0usize));
    let tasks: Vec<_> = (0..players)
        .map(|i| {
            let (published, delays, errors) = (Arc::clone(&published), Arc::clone(&delays), Arc::clone(&errors));
            let base = format!("{}/{stream}/", bases[i % bases.len()]);
            let playlist: http::Uri = format!("{base}index.m3u8").parse().unwrap();
            tokio::spawn(async move {
                let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_max_idle_per_host(1)
                    .build_http::<Empty<Bytes>>();
                // Spread the players' reloads over one poll interval.
                tokio::time::sleep(POLL * i as u32 / players as u32).await;
                let mut seen: Option<u64> = None;
                while Instant::now() < until {
                    let listed = match reload(&c, &playlist).await {
                        Some(listed) => listed,
                        None => {
                            *errors.lock().unwrap() += 1;
                            tokio::time::sleep(POLL).await;
                            continue;
                        }
                    };
                    let newest = listed.iter().copied().max().unwrap_or(0);
                    // Join at the live edge: only segments published after joining count.
                    let from = seen.map_or(newest + 1, |s| s + 1);
                    for n in listed.into_iter().filter(|n| *n >= from) {
                        let uri: http::Uri = format!("{base}seg-{n}.ts").parse().unwrap();
                        match download(&c, uri).await {
                            Some(first_byte) => {
                                let at = published.lock().unwrap().get(&n).copied();
                                if let Some(at) = at {
                                    delays.lock().unwrap().push(first_byte.saturating_duration_since(at));
                                }
                            }
                            None => *errors.lock().unwrap() += 1,
                        }
                    }
                    seen = Some(newest.max(seen.unwrap_or(0)));
                    tokio::time::sleep(POLL).await;
                }
            })
        })
        .collect();
    let publisher = {
        let body = body.clone();
        let published = Arc::clone(&published);
        let origin = Arc::clone(origin);
        let stream = stream.to_owned();
        tokio::spawn(async move {
            let mut n = WINDOW;
            loop {
                tokio::time::sleep_until((started + Duration::from_secs(SEGMENT_SECONDS * (n - WINDOW + 1))).into())
                    .await;
                if Instant::now() >= until {
                    return n;
                }
                publish(&origin, &stream, n, &body, &published);
                n += 1;
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    let last = publisher.await.unwrap_or(WINDOW);
    // Segments published while players watched (not the first window).
    let counts: Vec<usize> = (WINDOW..last)
        .map(|n| origin.hits(&format!("/{stream}/seg-{n}.ts")))
        .collect();
    let mut delays = std::mem::take(&mut *delays.lock().unwrap());
    delays.sort();
    let downloads = delays.len();
    let errors = *errors.lock().unwrap();
    Fanout {
        origin_max: counts.iter().copied().max().unwrap_or(0),
        origin_mean: counts.iter().sum::<usize>() as f64 / counts.len().max(1) as f64,
        delay_p50: percentile(&delays, 0.5),
        delay_p99: percentile(&delays, 0.99),
        downloads,
        errors,
    }
}

type Client = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// The segment numbers a playlist lists.
async fn reload(c: &Client, playlist: &http::Uri) -> Option<Vec<u64>> {
    let resp = c.get(playlist.clone()).await.ok()?;
    if resp.status() != 200 {
        return None;
    }
    let text = resp.into_body().collect().await.ok()?.to_bytes();
    let text = std::str::from_utf8(&text).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.strip_prefix("seg-")?.strip_suffix(".ts")?.parse().ok())
            .collect(),
    )
}

/// Downloads a segment whole; the instant its first byte arrived.
async fn download(c: &Client, uri: http::Uri) -> Option<Instant> {
    let resp = c.get(uri).await.ok()?;
    if resp.status() != 200 {
        return None;
    }
    let mut body = resp.into_body();
    let mut first = None;
    let mut len = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        if let Some(d) = frame.data_ref() {
            first.get_or_insert_with(Instant::now);
            len += d.len();
        }
    }
    (len == SEGMENT_BYTES).then_some(first?)
}
