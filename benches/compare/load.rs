//! Hit-path load with wrk (HTTP/1.1) and h2load (h2c), pinned to the load CPU,
//! and the proxy's CPU time read around each run.

use std::process::Command;
use std::time::{Duration, Instant};

use super::proxies::Proxy;

/// One hit-path run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hits {
    pub per_second: f64,
    /// Requests per second of the proxy's own CPU time.
    pub per_cpu_second: f64,
    /// The proxy's CPU time per request in user space and in the kernel, µs.
    pub user_us: f64,
    pub kernel_us: f64,
    /// The load generator's CPU time per request, µs: on loopback, work the
    /// proxy saves can land on the client's side (sendfile does this).
    pub load_us: f64,
}

pub enum Protocol {
    Http1,
    H2c,
    /// HTTPS, ALPN h2.
    H2Tls,
    /// HTTPS, ALPN http/1.1 (h2load `--h1`).
    H1Tls,
}

/// `connections` keep-alive connections asking for `url` for `seconds`.
pub fn run(proxy: &Proxy, protocol: Protocol, url: &str, connections: usize, seconds: u64, cpu: usize) -> Hits {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(cpu.to_string());
    match protocol {
        Protocol::Http1 => {
            cmd.args(["wrk", "-t1"])
                .arg(format!("-c{connections}"))
                .arg(format!("-d{seconds}s"))
                .arg(url);
        }
        Protocol::H2c | Protocol::H2Tls | Protocol::H1Tls => {
            // Windows of 2^30 so that flow control does not pace 1 MiB bodies.
            cmd.args(["h2load", "-t1", "-m1", "-w30", "-W30"])
                .arg(format!("-c{connections}"))
                .arg(format!("-D{seconds}"))
                .arg(url);
            if matches!(protocol, Protocol::H1Tls) {
                cmd.arg("--h1");
            }
        }
    }
    let (user_before, kernel_before) = proxy.cpu_split();
    let started = Instant::now();
    let load_before = children_cpu();
    let out = cmd.output().expect("the load generator runs");
    let load = children_cpu().saturating_sub(load_before);
    let elapsed = started.elapsed();
    let (user_after, kernel_after) = proxy.cpu_split();
    let (user, kernel) = (
        user_after.saturating_sub(user_before),
        kernel_after.saturating_sub(kernel_before),
    );
    let cpu = user + kernel;
    let text = String::from_utf8_lossy(&out.stdout);
    let requests = match protocol {
        Protocol::Http1 => wrk_requests(&text),
        _ => h2load_requests(&text),
    };
    let Some((requests, measured)) = requests else {
        eprintln!(
            "{}: no figures from the load generator for {url}:\n{text}\n{}",
            proxy.kind.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        return Hits::default();
    };
    let window = measured.unwrap_or(elapsed);
    let per_request_us = |d: Duration| d.as_secs_f64() * 1e6 / requests.max(1) as f64;
    Hits {
        user_us: per_request_us(user),
        kernel_us: per_request_us(kernel),
        load_us: per_request_us(load),
        per_second: requests as f64 / window.as_secs_f64(),
        per_cpu_second: if cpu.is_zero() {
            0.0
        } else {
            requests as f64 / cpu.as_secs_f64()
        },
    }
}

/// CPU time of the bench's children that have ended: around a run of the
/// load generator (the only child that ends then), its own.
fn children_cpu() -> Duration {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes to it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage to write.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// wrk: "  123456 requests in 10.00s, 1.23GB read", non-2xx counted as failures.
fn wrk_requests(text: &str) -> Option<(u64, Option<Duration>)> {
    let line = text.lines().find(|l| l.contains(" requests in "))?;
    let mut words = line.split_whitespace();
    let requests: u64 = words.next()?.parse().ok()?;
    let secs = words
        .nth(2)?
        .trim_end_matches(',')
        .trim_end_matches('s')
        .parse::<f64>()
        .ok()?;
    let failed: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    Some((requests.saturating_sub(failed), Some(Duration::from_secs_f64(secs))))
}

/// h2load: "requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, ..."
/// and "finished in 10.00s, ...".
fn h2load_requests(text: &str) -> Option<(u64, Option<Duration>)> {
    let line = text.lines().find(|l| l.starts_with("requests:"))?;
    let succeeded = line
        .split(',')
        .find_map(|part| part.trim().strip_suffix(" succeeded"))?
        .trim()
        .parse()
        .ok()?;
    let secs = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|rest| rest.split(',').next())
        .and_then(|s| s.trim().trim_end_matches('s').parse::<f64>().ok());
    Some((succeeded, secs.map(Duration::from_secs_f64)))
}

/// New HTTPS connections per second of the proxy's CPU: `count` clients
/// that each connect, shake hands (ALPN h2), make one request and leave,
/// offered at about 2,000 a second.
pub fn handshakes(proxy: &Proxy, url: &str, count: usize, cpu: usize) -> f64 {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(cpu.to_string())
        .args(["h2load", "-t1", "-m1", "-r20", "--rate-period=10ms"])
        .arg(format!("-c{count}"))
        .arg(format!("-n{count}"))
        .arg(url);
    let (user_before, kernel_before) = proxy.cpu_split();
    let out = cmd.output().expect("h2load runs");
    let (user_after, kernel_after) = proxy.cpu_split();
    let cpu = user_after.saturating_sub(user_before) + kernel_after.saturating_sub(kernel_before);
    let text = String::from_utf8_lossy(&out.stdout);
    match h2load_requests(&text) {
        Some((done, _)) if !cpu.is_zero() => done as f64 / cpu.as_secs_f64(),
        _ => {
            eprintln!("{}: no handshake figures for {url}:\n{text}", proxy.kind.name());
            0.0
        }
    }
}

/// The 99th percentile of request latency at a fixed rate: `clients`
/// keep-alive connections (ALPN h2, or http/1.1 with `h1`) each asking
/// `rps` times a second for `seconds`; from h2load's per-request log.
pub fn p99_at_rate(url: &str, h1: bool, clients: usize, rps: usize, seconds: u64, cpu: usize) -> Option<Duration> {
    let log = std::env::temp_dir().join(format!("outpost-compare-latency-{}.log", std::process::id()));
    let mut cmd = Command::new("taskset");
    cmd.arg("-c")
        .arg(cpu.to_string())
        .args(["h2load", "-t1", "-m1", "-w30", "-W30"])
        .arg(format!("-c{clients}"))
        .arg(format!("--rps={rps}"))
        .arg(format!("-D{seconds}"))
        .arg(format!("--log-file={}", log.display()))
        .arg(url);
    if h1 {
        cmd.arg("--h1");
    }
    let _ = cmd.output().expect("h2load runs");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    // Each line: start time (µs since the epoch), status, duration (µs).
    let mut micros: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, status, took) = (f.next()?, f.next()?, f.next()?);
            (status == "200").then(|| took.parse().ok()).flatten()
        })
        .collect();
    if micros.is_empty() {
        return None;
    }
    micros.sort_unstable();
    let at = ((micros.len() as f64) * 0.99).ceil() as usize;
    Some(Duration::from_micros(micros[at.clamp(1, micros.len()) - 1]))
}
