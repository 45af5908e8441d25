//! The soak: `cargo bench --bench soak`. The `outpost` binary, with a
//! cache of `SOAK_MEMORY_MIB` (256) MiB, under a mixed load for
//! `SOAK_SECONDS` (600): hits and misses of VOD objects (three times what
//! the cache holds, so it fills and evicts, with fills in flight at once),
//! range requests, a live HLS stream from ffmpeg (playlist and newest
//! segment), and an origin that truncates, resets, stalls or answers 503
//! for one request in ten. Every second it samples the process's resident
//! memory, open descriptors and threads. Writes `benches/SOAK.md` and the
//! plot `benches/soak.svg`; exits 1 on an error the faults do not explain,
//! or when the resident memory at the end passes 1.1 × `cache.memory` +
//! 64 MiB.

#[path = "common.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::env_or;
use support::*;

/// The mean of `object_size`.
const MEAN_OBJECT: usize = 525_000;
const FAULTS: usize = 200;
const CLIENTS: usize = 32;

/// A fault the origin injects, by path.
const FAULT_KINDS: [&str; 4] = ["truncate", "reset", "stall", "503"];

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    bytes: AtomicU64,
    /// Errors on fault paths: the faults explain them.
    explained: AtomicU64,
    /// Anything else that was not a whole, right answer.
    unexplained: AtomicU64,
}

struct Sample {
    at: f64,
    rss: u64,
    fds: usize,
    threads: usize,
}

/// A small xorshift: the load's choices, the same each run.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as usize
    }
}

fn object_size(i: usize) -> usize {
    50_000 + (i * 7919) % 950_000
}

fn proc_count(pid: u32, what: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/{what}")).map_or(0, |d| d.count())
}

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds = env_or("SOAK_SECONDS", 600);
    let memory_mib = env_or("SOAK_MEMORY_MIB", 256);
    // Three times what the cache holds: a hot fifth that fits, and misses that evict.
    let objects = (3 * (memory_mib << 20) as usize) / MEAN_OBJECT;
    let live = FfmpegLive::start("soak", Packaging::Ts);
    live.wait_segments(2).await;
    let origin = TestOrigin::start().await;
    origin.serve_dir("/live/", &live.dir);
    for i in 0..objects {
        let script = Script::ok(payload(object_size(i), i as u8))
            .headers(&[("cache-control", "max-age=60"), ("etag", &format!("\"o{i}\""))])
            .ranges();
        origin.set(&format!("/vod/obj-{i}.bin"), script);
    }
    for i in 0..FAULTS {
        for kind in FAULT_KINDS {
            let body = payload(100_000, i as u8);
            let script = match kind {
                "truncate" => Script::ok(body).end(End::Truncate(40_000)),
                "reset" => Script::ok(body).end(End::Reset(40_000)),
                "stall" => Script::ok(body).end(End::Stall(40_000)),
                _ => Script::ok("overloaded").status(503).headers(&[]),
            };
            origin.set(&format!("/fault/{kind}-{i}.bin"), script);
        }
    }
    let config = format!(
        "[cache]\nmemory = \"{memory_mib}MiB\"\nmax_object = \"16MiB\"\n[[routes]]\nurl = \"{}\"\ntimeout = \"2s\"\ndownload_timeout = \"1s\"\n",
        origin.url()
    );
    let edge = Binary::start(&config);
    let pid = edge.pid();
    let base = format!("http://{}", edge.listen);
    let counts = Arc::new(Counts::default());
    let unexplained_samples = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);

    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        let (base, counts, samples) = (base.clone(), Arc::clone(&counts), Arc::clone(&unexplained_samples));
        clients.push(tokio::spawn(async move {
            let c = client();
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1));
            let mut newest = None::<String>;
            while Instant::now() < deadline {
                let roll = rng.next(100);
                // 80% of object requests go to a hot fifth of the objects.
                let object = if rng.next(10) < 8 {
                    rng.next(objects / 5)
                } else {
                    rng.next(objects)
                };
                let (path, range, fault) = match roll {
                    0..=49 => (format!("/vod/obj-{object}.bin"), None, false),
                    50..=59 => {
                        let size = object_size(object);
                        let first = rng.next(size);
                        let last = (first + rng.next(200_000)).min(size - 1);
                        (format!("/vod/obj-{object}.bin"), Some((first, last)), false)
                    }
                    60..=74 => ("/live/index.m3u8".to_owned(), None, false),
                    75..=89 => match &newest {
                        Some(seg) => (format!("/live/{seg}"), None, false),
                        None => ("/live/index.m3u8".to_owned(), None, false),
                    },
                    _ => {
                        let kind = FAULT_KINDS[rng.next(FAULT_KINDS.len())];
                        (format!("/fault/{kind}-{}.bin", rng.next(FAULTS)), None, true)
                    }
                };
                let header = range.map(|(a, b)| format!("bytes={a}-{b}"));
                let headers: Vec<(&str, &str)> = header.iter().map(|h| ("range", h.as_str())).collect();
                let got = send(&c, "GET", &format!("{base}{path}"), &headers).await;
                counts.requests.fetch_add(1, Ordering::Relaxed);
                let whole = match (&got.body, range) {
                    (Ok(body), Some((a, b))) => got.status == 206 && body.len() == b - a + 1,
                    (Ok(body), None) if path.starts_with("/vod/") => {
                        got.status == 200 && body.len() == object_size(object)
                    }
                    (Ok(_), None) => got.status == 200,
                    (Err(_), _) => false,
                };
                if let Ok(body) = &got.body {
                    counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    if path.ends_with(".m3u8") && whole {
                        newest = segment_uris(&String::from_utf8_lossy(body)).pop();
                    }
                }
                if whole {
                    continue;
                }
                // A live segment can leave the window between the playlist
                // and the request: a 404 there is the stream's, not a fault.
                let gone = path.ends_with(".ts") && got.status == 404;
                if fault {
                    counts.explained.fetch_add(1, Ordering::Relaxed);
                } else if !gone {
                    counts.unexplained.fetch_add(1, Ordering::Relaxed);
                    let mut s = samples.lock().unwrap();
                    if s.len() < 10 {
                        s.push(format!(
                            "{path} {range:?}: {} {:?}",
                            got.status,
                            got.body.as_ref().err()
                        ));
                    }
                }
            }
        }));
    }

    let mut samples = Vec::new();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < deadline {
        every.tick().await;
        samples.push(Sample {
            at: started.elapsed().as_secs_f64(),
            rss: rss(pid),
            fds: proc_count(pid, "fd"),
            threads: proc_count(pid, "task"),
        });
    }
    let cache_bytes = cache_bytes(&edge.admin).await;
    for c in clients {
        let _ = c.await;
    }
    // Once the load has stopped and the idle connections closed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = Sample {
        at: started.elapsed().as_secs_f64(),
        rss: rss(pid),
        fds: proc_count(pid, "fd"),
        threads: proc_count(pid, "task"),
    };
    let run = Run {
        seconds,
        memory_mib,
        objects,
        cache_bytes,
    };
    let report = report(&run, &samples, &after, &counts, &unexplained_samples.lock().unwrap());
    print!("{report}");
    std::fs::write("benches/SOAK.md", &report).expect("write benches/SOAK.md");
    std::fs::write("benches/soak.svg", plot(&samples)).expect("write benches/soak.svg");
    drop(edge);
    drop(live);
    let over = samples.last().is_some_and(|s| s.rss > run.rss_limit());
    if counts.unexplained.load(Ordering::Relaxed) > 0 || over {
        std::process::exit(1);
    }
}

