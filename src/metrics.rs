//! Metric names (as in CONTRACT.md) and the registry behind `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::outcome::Outcome;

type Label = [(&'static str, &'static str); 1];

const SOURCES: [&str; 2] = ["origin", "peer"];
const PREFETCH_RESULTS: [&str; 3] = ["fetched", "cached", "failed"];

/// Why a connection was closed or a request refused by a limit
/// (`outpost_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `server.max_connections_per_ip`: closed at once.
    PerIp,
    /// `server.max_connections`: 503, then closed.
    MaxConnections,
    /// `server.idle_timeout`: no request in flight for that long.
    Idle,
    /// `server.header_timeout`: a request head that did not arrive in time.
    HeaderTimeout,
    /// `server.send_timeout`: a client that took none of its answer.
    SendTimeout,
    /// 400: a malformed request, or one with a body where none belongs.
    BadRequest,
    /// 431: a request head over `server.max_header_size`.
    HeadersTooLarge,
}

impl Refusal {
    const ALL: [Refusal; 7] = [
        Refusal::PerIp,
        Refusal::MaxConnections,
        Refusal::Idle,
        Refusal::HeaderTimeout,
        Refusal::SendTimeout,
        Refusal::BadRequest,
        Refusal::HeadersTooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PerIp => "per_ip",
            Refusal::MaxConnections => "max_connections",
            Refusal::Idle => "idle",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::SendTimeout => "send_timeout",
            Refusal::BadRequest => "bad_request",
            Refusal::HeadersTooLarge => "headers_too_large",
        }
    }
}

/// Kinds of failed upstream fetches (`outpost_upstream_errors_total{reason}`):
/// what the client is not told, the metric counts and the log details.
const UPSTREAM_ERRORS: [&str; 8] = [
    "unreachable",
    "header_timeout",
    "bad_response",
    "stalled",
    "short",
    "broken",
    "blocked",
    "abandoned",
];

