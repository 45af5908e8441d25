//! Starting and stopping the edge: binds its listeners, runs them and the
//! cache's upkeep, and stops them all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::edge::Edge;
use crate::error::StartError;
use crate::server::{self, Listener};

impl Edge {
    /// Binds every listener and starts serving.
    pub async fn start(config: Config) -> Result<RunningEdge, StartError> {
        let edge = Edge::new(config)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let cfg = edge.config();
        let plain = Listener::bind("server.listen", cfg.server.listen)?;
        let admin = Listener::bind("admin.listen", cfg.admin.listen)?;
        let tls = match (&cfg.server.tls, &edge.certs) {
            (Some(t), Some(certs)) => Some((
                Listener::bind("server.tls_listen", t.listen)?,
                server::tls_acceptor(Arc::clone(certs))?,
            )),
            _ => None,
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
        tasks.spawn(sample_cpu(Arc::clone(&edge), stop_rx.clone()));
        tasks.spawn(sample_history(Arc::clone(&edge), stop_rx.clone()));
        tasks.spawn(probe_origins(Arc::clone(&edge), stop_rx.clone()));
        tasks.spawn(crate::fleet::maintain(Arc::clone(&edge), stop_rx.clone()));
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

/// Samples the process's CPU use (see `Edge::load`) and moves `Edge::seconds` on, every second until `stop`.
async fn sample_cpu(edge: Arc<Edge>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = every.tick() => {
                edge.cpu.sample();
                edge.tick_second();
            }
        }
    }
}

/// Takes the dashboard's points (see `Edge::take_sample`) until `stop`.
async fn sample_history(edge: Arc<Edge>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(crate::history::INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = every.tick() => edge.take_sample(),
        }
    }
}

/// Probes the origins that are down every second until `stop`; one that
/// answers is back in turn (see `crate::ejection`).
async fn probe_origins(edge: Arc<Edge>, mut stop: watch::Receiver<bool>) {
    const PROBE_LIMIT: Duration = Duration::from_secs(2);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            // One future: a stop ends a probe under way too.
            _ = async {
                every.tick().await;
                edge.upstream.probe_down_origins(PROBE_LIMIT).await;
            } => {}
        }
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
