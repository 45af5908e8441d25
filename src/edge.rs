//! The edge's shared state: what every request reads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use arc_swap::{ArcSwap, Guard};

use crate::access_log::AccessSink;
use crate::audience::Audience;
use crate::budget::Budget;
use crate::cache::Store;
use crate::certs::Certs;
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::cmsd;
use crate::coalesce::Inflight;
use crate::config::{Config, Source};
use crate::cors::Cors;
use crate::cpu::CpuMeter;
use crate::error::StartError;
use crate::forward::Peer;
use crate::history::{History, Totals};
use crate::limits::PerIp;
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
    /// The config and what is built from it; a reload swaps them whole.
    settings: ArcSwap<Settings>,
    /// The server certificate (`server.tls_*`), replaced on reload.
    pub(crate) certs: Option<Arc<Certs>>,
    /// What every rule is given as `now`.
    pub(crate) clock: Clock,
    pub(crate) store: Store,
    /// What objects being filled may hold: their share of `cache.memory`.
    pub(crate) fill_budget: Arc<Budget>,
    /// What HTTPS connections writing large answers may borrow (`tls_writes`).
    pub(crate) tls_burst: Arc<Budget>,
    pub(crate) inflight: Inflight,
    pub(crate) upstream: Upstream,
    /// The fleet of sibling edges, when `[cluster]` sets one up.
    pub(crate) cluster: Option<Arc<Cluster>>,
    pub(crate) metrics: Arc<Metrics>,
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
    /// The last hour of traffic, for the dashboard's charts.
    pub(crate) history: History,
    /// Viewers and bytes per stream, for the dashboard's top streams.
    pub(crate) audience: Audience,
    /// Whole seconds since start, moved on every second: a clock for what
    /// needs no finer one, without a system call per request.
    pub(crate) seconds: AtomicU64,
    pub(crate) started: Instant,
    /// Client connections open now, on every listener.
    connections: AtomicUsize,
    /// Client connections open now, per peer address.
    pub(crate) per_ip: Arc<PerIp>,
    /// The process's share of the machine's cores, sampled every second.
    pub(crate) cpu: CpuMeter,
    next_id: AtomicU64,
    id_prefix: u32,
    /// Where the config came from, for a reload to read it again.
    source: OnceLock<Source>,
    /// How the last reload went, for `/status`.
    last_reload: Mutex<Option<LastReload>>,
}

