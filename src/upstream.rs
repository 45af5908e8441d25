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

use crate::cluster::{self, Cluster, Member, CDN_LOOP, SIGNATURE};
use crate::config::{OriginUrl, RouteConfig};
use crate::ejection::Ejections;
use crate::headers::{append_list, CACHE_STATUS, X_REQUEST_ID};
use crate::metrics::{FetchFailure, Metrics, SourceKind};

/// Why an upstream fetch failed. Cloned to every client reading the fetch.
/// `origin` names the source as [`Source::name`] does: `origin host:port`
/// or `sibling host:port`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("{origin} unreachable: {reason}")]
    Unreachable { origin: String, reason: String },
    #[error("{origin} sent no response headers within {}", humantime::format_duration(*.timeout))]
    HeaderTimeout { origin: String, timeout: Duration },
    #[error("{origin} body stalled for {} after {received} bytes", humantime::format_duration(*.timeout))]
    Stalled {
        origin: String,
        timeout: Duration,
        received: u64,
    },
    #[error("{origin} body ended after {received} of {expected} bytes")]
    Short {
        origin: String,
        received: u64,
        expected: u64,
    },
    #[error("{origin} body failed after {received} bytes: {reason}")]
    Broken {
        origin: String,
        received: u64,
        reason: String,
    },
    #[error("{origin} sent a header section of {size} bytes, over the limit of {MAX_ORIGIN_HEAD}")]
    HeadTooLarge { origin: String, size: usize },
    #[error("{origin} held the blocking playlist reload past {}", humantime::format_duration(*.limit))]
    BlockedTooLong { origin: String, limit: Duration },
    /// A body that broke off could not be finished from another source: it
    /// answered the range with other bytes than the ones already sent.
    #[error("{origin} cannot finish the body from byte {offset}: {reason}")]
    Unspliceable {
        origin: String,
        offset: u64,
        reason: String,
    },
    /// The body is not what the origin's `Repr-Digest` or `Content-Digest` says.
    #[error("{origin} sent a body that fails its digest: {reason}")]
    DigestMismatch { origin: String, reason: String },
    /// `media.stream_fetches` fetches of the same stream were under way for the route's `timeout`.
    #[error("{stream} had {limit} fetches under way for all of {}", humantime::format_duration(*.waited))]
    StreamBusy {
        stream: String,
        limit: usize,
        waited: Duration,
    },
    /// `routes[].max_fetches` fetches of the route were under way for its `timeout`.
    #[error("route {route} had {limit} fetches under way for all of {}", humantime::format_duration(*.waited))]
    RouteBusy {
        route: String,
        limit: usize,
        waited: Duration,
    },
    #[error("the upstream fetch was abandoned before it finished")]
    Abandoned,
    /// The object is over `cache.slice` (or `cache.max_object`) and is
    /// served in slices: its readers ask again, slice by slice.
    #[error("the object is cached in slices")]
    Sliced,
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
            FetchError::Unspliceable { .. } => FetchFailure::Unspliceable,
            FetchError::DigestMismatch { .. } => FetchFailure::DigestMismatch,
            FetchError::StreamBusy { .. } => FetchFailure::StreamBusy,
            FetchError::RouteBusy { .. } => FetchFailure::RouteBusy,
            FetchError::Abandoned | FetchError::Overtaken | FetchError::Sliced => FetchFailure::Abandoned,
        }
    }

    /// The status a client gets when this happens before its response began.
    pub fn status(&self) -> StatusCode {
        match self {
            FetchError::HeaderTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            // draft-pantos-hls-rfc8216bis §6.2.5.2: a reload that cannot be answered in time is a 503.
            FetchError::BlockedTooLong { .. } => StatusCode::SERVICE_UNAVAILABLE,
            // The edge holds back, not the origin failing.
            FetchError::StreamBusy { .. } | FetchError::RouteBusy { .. } => StatusCode::SERVICE_UNAVAILABLE,
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
    /// Siblings that own the key may be asked before the origin: false for a
    /// sibling's own request (never sent on to a third member), one that has
    /// passed through this fleet already (`CDN-Loop`), and a pass-through.
    pub fleet: bool,
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
#[derive(Debug, Clone)]
pub enum Source<'a> {
    /// A sibling edge that ranks above this one for the key.
    Sibling(Arc<Member>),
    /// The route's origin, or one of its backups.
    Origin(&'a OriginUrl),
}

impl Source<'_> {
    /// The base URL the request's path is appended to.
    pub fn base(&self) -> &OriginUrl {
        match self {
            Source::Sibling(member) => &member.url,
            Source::Origin(url) => url,
        }
    }

    /// Its `source` label in the metrics.
    pub fn kind(&self) -> SourceKind {
        match self {
            Source::Sibling(_) => SourceKind::Peer,
            Source::Origin(_) => SourceKind::Origin,
        }
    }

    /// How errors name it.
    pub fn name(&self) -> String {
        match self {
            Source::Sibling(member) => format!("sibling {}", member.url.authority),
            Source::Origin(url) => format!("origin {}", url.authority),
        }
    }

    /// The path and query asked of this source: a sibling is asked for the
    /// path a client would ask it for (the route's prefix, then the path
    /// below it), so that it routes and keys the request alike.
    fn path_and_query(&self, request: &UpstreamRequest) -> String {
        match self {
            Source::Sibling(_) => sibling_path(request),
            Source::Origin(_) => request.path_and_query.clone(),
        }
    }
}

/// The path and query a client would ask an edge for to reach `request`.
fn sibling_path(request: &UpstreamRequest) -> String {
    let prefix = request.route.prefix.trim_end_matches('/');
    [prefix, request.path_and_query.as_str()].concat()
}

/// Where `request` is fetched from, in the order they are tried: the
/// siblings that rank above this edge for the key (when the request may go
/// to the fleet), then the route's origin, then each backup. The next is
/// tried while the one before fails to connect, times out or answers 5xx.
/// Origins down now ([`Ejections`]) come after those up, each group in the
/// configured order.
pub fn sources<'r>(request: &'r UpstreamRequest, cluster: Option<&Cluster>, ejections: &Ejections) -> Vec<Source<'r>> {
    let route = &request.route;
    let siblings = match cluster {
        // The edges' own paths are asked of the origin: a sibling would answer them itself.
        Some(cluster) if request.fleet && !sibling_path(request).starts_with(cluster::OWN_PATHS) => {
            cluster.siblings_for(&route.origin.url(&request.path_and_query))
        }
        _ => Vec::new(),
    };
    let origins = std::iter::once(&route.origin).chain(&route.backups);
    let mut sources: Vec<Source<'r>> = siblings.into_iter().map(Source::Sibling).collect();
    if !ejections.any() {
        sources.extend(origins.map(Source::Origin));
        return sources;
    }
    let (up, down): (Vec<_>, Vec<_>) = origins.partition(|o| !ejections.is_down(&o.url("")));
    sources.extend(up.into_iter().chain(down).map(Source::Origin));
    sources
}

