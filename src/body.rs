//! The response body type, and the access log line written when it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::access_log::{AccessSink, Format};
use crate::fill::FillBody;
use crate::metrics::{Metrics, SourceKind};
use crate::outcome::Outcome;
use crate::request_id::RequestId;
use crate::shared_head::SharedHead;
use crate::upstream::{FetchError, UpstreamBody};

/// Every response body the edge sends.
pub struct EdgeBody {
    inner: Inner,
    log: Option<AccessLog>,
    /// A stored answer's headers, kept out of the response's own map: see
    /// [`crate::respond::respond_stored`].
    shared_head: Option<SharedHead>,
}

/// The two streaming kinds are boxed: a hit's answer, `Full`, is moved
/// through several async functions, and copying a miss's larger state with it
/// cost more than the box.
enum Inner {
    Full(Option<Bytes>),
    Fill(Box<FillBody>),
    Pass(Box<PassBody>),
    Sliced(Box<ChannelBody>),
}

/// A body fed through a channel by a task of its own (a sliced object's
/// slices, one after another), `remaining` bytes long.
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, FetchError>>,
    remaining: u64,
}

impl ChannelBody {
    pub fn new(rx: tokio::sync::mpsc::Receiver<Result<Bytes, FetchError>>, length: u64) -> Self {
        Self { rx, remaining: length }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, FetchError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                self.remaining = self.remaining.saturating_sub(bytes.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            // The feeding task ended short of the length: never a clean end.
            Poll::Ready(None) => Poll::Ready(Some(Err(FetchError::Abandoned))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl EdgeBody {
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
            log: None,
            shared_head: None,
        }
    }

    pub fn fill(body: FillBody) -> Self {
        Self {
            inner: Inner::Fill(Box::new(body)),
            log: None,
            shared_head: None,
        }
    }

    pub fn sliced(body: ChannelBody) -> Self {
        Self {
            inner: Inner::Sliced(Box::new(body)),
            log: None,
            shared_head: None,
        }
    }

    pub fn pass(body: PassBody) -> Self {
        Self {
            inner: Inner::Pass(Box::new(body)),
            log: None,
            shared_head: None,
        }
    }

    /// Sends `shared`'s headers before the response's own. (Set in place:
    /// a builder taking `self` would copy the body's few hundred bytes on
    /// every hit.)
    pub fn set_shared_head(&mut self, shared: SharedHead) {
        self.shared_head = Some(shared);
    }

    /// The stored head whose headers go before the response's own.
    pub fn take_shared_head(&mut self) -> Option<SharedHead> {
        self.shared_head.take()
    }

    /// The shared head, for headers added after it was attached (`X-Request-Id`).
    pub fn shared_head_mut(&mut self) -> Option<&mut SharedHead> {
        self.shared_head.as_mut()
    }

    /// Attaches the access log, written when the body ends or is dropped.
    pub fn attach_log(&mut self, mut log: AccessLog) {
        if let Some(line) = &mut log.line {
            // An empty body is never polled: it is complete as it stands.
            line.complete = self.is_end_stream();
        }
        self.log = Some(log);
    }
}

impl Body for EdgeBody {
    type Data = Bytes;
    type Error = FetchError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, FetchError>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Fill(body) => Pin::new(&mut **body).poll_frame(cx),
            Inner::Pass(body) => Pin::new(&mut **body).poll_frame(cx),
            Inner::Sliced(body) => body.poll_frame(cx),
        };
        if let Some(log) = &mut this.log {
            if let Poll::Ready(Some(Ok(frame))) = &polled {
                log.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            if let Some(line) = &mut log.line {
                match &polled {
                    Poll::Ready(Some(Err(e))) => line.error = Some(e.to_string()),
                    Poll::Ready(None) => line.complete = true,
                    _ => {}
                }
            }
        }
        // hyper stops polling a body that says it has ended (or has sent its Content-Length).
        if this.is_end_stream() {
            if let Some(line) = this.log.as_mut().and_then(|log| log.line.as_mut()) {
                line.complete = true;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Fill(body) => body.is_end_stream(),
            Inner::Pass(body) => body.is_end_stream(),
            Inner::Sliced(body) => body.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Fill(body) => body.size_hint(),
            Inner::Pass(body) => body.size_hint(),
            Inner::Sliced(body) => SizeHint::with_exact(body.remaining),
        }
    }
}

/// What an answer records when its body is finished or dropped: the bytes it
/// sent, in the metrics, and its access log line when that log is on.
pub struct AccessLog {
    bytes: u64,
    metrics: Arc<Metrics>,
    /// Boxed, and made only when the access log is on: the answer carrying
    /// it is moved through several async functions, and a hit is cheaper
    /// for not copying the line's fields each time.
    line: Option<Box<LogLine>>,
}

impl AccessLog {
    /// Counts into `metrics`, and writes `line` when the answer ends.
    pub fn new(metrics: Arc<Metrics>, line: Option<LogLine>) -> Self {
        Self {
            bytes: 0,
            metrics,
            line: line.map(Box::new),
        }
    }
}

/// One access log line (fields in the README, "Access log").
pub struct LogLine {
    pub sink: Arc<AccessSink>,
    pub id: RequestId,
    pub client: std::net::IpAddr,
    pub method: http::Method,
    /// The request's target; the log shows its path.
    pub uri: http::Uri,
    pub host: Option<http::HeaderValue>,
    pub status: u16,
    pub outcome: Outcome,
    pub started: Instant,
    pub complete: bool,
    pub error: Option<String>,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.metrics.response_bytes.inc_by(self.bytes);
        if let Some(line) = &self.line {
            line.write(self.bytes);
        }
    }
}

impl LogLine {
    fn write(&self, bytes: u64) {
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let end = if self.complete {
            "complete"
        } else if self.error.is_some() {
            "upstream-failed"
        } else {
            "client-gone"
        };
        let source = match self.outcome {
            Outcome::Hit => "cache",
            Outcome::Error => "edge",
            _ => "upstream",
        };
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        // HTTP/2 carries the host in the target (`:authority`).
        let host = self
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .or(self.uri.host())
            .unwrap_or("-");
        let error = self.error.as_deref().unwrap_or("-");
        let line = match self.sink.format() {
            Format::Json => serde_json::json!({
                "time": time,
                "id": self.id.to_string(),
                "client": self.client.to_string(),
                "method": self.method.as_str(),
                "host": host,
                "path": self.uri.path(),
                "status": self.status,
                "cache": self.outcome.as_str(),
                "source": source,
                "bytes": bytes,
                "ms": (ms * 10.0).round() / 10.0,
                "end": end,
                "error": error,
            })
            .to_string(),
            _ => format!(
                "{time} id={} client={} method={} host={host} path={} status={} cache={} source={source} bytes={bytes} ms={ms:.1} end={end} error={error:?}",
                self.id,
                self.client,
                self.method,
                self.uri.path(),
                self.status,
                self.outcome.as_str(),
            ),
        };
        self.sink.write(&line);
    }
}

/// An upstream body streamed straight through (uncached), pulled at the
/// client's pace; [`UpstreamBody`] fails it if it stalls or ends short.
pub struct PassBody {
    body: UpstreamBody,
    /// The first piece, read before the answer's head went to the client.
    first: Option<Bytes>,
    metrics: Arc<Metrics>,
}

impl PassBody {
    pub fn new(body: UpstreamBody, first: Option<Bytes>, metrics: Arc<Metrics>) -> Self {
        let received = first.as_ref().map_or(0, |b| b.len() as u64);
        metrics.upstream_bytes.inc_by(SourceKind::Origin, received);
        Self { body, first, metrics }
    }
}

impl Body for PassBody {
    type Data = Bytes;
    type Error = FetchError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, FetchError>>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        match this.body.poll_data(cx) {
            Poll::Ready(Ok(Some(data))) => {
                this.metrics
                    .upstream_bytes
                    .inc_by(SourceKind::Origin, data.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => {
                this.metrics.upstream_errors.inc(e.kind());
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let first = self.first.as_ref().map_or(0, |b| b.len() as u64);
        let rest = self.body.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + first);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + first);
        }
        hint
    }
}
