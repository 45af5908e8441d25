//! Test support: a real origin server and helpers to run the edge in front of it.
#![allow(dead_code)]

mod binary;
mod fleet;
mod raw;
#[allow(unused_imports)]
pub use binary::*;
#[allow(unused_imports)]
pub use fleet::*;
#[allow(unused_imports)]
pub use raw::*;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use outpost::{Config, Edge, RunningEdge};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// How a scripted body ends.
#[derive(Clone, Debug)]
pub enum End {
    Complete,
    /// Declare the full Content-Length but close after this many bytes.
    Truncate(usize),
    /// Send this many bytes, then fail the stream (connection reset).
    Reset(usize),
    /// Send this many bytes, then go silent for a minute.
    Stall(usize),
}

/// What the origin answers for one path (and query).
#[derive(Clone)]
pub struct Script {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub head_delay: Duration,
    pub chunk: usize,
    pub chunk_delay: Duration,
    pub end: End,
    /// Omit Content-Length (chunked on HTTP/1.1).
    pub chunked: bool,
    /// Send the first chunk, then wait for this before sending the rest.
    pub gate: Option<Arc<Notify>>,
    /// Answer 304 to a request whose If-None-Match holds this ETag.
    pub etag_304: Option<String>,
    /// How `Range: bytes=N-` is answered.
    pub ranges: Ranges,
}

/// How a script answers `Range: bytes=N-`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ranges {
    /// With the whole body (200).
    Ignored,
    /// With 206 from byte N, when an `If-Range` (if any) names the ETag.
    Honoured,
    /// With 206 from byte N, whatever `If-Range` says (a broken origin).
    IfRangeIgnored,
}

