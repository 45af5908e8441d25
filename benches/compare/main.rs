//! outpost against nginx, Varnish and Apache Traffic Server on this machine,
//! in one run: `cargo bench --bench compare`. Writes `benches/RESULTS.md`.
//!
//! Each proxy gets an equivalent cache in front of the same origin (an
//! in-process hyper server): nginx `proxy_cache` with `proxy_cache_lock`,
//! Varnish malloc storage, Traffic Server read-while-writer with
//! `open_write_fail_action` 5; all keep upstream connections alive. The proxy
//! runs pinned to CPU 0; this process (origin, storm and player clients) and
//! wrk / h2load to CPU 1. Proxies run interleaved (A B C D A B C D …) and the
//! tables give medians over rounds.
//!
//! Settings (environment): `COMPARE_ROUNDS` (3), `COMPARE_SECONDS` per hit
//! run (10), `COMPARE_LIVE_SECONDS` (60), `COMPARE_PLAYERS` (1000),
//! `COMPARE_ONLY` (a comma-separated subset: outpost,outpost+sendfile,nginx,varnish,trafficserver),
//! `COMPARE_NGINX_SENDFILE` (`on`, as nginx's tuning guide and Debian's
//! nginx.conf have it; `off`, nginx's built-in default), `COMPARE_PARTS` (a
//! comma-separated subset of hits,tls,storm,live,memory; all by default).
//!
//! The HTTPS rows (`tls`): TLS 1.3 with an ECDSA P-256 certificate on every
//! proxy that terminates TLS (Varnish has none of its own), ALPN h2 and
//! http/1.1, objects of 4 KiB (a playlist), 256 KiB and 2 MiB (segments).

#[path = "../common.rs"]
mod common;
mod live;
mod load;
mod memory;
mod proxies;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{env_or, ms, percentile, storm};
use load::{Hits, Protocol};
use proxies::{Budget, Certificate, Kind, Proxy};
use support::{payload, Script, TestOrigin};

const PROXY_CPU: usize = 0;
const LOAD_CPU: usize = 1;
const STORM_CLIENTS: usize = 500;
const STORM_BYTES: usize = 2_000_000;
const HIT_CACHE: u64 = 2 << 30;
const MEMORY_CACHE: u64 = 1 << 30;

/// Installs the proxies and load generators from Debian's packages when missing.
fn ensure_tools() {
    let wanted = [
        ("nginx", "nginx-light"),
        ("varnishd", "varnish"),
        ("traffic_server", "trafficserver"),
        ("wrk", "wrk"),
        ("h2load", "nghttp2-client"),
        ("taskset", "util-linux"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(cmd, _)| {
            !Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {cmd}"))
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return;
    }
    eprintln!("installing {}", missing.join(" "));
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {}",
            missing.join(" ")
        ))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "installing {} failed (run as root?)", missing.join(" "));
    // Debian starts the packaged services; the benchmark runs its own.
    let _ = Command::new("sh")
        .arg("-c")
        .arg("service nginx stop; service varnish stop; service trafficserver stop")
        .output();
}

