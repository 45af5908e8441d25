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
//!   the origin, p50 and p99;
//! - a live fan-out: `FLEET_PLAYERS` (1,000) simulated players spread
//!   evenly over the edges follow one live HLS stream (a 250 KB segment
//!   every 2 s) for `FLEET_LIVE_SECONDS` (30): origin requests per segment
//!   and the delay from a segment's publication to a player's first byte.
//!
//! The edges share this process's two cores with the clients and the
//! origin, so the figures show the extra hop's cost, not a fleet's capacity.
//! Settings: `FLEET_ROUNDS` (3), the storm's medians over rounds.

#[path = "common.rs"]
mod common;
#[path = "compare/live.rs"]
mod live;
#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env_or, percentile, storm};
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

/// The edges of a run and, for a fleet, the members' ports (which tell who owns a key).
struct Edges {
    edges: Vec<outpost::RunningEdge>,
    fleet: Option<Vec<u16>>,
}

async fn edges(n: usize, origin: &TestOrigin, setup: Setup) -> Edges {
    match setup {
        _ if n == 1 => Edges {
            edges: vec![start_edge(ROUTE, origin).await],
            fleet: None,
        },
        Setup::Independent => {
            let mut edges = Vec::new();
            for _ in 0..n {
                edges.push(start_edge(ROUTE, origin).await);
            }
            Edges { edges, fleet: None }
        }
        Setup::Fleet { keep_copies } => {
            let (ports, edges) = start_fleet(n, origin, &format!("keep_copies = {keep_copies}")).await;
            Edges {
                edges,
                fleet: Some(ports),
            }
        }
    }
}

/// The storm's figures for one round: origin requests, TTFB p50, p99, p99
/// of the clients on members that do not own the object (a fleet; else the
/// p99 of all), complete p99 (seconds). In a fleet the first edge owns it.
async fn cold_storm(run: &Edges, origin: &TestOrigin, round: usize) -> [f64; 5] {
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let edges = &run.edges;
    let prefix = format!("/cold-{}-{n}-{round}-", edges.len());
    let path = match &run.fleet {
        Some(ports) => path_owned_by(origin, ports, 0, &prefix),
        None => format!("{prefix}0.ts"),
    };
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
    let mut not_owner = Vec::new();
    for (i, s) in storms.into_iter().enumerate() {
        let s = s.await.unwrap();
        if run.fleet.is_none() || i > 0 {
            not_owner.extend(s.ttfb.iter().copied());
        }
        ttfb.extend(s.ttfb);
        done.extend(s.done);
        errors += s.errors;
    }
    assert_eq!(errors, 0, "storm clients failed");
    ttfb.sort();
    done.sort();
    not_owner.sort();
    [
        origin.hits(&path) as f64,
        percentile(&ttfb, 0.5).as_secs_f64(),
        percentile(&ttfb, 0.99).as_secs_f64(),
        percentile(&not_owner, 0.99).as_secs_f64(),
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
    let rounds = env_or("FLEET_ROUNDS", 3) as usize;
    let origin = Arc::new(TestOrigin::start().await);
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
        "## Cold storm\n\n{STORM_CLIENTS} clients spread evenly over the edges ask at once for a cold 2 MB object; the origin waits 200 ms, then sends 4 MB/s. In a fleet the object is owned by one member: the clients of the others come through the extra hop. Medians of {rounds} rounds.\n"
    )
    .unwrap();
    writeln!(
        out,
        "| edges | setup | origin requests | TTFB p50 | TTFB p99 | TTFB p99 through a non-owner | complete p99 |"
    )
    .unwrap();
    writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |").unwrap();
    let mut spreads = Vec::new();
    let mut single_p99 = None;
    let mut hop_costs = Vec::new();
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
        let run = edges(n, &origin, setup).await;
        if setup != (Setup::Fleet { keep_copies: false }) {
            let mut figures: [Vec<f64>; 5] = Default::default();
            for round in 0..rounds {
                let f = cold_storm(&run, &origin, round).await;
                eprintln!("{n} edges, {}, round {round}: {f:?}", setup.name(n));
                for (i, v) in f.into_iter().enumerate() {
                    figures[i].push(v);
                }
            }
            let [o, p50, p99, not_owner, done] = figures.map(median);
            let through = match &run.fleet {
                Some(_) => format!("{:.0} ms", not_owner * 1e3),
                None => "-".to_owned(),
            };
            if n == 1 {
                single_p99 = Some(p99);
            } else if let (Some(single), Some(_)) = (single_p99, &run.fleet) {
                hop_costs.push(format!("{n} edges {:+.1} ms", (not_owner - single) * 1e3));
            }
            writeln!(
                out,
                "| {n} | {} | {o:.0} | {:.0} ms | {:.0} ms | {through} | {:.0} ms |",
                setup.name(n),
                p50 * 1e3,
                p99 * 1e3,
                done * 1e3
            )
            .unwrap();
        }
        spreads.push((n, setup, spread(&run.edges, &origin, &spreads.len().to_string()).await));
        for e in run.edges {
            e.shutdown().await;
        }
    }
    writeln!(
        out,
        "\nTTFB p99 through a non-owner against a single edge's (goal: the hop costs at most 5 ms): {}. \
         A fleet also spreads the storm's clients over more edges, which can more than pay for the hop; \
         the hop alone is measured under \"The extra hop\" below.",
        hop_costs.join(", ")
    )
    .unwrap();
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
    let hops = hop(&origin).await;
    for (name, p50, p99) in &hops {
        writeln!(out, "| {name} | {p50:.2} ms | {p99:.2} ms |").unwrap();
    }
    if let [(_, _, hit), (_, _, through), ..] = hops.as_slice() {
        writeln!(
            out,
            "\nThe hop at p99, an owner's hit through a sibling against a hit of one's own: {:+.2} ms (goal: at most 5 ms).",
            through - hit
        )
        .unwrap();
    }
    live_rows(&origin, &mut out).await;
    print!("{out}");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/FLEET.md");
    std::fs::write(path, out).expect("write benches/FLEET.md");
}

