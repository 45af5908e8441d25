//! Listeners: accepting connections, limits on them, TLS, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::body::EdgeBody;
use crate::config::{ServerConfig, TlsConfig};
use crate::edge::{Edge, StartError};
use crate::http1;

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

/// HTTPS settings: the configured certificate, ALPN h2 and http/1.1.
pub fn tls_acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, StartError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StartError::Tls(format!("server.tls_cert {}: {e}", tls.cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| StartError::Tls(format!("server.tls_key {}: {e}", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(format!("server.tls_cert and server.tls_key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The largest request head a connection reads before refusing it with 431
/// (the edge refuses heads past `max_header_size` itself, with its own answer).
fn max_head(cfg: &ServerConfig) -> usize {
    (2 * cfg.max_header_size).max(8192)
}

fn edge_builder(cfg: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Also bounds how long an idle keep-alive connection is held.
        .header_read_timeout(cfg.header_timeout)
        // The edge answers 431 itself (with a text body and a request id) past
        // max_header_size; hyper's bare 431 is only for heads twice as large.
        .max_buf_size(max_head(cfg))
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

/// Accepts client connections until told to stop, then drains them.
pub async fn serve_edge(edge: Arc<Edge>, listener: Listener, tls: Option<TlsAcceptor>, stop: watch::Receiver<bool>) {
    let cfg = edge.config.server.clone();
    let builder = Arc::new(edge_builder(&cfg));
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    // Refusals are cheap but not free: past this many at once, the socket is just closed.
    let refusals = Arc::new(Semaphore::new(64));
    let conn_stop = stop.clone();
    let serve = move |stream: TcpStream, peer: SocketAddr, watcher: Watcher| {
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            let refusal = Arc::clone(&refusals).try_acquire_owned().ok();
            return Box::pin(async move {
                if let Some(_permit) = refusal {
                    refuse(stream).await;
                }
            }) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
        };
        let edge = Arc::clone(&edge);
        let builder = Arc::clone(&builder);
        let tls = tls.clone();
        let header_timeout = cfg.header_timeout;
        let stop = conn_stop.clone();
        Box::pin(async move {
            let _permit = permit;
            match tls {
                None => {
                    let plain = Plain {
                        edge: &edge,
                        peer,
                        builder: &builder,
                        watcher,
                        stop,
                    };
                    #[cfg(target_os = "linux")]
                    if edge.config.server.sendfile {
                        let stream = crate::sendfile::SendfileStream::new(stream, edge.metrics.sendfile_bytes.clone());
                        return plain.serve(stream).await;
                    }
                    plain.serve(stream).await;
                }
                Some(acceptor) => {
                    let Ok(Ok(stream)) = tokio::time::timeout(header_timeout, acceptor.accept(stream)).await else {
                        tracing::debug!(peer = %peer, "TLS handshake failed or timed out");
                        return;
                    };
                    serve_io(&edge, peer, &builder, stream, watcher).await;
                }
            }
        })
    };
    accept_loop(listener, stop, cfg.shutdown_grace, serve).await;
}

/// A plain-text connection: the edge's own HTTP/1.1 loop first, then hyper
/// if the loop hands the connection over.
struct Plain<'a> {
    edge: &'a Arc<Edge>,
    peer: SocketAddr,
    builder: &'a auto::Builder<TokioExecutor>,
    watcher: Watcher,
    stop: watch::Receiver<bool>,
}

impl Plain<'_> {
    async fn serve<I>(self, mut io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let cfg = &self.edge.config.server;
        let (timeout, limit) = (cfg.header_timeout, max_head(cfg));
        let ended = http1::serve(self.edge, &mut io, self.peer, timeout, limit, &self.stop).await;
        if let http1::Ended::Handoff(read) = ended {
            let io = http1::Prefixed::new(read, io);
            serve_io(self.edge, self.peer, self.builder, io, self.watcher).await;
        }
    }
}

/// Serves a client connection with hyper (HTTP/1.1 or HTTP/2).
async fn serve_io<I>(
    edge: &Arc<Edge>,
    peer: SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let for_service = Arc::clone(edge);
    let service = service_fn(move |req| crate::proxy::handle(Arc::clone(&for_service), req, peer.ip()));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        // hyper answered these itself (400, 431) before any request reached the
        // edge: give them a log line and an id like every other error.
        let protocol = e
            .downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_parse() || h.is_timeout());
        if protocol {
            tracing::info!(id = %edge.next_request_id(), peer = %peer, error = %e, "request refused by the HTTP parser");
        } else {
            tracing::debug!(peer = %peer, error = %e, "client connection ended with an error");
        }
    }
}

/// Answers 503 and closes: the edge is at `server.max_connections`.
async fn refuse(stream: TcpStream) {
    let service = service_fn(|_req| async {
        let text = "503 Service Unavailable: this edge is at its connection limit\n";
        let mut response = Response::new(EdgeBody::full(text));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let h = response.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
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
async fn accept_loop<F>(listener: Listener, mut stop: watch::Receiver<bool>, grace: Duration, serve: F)
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
    let grace = edge.config.server.shutdown_grace;
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