/// What a sibling is given beyond the route's timeouts: its own timers,
/// which end in an answer, fire first.
const SIBLING_GRACE: Duration = Duration::from_secs(1);

/// The rest of a body that broke off, asked of the next source: from
/// `offset`, of the representation that `validator` names.
#[derive(Debug, Clone)]
pub struct Resume {
    pub offset: u64,
    /// The whole body's length.
    pub total: u64,
    /// `ETag` (strong) or `Last-Modified` of the answer so far.
    pub validator: (http::HeaderName, http::HeaderValue),
}

/// An upstream answer, with where it came from and where else the request
/// may go (for a resume).
pub struct Answered<'a> {
    pub response: Response<Incoming>,
    pub source: Source<'a>,
    pub rest: Vec<Source<'a>>,
}

/// The largest header section an origin may send.
pub const MAX_ORIGIN_HEAD: usize = 64 << 10;

/// The pooled client for every origin and sibling.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    metrics: Arc<Metrics>,
    cluster: Option<Arc<Cluster>>,
    ejections: Arc<Ejections>,
}

impl Upstream {
    pub fn new(tls: rustls::ClientConfig, metrics: Arc<Metrics>, cluster: Option<Arc<Cluster>>) -> Self {
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
        Self {
            client,
            metrics,
            cluster,
            ejections: Arc::default(),
        }
    }

