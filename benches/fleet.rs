//! What the fleet costs and saves: `cargo bench --bench fleet`. Writes
//! `benches/FLEET.md`.
//!
//! For 1, 3 and 5 edges (one fleet, in this process, on loopback; 1 edge is
//! a single edge without `[cluster]`):
//! - a cold storm: 500 clients, spread evenly over the edges, ask at once
//!   for a cold 2 MB object (the origin waits 200 ms, then sends 4 MB/s):
//!   origin requests, and time to first byte and to the end, p50 and p99;
//! - 60 objects of 256 KiB, each asked once through every edge: origin
//!   requests per object and bytes the edges hold per object, with
//!   `keep_copies` on and off, and for edges that are not a fleet.
//!
//! - the extra hop: one request at a time for small objects, a hit, a
//!   non-owner's miss that the owner answers from its cache, and a miss to
//!   the origin, p50 and p99.
//!
//! The edges share this process's two cores with the clients and the
//! origin, so the figures show the extra hop's cost, not a fleet's capacity.
//! Settings: `FLEET_ROUNDS` (3), the storm's medians over rounds.

#[path = "common.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::{percentile, storm};
use support::*;

const STORM_CLIENTS: usize = 500;
const STORM_BYTES: usize = 2_000_000;
const OBJECTS: usize = 60;
const OBJECT_BYTES: usize = 256 << 10;

/// How the edges of a run are set up.
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    /// One fleet; non-owners keep copies (`keep_copies`) or not.
    Fleet { keep_copies: bool },
    /// Edges that know nothing of each other, as behind a plain load balancer.
    Independent,
}

impl Setup {
    fn name(self, n: usize) -> &'static str {
        match self {
            _ if n == 1 => "single edge",
            Setup::Fleet { keep_copies: true } => "fleet",
            Setup::Fleet { keep_copies: false } => "fleet, keep_copies = false",
            Setup::Independent => "independent edges",
        }
    }
}

async fn edges(n: usize, origin: &TestOrigin, setup: Setup) -> Vec<outpost::RunningEdge> {
    match setup {
        _ if n == 1 => vec![start_edge(ROUTE, origin).await],
        Setup::Independent => {
            let mut edges = Vec::new();
            for _ in 0..n {
                edges.push(start_edge(ROUTE, origin).await);
            }
            edges
        }
        Setup::Fleet { keep_copies } => start_fleet(n, origin, &format!("keep_copies = {keep_copies}")).await.1,
    }
}

/// The storm's figures for one round: origin requests, TTFB p50, p99, complete p99 (seconds).
async fn cold_storm(edges: &[outpost::RunningEdge], origin: &TestOrigin, round: usize) -> [f64; 4] {
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = format!("/cold-{}-{run}-{round}.ts", edges.len());
    origin.set(
        &path,
        Script::ok(payload(STORM_BYTES, 7))
            .headers(&[("cache-control", "max-age=3600"), ("content-type", "video/mp2t")])
            .delay(Duration::from_millis(200))
            .throttle(40_000, Duration::from_millis(10)),
    );
    let per_edge = STORM_CLIENTS / edges.len();
    let storms: Vec<_> = edges
        .iter()
        .map(|e| tokio::spawn(storm_at(url(e, &path), per_edge)))
        .collect();
    let (mut ttfb, mut done, mut errors) = (Vec::new(), Vec::new(), 0);
    for s in storms {
        let s = s.await.unwrap();
        ttfb.extend(s.ttfb);
        done.extend(s.done);
        errors += s.errors;
    }
    assert_eq!(errors, 0, "storm clients failed");
    ttfb.sort();
    done.sort();
    [
        origin.hits(&path) as f64,
        percentile(&ttfb, 0.5).as_secs_f64(),
        percentile(&ttfb, 0.99).as_secs_f64(),
        percentile(&done, 0.99).as_secs_f64(),
    ]
}

async fn storm_at(url: String, clients: usize) -> common::Storm {
    storm(&url, clients, STORM_BYTES).await
}

/// Origin requests per object and bytes held per object across the fleet.
async fn spread(edges: &[outpost::RunningEdge], origin: &TestOrigin, tag: &str) -> (f64, f64) {
    let c = client();
    let held_before: u64 = edges.iter().map(|e| e.edge.store().bytes()).sum();
    let mut requests = 0;
    for k in 0..OBJECTS {
        let path = format!("/spread-{tag}-{}-{k}.m4s", edges.len());
        origin.set(&path, Script::ok(payload(OBJECT_BYTES, k as u8)));
        for edge in edges {
            let got = get(&c, &url(edge, &path)).await;
            assert_eq!(got.status, 200);
        }
        requests += origin.hits(&path);
    }
    // `bytes` applies moka's pending inserts before it weighs.
    let held: u64 = edges.iter().map(|e| e.edge.store().bytes()).sum::<u64>() - held_before;
    (requests as f64 / OBJECTS as f64, held as f64 / OBJECTS as f64)
}

