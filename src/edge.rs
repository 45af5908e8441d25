//! The edge's shared state, and starting and stopping it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::budget::Budget;
use crate::cache::Store;
use crate::coalesce::Inflight;
use crate::config::Config;
use crate::cors::Cors;
use crate::metrics::Metrics;
use crate::prefetch::Prefetcher;
use crate::route::Routes;
use crate::server::{self, Listener};
use crate::upstream::{client_tls, Upstream};

/// A request's id, as in `X-Request-Id` and the logs: this edge's start time
/// and a counter (`5f3e2a1b-2c`). Kept as numbers and written out only where
/// it is shown.
#[derive(Debug, Clone, Copy)]
pub struct RequestId {
    prefix: u32,
    n: u64,
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}-{:x}", self.prefix, self.n)
    }
}

impl RequestId {
    /// The id made of `prefix` and `n`, as [`Edge::next_request_id`] makes them.
    pub const fn new(prefix: u32, n: u64) -> Self {
        Self { prefix, n }
    }

    /// The id as an `X-Request-Id` value: the same text as `Display`.
    ///
    /// Marked sensitive, which HTTP/2 sends as a literal never indexed
    /// (RFC 7541 §6.2.3): a value unique to one answer is otherwise added to
    /// the connection's HPACK table on every answer, evicting an entry each
    /// time. That churn cost 9% of the instructions of an HTTP/2 hit; the
    /// name, no longer in the table, costs about 8 bytes per answer.
    pub fn header_value(&self) -> http::HeaderValue {
        let mut value =
            self.with_text(|text| http::HeaderValue::from_bytes(text).expect("hex digits are a valid header value"));
        value.set_sensitive(true);
        value
    }

    /// Calls `with` on the id's text, written digit by digit rather than
    /// through the formatter, since this is done on every answer.
    pub fn with_text<T>(&self, with: impl FnOnce(&[u8]) -> T) -> T {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 8 + 1 + 16];
        for (i, slot) in text[..8].iter_mut().enumerate() {
            *slot = HEX[(self.prefix >> (28 - 4 * i) & 0xf) as usize];
        }
        text[8] = b'-';
        let digits = (64 - self.n.leading_zeros()).div_ceil(4).max(1) as usize;
        for (i, slot) in text[9..9 + digits].iter_mut().enumerate() {
            *slot = HEX[(self.n >> (4 * (digits - 1 - i)) & 0xf) as usize];
        }
        with(&text[..9 + digits])
    }
}

/// Everything a request needs, shared by all connections.
pub struct Edge {
    pub config: Config,
    pub routes: Routes,
    pub store: Store,
    /// What objects being filled may hold: their share of `cache.memory`.
    pub fill_budget: Arc<Budget>,
    pub inflight: Inflight,
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
    pub cors: Cors,
    pub prefetcher: Prefetcher,
    pub started: Instant,
    next_id: AtomicU64,
    id_prefix: u32,
}

/// Why the edge could not start (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {key} = {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
}

impl Edge {
    pub fn new(config: Config) -> Result<Arc<Self>, StartError> {
        let metrics = Arc::new(Metrics::new());
        #[cfg(target_os = "linux")]
        if config.server.sendfile {
            crate::mapped::init(config.server.max_connections);
        }
        let tls = client_tls(config.upstream.ca_file.as_deref()).map_err(StartError::Tls)?;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        Ok(Arc::new(Self {
            routes: Routes::new(&config.routes),
            store: Store::new(config.cache.store_memory()),
            fill_budget: Budget::new(config.cache.fill_memory()),
            inflight: Inflight::new(config.cache.pass_ttl),
            upstream: Upstream::new(tls, Arc::clone(&metrics)),
            cors: Cors::new(&config.server.cors_origins),
            prefetcher: Prefetcher::new(config.media.prefetch_concurrency),
            metrics,
            started: Instant::now(),
            next_id: AtomicU64::new(1),
            id_prefix: nanos,
            config,
        }))
    }

    /// A short id for one request, unique within this process and unlikely to repeat across restarts.
    pub fn next_request_id(&self) -> RequestId {
        RequestId {
            prefix: self.id_prefix,
            n: self.next_id.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Refreshes the gauges read from the cache, before `/metrics` or `/status`.
    pub fn refresh_gauges(&self) {
        self.metrics.cache_bytes.set(self.store.bytes() as i64);
        self.metrics.cache_objects.set(self.store.objects() as i64);
        self.metrics.fill_bytes.set(self.fill_budget.used() as i64);
    }

    /// Binds every listener and starts serving.
    pub async fn start(config: Config) -> Result<RunningEdge, StartError> {
        let edge = Edge::new(config)?;
        if !edge.config.cluster.peers.is_empty() || edge.config.cluster.dns.is_some() {
            tracing::warn!(
                "[cluster] is set, but peering with sibling edges is not built yet: every fetch goes to the origin"
            );
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let cfg = &edge.config;
        let plain = Listener::bind("server.listen", cfg.server.listen)?;
        let admin = Listener::bind("admin.listen", cfg.admin.listen)?;
        let tls = match &cfg.server.tls {
            Some(t) => Some((Listener::bind("server.tls_listen", t.listen)?, server::tls_acceptor(t)?)),
            None => None,
        };
        let addrs = Addresses {
            listen: plain.addr,
            tls_listen: tls.as_ref().map(|(l, _)| l.addr),
            admin: admin.addr,
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(server::serve_edge(Arc::clone(&edge), plain, None, stop_rx.clone()));
        if let Some((listener, acceptor)) = tls {
            tasks.spawn(server::serve_edge(
                Arc::clone(&edge),
                listener,
                Some(acceptor),
                stop_rx.clone(),
            ));
        }
        let maintained = Arc::clone(&edge);
        let stop = stop_rx.clone();
        tasks.spawn(async move { maintained.store.maintain(Duration::from_secs(1), stop).await });
        tasks.spawn(server::serve_admin(Arc::clone(&edge), admin, stop_rx));
        tracing::info!(listen = %addrs.listen, tls = ?addrs.tls_listen, admin = %addrs.admin, "outpost serving");
        Ok(RunningEdge {
            edge,
            addrs,
            stop: stop_tx,
            tasks,
        })
    }
}

/// Where a running edge listens.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub listen: SocketAddr,
    pub tls_listen: Option<SocketAddr>,
    pub admin: SocketAddr,
}

/// A started edge: its addresses, and the way to stop it.
pub struct RunningEdge {
    pub edge: Arc<Edge>,
    pub addrs: Addresses,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl RunningEdge {
    /// Stops accepting, lets responses under way finish (up to
    /// `server.shutdown_grace`), then returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::RequestId;

    #[test]
    fn the_header_value_is_the_displayed_id() {
        for (prefix, n) in [(0, 0), (0x5f3e2a1b, 0x2c), (1, 1), (u32::MAX, u64::MAX), (0xabc, 0x10)] {
            let id = RequestId { prefix, n };
            assert_eq!(id.header_value(), id.to_string().as_str(), "{prefix:x} {n:x}");
            // HTTP/2's encoder (h2) keeps a sensitive value out of its table.
            assert!(id.header_value().is_sensitive());
        }
    }
}
