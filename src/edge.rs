//! The edge's shared state: what every request reads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::access_log::AccessSink;
use crate::budget::Budget;
use crate::cache::Store;
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::cmsd;
use crate::coalesce::Inflight;
use crate::config::Config;
use crate::cors::Cors;
use crate::cpu::CpuMeter;
use crate::error::StartError;
use crate::forward::Peer;
use crate::metrics::Metrics;
use crate::prefetch::Prefetcher;
use crate::request_id::RequestId;
use crate::restarts::Restarts;
use crate::route::Routes;
use crate::slicing::Slices;
use crate::streams::StreamLimits;
use crate::upcoming::Upcoming;
use crate::upstream::{client_tls, Upstream};

/// Everything a request needs, shared by all connections.
pub struct Edge {
    pub(crate) config: Config,
    /// What every rule is given as `now`.
    pub(crate) clock: Clock,
    pub(crate) routes: Routes,
    pub(crate) store: Store,
    /// What objects being filled may hold: their share of `cache.memory`.
    pub(crate) fill_budget: Arc<Budget>,
    pub(crate) inflight: Inflight,
    pub(crate) upstream: Upstream,
    /// The fleet of sibling edges, when `[cluster]` sets one up.
    pub(crate) cluster: Option<Arc<Cluster>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) cors: Cors,
    pub(crate) prefetcher: Prefetcher,
    /// Slots for upstream fetches, per stream (`media.stream_fetches`).
    pub(crate) streams: StreamLimits,
    /// The last window of each live playlist, to tell a restarted stream.
    pub(crate) restarts: Restarts,
    /// Live renditions' newest listed segments, to hold early requests.
    pub(crate) upcoming: Upcoming,
    /// Objects kept in slices.
    pub(crate) slices: Slices,
    /// Where access log lines go.
    pub(crate) access: Arc<AccessSink>,
    pub(crate) started: Instant,
    /// Client connections open now, on every listener.
    connections: AtomicUsize,
    /// The process's share of the machine's cores, sampled every second.
    pub(crate) cpu: CpuMeter,
    next_id: AtomicU64,
    id_prefix: u32,
}

impl Edge {
    pub fn new(config: Config) -> Result<Arc<Self>, StartError> {
        let metrics = Arc::new(Metrics::new());
        let server = &config.server;
        let access = AccessSink::open(server.access_log, server.access_log_file.as_deref()).map_err(|e| {
            StartError::AccessLog {
                path: server.access_log_file.clone().unwrap_or_default(),
                source: e,
            }
        })?;
        #[cfg(target_os = "linux")]
        if config.server.sendfile {
            crate::mapped::init(config.server.max_connections);
        }
        let tls = client_tls(config.upstream.ca_file.as_deref()).map_err(StartError::Tls)?;
        let cluster = Cluster::new(&config.cluster);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        Ok(Arc::new(Self {
            clock: Clock::default(),
            routes: Routes::new(&config.routes),
            store: Store::new(config.cache.store_memory()),
            fill_budget: Budget::new(config.cache.fill_memory()),
            inflight: Inflight::new(config.cache.pass_ttl),
            upstream: Upstream::new(tls, Arc::clone(&metrics), cluster.clone()),
            cluster,
            cors: Cors::new(&config.server.cors_origins),
            prefetcher: Prefetcher::new(config.media.prefetch_concurrency),
            streams: StreamLimits::new(config.media.stream_fetches),
            restarts: Restarts::new(),
            upcoming: Upcoming::new(),
            slices: Slices::new(),
            access: Arc::new(access),
            metrics,
            started: Instant::now(),
            connections: AtomicUsize::new(0),
            cpu: CpuMeter::default(),
            next_id: AtomicU64::new(1),
            id_prefix: nanos,
            config,
        }))
    }

    /// A short id for one request, unique within this process and unlikely to repeat across restarts.
    pub fn next_request_id(&self) -> RequestId {
        RequestId::new(self.id_prefix, self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The validated config the edge runs on.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metrics behind `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The cache's stored objects.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Fills under way.
    pub fn inflight(&self) -> &Inflight {
        &self.inflight
    }

    /// The fleet this edge belongs to, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Whether a request comes from a sibling edge: signed with the fleet's
    /// secret. Costs one header lookup for any other request. Checked
    /// against the wall clock, as siblings sign with theirs.
    pub fn from_sibling(&self, parts: &http::request::Parts) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        cluster.is_sibling(parts.method.as_str(), target, &parts.headers, SystemTime::now())
    }

    /// Counts a client connection as open until the guard is dropped.
    pub fn open_connection(&self) -> OpenConnection<'_> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(&self.connections)
    }

    /// How near the edge is to its bounds, 0 to 1: the fullest of client
    /// connections (of `server.max_connections`), the memory fills hold (of
    /// their share of `cache.memory`), and the machine's cores the process
    /// used over the last second.
    pub fn load(&self) -> f64 {
        let share = |used: f64, bound: f64| if bound > 0.0 { used / bound } else { 0.0 };
        let connections = share(
            self.connections.load(Ordering::Relaxed) as f64,
            self.config.server.max_connections as f64,
        );
        let fills = share(self.fill_budget.used() as f64, self.config.cache.fill_memory() as f64);
        connections.max(fills).max(self.cpu.share()).min(1.0)
    }

    /// This edge's `CMSD-Dynamic` entry for an answer to `peer`: what its
    /// socket says of the path to it, and the edge's load. None for a
    /// sibling, or with `media.cmsd` off.
    pub fn cmsd_entry(&self, peer: &Peer) -> Option<cmsd::Entry> {
        if !self.config.media.cmsd || peer.sibling {
            return None;
        }
        Some(cmsd::Entry::new(cmsd::Path::of_socket(peer.socket), self.load()))
    }

    /// Drops the entry keyed `key` (`exact`), or every entry whose key
    /// starts with it, slices of sliced objects included; returns how many
    /// entries went.
    pub fn purge(&self, key: &str, exact: bool) -> usize {
        let matches = |base: &str| match exact {
            true => base == key || base.strip_prefix(key).is_some_and(|rest| rest.starts_with("#slice-")),
            false => base.starts_with(key),
        };
        self.slices.purge(matches);
        self.store.purge(matches)
    }

    /// Opens the access log file again under its name (SIGHUP).
    pub fn reopen_access_log(&self) {
        match self.access.reopen() {
            Ok(()) => tracing::info!("access log reopened"),
            Err(e) => tracing::error!(error = %e, "access log could not be reopened; still writing to the old file"),
        }
    }

    /// Refreshes the gauges read from the cache, before `/metrics` or `/status`.
    pub fn refresh_gauges(&self) {
        if let Some(cluster) = &self.cluster {
            let (up, down) = cluster.counts();
            self.metrics.cluster_up.set(up as i64);
            self.metrics.cluster_down.set(down as i64);
        }
        let origins: std::collections::HashSet<String> = self
            .config
            .routes
            .iter()
            .flat_map(|r| std::iter::once(&r.origin).chain(&r.backups))
            .map(|o| o.url(""))
            .collect();
        let down = self.upstream.ejections().down().len();
        self.metrics.origins_up.set(origins.len().saturating_sub(down) as i64);
        self.metrics.origins_down.set(down as i64);
        self.metrics.cache_bytes.set(self.store.bytes() as i64);
        self.metrics.cache_objects.set(self.store.objects() as i64);
        self.metrics.fill_bytes.set(self.fill_budget.used() as i64);
    }
}

/// A client connection counted as open: see [`Edge::open_connection`].
pub struct OpenConnection<'a>(&'a AtomicUsize);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
