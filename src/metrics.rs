//! Metric names (as in CONTRACT.md) and the registry behind `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::outcome::Outcome;

type Pair = [(&'static str, &'static str); 1];

/// The values of one metric label: a fieldless enum whose variants, in
/// order, are its series. Counting goes by the variant's index, so there is
/// no unknown label to look up or to panic on.
pub trait Label: Copy + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    fn index(self) -> usize;
}

/// One counter per value of a label, all made up front: dashboards see
/// zeros, not gaps, and counting is one atomic add.
pub struct Series<L: Label> {
    counters: Vec<Counter>,
    label: std::marker::PhantomData<L>,
}

impl<L: Label> Series<L> {
    fn new(family: &Family<Pair, Counter>, name: &'static str) -> Self {
        let counters = L::ALL
            .iter()
            .map(|value| family.get_or_create(&[(name, value.as_str())]).clone())
            .collect();
        Self {
            counters,
            label: std::marker::PhantomData,
        }
    }

    pub fn inc(&self, value: L) {
        self.counters[value.index()].inc();
    }

    pub fn inc_by(&self, value: L, n: u64) {
        self.counters[value.index()].inc_by(n);
    }

    pub fn get(&self, value: L) -> u64 {
        self.counters[value.index()].get()
    }

    /// The counter behind one value, for code that counts without holding
    /// the metrics (a connection's send timeout).
    pub fn counter(&self, value: L) -> &Counter {
        &self.counters[value.index()]
    }
}

/// Declares a fieldless label enum with its label texts.
macro_rules! label {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vdoc])* $variant,)+ }

        impl $name {
            /// The label's text.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl Label for $name {
            const ALL: &'static [Self] = &[$($name::$variant,)+];
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label! {
    /// Where an upstream fetch went (`source`).
    SourceKind {
        Origin => "origin",
        Peer => "peer",
    }
}

label! {
    /// What became of a prefetch decision (`result`).
    PrefetchResult {
        /// Fetched upstream.
        Fetched => "fetched",
        /// Skipped: cached or on its way already.
        Cached => "cached",
        /// The fetch failed.
        Failed => "failed",
    }
}

label! {
    /// Why a connection was closed or a request refused by a limit
    /// (`outpost_refused_total{reason}`).
    Refusal {
        /// `server.max_connections_per_ip`: closed at once.
        PerIp => "per_ip",
        /// `server.max_connections`: 503, then closed.
        MaxConnections => "max_connections",
        /// `server.idle_timeout`: no request in flight for that long.
        Idle => "idle",
        /// `server.header_timeout`: a request head that did not arrive in time.
        HeaderTimeout => "header_timeout",
        /// `server.send_timeout`: a client that took none of its answer.
        SendTimeout => "send_timeout",
        /// 400: a malformed request, or one with a body where none belongs.
        BadRequest => "bad_request",
        /// 431: a request head over `server.max_header_size`.
        HeadersTooLarge => "headers_too_large",
        /// 403: a signed route's request without a valid token.
        Signature => "signature",
    }
}

label! {
    /// Kinds of failed upstream fetches (`outpost_upstream_errors_total{reason}`):
    /// what the client is not told, the metric counts and the log details.
    FetchFailure {
        Unreachable => "unreachable",
        HeaderTimeout => "header_timeout",
        /// An answer that broke the rules before its body (a header section too large).
        BadResponse => "bad_response",
        Stalled => "stalled",
        Short => "short",
        Broken => "broken",
        /// An LL-HLS blocking reload held too long.
        Blocked => "blocked",
        /// A broken body's rest, asked of the next source, was not the same bytes.
        Unspliceable => "unspliceable",
        /// The body did not match the digest its origin sent.
        DigestMismatch => "digest_mismatch",
        /// `media.stream_fetches` of the object's stream stayed busy.
        StreamBusy => "stream_busy",
        /// `routes[].max_fetches` of the object's route stayed busy.
        RouteBusy => "route_busy",
        /// Nobody waited for the fetch any more: not the origin's failure.
        Abandoned => "abandoned",
    }
}

impl Label for Outcome {
    const ALL: &'static [Self] = &Outcome::ALL;
    fn as_str(self) -> &'static str {
        Outcome::as_str(self)
    }
    fn index(self) -> usize {
        Outcome::index(self)
    }
}