/// The live fan-out over 1, 3 and 5 edges (fleets, and 5 independent edges
/// for contrast).
async fn live_rows(origin: &Arc<TestOrigin>, out: &mut String) {
    let players = env_or("FLEET_PLAYERS", 1000) as usize;
    let seconds = env_or("FLEET_LIVE_SECONDS", 30);
    writeln!(
        out,
        "\n## Live fan-out\n\n{players} players spread evenly over the edges follow one live HLS stream for {seconds} s: a {} KB segment every {} s, a window of five, each player reloading the playlist every {} ms and fetching every new segment. Delay: from a segment's publication at the origin to a player's first byte of it.\n",
        live::SEGMENT_BYTES / 1000,
        live::SEGMENT_SECONDS,
        live::POLL.as_millis()
    )
    .unwrap();
    writeln!(
        out,
        "| edges | setup | origin requests per segment (mean / max) | delay p50 | delay p99 | segment downloads | failed |"
    )
    .unwrap();
    writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |").unwrap();
    let runs = [
        (1, Setup::Independent),
        (3, Setup::Fleet { keep_copies: true }),
        (5, Setup::Fleet { keep_copies: true }),
        (5, Setup::Independent),
    ];
    for (i, (n, setup)) in runs.into_iter().enumerate() {
        let run = edges(n, origin, setup).await;
        let bases: Vec<String> = run.edges.iter().map(|e| url(e, "")).collect();
        let f = live::fan_out(origin, &bases, &format!("live-{i}"), players, seconds).await;
        eprintln!("live, {n} edges, {}: {} downloads", setup.name(n), f.downloads);
        writeln!(
            out,
            "| {n} | {} | {:.2} / {} | {:.0} ms | {:.0} ms | {} | {} |",
            setup.name(n),
            f.origin_mean,
            f.origin_max,
            f.delay_p50.as_secs_f64() * 1e3,
            f.delay_p99.as_secs_f64() * 1e3,
            f.downloads,
            f.errors
        )
        .unwrap();
        for e in run.edges {
            e.shutdown().await;
        }
    }
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
