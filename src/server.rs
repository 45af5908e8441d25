//! Listeners: accepting connections, limits on them, TLS, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{header, HeaderValue, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::certs::Certs;
use crate::cmsd::Probe;
use crate::config::{Config, ServerConfig};
use crate::edge::Edge;
use crate::error::StartError;
use crate::forward::Peer;
use crate::http1;
use crate::inline_first::InlineFirst;
use crate::limits::{Activity, SendTimeout, Tracked};
use crate::metrics::Refusal;
use crate::tls_writes::TlsWrites;

/// A bound listening socket.
pub struct Listener {
    pub addr: SocketAddr,
    inner: TcpListener,
}

impl Listener {
    /// Binds with a deep accept queue: a storm of players connecting at once
    /// must not overflow it (the kernel drops SYNs past it, and clients retry
    /// only after a second).
    pub fn bind(key: &'static str, addr: SocketAddr) -> Result<Self, StartError> {
        const BACKLOG: u32 = 4096;
        let bind_error = |source| StartError::Bind { key, addr, source };
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(bind_error)?;
        socket.set_reuseaddr(true).map_err(bind_error)?;
        socket.bind(addr).map_err(bind_error)?;
        let inner = socket.listen(BACKLOG).map_err(bind_error)?;
        let addr = inner.local_addr().map_err(bind_error)?;
        Ok(Self { addr, inner })
    }
}

/// HTTPS settings: the edge's certificate (replaced on reload), ALPN h2 and http/1.1.
pub fn tls_acceptor(certs: Arc<Certs>) -> Result<TlsAcceptor, StartError> {
    let mut config = rustls::ServerConfig::builder_with_provider(crate::certs::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Stateless session tickets (their key rotates every 6 hours): a viewer
    // who comes back resumes, with no signature to make, however many
    // others came since. rustls' default remembers only 256 sessions.
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| StartError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The hyper builder for the config in force: made again after a reload
/// changed the config, kept otherwise.
struct Builders {
    current: Mutex<(Arc<Config>, Arc<auto::Builder<InlineFirst>>)>,
}

impl Builders {
    fn new(config: Arc<Config>) -> Self {
        let builder = Arc::new(edge_builder(&config.server));
        Self {
            current: Mutex::new((config, builder)),
        }
    }

    fn for_config(&self, config: &Arc<Config>) -> Arc<auto::Builder<InlineFirst>> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&current.0, config) {
            *current = (Arc::clone(config), Arc::new(edge_builder(&config.server)));
        }
        Arc::clone(&current.1)
    }
}