    /// The origins taken out of turn after failing.
    pub fn ejections(&self) -> &Ejections {
        &self.ejections
    }

    /// The fleet this edge belongs to, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Sends `req` to its first source (see [`sources`]), then to each next
    /// one while the answer is a failure to connect, a timeout or a 5xx.
    pub async fn send<'r>(&self, req: &'r UpstreamRequest) -> Result<Answered<'r>, FetchError> {
        let sources = sources(req, self.cluster.as_deref(), &self.ejections);
        self.send_to(req, sources, None).await
    }

    /// Asks `sources` in turn for the rest of a body that broke off. The
    /// first that answers decides: the rest of the same representation (206
    /// from `offset` to the end, the same validator), or a failure; bytes of
    /// another are never spliced on.
    pub async fn resume<'r>(
        &self,
        req: &'r UpstreamRequest,
        sources: Vec<Source<'r>>,
        resume: &Resume,
    ) -> Result<Answered<'r>, FetchError> {
        let answered = self.send_to(req, sources, Some(resume)).await?;
        let name = answered.source.name();
        match continues(&answered.response, resume) {
            Ok(()) => Ok(answered),
            Err(reason) => Err(FetchError::Unspliceable {
                origin: name,
                offset: resume.offset,
                reason,
            }),
        }
    }

    async fn send_to<'r>(
        &self,
        req: &'r UpstreamRequest,
        mut sources: Vec<Source<'r>>,
        resume: Option<&Resume>,
    ) -> Result<Answered<'r>, FetchError> {
        let route = &req.route;
        let mut last_error = FetchError::Abandoned;
        while !sources.is_empty() {
            let source = sources.remove(0);
            let more = !sources.is_empty();
            let outgoing = self.outgoing(req, &source, resume);
            self.metrics.upstream_requests.inc(source.kind());
            let name = source.name();
            let mut limit = req.blocking.unwrap_or(route.timeout);
            if let Source::Sibling(_) = source {
                limit += SIBLING_GRACE;
            }
            let failure = match tokio::time::timeout(limit, self.client.request(outgoing)).await {
                // A sibling without this route: the origin is asked instead.
                Ok(Ok(resp)) if resp.status() == StatusCode::MISDIRECTED_REQUEST && more => {
                    tracing::warn!(source = %name, "sibling has no route for this request; trying the next source");
                    FetchError::Unreachable {
                        origin: name,
                        reason: "answered 421".into(),
                    }
                }
                Ok(Ok(resp)) if resp.status().is_server_error() && more => {
                    tracing::warn!(source = %name, status = resp.status().as_u16(), "upstream failed, trying the next source");
                    let error = FetchError::Unreachable {
                        origin: name,
                        reason: format!("answered {}", resp.status()),
                    };
                    self.source_failed(&source, &error);
                    error
                }
                // `retry_404`: a packager's push may reach one origin before another.
                Ok(Ok(resp))
                    if resp.status() == StatusCode::NOT_FOUND
                        && more
                        && route.retry_404
                        && matches!(source, Source::Origin(_)) =>
                {
                    tracing::debug!(source = %name, "404; retry_404 asks the next origin");
                    FetchError::Unreachable {
                        origin: name,
                        reason: "answered 404".into(),
                    }
                }
                Ok(Ok(mut resp)) => {
                    // hyper's own bound on HTTP/1.1 is its read buffer, which
                    // a head arriving in large reads can pass.
                    let size: usize = resp.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
                    if size > MAX_ORIGIN_HEAD {
                        return Err(FetchError::HeadTooLarge { origin: name, size });
                    }
                    match &source {
                        Source::Sibling(_) => {
                            // Stamped by the sibling for its own answer; this edge stamps its own.
                            resp.headers_mut().remove(CACHE_STATUS);
                            resp.headers_mut().remove(X_REQUEST_ID);
                        }
                        // (Only while some origin is down: naming one costs an allocation.)
                        Source::Origin(url) if self.ejections.any() && !resp.status().is_server_error() => {
                            if self.ejections.recovered(&url.url("")) {
                                tracing::info!(source = %name, "origin answers again; back in turn");
                            }
                        }
                        Source::Origin(_) => {}
                    }
                    return Ok(Answered {
                        response: resp,
                        source,
                        rest: sources,
                    });
                }
                Ok(Err(e)) => {
                    let error = FetchError::Unreachable {
                        origin: name,
                        reason: error_chain(&e),
                    };
                    self.source_failed(&source, &error);
                    error
                }
                Err(_) if req.blocking.is_some() => FetchError::BlockedTooLong { origin: name, limit },
                Err(_) => {
                    let error = FetchError::HeaderTimeout {
                        origin: name,
                        timeout: limit,
                    };
                    self.source_failed(&source, &error);
                    error
                }
            };
            last_error = failure;
            if more {
                tracing::warn!(error = %last_error, "trying the next source");
            }
        }
        Err(last_error)
    }

    /// The request as sent to `source`. Every request is marked with the
    /// fleet's `CDN-Loop` token; one to a sibling is signed, and names the
    /// route's host so that the sibling routes it alike.
    fn outgoing(&self, req: &UpstreamRequest, source: &Source<'_>, resume: Option<&Resume>) -> Request<Empty<Bytes>> {
        let path_and_query = source.path_and_query(req);
        let mut outgoing = Request::new(Empty::new());
        *outgoing.method_mut() = req.method.clone();
        *outgoing.uri_mut() = origin_uri(source.base(), &path_and_query);
        let headers = outgoing.headers_mut();
        *headers = req.headers.clone();
        if let Some(cluster) = &self.cluster {
            append_list(headers, CDN_LOOP, cluster.signer().token());
            if let Source::Sibling(_) = source {
                let now = cluster::unix_secs(std::time::SystemTime::now());
                let signature = cluster.signer().sign(req.method.as_str(), &path_and_query, now);
                if let Ok(value) = http::HeaderValue::from_str(&signature) {
                    headers.insert(SIGNATURE, value);
                }
                if let Some(host) = route_host(&req.route) {
                    headers.insert(http::header::HOST, host);
                }
            }
        }
        if let Some(resume) = resume {
            let range = format!("bytes={}-", resume.offset);
            headers.insert(
                http::header::RANGE,
                http::HeaderValue::from_str(&range).expect("digits"),
            );
            headers.insert(http::header::IF_RANGE, resume.validator.1.clone());
        }
        outgoing
    }

    /// Marks a sibling or an origin down after it failed to connect, answer
    /// or send.
    pub fn source_failed(&self, source: &Source<'_>, error: &FetchError) {
        let now = std::time::SystemTime::now();
        match source {
            Source::Sibling(member) => {
                if let Some(cluster) = &self.cluster {
                    cluster.failed(member, &error.to_string(), now);
                }
            }
            Source::Origin(url) => {
                if self.ejections.failed(&url.url(""), &error.to_string(), now) {
                    tracing::warn!(error = %error, "origin down; asked after the others until it answers a probe");
                }
            }
        }
    }

    /// Asks each origin that is down for `HEAD <its base path>/`; one that
    /// answers anything but a 5xx within `limit` is back in turn.
    pub async fn probe_down_origins(&self, limit: Duration) {
        for (origin, _) in self.ejections.down() {
            let Ok(uri) = format!("{origin}/").parse::<Uri>() else {
                continue;
            };
            let mut probe = Request::new(Empty::new());
            *probe.method_mut() = Method::HEAD;
            *probe.uri_mut() = uri;
            if let Some(cluster) = &self.cluster {
                append_list(probe.headers_mut(), CDN_LOOP, cluster.signer().token());
            }
            let answered = tokio::time::timeout(limit, self.client.request(probe)).await;
            if let Ok(Ok(resp)) = answered {
                if !resp.status().is_server_error() && self.ejections.recovered(&origin) {
                    tracing::info!(
                        origin,
                        status = resp.status().as_u16(),
                        "origin answers its probe; back in turn"
                    );
                }
            }
        }
    }

    /// A plain request to a sibling, outside any fill (a probe, a purge): signed, with no body.
    pub async fn to_sibling(
        &self,
        member: &Member,
        method: Method,
        path_and_query: &str,
        limit: Duration,
    ) -> Result<Response<Incoming>, String> {
        let Some(cluster) = &self.cluster else {
            return Err("this edge has no [cluster]".into());
        };
        let mut outgoing = Request::new(Empty::new());
        *outgoing.uri_mut() = origin_uri(&member.url, path_and_query);
        let signature = cluster.signer().sign(
            method.as_str(),
            path_and_query,
            cluster::unix_secs(std::time::SystemTime::now()),
        );
        *outgoing.method_mut() = method;
        let headers = outgoing.headers_mut();
        headers.insert(
            SIGNATURE,
            http::HeaderValue::from_str(&signature).map_err(|e| e.to_string())?,
        );
        append_list(headers, CDN_LOOP, cluster.signer().token());
        match tokio::time::timeout(limit, self.client.request(outgoing)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(error_chain(&e)),
            Err(_) => Err(format!("no answer within {}", humantime::format_duration(limit))),
        }
    }
}