/// Medians of every figure, per proxy.
#[derive(Default)]
struct Figures(BTreeMap<(usize, &'static str), Vec<f64>>);

impl Figures {
    fn add(&mut self, kind: Kind, what: &'static str, value: f64) {
        let i = proxies::ALL.iter().position(|k| *k == kind).unwrap();
        self.0.entry((i, what)).or_default().push(value);
    }

    fn median(&self, kind: Kind, what: &'static str) -> Option<f64> {
        let i = proxies::ALL.iter().position(|k| *k == kind).unwrap();
        let mut v = self.0.get(&(i, what))?.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        Some(v[v.len() / 2])
    }
}

fn main() {
    ensure_tools();
    // Pin this process (origin, clients) to the load CPU before any thread starts.
    let _ = Command::new("taskset")
        .args(["-cp", &LOAD_CPU.to_string(), &std::process::id().to_string()])
        .output();
    let rounds = env_or("COMPARE_ROUNDS", 3) as usize;
    let seconds = env_or("COMPARE_SECONDS", 10);
    let live_seconds = env_or("COMPARE_LIVE_SECONDS", 60);
    let players = env_or("COMPARE_PLAYERS", 1000) as usize;
    let only = std::env::var("COMPARE_ONLY").unwrap_or_default().to_lowercase();
    let parts = std::env::var("COMPARE_PARTS").unwrap_or_default().to_lowercase();
    let part = |name: &str| parts.is_empty() || parts.split(',').any(|p| p.trim() == name);
    let kinds: Vec<Kind> = proxies::ALL
        .into_iter()
        .filter(|k| {
            only.is_empty()
                || only
                    .split(',')
                    .any(|o| k.name().to_lowercase().replace(' ', "") == o.trim())
        })
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let mut figures = Figures::default();
    rt.spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
        else {
            return;
        };
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        eprintln!("stopped: killing the running proxy");
        proxies::kill_running();
        std::process::exit(130);
    });
    rt.block_on(async {
        let origin = Arc::new(TestOrigin::start().await);
        let long = [("cache-control", "max-age=3600")];
        origin.set("/1k", Script::ok(payload(1024, 1)).headers(&long));
        origin.set("/1m", Script::ok(payload(1 << 20, 2)).headers(&long));
        for (path, len, seed) in TLS_OBJECTS {
            origin.set(path, Script::ok(payload(*len, *seed)).headers(&long));
        }
        let origin_port = origin.addr.port();

        for round in (0..rounds).filter(|_| part("hits") || part("tls") || part("storm")) {
            for &kind in &kinds {
                eprintln!("round {}/{rounds}: {}", round + 1, kind.name());
                let proxy = start(kind, origin_port, HIT_CACHE).await;
                if part("hits") || part("tls") {
                    warm(&proxy).await;
                }
                if part("hits") {
                    hit_runs(&proxy, seconds, &mut figures).await;
                }
                if part("tls") && proxy.tls_port.is_some() {
                    tls_runs(&proxy, seconds, &mut figures).await;
                }
                if part("storm") {
                    cold_storm(&proxy, &origin, round, &mut figures).await;
                }
            }
        }
        for &kind in kinds.iter().filter(|_| part("live")) {
            eprintln!("live fan-out: {}", kind.name());
            let proxy = start(kind, origin_port, HIT_CACHE).await;
            let stream = format!("live-{}", kind.name().replace(' ', "").to_lowercase());
            let f = live::fan_out(&origin, &[proxy.url("")], &stream, players, live_seconds).await;
            figures.add(kind, "live_origin_max", f.origin_max as f64);
            figures.add(kind, "live_origin_mean", f.origin_mean);
            figures.add(kind, "live_p50", f.delay_p50.as_secs_f64());
            figures.add(kind, "live_p99", f.delay_p99.as_secs_f64());
            figures.add(kind, "live_downloads", f.downloads as f64);
            figures.add(kind, "live_errors", f.errors as f64);
        }
        for &kind in kinds.iter().filter(|_| part("memory")) {
            eprintln!("memory: {}", kind.name());
            let proxy = start(kind, origin_port, MEMORY_CACHE).await;
            warm(&proxy).await;
            let m = memory::measure(&proxy, &origin, MEMORY_CACHE).await;
            figures.add(kind, "rss_full", m.full_rss as f64);
            figures.add(kind, "cache_files", m.cache_files as f64);
            figures.add(kind, "per_idle", m.per_idle_connection);
        }
    });
    let report = report(&figures, &kinds, rounds, seconds, live_seconds, players);
    // A partial run (some proxies or some parts) is printed, and leaves the
    // full run's table in place.
    if only.is_empty() && parts.is_empty() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/RESULTS.md");
        std::fs::write(path, &report).expect("writing benches/RESULTS.md");
    } else {
        eprintln!("a partial run (COMPARE_ONLY or COMPARE_PARTS): benches/RESULTS.md left as it was");
    }
    println!("{report}");
}

async fn start(kind: Kind, origin_port: u16, bytes: u64) -> Proxy {
    tokio::task::spawn_blocking(move || Proxy::start(kind, origin_port, &Budget { bytes }, certificate(), PROXY_CPU))
        .await
        .expect("proxy start")
}

/// The HTTPS rows' objects: a playlist's size and two segments'.
const TLS_OBJECTS: &[(&str, usize, u8)] = &[("/4k", 4 << 10, 3), ("/256k", 256 << 10, 4), ("/2m", 2 << 20, 5)];