fn series<const N: usize>(
    family: &Family<Label, Counter>,
    name: &'static str,
    labels: [&'static str; N],
) -> [Counter; N] {
    labels.map(|label| family.get_or_create(&[(name, label)]).clone())
}

fn index(labels: &[&str], label: &str) -> usize {
    labels
        .iter()
        .position(|l| *l == label)
        .unwrap_or_else(|| panic!("unknown metric label {label:?}"))
}

/// Every metric the edge exports. Counters are pre-created per label so that
/// counting on the request path is one atomic add.
pub struct Metrics {
    registry: Registry,
    /// Indexed like `Outcome::ALL_LABELS`.
    requests: [Counter; 6],
    pub response_bytes: Counter,
    /// Body bytes of those that went out with sendfile(2) instead of a copy.
    pub sendfile_bytes: Counter,
    /// Indexed like `SOURCES`.
    upstream_requests: [Counter; 2],
    upstream_bytes: [Counter; 2],
    /// Indexed like `PREFETCH_RESULTS`.
    prefetch: [Counter; 3],
    pub cache_bytes: Gauge,
    pub cache_objects: Gauge,
    pub inflight_fetches: Gauge,
    /// Bytes that fills under way hold against their budget.
    pub fill_bytes: Gauge,
    /// Indexed like `Refusal::ALL`.
    refused: [Counter; 7],
    /// Indexed like `UPSTREAM_ERRORS`.
    upstream_errors: [Counter; 8],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Label, Counter>::default();
        let response_bytes = Counter::default();
        let sendfile_bytes = Counter::default();
        let upstream_requests = Family::<Label, Counter>::default();
        let upstream_bytes = Family::<Label, Counter>::default();
        let prefetch = Family::<Label, Counter>::default();
        let cache_bytes = Gauge::default();
        let cache_objects = Gauge::default();
        let inflight_fetches = Gauge::default();
        let fill_bytes = Gauge::default();
        let refused = Family::<Label, Counter>::default();
        let upstream_errors = Family::<Label, Counter>::default();
        // prometheus-client appends `_total` to counters.
        registry.register("outpost_requests", "Client requests by cache outcome", requests.clone());
        registry.register(
            "outpost_response_bytes",
            "Body bytes sent to clients",
            response_bytes.clone(),
        );
        registry.register(
            "outpost_sendfile_bytes",
            "Body bytes sent to clients with sendfile(2), not copied",
            sendfile_bytes.clone(),
        );
        registry.register(
            "outpost_upstream_requests",
            "Fetches the edge made, prefetches included",
            upstream_requests.clone(),
        );
        registry.register(
            "outpost_upstream_bytes",
            "Body bytes received upstream",
            upstream_bytes.clone(),
        );
        registry.register("outpost_prefetch", "Prefetch decisions", prefetch.clone());
        registry.register(
            "outpost_cache_bytes",
            "Bytes held in the cache now",
            cache_bytes.clone(),
        );
        registry.register(
            "outpost_cache_objects",
            "Objects held in the cache now",
            cache_objects.clone(),
        );
        registry.register(
            "outpost_inflight_fetches",
            "Upstream fetches under way now",
            inflight_fetches.clone(),
        );
        registry.register(
            "outpost_fill_bytes",
            "Bytes that fills under way hold against their share of cache.memory",
            fill_bytes.clone(),
        );
        registry.register(
            "outpost_refused",
            "Connections closed and requests refused by a limit, by the limit",
            refused.clone(),
        );
        registry.register(
            "outpost_upstream_errors",
            "Upstream fetches that failed, by kind (the log names the origin and the cause)",
            upstream_errors.clone(),
        );
        // Every labelled series exists from the start, so dashboards see zeros, not gaps.
        Self {
            registry,
            requests: series(&requests, "cache", Outcome::ALL_LABELS),
            response_bytes,
            sendfile_bytes,
            upstream_requests: series(&upstream_requests, "source", SOURCES),
            upstream_bytes: series(&upstream_bytes, "source", SOURCES),
            prefetch: series(&prefetch, "result", PREFETCH_RESULTS),
            cache_bytes,
            cache_objects,
            inflight_fetches,
            fill_bytes,
            refused: series(&refused, "reason", Refusal::ALL.map(Refusal::as_str)),
            upstream_errors: series(&upstream_errors, "reason", UPSTREAM_ERRORS),
        }
    }

    pub fn refused(&self, why: Refusal) {
        self.refused_counter(why).inc();
    }

    /// The counter behind one refusal reason, for code that counts without
    /// holding the metrics (a connection's send timeout).
    pub fn refused_counter(&self, why: Refusal) -> &Counter {
        let i = Refusal::ALL.iter().position(|r| *r == why).unwrap_or_default();
        &self.refused[i]
    }

    pub fn refused_of(&self, why: Refusal) -> u64 {
        self.refused_counter(why).get()
    }

    pub fn upstream_errors_of(&self, kind: &str) -> u64 {
        self.upstream_errors[index(&UPSTREAM_ERRORS, kind)].get()
    }

    /// Counts a failed upstream fetch by its kind (`FetchError::kind`).
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors[index(&UPSTREAM_ERRORS, kind)].inc();
    }

    pub fn request(&self, outcome: Outcome) {
        self.requests[index(&Outcome::ALL_LABELS, outcome.as_str())].inc();
    }

    pub fn upstream_request(&self, source: &'static str) {
        self.upstream_requests[index(&SOURCES, source)].inc();
    }

    pub fn upstream_bytes(&self, source: &'static str, bytes: u64) {
        self.upstream_bytes[index(&SOURCES, source)].inc_by(bytes);
    }

    pub fn prefetch(&self, result: &'static str) {
        self.prefetch[index(&PREFETCH_RESULTS, result)].inc();
    }

    /// Reads one labelled counter (for `/status` and tests).
    pub fn requests_of(&self, outcome: &str) -> u64 {
        self.requests[index(&Outcome::ALL_LABELS, outcome)].get()
    }

    pub fn upstream_requests_of(&self, source: &str) -> u64 {
        self.upstream_requests[index(&SOURCES, source)].get()
    }

    pub fn upstream_bytes_of(&self, source: &str) -> u64 {
        self.upstream_bytes[index(&SOURCES, source)].get()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Guards a gauge for the life of a value: up on creation, down on drop.
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_contract_names() {
        let m = Metrics::new();
        m.request(Outcome::Hit);
        m.upstream_bytes("origin", 10);
        m.prefetch("cached");
        let text = m.render();
        for line in [
            "outpost_requests_total{cache=\"hit\"} 1",
            "outpost_requests_total{cache=\"collapsed\"} 0",
            "outpost_response_bytes_total 0",
            "outpost_upstream_requests_total{source=\"peer\"} 0",
            "outpost_upstream_bytes_total{source=\"origin\"} 10",
            "outpost_prefetch_total{result=\"cached\"} 1",
            "outpost_cache_bytes 0",
            "outpost_cache_objects 0",
            "outpost_inflight_fetches 0",
            "outpost_refused_total{reason=\"per_ip\"} 0",
            "outpost_refused_total{reason=\"idle\"} 0",
            "outpost_upstream_errors_total{reason=\"broken\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