/// The `Host` a sibling is asked with: the route's own, when it names one.
fn route_host(route: &RouteConfig) -> Option<http::HeaderValue> {
    http::HeaderValue::from_str(route.host.as_deref()?).ok()
}

/// Whether `response` is the rest of the body `resume` asks for: a 206 from
/// its offset to its end, of the same length and validator.
fn continues(response: &Response<Incoming>, resume: &Resume) -> Result<(), String> {
    let last = resume.total.saturating_sub(1);
    exact_range(
        response.status(),
        response.headers(),
        (resume.offset, last),
        resume.total,
        &resume.validator,
    )
}

/// Whether an answer (`status`, `headers`) to a range request is exactly
/// the bytes `first..=last` of the `total`-byte representation that
/// `validator` names: a 206 with that `Content-Range` and that validator.
/// Anything else must not be joined to bytes already held.
pub fn exact_range(
    status: StatusCode,
    headers: &HeaderMap,
    (first, last): (u64, u64),
    total: u64,
    validator: &(http::HeaderName, http::HeaderValue),
) -> Result<(), String> {
    if status != StatusCode::PARTIAL_CONTENT {
        return Err(format!("answered {status} to a range request"));
    }
    let expected = format!("bytes {first}-{last}/{total}");
    let range = headers.get(http::header::CONTENT_RANGE).and_then(|v| v.to_str().ok());
    if range != Some(expected.as_str()) {
        return Err(format!("sent Content-Range {range:?} where {expected:?} was asked"));
    }
    let (name, value) = validator;
    if headers.get(name) != Some(value) {
        return Err(format!("sent another {name} than the bytes already held"));
    }
    Ok(())
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
    /// `expected`: the length the answer announced, if it has a body. A
    /// sibling is given a little longer than the route's `download_timeout`,
    /// so that its own stall timer, which cuts its answer, fires first.
    pub fn new(body: Incoming, source: &Source<'_>, route: &RouteConfig, expected: Option<u64>) -> Self {
        let stall = match source {
            Source::Sibling(_) => route.download_timeout + SIBLING_GRACE,
            Source::Origin(_) => route.download_timeout,
        };
        Self {
            body,
            origin: source.name(),
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
            fleet: true,
        };
        let urls: Vec<String> = sources(&request, None, &Ejections::default())
            .iter()
            .map(|s| s.base().url("/a.ts"))
            .collect();
        assert_eq!(urls, ["http://o:1/a.ts", "http://b1:2/a.ts", "https://b2:3/x/a.ts"]);
        assert!(sources(&request, None, &Ejections::default())
            .iter()
            .all(|s| s.kind() == SourceKind::Origin));
    }
}
