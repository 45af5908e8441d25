//! End-to-end figures for the edge on this machine: the cache-hit path and a
//! cold-object storm. Run with `cargo bench --bench edge`.
//!
//! The load generator runs in the same process as the edge (hyper clients on
//! loopback), so the hit figures are a floor that counts the client's CPU too;
//! the side-by-side comparison with other proxies is a separate benchmark.

#[path = "common.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env_or, ms, percentile, storm, Storm};
use http_body_util::{BodyExt, Empty};
use support::*;

async fn hit_path(edge: &outpost::RunningEdge, path: &str, connections: usize, seconds: u64) -> (f64, f64) {
    let done = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            // One client per connection: keep-alive, one request at a time.
            let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build_http::<Empty<bytes::Bytes>>();
            let u: http::Uri = url(edge, path).parse().unwrap();
            let (done, bytes) = (Arc::clone(&done), Arc::clone(&bytes));
            tokio::spawn(async move {
                while Instant::now() < until {
                    let resp = c.get(u.clone()).await.unwrap();
                    let body = resp.into_body().collect().await.unwrap().to_bytes();
                    bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let secs = seconds as f64;
    (
        done.load(Ordering::Relaxed) as f64 / secs,
        bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
    )
}

async fn cold_storm(clients: usize) {
    let origin = TestOrigin::start().await;
    let size = 2_000_000;
    // 200 ms to first byte, then 4 MB/s in 40 KB steps.
    origin.set(
        "/cold.ts",
        Script::ok(payload(size, 1))
            .delay(Duration::from_millis(200))
            .throttle(40_000, Duration::from_millis(10)),
    );
    let edge = edge_for(&origin).await;
    let Storm { ttfb, done, errors, .. } = storm(&url(&edge, "/cold.ts"), clients, size).await;
    println!(
        "| cold storm, {clients} clients, 2 MB, origin 200 ms TTFB at 4 MB/s | origin requests {} | TTFB p50 {} p99 {} | done p50 {} p99 {} | errors {errors} |",
        origin.hits("/cold.ts"),
        ms(percentile(&ttfb, 0.5)),
        ms(percentile(&ttfb, 0.99)),
        ms(percentile(&done, 0.5)),
        ms(percentile(&done, 0.99)),
    );
    edge.shutdown().await;
}

fn main() {
    let seconds = env_or("BENCH_SECONDS", 5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let origin = TestOrigin::start().await;
        origin.set("/1k", Script::ok(payload(1024, 1)));
        origin.set("/1m", Script::ok(payload(1 << 20, 2)));
        let edge = edge_for(&origin).await;
        let c = client();
        get(&c, &url(&edge, "/1k")).await;
        get(&c, &url(&edge, "/1m")).await;
        println!("| benchmark | figures |\n| --- | --- |");
        for (path, label) in [("/1k", "1 KiB"), ("/1m", "1 MiB")] {
            let (rps, mbps) = hit_path(&edge, path, 64, seconds).await;
            println!("| cache hit, {label}, 64 keep-alive connections, HTTP/1.1 | {rps:.0} req/s, {mbps:.0} MB/s |");
        }
        assert_eq!(origin.total(), 2, "hits never reached the origin");
        edge.shutdown().await;
        cold_storm(500).await;
    });
}