fn edge_builder(cfg: &ServerConfig) -> auto::Builder<InlineFirst> {
    let mut builder = auto::Builder::new(InlineFirst);
    builder
        .http1()
        .timer(TokioTimer::new())
        // Also bounds how long an idle keep-alive connection is held.
        .header_read_timeout(cfg.header_timeout)
        // The edge answers 431 itself (with a text body and a request id) past
        // max_header_size; hyper's bare 431 is only for heads twice as large.
        .max_buf_size(http1::max_head(cfg))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(2 * cfg.max_header_size as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// Accepts client connections until told to stop, then drains them. The
/// limits are read from the config in force for each new connection.
pub async fn serve_edge(edge: Arc<Edge>, listener: Listener, tls: Option<TlsAcceptor>, stop: watch::Receiver<bool>) {
    let builders = Builders::new(edge.config());
    // Refusals are cheap but not free: past this many at once, the socket is just closed.
    let refusals = Arc::new(Semaphore::new(64));
    let conn_stop = stop.clone();
    let grace_edge = Arc::clone(&edge);
    let serve = move |stream: TcpStream, peer: SocketAddr, _watcher: Watcher| {
        let config = edge.config();
        // One address may not take every connection: past its share, its new
        // ones are closed at once, before they cost a task or a permit.
        let Some(slot) = edge.per_ip.acquire(peer.ip()) else {
            edge.metrics.refused.inc(Refusal::PerIp);
            tracing::debug!(peer = %peer, "connection refused: server.max_connections_per_ip");
            return Box::pin(async {}) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
        };
        let Some(open) = edge.open_connection(config.server.max_connections) else {
            edge.metrics.refused.inc(Refusal::MaxConnections);
            let refusal = Arc::clone(&refusals).try_acquire_owned().ok();
            return Box::pin(async move {
                let _slot = slot;
                if let Some(_permit) = refusal {
                    refuse(stream).await;
                }
            });
        };
        let edge = Arc::clone(&edge);
        let builder = builders.for_config(&config);
        let tls = tls.clone();
        let stop = conn_stop.clone();
        let socket = socket_of(&stream);
        if let (Some(fd), Some(size)) = (socket, config.server.send_buffer) {
            set_send_buffer(fd, size);
        }
        Box::pin(async move {
            let _held = (open, slot);
            let conn = Conn {
                edge: &edge,
                peer,
                socket,
                builder: &builder,
                stop,
            };
            let send_timeout = config.server.send_timeout;
            let expired = edge.metrics.refused.counter(Refusal::SendTimeout).clone();
            match tls {
                None => {
                    #[cfg(target_os = "linux")]
                    if config.server.sendfile {
                        let stream = crate::sendfile::SendfileStream::new(stream, edge.metrics.sendfile_bytes.clone());
                        return conn.plain(SendTimeout::new(stream, send_timeout, expired), false).await;
                    }
                    conn.plain(SendTimeout::new(stream, send_timeout, expired), false).await;
                }
                Some(acceptor) => {
                    let header_timeout = config.server.header_timeout;
                    drop(config);
                    let Ok(Ok(stream)) = tokio::time::timeout(header_timeout, acceptor.accept(stream)).await else {
                        tracing::debug!(peer = %peer, "TLS handshake failed or timed out");
                        return;
                    };
                    // ALPN http/1.1 (or none) goes to the edge's own loop, as on
                    // the plain listener; h2 to hyper.
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                    let stream = TlsWrites::new(stream, Arc::clone(&edge.tls_burst));
                    let stream = SendTimeout::new(stream, send_timeout, expired);
                    match h2 {
                        true => conn.hyper(stream, true).await,
                        false => conn.plain(stream, true).await,
                    }
                }
            }
        })
    };
    accept_loop(listener, stop, move || grace_edge.config().server.shutdown_grace, serve).await;
}

/// How long an idle connection's graceful close may take.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The raw socket of a client connection, for `TCP_INFO`.
fn socket_of(stream: &TcpStream) -> Option<i32> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        Some(stream.as_raw_fd())
    }
    #[cfg(not(unix))]
    {
        let _ = stream;
        None
    }
}

