//! Requests to origins: one pooled client, the route's timeouts, failover to backups.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Sleep;

use crate::config::{OriginUrl, RouteConfig};
use crate::metrics::{FetchFailure, Metrics, SourceKind};

/// Why an upstream fetch failed. Cloned to every client reading the fetch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("origin {origin} unreachable: {reason}")]
    Unreachable { origin: String, reason: String },
    #[error("origin {origin} sent no response headers within {}", humantime::format_duration(*.timeout))]
    HeaderTimeout { origin: String, timeout: Duration },
    #[error("origin {origin} body stalled for {} after {received} bytes", humantime::format_duration(*.timeout))]
    Stalled {
        origin: String,
        timeout: Duration,
        received: u64,
    },
    #[error("origin {origin} body ended after {received} of {expected} bytes")]
    Short {
        origin: String,
        received: u64,
        expected: u64,
    },
    #[error("origin {origin} body failed after {received} bytes: {reason}")]
    Broken {
        origin: String,
        received: u64,
        reason: String,
    },
    #[error("origin {origin} sent a header section of {size} bytes, over the limit of {MAX_ORIGIN_HEAD}")]
    HeadTooLarge { origin: String, size: usize },
    #[error("origin {origin} held the blocking playlist reload past {}", humantime::format_duration(*.limit))]
    BlockedTooLong { origin: String, limit: Duration },
    #[error("the upstream fetch was abandoned before it finished")]
    Abandoned,
    /// A fill that keeps nothing went on without this reader, which took
    /// nothing for `server.send_timeout`.
    #[error("the client fell too far behind a fill that keeps nothing for it")]
    Overtaken,
}

impl FetchError {
    /// The kind of failure, as the `outpost_upstream_errors_total` label.
    pub fn kind(&self) -> FetchFailure {
        match self {
            FetchError::Unreachable { .. } => FetchFailure::Unreachable,
            FetchError::HeaderTimeout { .. } => FetchFailure::HeaderTimeout,
            FetchError::HeadTooLarge { .. } => FetchFailure::BadResponse,
            FetchError::Stalled { .. } => FetchFailure::Stalled,
            FetchError::Short { .. } => FetchFailure::Short,
            FetchError::Broken { .. } => FetchFailure::Broken,
            FetchError::BlockedTooLong { .. } => FetchFailure::Blocked,
            FetchError::Abandoned | FetchError::Overtaken => FetchFailure::Abandoned,
        }
    }

    /// The status a client gets when this happens before its response began.
    pub fn status(&self) -> StatusCode {
        match self {
            FetchError::HeaderTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            // draft-pantos-hls-rfc8216bis §6.2.5.2: a reload that cannot be answered in time is a 503.
            FetchError::BlockedTooLong { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// What to ask upstream: the path below the route's prefix, and the headers to send.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub route: Arc<RouteConfig>,
    pub method: Method,
    /// Path (starting with `/`) and query, appended to each origin's base path.
    pub path_and_query: String,
    pub headers: HeaderMap,
    /// An LL-HLS blocking playlist reload: the origin holds it until the
    /// asked-for part exists, for at most this long (then 503).
    pub blocking: Option<Duration>,
}

impl UpstreamRequest {
    /// The request as sent to the primary origin, for cache policy decisions.
    pub fn to_request(&self) -> Request<()> {
        let mut req = Request::new(());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = origin_uri(&self.route.origin, &self.path_and_query);
        // Kept with a stored entry: detached from the client's read buffer.
        *req.headers_mut() = crate::headers::detached(&self.headers);
        req
    }
}

/// The full URL of `path_and_query` at `origin`.
pub fn origin_uri(origin: &OriginUrl, path_and_query: &str) -> Uri {
    let text = origin.url(path_and_query);
    // Both parts were validated when parsed; a failure here is a bug worth seeing.
    text.parse()
        .unwrap_or_else(|e| panic!("origin URL {text:?} did not parse: {e}"))
}

/// A place a key can be fetched from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// The route's origin, or one of its backups.
    Origin(&'a OriginUrl),
}

impl Source<'_> {
    /// The base URL the request's path is appended to.
    pub fn base(&self) -> &OriginUrl {
        match self {
            Source::Origin(url) => url,
        }
    }

    /// Its `source` label in the metrics.
    pub fn kind(&self) -> SourceKind {
        match self {
            Source::Origin(_) => SourceKind::Origin,
        }
    }
}

/// Where `request` is fetched from, in the order they are tried: the
/// route's origin, then each backup while the one before fails to connect,
/// times out or answers 5xx. (A sibling edge that owns the key goes first
/// once the fleet is built.)
pub fn sources(request: &UpstreamRequest) -> Vec<Source<'_>> {
    let route = &request.route;
    std::iter::once(&route.origin)
        .chain(&route.backups)
        .map(Source::Origin)
        .collect()
}

/// The largest header section an origin may send.
pub const MAX_ORIGIN_HEAD: usize = 64 << 10;

/// The pooled client for every origin.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    metrics: Arc<Metrics>,
}

