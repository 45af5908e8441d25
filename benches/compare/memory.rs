//! Memory: what 1,000 idle keep-alive connections cost a proxy, and its RSS
//! once its cache budget is full of 2 MB segments.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::proxies::Proxy;
use crate::support::{payload, Script, TestOrigin};

pub const IDLE_CONNECTIONS: usize = 1000;
pub const SEGMENT_BYTES: usize = 2_000_000;

pub struct Memory {
    /// RSS once the cache is full.
    pub full_rss: u64,
    /// Cache kept in tmpfs files rather than in the process (nginx).
    pub cache_files: u64,
    /// RSS growth per idle keep-alive connection, in bytes.
    pub per_idle_connection: f64,
}

/// Opens a connection, gets `/1k` over it (so it is a served keep-alive
/// connection, not a fresh one) and returns it, idle.
async fn idle_connection(port: u16) -> Option<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(b"GET /1k HTTP/1.1\r\nHost: bench\r\n\r\n").await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() >= end + 4 + 1024 {
                return Some(s);
            }
        }
    }
}

pub async fn measure(proxy: &Proxy, origin: &TestOrigin, budget: u64) -> Memory {
    // Idle connections first, on a cache holding only /1k.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = proxy.rss();
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS / 100 {
        let batch = futures_join((0..100).map(|_| idle_connection(proxy.port))).await;
        idle.extend(batch.into_iter().flatten());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = proxy.rss();
    let opened = idle.len().max(1);
    drop(idle);

    // Then fill the cache past its budget with 2 MB segments, 8 at a time.
    let objects = (budget as usize / SEGMENT_BYTES) * 5 / 4;
    let body: Bytes = payload(SEGMENT_BYTES, 3);
    for i in 0..objects {
        origin.set(
            &format!("/fill/{i}.ts"),
            Script::ok(body.clone()).headers(&[("cache-control", "max-age=3600"), ("content-type", "video/mp2t")]),
        );
    }
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let next = Arc::clone(&next);
            let base = proxy.url("/fill/");
            tokio::spawn(async move {
                let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<Empty<Bytes>>();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= objects {
                        return;
                    }
                    let uri: http::Uri = format!("{base}{i}.ts").parse().unwrap();
                    if let Ok(resp) = c.get(uri).await {
                        let _ = resp.into_body().collect().await;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    Memory {
        full_rss: proxy.rss(),
        cache_files: proxy.cache_files(),
        per_idle_connection: after.saturating_sub(before) as f64 / opened as f64,
    }
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}