/// Latency of one request at a time, p50 and p99 (ms), for `HOPS` 4 KiB
/// objects: a hit; a miss on a non-owner whose owner has the object (the
/// extra hop); a miss straight to the origin.
async fn hop(origin: &TestOrigin) -> Vec<(&'static str, f64, f64)> {
    let (ports, fleet) = start_fleet(2, origin, "").await;
    let c = client();
    let mut times: [Vec<Duration>; 3] = Default::default();
    for k in 0..HOPS {
        let path = path_owned_by(origin, &ports, 1, &format!("/hop-{k}-"));
        origin.set(&path, Script::ok(payload(4 << 10, k as u8)));
        // The owner fetches it from the origin: a miss to the origin.
        let started = Instant::now();
        assert_eq!(get(&c, &url(&fleet[1], &path)).await.status, 200);
        times[2].push(started.elapsed());
        // The other member's miss is the owner's hit.
        let started = Instant::now();
        assert_eq!(get(&c, &url(&fleet[0], &path)).await.status, 200);
        times[1].push(started.elapsed());
        let started = Instant::now();
        assert_eq!(get(&c, &url(&fleet[0], &path)).await.status, 200);
        times[0].push(started.elapsed());
    }
    for e in fleet {
        e.shutdown().await;
    }
    let names = ["hit", "miss through the owner (owner's hit)", "miss to the origin"];
    names
        .into_iter()
        .zip(times)
        .map(|(name, mut t)| {
            t.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            (name, ms(percentile(&t, 0.5)), ms(percentile(&t, 0.99)))
        })
        .collect()
}

const HOPS: usize = 1000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::var("FLEET_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let origin = TestOrigin::start().await;
    let mut out = String::new();
    let date = common_date();
    writeln!(out, "# The fleet: what the extra hop costs\n").unwrap();
    writeln!(
        out,
        "Written by `cargo bench --bench fleet` on {date}; {}; outpost {} (release build). Edges, origin and clients share one process and this machine's cores: the figures compare fleet sizes, they do not measure a fleet's capacity.\n",
        machine(),
        env!("CARGO_PKG_VERSION")
    )
    .unwrap();
    writeln!(
        out,
        "## Cold storm\n\n{STORM_CLIENTS} clients spread evenly over the edges ask at once for a cold 2 MB object; the origin waits 200 ms, then sends 4 MB/s. Medians of {rounds} rounds.\n"
    )
    .unwrap();
    writeln!(
        out,
        "| edges | setup | origin requests | TTFB p50 | TTFB p99 | complete p99 |"
    )
    .unwrap();
    writeln!(out, "| --- | --- | --- | --- | --- | --- |").unwrap();
    let mut spreads = Vec::new();
    let runs = [
        (1, Setup::Independent),
        (3, Setup::Fleet { keep_copies: true }),
        (3, Setup::Fleet { keep_copies: false }),
        (3, Setup::Independent),
        (5, Setup::Fleet { keep_copies: true }),
        (5, Setup::Fleet { keep_copies: false }),
        (5, Setup::Independent),
    ];
    for (n, setup) in runs {
        let edges = edges(n, &origin, setup).await;
        if setup != (Setup::Fleet { keep_copies: false }) {
            let mut figures: [Vec<f64>; 4] = Default::default();
            for round in 0..rounds {
                let f = cold_storm(&edges, &origin, round).await;
                eprintln!("{n} edges, {}, round {round}: {f:?}", setup.name(n));
                for (i, v) in f.into_iter().enumerate() {
                    figures[i].push(v);
                }
            }
            let [o, p50, p99, done] = figures.map(median);
            writeln!(
                out,
                "| {n} | {} | {o:.0} | {:.0} ms | {:.0} ms | {:.0} ms |",
                setup.name(n),
                p50 * 1e3,
                p99 * 1e3,
                done * 1e3
            )
            .unwrap();
        }
        spreads.push((n, setup, spread(&edges, &origin, &spreads.len().to_string()).await));
        for e in edges {
            e.shutdown().await;
        }
    }
    writeln!(
        out,
        "\n## Spread\n\n{OBJECTS} objects of {} KiB, each asked once through every edge.\n",
        OBJECT_BYTES >> 10
    )
    .unwrap();
    writeln!(
        out,
        "| edges | setup | origin requests per object | bytes held per object, all edges |"
    )
    .unwrap();
    writeln!(out, "| --- | --- | --- | --- |").unwrap();
    for (n, setup, (requests, held)) in spreads {
        writeln!(
            out,
            "| {n} | {} | {requests:.2} | {:.0} KiB |",
            setup.name(n),
            held / 1024.0
        )
        .unwrap();
    }
    writeln!(
        out,
        "\n## The extra hop\n\n{HOPS} objects of 4 KiB, one request at a time over a kept-alive connection, on a fleet of two; the origin answers at once.\n"
    )
    .unwrap();
    writeln!(out, "| request | p50 | p99 |").unwrap();
    writeln!(out, "| --- | --- | --- |").unwrap();
    for (name, p50, p99) in hop(&origin).await {
        writeln!(out, "| {name} | {p50:.2} ms | {p99:.2} ms |").unwrap();
    }
    print!("{out}");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/FLEET.md");
    std::fs::write(path, out).expect("write benches/FLEET.md");
}

fn common_date() -> String {
    first_line("date", &["-u", "+%Y-%m-%d"])
}

fn machine() -> String {
    let cpu = first_line("sh", &["-c", "lscpu | sed -n 's/^Model name: *//p'"]);
    let cores = first_line("nproc", &["--all"]);
    let kernel = first_line("uname", &["-r"]);
    format!("{cpu}, {cores} cores, Linux {kernel}")
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