/// How a reload went: what changed, or why it was refused.
#[derive(Debug, Clone)]
pub struct LastReload {
    pub at: SystemTime,
    pub result: Result<Vec<String>, String>,
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
        let certs = match &config.server.tls {
            Some(tls) => Some(Arc::new(Certs::load(tls).map_err(StartError::Tls)?)),
            None => None,
        };
        let cluster = Cluster::new(&config.cluster);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        Ok(Arc::new(Self {
            certs,
            clock: Clock::default(),
            store: Store::new(config.cache.store_memory()),
            fill_budget: Budget::new(config.cache.fill_memory()),
            tls_burst: Budget::new(crate::tls_writes::TLS_BURST_BUDGET),
            inflight: Inflight::new(config.cache.pass_ttl),
            upstream: Upstream::new(tls, Arc::clone(&metrics), cluster.clone()),
            cluster,
            prefetcher: Prefetcher::new(config.media.prefetch_concurrency),
            streams: StreamLimits::new(config.media.stream_fetches),
            restarts: Restarts::new(),
            upcoming: Upcoming::new(),
            slices: Slices::new(),
            access: Arc::new(access),
            history: History::default(),
            audience: Audience::default(),
            seconds: AtomicU64::new(0),
            metrics,
            started: Instant::now(),
            connections: AtomicUsize::new(0),
            per_ip: PerIp::new(config.server.max_connections_per_ip),
            cpu: CpuMeter::default(),
            next_id: AtomicU64::new(1),
            id_prefix: nanos,
            settings: ArcSwap::from_pointee(Settings::new(config)),
            source: OnceLock::new(),
            last_reload: Mutex::new(None),
        }))
    }

    /// A short id for one request, unique within this process and unlikely to repeat across restarts.
    pub fn next_request_id(&self) -> RequestId {
        RequestId::new(self.id_prefix, self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The validated config the edge runs on now.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.settings.load().config)
    }

    /// The config and what is built from it, as they are now: what one
    /// request reads throughout, whatever a reload does meanwhile.
    pub fn settings(&self) -> Guard<Arc<Settings>> {
        self.settings.load()
    }

    /// Records where the config came from, so that a reload can read it
    /// again; an edge started from a `Config` alone cannot be reloaded.
    pub fn set_source(&self, source: Source) {
        let _ = self.source.set(source);
    }

    pub fn source(&self) -> Option<&Source> {
        self.source.get()
    }

    pub fn last_reload(&self) -> Option<LastReload> {
        self.last_reload.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn record_reload(&self, reload: LastReload) {
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some(reload);
    }

    /// Puts new settings in place; requests under way keep the ones they
    /// loaded. The server certificate and the connection limits follow.
    pub(crate) fn replace_settings(&self, settings: Settings) {
        self.per_ip.set_limit(settings.config.server.max_connections_per_ip);
        self.settings.store(Arc::new(settings));
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

    /// Counts a client connection as open until the guard is dropped; None
    /// when `limit` are open already.
    pub fn open_connection(self: &Arc<Self>, limit: usize) -> Option<OpenConnection> {
        let open = OpenConnection(Arc::clone(self));
        // Counted first, then checked: two connections racing for the last
        // place cannot both get it.
        match self.connections.fetch_add(1, Ordering::Relaxed) < limit {
            true => Some(open),
            false => None,
        }
    }

    /// How near the edge is to its bounds, 0 to 1: the fullest of client
    /// connections (of `server.max_connections`), the memory fills hold (of
    /// their share of `cache.memory`), and the machine's cores the process
    /// used over the last second.
    pub fn load(&self) -> f64 {
        self.load_under(&self.settings().config)
    }

    /// [`Edge::load`] against the bounds of `config` (the one in force).
    fn load_under(&self, config: &Config) -> f64 {
        let share = |used: f64, bound: f64| if bound > 0.0 { used / bound } else { 0.0 };
        let connections = share(
            self.connections.load(Ordering::Relaxed) as f64,
            config.server.max_connections as f64,
        );
        let fills = share(self.fill_budget.used() as f64, config.cache.fill_memory() as f64);
        connections.max(fills).max(self.cpu.share()).min(1.0)
    }

    /// This edge's `CMSD-Dynamic` entry for an answer to `peer`: what its
    /// socket says of the path to it, and the edge's load. None for a
    /// sibling, or with `media.cmsd` off.
    /// `config` is the one in force, which the caller has loaded already.
    pub fn cmsd_entry(&self, peer: &Peer, config: &Config) -> Option<cmsd::Entry> {
        if !config.media.cmsd || peer.sibling {
            return None;
        }
        Some(cmsd::Entry::new(peer.path, self.load_under(config)))
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

    /// The counters the dashboard's charts are drawn from, as they are now.
    pub fn totals(&self) -> Totals {
        use crate::metrics::SourceKind;
        use crate::outcome::Outcome;
        let m = &self.metrics;
        let count = |keep: fn(&Outcome) -> bool| {
            Outcome::ALL
                .iter()
                .filter(|o| keep(o))
                .map(|&o| m.requests.get(o))
                .sum()
        };
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Totals {
            at,
            requests: count(|_| true),
            cached: count(|o| matches!(o, Outcome::Hit | Outcome::Collapsed | Outcome::Stale)),
            content: count(|o| !matches!(o, Outcome::Error)),
            response_bytes: m.response_bytes.get(),
            upstream_requests: m.upstream_requests.get(SourceKind::Origin) + m.upstream_requests.get(SourceKind::Peer),
            upstream_bytes: m.upstream_bytes.get(SourceKind::Origin) + m.upstream_bytes.get(SourceKind::Peer),
            origin_bytes: m.upstream_bytes.get(SourceKind::Origin),
        }
    }

    /// The edge's clock, in whole seconds since it started.
    pub fn second(&self) -> u64 {
        self.seconds.load(Ordering::Relaxed)
    }

    /// Moves [`Edge::seconds`] on (every second).
    pub fn tick_second(&self) {
        self.seconds.store(self.started.elapsed().as_secs(), Ordering::Relaxed);
    }

    /// Ends the dashboard's interval under way (every `history::INTERVAL`).
    pub fn take_sample(&self) {
        self.history.record(self.totals());
        self.audience.tick(
            self.seconds.load(Ordering::Relaxed),
            crate::history::INTERVAL.as_secs_f64(),
        );
    }

    /// Refreshes the gauges read from the cache, before `/metrics` or `/status`.
    pub fn refresh_gauges(&self) {
        if let Some(cluster) = &self.cluster {
            let (up, down) = cluster.counts();
            self.metrics.cluster_up.set(up as i64);
            self.metrics.cluster_down.set(down as i64);
        }
        let origins: std::collections::HashSet<String> = self
            .settings()
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
        self.metrics.tls_burst_bytes.set(self.tls_burst.used() as i64);
    }
}

/// What a reload replaces at once: the config and what is built from it.
pub struct Settings {
    pub config: Arc<Config>,
    pub routes: Routes,
    pub cors: Cors,
}

impl Settings {
    pub fn new(config: Config) -> Self {
        Self {
            routes: Routes::new(&config.routes),
            cors: Cors::new(&config.server.cors_origins),
            config: Arc::new(config),
        }
    }
}

/// A client connection counted as open: see [`Edge::open_connection`].
pub struct OpenConnection(Arc<Edge>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}