impl Script {
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Self {
            status: 200,
            headers: vec![("cache-control".into(), "max-age=60".into())],
            body: body.into(),
            head_delay: Duration::ZERO,
            chunk: 16 << 10,
            chunk_delay: Duration::ZERO,
            end: End::Complete,
            chunked: false,
            gate: None,
            etag_304: None,
            ranges: Ranges::Ignored,
        }
    }

    /// Answers `Range: bytes=N-` and `bytes=N-M` with a 206 (and says
    /// `Accept-Ranges: bytes`), unless an `If-Range` names another ETag than
    /// the script's.
    pub fn ranges(mut self) -> Self {
        self.ranges = Ranges::Honoured;
        self
    }

    /// Answers `Range: bytes=N-` with 206 even when `If-Range` names another ETag.
    pub fn ranges_ignoring_if_range(mut self) -> Self {
        self.ranges = Ranges::IfRangeIgnored;
        self
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Replaces all headers.
    pub fn headers(mut self, headers: &[(&str, &str)]) -> Self {
        self.headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delay(mut self, d: Duration) -> Self {
        self.head_delay = d;
        self
    }

    pub fn throttle(mut self, chunk: usize, every: Duration) -> Self {
        self.chunk = chunk;
        self.chunk_delay = every;
        self
    }

    pub fn end(mut self, end: End) -> Self {
        self.end = end;
        self
    }

    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    pub fn gated(mut self, gate: Arc<Notify>) -> Self {
        self.gate = Some(gate);
        self
    }

    pub fn revalidates(mut self, etag: &str) -> Self {
        self.etag_304 = Some(etag.into());
        self.headers.push(("etag".into(), etag.into()));
        self
    }
}

#[derive(Default)]
struct State {
    /// Unscripted paths under this prefix are files of this directory.
    files: Mutex<Option<(String, std::path::PathBuf)>>,
    scripts: Mutex<HashMap<String, Script>>,
    hits: Mutex<HashMap<String, usize>>,
    requests: Mutex<Vec<(String, HeaderMap)>>,
    active: Mutex<HashMap<String, usize>>,
    peak: Mutex<HashMap<String, usize>>,
    /// When the first body bytes of each path were handed to the connection.
    first_sent: Mutex<HashMap<String, std::time::Instant>>,
    total: AtomicUsize,
    /// The most requests in flight at once, over every path.
    peak_total: AtomicUsize,
    arrived: Notify,
}

/// A real HTTP origin on 127.0.0.1:0 that counts requests per path.
pub struct TestOrigin {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestOrigin {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// An HTTPS origin with this certificate.
    pub async fn start_tls(tls: &TestCert) -> Self {
        Self::start_with(Some(tls.acceptor())).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                // As real origins do (nginx: tcp_nodelay on): a head and a
                // small body written apart would otherwise wait on a delayed ACK.
                let _ = stream.set_nodelay(true);
                let st = Arc::clone(&st);
                let tls = tls.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req| answer(Arc::clone(&st), req));
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Serves unscripted paths under `prefix` from the files of `dir` (no caching headers).
    pub fn serve_dir(&self, prefix: &str, dir: &std::path::Path) {
        *self.state.files.lock().unwrap() = Some((prefix.to_owned(), dir.to_owned()));
    }

    pub fn set(&self, path: &str, script: Script) {
        self.state.scripts.lock().unwrap().insert(path.into(), script);
    }

    /// Requests seen for `path` (with query, as sent).
    pub fn hits(&self, path: &str) -> usize {
        self.state.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.state.total.load(Ordering::SeqCst)
    }

    /// When the origin first handed body bytes for `path` to its connection:
    /// the origin's own time to first byte, as a benchmark measures it.
    pub fn first_sent(&self, path: &str) -> Option<std::time::Instant> {
        self.state.first_sent.lock().unwrap().get(path).copied()
    }

    /// Every path (with query) requested so far, sorted.
    pub fn paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self.state.hits.lock().unwrap().keys().cloned().collect();
        paths.sort();
        paths
    }

    /// The most requests for `path` that were being answered at the same time.
    /// The most requests this origin had in flight at once, all paths together.
    pub fn peak_total_concurrency(&self) -> usize {
        self.state.peak_total.load(Ordering::SeqCst)
    }

    pub fn peak_concurrency(&self, path: &str) -> usize {
        self.state.peak.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Headers of every request for `path`, in arrival order.
    pub fn requests(&self, path: &str) -> Vec<HeaderMap> {
        let all = self.state.requests.lock().unwrap();
        all.iter().filter(|(p, _)| p == path).map(|(_, h)| h.clone()).collect()
    }

    /// Waits until `path` has been requested `n` times (at most 10 s).
    pub async fn wait_hits(&self, path: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.state.arrived.notified();
            if self.hits(path) >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("origin saw {} requests for {path}, expected {n}", self.hits(path));
            }
        }
    }
}