impl Upstream {
    pub fn new(tls: rustls::ClientConfig, metrics: Arc<Metrics>) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            // An origin's header section is bounded (hyper's own bound is
            // ~400 KiB): past it the answer is a 502. On HTTP/1.1 this is the
            // read buffer, which also caps one body read at 64 KiB.
            .http1_max_buf_size(MAX_ORIGIN_HEAD)
            .http2_max_header_list_size(MAX_ORIGIN_HEAD as u32)
            .build(https);
        Self { client, metrics }
    }

    /// Sends `req` to the route's origin, then to each backup in turn while the
    /// answer is a failure to connect, a timeout or a 5xx.
    pub async fn send(&self, req: &UpstreamRequest) -> Result<Response<Incoming>, FetchError> {
        let route = &req.route;
        let sources = sources(req);
        let mut last_error = FetchError::Abandoned;
        for (i, source) in sources.iter().enumerate() {
            let more = i + 1 < sources.len();
            let base = source.base();
            let mut outgoing = Request::new(Empty::new());
            *outgoing.method_mut() = req.method.clone();
            *outgoing.uri_mut() = origin_uri(base, &req.path_and_query);
            *outgoing.headers_mut() = req.headers.clone();
            self.metrics.upstream_requests.inc(source.kind());
            let name = base.authority.to_string();
            let limit = req.blocking.unwrap_or(route.timeout);
            match tokio::time::timeout(limit, self.client.request(outgoing)).await {
                Ok(Ok(resp)) if resp.status().is_server_error() && more => {
                    tracing::warn!(origin = %name, status = resp.status().as_u16(), "origin failed, trying backup");
                    last_error = FetchError::Unreachable {
                        origin: name,
                        reason: format!("answered {}", resp.status()),
                    };
                }
                Ok(Ok(resp)) => {
                    // hyper's own bound on HTTP/1.1 is its read buffer, which
                    // a head arriving in large reads can pass.
                    let size: usize = resp.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
                    if size > MAX_ORIGIN_HEAD {
                        return Err(FetchError::HeadTooLarge { origin: name, size });
                    }
                    return Ok(resp);
                }
                Ok(Err(e)) => {
                    last_error = FetchError::Unreachable {
                        origin: name,
                        reason: error_chain(&e),
                    }
                }
                Err(_) if req.blocking.is_some() => last_error = FetchError::BlockedTooLong { origin: name, limit },
                Err(_) => {
                    last_error = FetchError::HeaderTimeout {
                        origin: name,
                        timeout: route.timeout,
                    }
                }
            }
            if more {
                tracing::warn!(error = %last_error, "trying backup origin");
            }
        }
        Err(last_error)
    }
}

/// An upstream body read piece by piece: the one reader of upstream bodies,
/// for fills and pass-through answers alike. It fails when the body breaks,
/// when the origin sends nothing for the route's `download_timeout` while
/// the body is being read (time the reader spends not asking, waiting on
/// its own clients, does not count), or when it ends short of its
/// `Content-Length`. It counts what it received.
pub struct UpstreamBody {
    body: Incoming,
    origin: String,
    stall: Duration,
    timer: Pin<Box<Sleep>>,
    /// Whether `timer` runs: from the first poll after a piece was handed out.
    armed: bool,
    received: u64,
    expected: Option<u64>,
}

impl UpstreamBody {
    /// `expected`: the length the answer announced, if it has a body.
    pub fn new(body: Incoming, request: &UpstreamRequest, expected: Option<u64>) -> Self {
        let stall = request.route.download_timeout;
        Self {
            body,
            origin: request.route.origin.authority.to_string(),
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
            armed: false,
            received: 0,
            expected,
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    pub fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.body)
    }

    /// The next piece: `None` at the body's (whole) end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, FetchError> {
        std::future::poll_fn(|cx| self.poll_data(cx)).await
    }

    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, FetchError>> {
        if !self.armed {
            self.timer.as_mut().reset(tokio::time::Instant::now() + self.stall);
            self.armed = true;
        }
        loop {
            return match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are not passed on.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    self.received += data.len() as u64;
                    self.armed = false;
                    Poll::Ready(Ok(Some(data)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Err(FetchError::Broken {
                    origin: self.origin.clone(),
                    received: self.received,
                    reason: error_chain(&e),
                })),
                Poll::Ready(None) => match self.expected {
                    Some(expected) if expected != self.received => Poll::Ready(Err(FetchError::Short {
                        origin: self.origin.clone(),
                        received: self.received,
                        expected,
                    })),
                    _ => Poll::Ready(Ok(None)),
                },
                Poll::Pending => match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(FetchError::Stalled {
                        origin: self.origin.clone(),
                        timeout: self.stall,
                        received: self.received,
                    })),
                    Poll::Pending => Poll::Pending,
                },
            };
        }
    }
}

/// An error with its causes, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// TLS settings for origins: the system's roots, falling back to the webpki
/// set where the system has none, plus any extra PEM roots in `extra_ca`.
pub fn client_tls(extra_ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = extra_ca {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificates", path.display()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_the_origin_then_its_backups_in_order() {
        let config = crate::config::Config::from_toml(
            "[[routes]]\nurl = \"http://o:1\"\nbackups = [\"http://b1:2\", \"https://b2:3/x\"]\n",
        )
        .unwrap();
        let request = UpstreamRequest {
            route: Arc::new(config.routes[0].clone()),
            method: Method::GET,
            path_and_query: "/a.ts".into(),
            headers: HeaderMap::new(),
            blocking: None,
        };
        let urls: Vec<String> = sources(&request).iter().map(|s| s.base().url("/a.ts")).collect();
        assert_eq!(urls, ["http://o:1/a.ts", "http://b1:2/a.ts", "https://b2:3/x/a.ts"]);
        assert!(sources(&request).iter().all(|s| s.kind() == SourceKind::Origin));
    }
}
