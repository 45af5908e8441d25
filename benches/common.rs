//! Measuring helpers shared by the benchmarks.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};

/// The value at quantile `p` (0..=1) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// What a storm of clients saw: time to first body byte and to the last,
/// from the moment all were released, sorted; and how many failed.
pub struct Storm {
    /// When the clients were released.
    pub start: Instant,
    pub ttfb: Vec<Duration>,
    pub done: Vec<Duration>,
    pub errors: usize,
}

/// `clients` clients, each on its own connection, GET `url` at once and read
/// the whole body; a body that is not `size` bytes long is an error.
pub async fn storm(url: &str, clients: usize, size: usize) -> Storm {
    let uri: http::Uri = url.parse().expect("a storm URL");
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let uri = uri.clone();
            let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Empty<bytes::Bytes>>();
            tokio::spawn(async move {
                let resp = c.get(uri).await.map_err(|e| e.to_string())?;
                if resp.status() != 200 {
                    return Err(format!("status {}", resp.status()));
                }
                let mut body = resp.into_body();
                let mut first = None;
                let mut len = 0;
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| e.to_string())?;
                    if let Some(d) = frame.data_ref() {
                        first.get_or_insert_with(|| start.elapsed());
                        len += d.len();
                    }
                }
                if len != size {
                    return Err(format!("short body: {len} of {size}"));
                }
                Ok::<_, String>((first.unwrap_or_default(), start.elapsed()))
            })
        })
        .collect();
    let mut out = Storm {
        start,
        ttfb: Vec::new(),
        done: Vec::new(),
        errors: 0,
    };
    for t in tasks {
        match t.await.expect("storm client task") {
            Ok((f, d)) => {
                out.ttfb.push(f);
                out.done.push(d);
            }
            Err(_) => out.errors += 1,
        }
    }
    out.ttfb.sort();
    out.done.sort();
    out
}