async fn answer(st: Arc<State>, req: Request<Incoming>) -> Result<Response<ScriptBody>, Infallible> {
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    {
        *st.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
        st.requests.lock().unwrap().push((path.clone(), req.headers().clone()));
        let mut active = st.active.lock().unwrap();
        let now = active.entry(path.clone()).or_default();
        *now += 1;
        let mut peak = st.peak.lock().unwrap();
        let p = peak.entry(path.clone()).or_default();
        *p = (*p).max(*now);
        let all: usize = active.values().sum();
        st.peak_total.fetch_max(all, Ordering::SeqCst);
    }
    st.total.fetch_add(1, Ordering::SeqCst);
    st.arrived.notify_waiters();
    let script = st
        .scripts
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .or_else(|| file_script(&st, &path));
    let Some(script) = script else {
        *st.active.lock().unwrap().get_mut(&path).unwrap() -= 1;
        let mut r = Response::new(ScriptBody::done(Bytes::from_static(b"no script\n")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return Ok(r);
    };
    tokio::time::sleep(script.head_delay).await;
    let conditional_hit = script.etag_304.as_ref().is_some_and(|etag| {
        req.headers()
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains(etag.as_str()))
    });
    let mut script = script;
    let mut builder = Response::builder().status(if conditional_hit { 304 } else { script.status });
    for (k, v) in &script.headers {
        builder = builder.header(k, v);
    }
    if script.ranges != Ranges::Ignored && script.status == 200 {
        builder = builder.header("accept-ranges", "bytes");
    }
    if let Some((from, to)) = range_of(&req, &script).filter(|_| !conditional_hit) {
        let len = script.body.len();
        builder = builder
            .status(206)
            .header("content-range", format!("bytes {from}-{to}/{len}"));
        script.body = script.body.slice(from..=to);
    }
    if conditional_hit || req.method() == http::Method::HEAD {
        *st.active.lock().unwrap().get_mut(&path).unwrap() -= 1;
        return Ok(builder.body(ScriptBody::done(Bytes::new())).unwrap());
    }
    if !script.chunked {
        builder = builder.header("content-length", script.body.len());
    }
    let (tx, rx) = mpsc::channel(4);
    let state = Arc::clone(&st);
    tokio::spawn(async move {
        let body = script.body.clone();
        let limit = match script.end {
            End::Complete => body.len(),
            End::Truncate(n) | End::Reset(n) | End::Stall(n) => n.min(body.len()),
        };
        let mut sent = 0;
        while sent < limit {
            let take = script.chunk.min(limit - sent);
            if tx.send(Ok(body.slice(sent..sent + take))).await.is_err() {
                break;
            }
            if sent == 0 {
                let mut first = state.first_sent.lock().unwrap();
                first.entry(path.clone()).or_insert_with(std::time::Instant::now);
            }
            sent += take;
            if sent == take {
                if let Some(gate) = &script.gate {
                    gate.notified().await;
                }
            }
            if !script.chunk_delay.is_zero() && sent < limit {
                tokio::time::sleep(script.chunk_delay).await;
            }
        }
        match script.end {
            End::Reset(_) => {
                let _ = tx.send(Err(std::io::Error::other("scripted reset"))).await;
            }
            End::Stall(_) => tokio::time::sleep(Duration::from_secs(60)).await,
            _ => {}
        }
        *state.active.lock().unwrap().get_mut(&path).unwrap() -= 1;
    });
    Ok(builder.body(ScriptBody::channel(rx)).unwrap())
}

/// The bytes a `Range: bytes=N-` or `bytes=N-M` request asks for (first and
/// last), when the script answers ranges and its `If-Range` (if any) names
/// the script's ETag.
fn range_of(req: &Request<Incoming>, script: &Script) -> Option<(usize, usize)> {
    if script.ranges == Ranges::Ignored || script.status != 200 {
        return None;
    }
    let text = req.headers().get("range")?.to_str().ok()?;
    let (from, to) = text.strip_prefix("bytes=")?.split_once('-')?;
    let from: usize = from.parse().ok()?;
    let last = script.body.len().checked_sub(1)?;
    let to = match to {
        "" => last,
        to => to.parse::<usize>().ok()?.min(last),
    };
    let etag = script
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("etag"))
        .map(|(_, v)| v.as_str());
    let checked = script.ranges == Ranges::Honoured;
    if let Some(wanted) = req.headers().get("if-range").filter(|_| checked) {
        if Some(wanted.to_str().ok()?) != etag {
            return None;
        }
    }
    (from <= to).then_some((from, to))
}

/// A file of the served directory as a script, if it exists.
fn file_script(st: &State, path: &str) -> Option<Script> {
    let files = st.files.lock().unwrap();
    let (prefix, dir) = files.as_ref()?;
    let name = path.split('?').next()?.strip_prefix(prefix.as_str())?;
    if name.contains("..") {
        return None;
    }
    let body = std::fs::read(dir.join(name)).ok()?;
    let content_type = match name.rsplit('.').next() {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("ts") => "video/mp2t",
        Some("m4s") | Some("mp4") => "video/mp4",
        _ => "application/octet-stream",
    };
    Some(Script::ok(body).headers(&[("content-type", content_type)]))
}