/// What a soak run was asked to do, and the cache's fill at its end.
struct Run {
    seconds: u64,
    memory_mib: u64,
    objects: usize,
    cache_bytes: Option<u64>,
}

impl Run {
    /// The bound on resident memory: 1.1 × `cache.memory` + 64 MiB.
    fn rss_limit(&self) -> u64 {
        (self.memory_mib << 20) * 11 / 10 + (64 << 20)
    }
}

/// `outpost_cache_bytes` from the edge's metrics.
async fn cache_bytes(admin: &str) -> Option<u64> {
    let got = send(&client(), "GET", &format!("http://{admin}/metrics"), &[]).await;
    let text = String::from_utf8(got.body.ok()?.to_vec()).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("outpost_cache_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn report(run: &Run, samples: &[Sample], after: &Sample, counts: &Counts, unexplained: &[String]) -> String {
    let seconds = run.seconds;
    let mut out = String::new();
    let date = std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let _ = writeln!(out, "# Soak ({date})\n");
    let _ = writeln!(
        out,
        "`cargo bench --bench soak` (`SOAK_SECONDS={seconds}`, `SOAK_MEMORY_MIB={}`): the release binary with \
         `cache.memory = \"{}MiB\"`, {CLIENTS} clients on loopback, {} VOD objects of 50 KB to 1 MB (about {} MB in all, \
         three times the cache; max-age 60 s; 80% of the requests to a fifth of them, the rest misses that evict), \
         a live ffmpeg HLS stream, and one request in ten to an origin that truncates, resets, stalls or answers 503. \
         The clients, the origin and ffmpeg share the machine's cores with the edge.\n",
        run.memory_mib,
        run.memory_mib,
        run.objects,
        run.objects * MEAN_OBJECT / 1_000_000
    );
    let requests = counts.requests.load(Ordering::Relaxed);
    let _ = writeln!(out, "| figure | value |\n| --- | --- |");
    let _ = writeln!(
        out,
        "| requests | {requests} ({:.0}/s) |",
        requests as f64 / seconds as f64
    );
    let _ = writeln!(
        out,
        "| body bytes received | {:.0} MiB |",
        mib(counts.bytes.load(Ordering::Relaxed))
    );
    let _ = writeln!(
        out,
        "| errors on fault paths (explained) | {} |",
        counts.explained.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "| other errors (unexplained) | {} |",
        counts.unexplained.load(Ordering::Relaxed)
    );
    let at = |t: f64| samples.iter().find(|s| s.at >= t).or(samples.last());
    for t in [60.0, seconds as f64 / 2.0] {
        if let Some(s) = at(t) {
            let _ = writeln!(
                out,
                "| at {:.0} s: RSS, descriptors, threads | {:.1} MiB, {}, {} |",
                s.at,
                mib(s.rss),
                s.fds,
                s.threads
            );
        }
    }
    if let Some(s) = samples.last() {
        let _ = writeln!(
            out,
            "| at the end: RSS, descriptors, threads | {:.1} MiB, {}, {} |",
            mib(s.rss),
            s.fds,
            s.threads
        );
    }
    let max_rss = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    let _ = writeln!(out, "| highest RSS | {:.1} MiB |", mib(max_rss));
    if let Some(bytes) = run.cache_bytes {
        let _ = writeln!(
            out,
            "| cache held at the end (`outpost_cache_bytes`) | {:.1} MiB of {} MiB |",
            mib(bytes),
            run.memory_mib
        );
    }
    let end = samples.last().map_or(0, |s| s.rss);
    let _ = writeln!(
        out,
        "| bound: 1.1 × cache.memory + 64 MiB | {:.1} MiB: {} (RSS at the end {:.1} MiB) |",
        mib(run.rss_limit()),
        if end <= run.rss_limit() { "met" } else { "NOT met" },
        mib(end)
    );
    let half: Vec<&Sample> = samples.iter().filter(|s| s.at >= seconds as f64 / 2.0).collect();
    if let (Some(first), Some(last)) = (half.first(), half.last()) {
        let minutes = (last.at - first.at) / 60.0;
        let slope = (mib(last.rss) - mib(first.rss)) / minutes.max(1e-9);
        let _ = writeln!(out, "| RSS change over the second half | {slope:+.2} MiB/min |");
        let fds = half.iter().map(|s| s.fds);
        let _ = writeln!(
            out,
            "| descriptors over the second half | {} to {} |",
            fds.clone().min().unwrap_or(0),
            fds.max().unwrap_or(0)
        );
    }
    let _ = writeln!(
        out,
        "| 3 s after the load: RSS, descriptors, threads | {:.1} MiB, {}, {} |",
        mib(after.rss),
        after.fds,
        after.threads
    );
    if !unexplained.is_empty() {
        let _ = writeln!(out, "\nFirst unexplained errors:\n");
        for e in unexplained {
            let _ = writeln!(out, "- {e}");
        }
    }
    let _ = writeln!(out, "\n![RSS and descriptors over the run](soak.svg)");
    out
}

/// RSS (MiB) and open descriptors over time, as an SVG line chart.
fn plot(samples: &[Sample]) -> String {
    let (w, h, pad) = (800.0, 300.0, 40.0);
    let end = samples.last().map_or(1.0, |s| s.at).max(1.0);
    let top_rss = samples.iter().map(|s| mib(s.rss)).fold(1.0, f64::max) * 1.1;
    let top_fds = samples.iter().map(|s| s.fds as f64).fold(1.0, f64::max) * 1.1;
    let line = |value: &dyn Fn(&Sample) -> f64, top: f64| -> String {
        samples
            .iter()
            .map(|s| {
                let x = pad + (w - 2.0 * pad) * s.at / end;
                let y = h - pad - (h - 2.0 * pad) * value(s) / top;
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <line x1=\"{pad}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#888\"/>\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{y0}\" stroke=\"#888\"/>\
         <polyline fill=\"none\" stroke=\"#c0392b\" stroke-width=\"1.5\" points=\"{rss}\"/>\
         <polyline fill=\"none\" stroke=\"#2471a3\" stroke-width=\"1.5\" points=\"{fds}\"/>\
         <text x=\"{pad}\" y=\"20\" fill=\"#c0392b\">RSS, MiB (top {top_rss:.0})</text>\
         <text x=\"300\" y=\"20\" fill=\"#2471a3\">open descriptors (top {top_fds:.0})</text>\
         <text x=\"{x1}\" y=\"{ylabel}\" text-anchor=\"end\">{end:.0} s</text>\
         <text x=\"{pad}\" y=\"{ylabel}\">0 s</text></svg>",
        y0 = h - pad,
        x1 = w - pad,
        ylabel = h - pad + 16.0,
        rss = line(&|s| mib(s.rss), top_rss),
        fds = line(&|s| s.fds as f64, top_fds),
    );
    svg
}