/// Every metric the edge exports. Counters are pre-created per label so that
/// counting on the request path is one atomic add.
pub struct Metrics {
    registry: Registry,
    pub requests: Series<Outcome>,
    pub response_bytes: Counter,
    /// Body bytes of those that went out with sendfile(2) instead of a copy.
    pub sendfile_bytes: Counter,
    pub upstream_requests: Series<SourceKind>,
    pub upstream_bytes: Series<SourceKind>,
    pub prefetch: Series<PrefetchResult>,
    pub cache_bytes: Gauge,
    pub cache_objects: Gauge,
    pub inflight_fetches: Gauge,
    /// Sibling edges known now, up and down (none until the fleet is built).
    pub cluster_up: Gauge,
    pub cluster_down: Gauge,
    /// Origins and backups of every route, in turn and taken out of turn.
    pub origins_up: Gauge,
    pub origins_down: Gauge,
    /// Bytes that fills under way hold against their budget.
    pub fill_bytes: Gauge,
    /// Bytes HTTPS connections have borrowed for larger writes.
    pub tls_burst_bytes: Gauge,
    pub refused: Series<Refusal>,
    pub upstream_errors: Series<FetchFailure>,
    /// Live streams that started over under the same segment names.
    pub stream_restarts: Counter,
    /// Config reloads put in place, and refused.
    pub reloads_ok: Counter,
    pub reloads_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Pair, Counter>::default();
        let response_bytes = Counter::default();
        let sendfile_bytes = Counter::default();
        let upstream_requests = Family::<Pair, Counter>::default();
        let upstream_bytes = Family::<Pair, Counter>::default();
        let prefetch = Family::<Pair, Counter>::default();
        let cache_bytes = Gauge::default();
        let cache_objects = Gauge::default();
        let inflight_fetches = Gauge::default();
        let cluster_members = Family::<Pair, Gauge>::default();
        let cluster_up = cluster_members.get_or_create(&[("state", "up")]).clone();
        let cluster_down = cluster_members.get_or_create(&[("state", "down")]).clone();
        let origins = Family::<Pair, Gauge>::default();
        let origins_up = origins.get_or_create(&[("state", "up")]).clone();
        let origins_down = origins.get_or_create(&[("state", "down")]).clone();
        let fill_bytes = Gauge::default();
        let tls_burst_bytes = Gauge::default();
        let refused = Family::<Pair, Counter>::default();
        let upstream_errors = Family::<Pair, Counter>::default();
        let stream_restarts = Counter::default();
        let reloads = Family::<Pair, Counter>::default();
        let reloads_ok = reloads.get_or_create(&[("result", "ok")]).clone();
        let reloads_refused = reloads.get_or_create(&[("result", "refused")]).clone();
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
            "outpost_cluster_members",
            "Sibling edges known now, by state",
            cluster_members,
        );
        registry.register(
            "outpost_origins",
            "Origins and backups of every route, by state (down: failed, asked after the others until a probe answers)",
            origins,
        );
        registry.register(
            "outpost_fill_bytes",
            "Bytes that fills under way hold against their share of cache.memory",
            fill_bytes.clone(),
        );
        registry.register(
            "outpost_tls_burst_bytes",
            "Bytes HTTPS connections have borrowed to write large answers in fewer, larger writes (at most 32 MiB)",
            tls_burst_bytes.clone(),
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
        registry.register(
            "outpost_stream_restarts",
            "Live playlists whose stream started over; what was cached of the old stream was dropped",
            stream_restarts.clone(),
        );
        registry.register(
            "outpost_reloads",
            "Config reloads (SIGHUP, POST /reload), put in place or refused",
            reloads,
        );
        // Every labelled series exists from the start, so dashboards see zeros, not gaps.
        Self {
            registry,
            requests: Series::new(&requests, "cache"),
            response_bytes,
            sendfile_bytes,
            upstream_requests: Series::new(&upstream_requests, "source"),
            upstream_bytes: Series::new(&upstream_bytes, "source"),
            prefetch: Series::new(&prefetch, "result"),
            cache_bytes,
            cache_objects,
            inflight_fetches,
            cluster_up,
            cluster_down,
            origins_up,
            origins_down,
            fill_bytes,
            tls_burst_bytes,
            refused: Series::new(&refused, "reason"),
            upstream_errors: Series::new(&upstream_errors, "reason"),
            stream_restarts,
            reloads_ok,
            reloads_refused,
        }
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
        m.requests.inc(Outcome::Hit);
        m.upstream_bytes.inc_by(SourceKind::Origin, 10);
        m.prefetch.inc(PrefetchResult::Cached);
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
            "outpost_cluster_members{state=\"up\"} 0",
            "outpost_cluster_members{state=\"down\"} 0",
            "outpost_refused_total{reason=\"per_ip\"} 0",
            "outpost_refused_total{reason=\"idle\"} 0",
            "outpost_upstream_errors_total{reason=\"broken\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn every_outcome_counts_under_its_own_label() {
        let m = Metrics::new();
        let outcomes = [
            Outcome::Hit,
            Outcome::Miss,
            Outcome::Collapsed,
            Outcome::Stale,
            Outcome::Pass(crate::outcome::PassReason::Vary),
            Outcome::Error,
        ];
        for o in outcomes {
            m.requests.inc(o);
        }
        let text = m.render();
        for o in outcomes {
            let line = format!("outpost_requests_total{{cache=\"{}\"}} 1", o.as_str());
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
    }
}