/// The origin's response body: fixed, or fed chunk by chunk.
pub struct ScriptBody {
    fixed: Option<Bytes>,
    rx: Option<mpsc::Receiver<Result<Bytes, std::io::Error>>>,
}

impl ScriptBody {
    fn done(b: Bytes) -> Self {
        Self {
            fixed: Some(b),
            rx: None,
        }
    }

    fn channel(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Self {
        Self {
            fixed: None,
            rx: Some(rx),
        }
    }
}

impl Body for ScriptBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(b) = self.fixed.take() {
            return Poll::Ready((!b.is_empty()).then(|| Ok(Frame::data(b))));
        }
        match self.rx.as_mut() {
            None => Poll::Ready(None),
            Some(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }
}

/// Moves tokio's clock (and with it the edge's) forward by `by` at once,
/// instead of sleeping: time is paused, advanced (firing the timers due
/// meanwhile) and let run again.
pub async fn advance(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

/// Starts an edge from `toml` (`{origin}` is replaced by the origin URL) with
/// every listener on 127.0.0.1:0.
pub async fn start_edge(toml: &str, origin: &TestOrigin) -> RunningEdge {
    start_edge_at(toml, &origin.url()).await
}

/// `start_edge` for an origin at `origin_url`.
pub async fn start_edge_at(toml: &str, origin_url: &str) -> RunningEdge {
    let text = toml.replace("{origin}", origin_url);
    let mut config = Config::from_toml(&text).expect("test config is valid");
    // Edges in the test's own process log no requests (the binary's tests
    // read its access log), unless the test's config asks.
    if !text.contains("access_log") {
        config.raw.server.access_log = "off".into();
    }
    config.raw.server.listen = "127.0.0.1:0".into();
    config.raw.admin.listen = "127.0.0.1:0".into();
    if config.raw.server.tls_listen.is_some() {
        config.raw.server.tls_listen = Some("127.0.0.1:0".into());
    }
    let config = Config::validate(config.raw).expect("test config is valid");
    Edge::start(config).await.expect("edge starts")
}

/// The usual edge for tests: one route to the origin, short timeouts.
pub async fn edge_for(origin: &TestOrigin) -> RunningEdge {
    start_edge(
        "[[routes]]\nurl = \"{origin}\"\ntimeout = \"2s\"\ndownload_timeout = \"500ms\"\n",
        origin,
    )
    .await
}

pub fn url(edge: &RunningEdge, path: &str) -> String {
    format!("http://{}{}", edge.addrs.listen, path)
}

pub fn admin_url(edge: &RunningEdge, path: &str) -> String {
    format!("http://{}{}", edge.addrs.admin, path)
}

pub type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2_client() -> TestClient {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// A finished response: status, headers and the whole body (or the error that cut it).
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Result<Bytes, String>,
}

impl Got {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }

    pub fn bytes(&self) -> &Bytes {
        self.body.as_ref().unwrap_or_else(|e| panic!("body failed: {e}"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }
}

pub async fn send(client: &TestClient, method: &str, url: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req.body(Empty::new()).unwrap()))
        .await
        .expect("response within 20 s")
        .expect("request succeeds");
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(20), body.collect())
        .await
        .expect("body within 20 s")
        .map(|c| c.to_bytes())
        .map_err(|e| format!("{e:?}"));
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A GET whose failure (a 5xx at the head, or a broken body) is returned, not a panic.
pub async fn try_get(client: &TestClient, url: &str) -> Result<Bytes, String> {
    let req = Request::get(url).body(Empty::new()).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("response within 20 s")
        .map_err(|e| format!("{e:?}"))?;
    // A failure before the head went out is an answer of its own.
    if resp.status().is_server_error() {
        return Err(format!("answered {}", resp.status()));
    }
    tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect())
        .await
        .expect("body within 20 s")
        .map(|c| c.to_bytes())
        .map_err(|e| format!("{e:?}"))
}