/// The certificate every proxy serves: ECDSA P-256 (rcgen's default key),
/// self-signed for 127.0.0.1, written once per run.
fn certificate() -> &'static Certificate {
    static CERT: std::sync::OnceLock<Certificate> = std::sync::OnceLock::new();
    CERT.get_or_init(|| {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("a certificate");
        assert_eq!(made.key_pair.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
        let dir = std::env::temp_dir().join(format!("outpost-compare-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a folder for the certificate");
        let cert = Certificate {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&cert.cert, made.cert.pem()).expect("cert.pem");
        std::fs::write(&cert.key, made.key_pair.serialize_pem()).expect("key.pem");
        cert
    })
}

/// The HTTPS rows for one proxy: hits per CPU-second over h2 and http/1.1,
/// new connections per CPU-second, and p99 latency at a fixed rate.
async fn tls_runs(proxy: &Proxy, seconds: u64, figures: &mut Figures) {
    for (i, (path, _, _)) in TLS_OBJECTS.iter().enumerate() {
        let url = proxy.tls_url(path).expect("a TLS listener");
        for (j, protocol) in [Protocol::H2Tls, Protocol::H1Tls].into_iter().enumerate() {
            let h1 = matches!(protocol, Protocol::H1Tls);
            let hits: Hits = tokio::task::block_in_place(|| load::run(proxy, protocol, &url, 64, seconds, LOAD_CPU));
            figures.add(proxy.kind, TLS_KEYS[i][j][0], hits.per_second);
            figures.add(proxy.kind, TLS_KEYS[i][j][1], hits.per_cpu_second);
            // A fixed rate well below every proxy's capacity: what a viewer waits.
            let (clients, rps) = TLS_RATES[i];
            let p99 = tokio::task::block_in_place(|| load::p99_at_rate(&url, h1, clients, rps, seconds, LOAD_CPU));
            if let Some(p99) = p99 {
                figures.add(proxy.kind, TLS_KEYS[i][j][2], p99.as_secs_f64());
            }
        }
    }
    let url = proxy.tls_url("/4k").expect("a TLS listener");
    let per_cpu = tokio::task::block_in_place(|| load::handshakes(proxy, &url, 2000, LOAD_CPU));
    figures.add(proxy.kind, "tls_handshakes_cpu", per_cpu);
}

/// Figure names per object (4k, 256k, 2m) and ALPN (h2, http/1.1): requests
/// per second, per proxy CPU-second, p99 at a fixed rate.
const TLS_KEYS: [[[&str; 3]; 2]; 3] = [
    [
        ["tls_h2_4k", "tls_h2_4k_cpu", "tls_h2_4k_p99"],
        ["tls_h1_4k", "tls_h1_4k_cpu", "tls_h1_4k_p99"],
    ],
    [
        ["tls_h2_256k", "tls_h2_256k_cpu", "tls_h2_256k_p99"],
        ["tls_h1_256k", "tls_h1_256k_cpu", "tls_h1_256k_p99"],
    ],
    [
        ["tls_h2_2m", "tls_h2_2m_cpu", "tls_h2_2m_p99"],
        ["tls_h1_2m", "tls_h1_2m_cpu", "tls_h1_2m_p99"],
    ],
];

/// The fixed rate per object: connections, and requests per second each
/// (4 KiB: 1,000/s; 256 KiB: 200/s, 50 MiB/s; 2 MiB: 40/s, 80 MiB/s).
const TLS_RATES: [(usize, usize); 3] = [(20, 50), (20, 10), (20, 2)];

/// Puts the hit objects in the cache (nginx and others store on the first miss).
async fn warm(proxy: &Proxy) {
    let c = support::client();
    for path in ["/1k", "/1m", "/4k", "/256k", "/2m", "/1k", "/1m", "/4k", "/256k", "/2m"] {
        let got = support::get(&c, &proxy.url(path)).await;
        assert_eq!(got.status, 200, "{} {path}", proxy.kind.name());
    }
}

async fn hit_runs(proxy: &Proxy, seconds: u64, figures: &mut Figures) {
    let runs: [(&'static str, bool, &str); 4] = [
        ("h1_1k", false, "/1k"),
        ("h1_1m", false, "/1m"),
        ("h2_1k", true, "/1k"),
        ("h2_1m", true, "/1m"),
    ];
    for (name, h2, path) in runs {
        let (protocol, url) = match (h2, proxy.h2_url(path)) {
            (false, _) => (Protocol::Http1, proxy.url(path)),
            (true, Some(url)) => (Protocol::H2c, url),
            (true, None) => continue,
        };
        let hits: Hits = tokio::task::block_in_place(|| load::run(proxy, protocol, &url, 64, seconds, LOAD_CPU));
        figures.add(proxy.kind, name, hits.per_second);
        figures.add(proxy.kind, cpu_key(name), hits.per_cpu_second);
        if let Some((user, kernel, load)) = split_keys(name) {
            figures.add(proxy.kind, user, hits.user_us);
            figures.add(proxy.kind, kernel, hits.kernel_us);
            figures.add(proxy.kind, load, hits.load_us);
        }
    }
}

/// Where the CPU time of an HTTP/1.1 hit goes: the proxy's user space and
/// kernel, and the load generator, per request.
fn split_keys(name: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match name {
        "h1_1k" => Some(("h1_1k_user", "h1_1k_kernel", "h1_1k_load")),
        "h1_1m" => Some(("h1_1m_user", "h1_1m_kernel", "h1_1m_load")),
        _ => None,
    }
}

fn cpu_key(name: &str) -> &'static str {
    match name {
        "h1_1k" => "h1_1k_cpu",
        "h1_1m" => "h1_1m_cpu",
        "h2_1k" => "h2_1k_cpu",
        _ => "h2_1m_cpu",
    }
}

async fn cold_storm(proxy: &Proxy, origin: &TestOrigin, round: usize, figures: &mut Figures) {
    // A fresh object every time: 200 ms to first byte, then 4 MB/s.
    let path = format!("/cold-{}-{round}.ts", proxy.kind.name().replace(' ', ""));
    origin.set(
        &path,
        Script::ok(payload(STORM_BYTES, 7))
            .headers(&[("cache-control", "max-age=3600"), ("content-type", "video/mp2t")])
            .delay(Duration::from_millis(200))
            .throttle(40_000, Duration::from_millis(10)),
    );
    let s = storm(&proxy.url(&path), STORM_CLIENTS, STORM_BYTES).await;
    let kind = proxy.kind;
    figures.add(kind, "storm_origin", origin.hits(&path) as f64);
    // The origin's own time to first byte, from the same start as the clients':
    // the 200 ms it waits, plus how long the request took to reach it.
    if let Some(sent) = origin.first_sent(&path) {
        let own = (sent - s.start).as_secs_f64();
        figures.add(kind, "storm_origin_ttfb", own);
        figures.add(
            kind,
            "storm_ttfb_p99_over",
            percentile(&s.ttfb, 0.99).as_secs_f64() - own,
        );
        figures.add(
            kind,
            "storm_arrived_p99_over",
            percentile(&s.arrived, 0.99).as_secs_f64() - own,
        );
        eprintln!(
            "  storm: the origin's first byte at {:.1} ms; p99 after it: {:+.1} ms taken, {:+.1} ms at the socket",
            own * 1e3,
            (percentile(&s.ttfb, 0.99).as_secs_f64() - own) * 1e3,
            (percentile(&s.arrived, 0.99).as_secs_f64() - own) * 1e3,
        );
    }
    figures.add(kind, "storm_ttfb_p50", percentile(&s.ttfb, 0.5).as_secs_f64());
    figures.add(kind, "storm_ttfb_p99", percentile(&s.ttfb, 0.99).as_secs_f64());
    figures.add(kind, "storm_arrived_p50", percentile(&s.arrived, 0.5).as_secs_f64());
    figures.add(kind, "storm_arrived_p99", percentile(&s.arrived, 0.99).as_secs_f64());
    figures.add(kind, "storm_done_p50", percentile(&s.done, 0.5).as_secs_f64());
    figures.add(kind, "storm_done_p99", percentile(&s.done, 0.99).as_secs_f64());
    figures.add(kind, "storm_errors", s.errors as f64);
}

fn machine() -> String {
    let cpu = proxies::first_line("sh", &["-c", "lscpu | sed -n 's/^Model name: *//p'"]);
    let cores = proxies::first_line("nproc", &["--all"]);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or("?".to_owned(), |kb| format!("{:.0} GiB", kb as f64 / (1 << 20) as f64));
    let kernel = proxies::first_line("uname", &["-r"]);
    format!("{cpu}, {cores} cores, {mem} RAM, Linux {kernel}")
}

fn report(f: &Figures, kinds: &[Kind], rounds: usize, seconds: u64, live_seconds: u64, players: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# outpost against nginx, Varnish and Traffic Server\n");
    let _ = writeln!(
        out,
        "Written by `cargo bench --bench compare` (COMPARE_ROUNDS={rounds} COMPARE_SECONDS={seconds} \
         COMPARE_LIVE_SECONDS={live_seconds} COMPARE_PLAYERS={players} COMPARE_NGINX_SENDFILE={}).\n",
        proxies::nginx_sendfile()
    );
    let _ = writeln!(out, "- Machine: {}", machine());
    for k in kinds {
        let _ = writeln!(out, "- {}: {}", k.name(), k.version());
    }
    let _ = writeln!(
        out,
        "- Load: {}; {}",
        proxies::first_line("wrk", &["-v"]),
        proxies::first_line("h2load", &["--version"])
    );
    let _ = writeln!(
        out,
        "- Each proxy pinned to CPU {PROXY_CPU}; origin, clients, wrk and h2load to CPU {LOAD_CPU}. \
         Proxies run interleaved; figures are medians over {rounds} rounds (live fan-out and memory: one run each).\n"
    );

    let header = |out: &mut String, first: &str| {
        let _ = write!(out, "| {first} |");
        for k in kinds {
            let _ = write!(out, " {} |", k.name());
        }
        let _ = write!(out, "\n| --- |");
        for _ in kinds {
            let _ = write!(out, " ---: |");
        }
        out.push('\n');
    };
    let row = |out: &mut String, label: &str, cell: &dyn Fn(Kind) -> String| {
        let _ = write!(out, "| {label} |");
        for &k in kinds {
            let _ = write!(out, " {} |", cell(k));
        }
        out.push('\n');
    };
    let num = |v: Option<f64>, fmt: &dyn Fn(f64) -> String| v.map_or("n/a".to_owned(), fmt);

    let _ = writeln!(out, "## Cache hits: requests/s, and requests per proxy CPU-second\n");
    let _ = writeln!(out, "64 keep-alive connections for {seconds} s; HTTP/2 is h2c with prior knowledge (Traffic Server has HTTP/2 only over TLS).\n");
    header(&mut out, "object, protocol");
    for (label, name, cpu) in [
        ("1 KiB, HTTP/1.1", "h1_1k", "h1_1k_cpu"),
        ("1 MiB, HTTP/1.1", "h1_1m", "h1_1m_cpu"),
        ("1 KiB, HTTP/2", "h2_1k", "h2_1k_cpu"),
        ("1 MiB, HTTP/2", "h2_1m", "h2_1m_cpu"),
    ] {
        row(&mut out, label, &|k| match (f.median(k, name), f.median(k, cpu)) {
            (Some(r), Some(c)) if r > 0.0 => format!("{r:.0} · {c:.0}/CPU-s"),
            _ => "n/a".to_owned(),
        });
    }
    let _ = writeln!(
        out,
        "\nCPU time per HTTP/1.1 hit: the proxy's user space + kernel (from /proc: utime and stime), \
         and the load generator's (wrk's user + kernel, from getrusage). On loopback one side's kernel \
         often does the other's work: delivering a response to the client's socket, or sending queued \
         data when the client's acknowledgement arrives. Their sum is the whole machine's cost.\n"
    );
    header(&mut out, "object");
    for (label, user, kernel, load) in [
        ("1 KiB", "h1_1k_user", "h1_1k_kernel", "h1_1k_load"),
        ("1 MiB", "h1_1m_user", "h1_1m_kernel", "h1_1m_load"),
    ] {
        row(
            &mut out,
            label,
            &|k| match (f.median(k, user), f.median(k, kernel), f.median(k, load)) {
                (Some(u), Some(s), Some(l)) if u + s > 0.0 => format!("{u:.1} + {s:.1} µs · load {l:.1} µs"),
                _ => "n/a".to_owned(),
            },
        );
    }
    let outposts: Vec<Kind> = kinds.iter().copied().filter(|k| k.is_outpost()).collect();
    for (label, cpu) in [("1 KiB", "h1_1k_cpu"), ("1 MiB", "h1_1m_cpu")] {
        let best_other = kinds
            .iter()
            .filter(|k| !k.is_outpost())
            .filter_map(|k| f.median(*k, cpu).map(|v| (v, k.name())))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        for ours in &outposts {
            if let (Some(value), Some((theirs, name))) = (f.median(*ours, cpu), best_other) {
                let _ = writeln!(
                    out,
                    "\n{label} HTTP/1.1 hits per proxy CPU-second: {} {value:.0}, best other {name} {theirs:.0}: **{:.2}×**.",
                    ours.name(),
                    value / theirs
                );
            }
        }
    }
    // The proxy's CPU alone can flatter a change that moves work to the
    // client's side of loopback; the whole machine's cost cannot be moved.
    for (label, keys) in [
        ("1 KiB", ["h1_1k_user", "h1_1k_kernel", "h1_1k_load"]),
        ("1 MiB", ["h1_1m_user", "h1_1m_kernel", "h1_1m_load"]),
    ] {
        let whole = |k: Kind| keys.iter().map(|key| f.median(k, key)).sum::<Option<f64>>();
        let least_other = kinds
            .iter()
            .filter(|k| !k.is_outpost())
            .filter_map(|k| whole(*k).map(|v| (v, k.name())))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        for ours in &outposts {
            if let (Some(value), Some((theirs, name))) = (whole(*ours), least_other) {
                let _ = writeln!(
                    out,
                    "\n{label} HTTP/1.1 hit, whole machine (proxy + load generator): {} {value:.1} µs, \
                     least other {name} {theirs:.1} µs: **{:.2}×** as many hits per CPU-second.",
                    ours.name(),
                    theirs / value
                );
            }
        }
    }

    if kinds.iter().any(|&k| f.median(k, "tls_h2_4k_cpu").is_some()) {
        let _ = writeln!(
            out,
            "\n## HTTPS: TLS 1.3, ECDSA P-256\n\n64 keep-alive connections for {seconds} s per row (h2load; \
             `--h1` for http/1.1). Varnish has no TLS of its own and is left out. Requests per second \
             · per proxy CPU-second:\n"
        );
        header(&mut out, "object, ALPN");
        for (i, object) in ["4 KiB", "256 KiB", "2 MiB"].iter().enumerate() {
            for (j, alpn) in ["h2", "http/1.1"].iter().enumerate() {
                let [rate, cpu, _] = TLS_KEYS[i][j];
                row(
                    &mut out,
                    &format!("{object}, {alpn}"),
                    &|k| match (f.median(k, rate), f.median(k, cpu)) {
                        (Some(r), Some(c)) if r > 0.0 => format!("{r:.0} · {c:.0}/CPU-s"),
                        _ => "n/a".to_owned(),
                    },
                );
            }
        }
        row(
            &mut out,
            "new connections (handshake + one 4 KiB request, h2) per proxy CPU-second",
            &|k| num(f.median(k, "tls_handshakes_cpu"), &|v| format!("{v:.0}")),
        );
        let _ = writeln!(
            out,
            "\np99 latency at a fixed rate (20 keep-alive connections; 4 KiB: 1,000 requests/s, \
             256 KiB: 200/s, 2 MiB: 40/s), from h2load's per-request log:\n"
        );
        header(&mut out, "object, ALPN");
        for (i, object) in ["4 KiB", "256 KiB", "2 MiB"].iter().enumerate() {
            for (j, alpn) in ["h2", "http/1.1"].iter().enumerate() {
                let p99 = TLS_KEYS[i][j][2];
                row(&mut out, &format!("{object}, {alpn}"), &|k| {
                    num(f.median(k, p99), &|v| format!("{:.2} ms", v * 1e3))
                });
            }
        }
        for (i, object) in ["4 KiB", "256 KiB", "2 MiB"].iter().enumerate() {
            for (j, alpn) in ["h2", "http/1.1"].iter().enumerate() {
                let cpu = TLS_KEYS[i][j][1];
                let best_other = kinds
                    .iter()
                    .filter(|k| !k.is_outpost())
                    .filter_map(|k| f.median(*k, cpu).map(|v| (v, k.name())))
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                if let (Some(value), Some((theirs, name))) = (f.median(Kind::Outpost, cpu), best_other) {
                    let _ = writeln!(
                        out,
                        "\n{object} HTTPS ({alpn}) hits per proxy CPU-second: outpost {value:.0}, best other {name} {theirs:.0}: **{:.2}×**.",
                        value / theirs
                    );
                }
            }
        }
    }

    let _ = writeln!(
        out,
        "\n## Cold storm\n\n{STORM_CLIENTS} clients ask at once for a cold 2 MB object; the origin takes 200 ms to the first byte, then sends 4 MB/s.\n"
    );
    header(&mut out, "");
    let secs = |v: f64| ms(Duration::from_secs_f64(v));
    row(&mut out, "origin requests", &|k| {
        num(f.median(k, "storm_origin"), &|v| format!("{v:.0}"))
    });
    row(&mut out, "origin's first byte sent", &|k| {
        num(f.median(k, "storm_origin_ttfb"), &secs)
    });
    row(&mut out, "TTFB p50", &|k| num(f.median(k, "storm_ttfb_p50"), &secs));
    row(&mut out, "TTFB p99", &|k| num(f.median(k, "storm_ttfb_p99"), &secs));
    row(&mut out, "TTFB p99 after the origin's first byte", &|k| {
        num(f.median(k, "storm_ttfb_p99_over"), &|v| {
            format!("{:+.0} ms", v * 1000.0)
        })
    });
    row(&mut out, "first body byte at the client's socket, p50", &|k| {
        num(f.median(k, "storm_arrived_p50"), &secs)
    });
    row(&mut out, "first body byte at the client's socket, p99", &|k| {
        num(f.median(k, "storm_arrived_p99"), &secs)
    });
    row(&mut out, "the same p99 after the origin's first byte", &|k| {
        num(f.median(k, "storm_arrived_p99_over"), &|v| {
            format!("{:+.0} ms", v * 1000.0)
        })
    });
    row(&mut out, "complete p50", &|k| num(f.median(k, "storm_done_p50"), &secs));
    row(&mut out, "complete p99", &|k| num(f.median(k, "storm_done_p99"), &secs));
    row(&mut out, "errors", &|k| {
        num(f.median(k, "storm_errors"), &|v| format!("{v:.0}"))
    });
    let _ = writeln!(
        out,
        "\nThe target: TTFB p99 within 30 ms of the origin's own first byte (the time it sent \
         its first body bytes, from the same start as the clients), and no worse than Varnish's. \
         The rows at the client's socket are the kernel's receive timestamps; the TTFB rows add \
         the time the clients (all {STORM_CLIENTS} on one CPU, with the origin) took to read them."
    );

    let _ = writeln!(
        out,
        "\n## Live fan-out\n\n{players} simulated players follow a live HLS playlist (2 s segments of 250 KB, \
         `max-age=1` on the playlist) for {live_seconds} s, each reloading it every {} ms and downloading \
         each new segment.\n",
        live::POLL.as_millis()
    );
    header(&mut out, "");
    row(&mut out, "origin requests per segment, max", &|k| {
        num(f.median(k, "live_origin_max"), &|v| format!("{v:.0}"))
    });
    row(&mut out, "origin requests per segment, mean", &|k| {
        num(f.median(k, "live_origin_mean"), &|v| format!("{v:.2}"))
    });
    row(&mut out, "publication → first byte, p50", &|k| {
        num(f.median(k, "live_p50"), &secs)
    });
    row(&mut out, "publication → first byte, p99", &|k| {
        num(f.median(k, "live_p99"), &secs)
    });
    row(&mut out, "segment downloads", &|k| {
        num(f.median(k, "live_downloads"), &|v| format!("{v:.0}"))
    });
    row(&mut out, "errors", &|k| {
        num(f.median(k, "live_errors"), &|v| format!("{v:.0}"))
    });

    let _ = writeln!(
        out,
        "\n## Memory\n\nRSS of the proxy's processes once a 1 GiB cache budget is full of 2 MB segments \
         (1.25 GiB requested through it), and RSS growth per idle keep-alive connection ({} connections).\n",
        memory::IDLE_CONNECTIONS
    );
    header(&mut out, "");
    let mib = |v: f64| format!("{:.0} MiB", v / (1 << 20) as f64);
    row(&mut out, "RSS, cache full", &|k| num(f.median(k, "rss_full"), &mib));
    row(&mut out, "cache in tmpfs files (not in RSS)", &|k| {
        num(f.median(k, "cache_files"), &mib)
    });
    row(&mut out, "per idle connection", &|k| {
        num(f.median(k, "per_idle"), &|v| format!("{:.1} KiB", v / 1024.0))
    });
    out
}