/// Sets a client socket's kernel send buffer (`server.send_buffer`), which
/// bounds what a slow reader holds in the kernel, and turns the kernel's own
/// sizing off for it. Linux doubles the figure for its bookkeeping.
fn set_send_buffer(socket: i32, size: usize) {
    #[cfg(unix)]
    {
        let value = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        // SAFETY: `socket` is the open connection's descriptor; setsockopt
        // reads one c_int from a live local. A failure leaves the kernel's size.
        unsafe {
            libc::setsockopt(
                socket,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (socket, size);
}

/// One client connection.
struct Conn<'a> {
    edge: &'a Arc<Edge>,
    peer: SocketAddr,
    /// The TCP socket under whatever wraps it, while the connection lasts.
    socket: Option<i32>,
    builder: &'a auto::Builder<InlineFirst>,
    stop: watch::Receiver<bool>,
}

impl Conn<'_> {
    /// An HTTP/1.1 connection (plain text, or HTTPS without h2): the edge's
    /// own HTTP/1.1 loop first, then hyper if the loop hands the connection
    /// over (an h2c preface, a request the loop does not take).
    async fn plain<I>(self, mut io: I, tls: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let client = Peer {
            tls,
            ..Peer::plain(self.peer.ip())
        };
        let probe = Probe::new(self.socket);
        let ended = http1::serve(self.edge, &mut io, self.peer, client, &probe, &self.stop).await;
        if let http1::Ended::Handoff(read) = ended {
            let io = http1::Prefixed::new(read, io);
            self.hyper(io, tls).await;
        }
    }

    /// Serves the connection with hyper (HTTP/1.1 or HTTP/2) until it ends,
    /// the edge stops, or no request has been in flight for
    /// `server.idle_timeout`; the last two close it gracefully (HTTP/2:
    /// GOAWAY, then close once the streams under way are done).
    async fn hyper<I>(self, io: I, tls: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let edge = self.edge;
        // `sibling` is per request: see `proxy::answer`.
        let peer = Peer {
            tls,
            ..Peer::plain(self.peer.ip())
        };
        let probe = Probe::new(self.socket);
        let activity = Activity::new();
        let for_service = Arc::clone(edge);
        let tracker = Arc::clone(&activity);
        let service = service_fn(move |req| {
            let busy = tracker.busy();
            let peer = Peer {
                path: probe.path(for_service.second()),
                ..peer
            };
            let answered = crate::proxy::handle(Arc::clone(&for_service), req, peer);
            async move { answered.await.map(|r| r.map(|body| Tracked::new(body, busy))) }
        });
        let conn = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let idle_timeout = edge.config().server.idle_timeout;
        let mut closing = *self.stop.borrow();
        if closing {
            conn.as_mut().graceful_shutdown();
        }
        // Idleness and shutdown are waited for by a task of their own: in
        // the loop below they would be polled (two timers and a `Notify`)
        // every time the connection wakes, several times per request.
        let mut watchdog = Watchdog(tokio::spawn(watch_connection(activity, idle_timeout, self.stop)));
        // An idle connection's graceful close waits on the client (HTTP/2
        // acknowledges GOAWAY's PING); one that never answers is dropped.
        let idle_close = tokio::time::sleep(Duration::MAX);
        tokio::pin!(idle_close);
        let ended = loop {
            tokio::select! {
                biased;
                ended = conn.as_mut() => break ended,
                _ = &mut idle_close, if closing => break Ok(()),
                why = &mut watchdog.0, if !closing => {
                    if matches!(why, Ok(Quiet::Idle)) {
                        edge.metrics.refused.inc(Refusal::Idle);
                        tracing::debug!(peer = %self.peer, "connection idle; closing");
                        idle_close.as_mut().reset(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
                    }
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        };
        if let Err(e) = ended {
            // hyper answered these itself (400, 431) before any request reached the
            // edge: give them a log line and an id like every other error.
            let hyper_error = e.downcast_ref::<hyper::Error>();
            if hyper_error.is_some_and(|h| h.is_timeout()) {
                edge.metrics.refused.inc(Refusal::HeaderTimeout);
            } else if hyper_error.is_some_and(|h| h.is_parse()) {
                edge.metrics.refused.inc(Refusal::BadRequest);
            }
            if hyper_error.is_some_and(|h| h.is_parse() || h.is_timeout()) {
                tracing::info!(id = %edge.next_request_id(), peer = %self.peer, error = %e, "request refused by the HTTP parser");
            } else {
                tracing::debug!(peer = %self.peer, error = %e, "client connection ended with an error");
            }
        }
    }
}

/// Why a connection is to close gracefully.
enum Quiet {
    /// No request in flight for `server.idle_timeout`.
    Idle,
    /// The edge is stopping.
    Stopping,
}

/// Waits until a connection has been idle for `limit`, or the edge stops.
async fn watch_connection(activity: Arc<Activity>, limit: Duration, mut stop: watch::Receiver<bool>) -> Quiet {
    tokio::select! {
        _ = activity.idle_for(limit) => Quiet::Idle,
        _ = stop.wait_for(|stopping| *stopping) => Quiet::Stopping,
    }
}

/// A connection's watch task, ended with the connection.
struct Watchdog(tokio::task::JoinHandle<Quiet>);

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Answers 503 and closes: the edge is at `server.max_connections`.
async fn refuse(stream: TcpStream) {
    let service = service_fn(|_req| async {
        let text = "503 Service Unavailable: this edge is at its connection limit\n";
        let mut response = crate::plain::text(StatusCode::SERVICE_UNAVAILABLE, text);
        let h = response.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        Ok::<_, std::convert::Infallible>(response)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(2));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
}

/// Accepts until `stop`, runs each connection through `serve`, then gives the
/// connections `grace` to finish their responses before closing them.
async fn accept_loop<F>(listener: Listener, mut stop: watch::Receiver<bool>, grace: impl Fn() -> Duration, serve: F)
where
    F: Fn(TcpStream, SocketAddr, Watcher) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
{
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.inner.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve(stream, peer, graceful.watcher()));
                }
                Err(e) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::warn!(addr = %listener.addr, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let grace = grace();
    let drained = tokio::time::timeout(grace, async {
        graceful.shutdown().await;
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(grace = ?grace, "connections still open after the shutdown grace; closing them");
    }
    conns.abort_all();
}

/// Serves the admin paths until told to stop.
pub async fn serve_admin(edge: Arc<Edge>, listener: Listener, stop: watch::Receiver<bool>) {
    let grace_edge = Arc::clone(&edge);
    let grace = move || grace_edge.config().server.shutdown_grace;
    let serve = move |stream: TcpStream, _peer: SocketAddr, watcher: Watcher| {
        let edge = Arc::clone(&edge);
        Box::pin(async move {
            let service = service_fn(move |req| crate::admin::handle(Arc::clone(&edge), req));
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let _ = watcher.watch(conn).await;
        }) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
    };
    accept_loop(listener, stop, grace, serve).await;
}