pub async fn get(client: &TestClient, url: &str) -> Got {
    send(client, "GET", url, &[]).await
}

/// The `Cache-Status` of a GET.
pub async fn cache_status(client: &TestClient, url: &str) -> String {
    get(client, url).await.header("cache-status").to_owned()
}

/// `n` GETs of `url` at once; their answers in order.
pub async fn get_many(client: &TestClient, url: &str, n: usize) -> Vec<Got> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            tokio::spawn(async move { get(&client, &url).await })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

/// Deterministic test bytes.
pub fn payload(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// Deterministic test bytes with no short period, so a body sent from the
/// wrong offset never matches by chance.
pub fn noise(len: usize, seed: u32) -> Bytes {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            // xorshift32
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Writes raw bytes to `addr` and reads what comes back until the server closes (at most 5 s).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A self-signed certificate for 127.0.0.1, written to a temporary folder.
pub struct TestCert {
    pub dir: std::path::PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
}

impl TestCert {
    pub fn new(name: &str) -> Self {
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!("outpost-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert_pem = certified.cert.pem();
        let key_pem = certified.key_pair.serialize_pem();
        std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &key_pem).unwrap();
        Self {
            dir,
            cert_pem,
            key_pem,
            cert_der: certified.cert.der().to_vec(),
        }
    }

    pub fn cert_path(&self) -> String {
        self.dir.join("cert.pem").display().to_string()
    }

    pub fn key_path(&self) -> String {
        self.dir.join("key.pem").display().to_string()
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::pem::PemObject;
        let certs = vec![rustls::pki_types::CertificateDer::from(self.cert_der.clone())];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// An edge config serving HTTPS with this certificate on 127.0.0.1:0, one
    /// route to `{origin}`, with `server` lines added to `[server]`.
    pub fn edge_toml(&self, server: &str) -> String {
        format!(
            "[server]\n{server}tls_listen = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n[[routes]]\nurl = \"{{origin}}\"\n",
            self.cert_path(),
            self.key_path()
        )
    }

    /// A TLS client configuration trusting only this certificate; it keeps
    /// the sessions it is given, to resume them.
    pub fn tls_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(self.cert_der.clone()))
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth()
    }

    /// A raw TLS connection to the edge's HTTPS listener on `port`, made
    /// with `config` (no ALPN unless it offers one: the edge's HTTP/1.1 loop).
    pub async fn connect(
        config: &Arc<rustls::ClientConfig>,
        port: u16,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        tokio_rustls::TlsConnector::from(Arc::clone(config))
            .connect(name, tcp)
            .await
            .unwrap()
    }

    /// A client trusting only this certificate, offering `alpn` (e.g. h2 and http/1.1).
    pub fn client(
        &self,
        h2: bool,
    ) -> Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Empty<Bytes>> {
        let config = self.tls_config();
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only();
        let connector = if h2 {
            builder.enable_http1().enable_http2().build()
        } else {
            builder.enable_http1().build()
        };
        Client::builder(TokioExecutor::new()).build(connector)
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A live HLS stream written by ffmpeg into a temporary folder, in real time,
/// until dropped.
pub struct FfmpegLive {
    child: std::process::Child,
    pub dir: std::path::PathBuf,
}

/// How `FfmpegLive` packages its stream.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Packaging {
    /// HLS with MPEG-TS segments (`index.m3u8`, `seg-N.ts`).
    Ts,
    /// HLS with CMAF segments (`index.m3u8`, `init.mp4`, `seg-N.m4s`).
    Fmp4,
    /// Live DASH with two representations (`manifest.mpd`, SegmentTemplate
    /// with a SegmentTimeline, `chunk-stream{0,1}-NNNNN.m4s`).
    Dash,
}

impl FfmpegLive {
    pub fn start(name: &str, packaging: Packaging) -> Self {
        let dir = std::env::temp_dir().join(format!("outpost-live-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let child = Self::spawn(&dir, packaging, "testsrc");
        Self { child, dir }
    }

    /// Stops the encoder and starts another with another picture
    /// (`smptebars`) under the same names, as a restarted encoder does: its
    /// playlist starts over at media sequence 0 with `seg-0` again.
    pub fn restart(&mut self, packaging: Packaging) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.dir, packaging, "smptebars");
    }

    fn spawn(dir: &std::path::Path, packaging: Packaging, picture: &str) -> std::process::Child {
        let mut cmd = std::process::Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args(["-f", "lavfi", "-i"])
            .arg(format!("{picture}=size=320x180:rate=25"));
        if packaging == Packaging::Dash {
            cmd.args(["-map", "0:v", "-map", "0:v", "-s:v:1", "160x90"]);
        }
        cmd.args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "25",
            "-sc_threshold",
            "0",
        ]);
        match packaging {
            Packaging::Ts | Packaging::Fmp4 => {
                cmd.args([
                    "-f",
                    "hls",
                    "-hls_time",
                    "1",
                    "-hls_list_size",
                    "5",
                    "-hls_flags",
                    "delete_segments",
                ]);
                if packaging == Packaging::Fmp4 {
                    cmd.args(["-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4"])
                        .arg("-hls_segment_filename")
                        .arg(dir.join("seg-%d.m4s"));
                } else {
                    cmd.arg("-hls_segment_filename").arg(dir.join("seg-%d.ts"));
                }
                cmd.arg(dir.join("index.m3u8"));
            }
            Packaging::Dash => {
                cmd.args([
                    "-f",
                    "dash",
                    "-seg_duration",
                    "1",
                    "-window_size",
                    "5",
                    "-extra_window_size",
                    "0",
                ])
                .args([
                    "-use_timeline",
                    "1",
                    "-use_template",
                    "1",
                    "-adaptation_sets",
                    "id=0,streams=v",
                ])
                .arg(dir.join("manifest.mpd"));
            }
        }
        cmd.stdin(std::process::Stdio::null())
            .spawn()
            .expect("ffmpeg runs (apt-get install ffmpeg)")
    }

    /// Waits (at most 20 s) until ffmpeg has written `name`.
    pub async fn wait_file(&self, name: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !self.dir.join(name).exists() {
            assert!(tokio::time::Instant::now() < deadline, "ffmpeg wrote no {name}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (at most 20 s) until the playlist lists `n` segments; returns its text.
    pub async fn wait_segments(&self, n: usize) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(self.dir.join("index.m3u8")) {
                if text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count() >= n {
                    return text;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ffmpeg wrote no playlist with {n} segments"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for FfmpegLive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The segment URIs of a media playlist, oldest first.
pub fn segment_uris(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// A `Cache-Status` saying a prefetch put the object in the cache.
pub fn assert_prefetched(status: &str) {
    assert!(
        status == "outpost; hit; detail=prefetch" || status == "outpost; fwd=miss; collapsed; detail=prefetch",
        "{status}"
    );
}

impl FfmpegLive {
    /// A player's answer for segment `name` (at origin path `path`): a prefetch
    /// brought it, the origin sent it once, and it is byte for byte ffmpeg's file.
    pub fn assert_prefetched_segment(&self, got: &Got, origin: &TestOrigin, path: &str, name: &str) {
        assert_eq!(got.status, 200, "{path}");
        assert_prefetched(got.header("cache-status"));
        assert_eq!(origin.hits(path), 1, "{path}: one origin request");
        let on_disk = std::fs::read(self.dir.join(name)).expect("the segment is still on disk");
        assert!(got.bytes()[..] == on_disk[..], "{path} arrives byte for byte");
    }
}

/// Sends a GET with `range` and returns the response as soon as its head arrives.
pub async fn ranged(c: &TestClient, url: &str, range: &str) -> http::Response<hyper::body::Incoming> {
    c.request(
        http::Request::get(url)
            .header("range", range)
            .body(Default::default())
            .unwrap(),
    )
    .await
    .unwrap()
}
