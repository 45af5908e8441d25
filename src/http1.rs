//! Plain-text HTTP/1.1 connections: the edge's own loop for GET, HEAD and
//! OPTIONS (a player's CORS preflight), hyper for anything else.
//!
//! A cache hit is a parse, a lookup and one `writev`. hyper's general
//! machinery around that (its dispatcher, a timer armed per request, its
//! header encoder) cost about as much user time as the edge's own work (the
//! README's performance section has the figures). This loop reads heads with
//! httparse, answers them through the same [`proxy::answer`] as every other
//! request, and writes the answer itself. A request it does not take (one with
//! a body, HTTP/1.0, an upgrade or `Expect`, h2c, a head that is malformed or
//! too large) goes to hyper together with the bytes read so far, and hyper
//! serves the rest of that connection.
//!
//! [`proxy::answer`]: crate::proxy::answer

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::EdgeBody;
use crate::cache::Wire;
use crate::cmsd::Probe;
use crate::config::ServerConfig;
use crate::edge::Edge;
use crate::forward::Peer;
use crate::metrics::Refusal;
use crate::shared_head::{merge_shared, SharedHead};

/// More header fields than this go to hyper (which takes up to 100).
const MAX_FIELDS: usize = 64;

/// How a connection left this loop.
pub enum Ended {
    /// Closed: by the client, on an error, a timeout, or shutdown.
    Closed,
    /// hyper serves the rest; these bytes were read and not consumed.
    Handoff(Bytes),
}

/// The largest request head a connection reads before refusing it with 431
/// (the edge refuses heads past `max_header_size` itself, with its own answer).
pub fn max_head(cfg: &ServerConfig) -> usize {
    (2 * cfg.max_header_size).max(8192)
}

/// Serves requests on `io` until the connection ends or needs hyper.
///
/// `server.header_timeout` bounds reading one request head (and the first,
/// on a new connection); `server.idle_timeout` bounds a kept-alive
/// connection waiting for its next request. A head too large for this loop
/// goes to hyper, which refuses it with 431.
pub async fn serve<I>(
    edge: &Arc<Edge>,
    io: &mut I,
    peer: SocketAddr,
    client: Peer,
    probe: &Probe,
    stop: &watch::Receiver<bool>,
) -> Ended
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let config = edge.config();
    let cfg = &config.server;
    let (head_timeout, idle_timeout, max_head) = (cfg.header_timeout, cfg.idle_timeout, max_head(cfg));
    // Between requests the connection is idle; once a head has begun, it must
    // arrive within the header timeout.
    let mut idle = false;
    let mut buf = BytesMut::with_capacity(8 << 10);
    let mut out = BytesMut::with_capacity(1 << 10);
    // Each request's header map, emptied and reused: two allocations saved
    // per request.
    let mut fields = HeaderMap::new();
    // Where each field lies in the head, likewise reused: an array of them
    // zeroed per request cost more than the parse. It grows to the most
    // fields a request has sent, not to `MAX_FIELDS` (2 KiB) at once: an
    // idle connection holds only that.
    let mut spans = Vec::new();
    // One timer for the connection: it is moved when it fires early, or when
    // the deadline comes nearer than it is set for, not once per request.
    let mut deadline = Instant::now() + head_timeout;
    let mut timer_at = deadline;
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    // Likewise one registration for shutdown, made once, not per request.
    let mut watched = stop.clone();
    let stopping = watched.changed();
    tokio::pin!(stopping);
    loop {
        let head = match parse(&mut buf, &mut fields, &mut spans) {
            Parsed::Request(head) => head,
            Parsed::Handoff => return Ended::Handoff(buf.freeze()),
            Parsed::Partial if buf.len() >= max_head => return Ended::Handoff(buf.freeze()),
            Parsed::Partial => {
                if buf.is_empty() && *stop.borrow() {
                    return Ended::Closed;
                }
                if idle && !buf.is_empty() {
                    // The next head has begun but not arrived whole (most
                    // do, in one read, and never touch the timer): from here
                    // it has the header timeout, which is the earlier deadline.
                    idle = false;
                    deadline = Instant::now() + head_timeout;
                    bring_forward(timer.as_mut(), &mut timer_at, deadline);
                }
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(8 << 10);
                }
                let read = tokio::select! {
                    biased;
                    read = io.read_buf(&mut buf) => read,
                    _ = &mut timer => {
                        if Instant::now() < deadline {
                            timer_at = deadline;
                            timer.as_mut().reset(deadline);
                            continue;
                        }
                        let why = if idle && buf.is_empty() { Refusal::Idle } else { Refusal::HeaderTimeout };
                        edge.metrics.refused.inc(why);
                        tracing::debug!(peer = %peer, why = why.as_str(), "connection timed out");
                        return Ended::Closed;
                    }
                    _ = &mut stopping, if buf.is_empty() => return Ended::Closed,
                };
                match read {
                    Ok(0) | Err(_) => return Ended::Closed,
                    Ok(_) => continue,
                }
            }
        };
        let (head_request, close) = (head.parts.method == Method::HEAD, head.close);
        let mut parts = head.parts;
        let client = Peer {
            path: probe.path(edge.second()),
            ..client
        };
        let mut response = crate::proxy::answer(Arc::clone(edge), &mut parts, client).await;
        fields = parts.headers;
        // Also lets go of the read buffer's bytes the values pointed into.
        fields.clear();
        let written = match write_response(io, &mut out, &mut response, head_request, close).await {
            // TLS keeps the records the socket had no room for when the last
            // write returned: they must leave before the loop waits for the
            // next request or closes, or the answer's tail waits with them.
            Ok(keep) => io.flush().await.map(|()| keep),
            Err(e) => Err(e),
        };
        match written {
            Ok(true) if !*stop.borrow() => {}
            Ok(_) => return Ended::Closed,
            Err(e) => {
                tracing::debug!(peer = %peer, error = %e, "client connection ended while answering");
                return Ended::Closed;
            }
        }
        deadline = Instant::now() + idle_timeout;
        idle = true;
        bring_forward(timer.as_mut(), &mut timer_at, deadline);
    }
}

/// Moves the connection's timer, set for `timer_at`, to `deadline` if that
/// is sooner. A later deadline waits for the timer to fire early.
fn bring_forward(timer: Pin<&mut tokio::time::Sleep>, timer_at: &mut Instant, deadline: Instant) {
    if deadline < *timer_at {
        *timer_at = deadline;
        timer.reset(deadline);
    }
}

/// A request head this loop takes.
struct RequestHead {
    parts: http::request::Parts,
    /// The client asked to close after this answer.
    close: bool,
}

// Returned once per request and moved straight on: boxing it would cost an
// allocation per request.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Request(RequestHead),
    Partial,
    Handoff,
}

/// Takes one complete request head off the front of `buf`, if there is one
/// this loop serves. Its headers go into `map` (empty, kept for its room);
/// `spans` is room for where they lie.
fn parse(buf: &mut BytesMut, map: &mut HeaderMap, spans: &mut Vec<(Span, Span)>) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    if buf.starts_with(b"PRI ") {
        // The h2c preface (prior knowledge).
        return Parsed::Handoff;
    }
    // Left uninitialised: httparse writes the ones it returns.
    let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(&buf[..], &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Handoff,
    };
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        Some("OPTIONS") => Method::OPTIONS,
        _ => return Parsed::Handoff,
    };
    let (Some(1), Some(path)) = (req.version, req.path) else {
        return Parsed::Handoff;
    };
    // Where each piece lies in the head, so that the parsed request shares its
    // bytes instead of copying them.
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let target = span(path.as_bytes());
    spans.clear();
    let mut close = false;
    for field in req.headers.iter() {
        let name = field.name.as_bytes();
        let refused = [&b"content-length"[..], b"transfer-encoding", b"upgrade", b"expect"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n));
        if refused {
            return Parsed::Handoff;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for token in field.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Handoff;
                }
                close |= token.eq_ignore_ascii_case(b"close");
            }
        }
        spans.push((span(name), span(field.value)));
    }
    let head = buf.split_to(len).freeze();
    match build(&head, method, target, spans, std::mem::take(map)) {
        Some(parts) => Parsed::Request(RequestHead { parts, close }),
        None => {
            // Not valid for `http` after all: hyper answers it, from the start.
            let mut whole = BytesMut::with_capacity(head.len() + buf.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buf);
            *buf = whole;
            Parsed::Handoff
        }
    }
}

/// Reads every request head off the front of `data` as the loop would (for
/// the fuzz target `request_head`): what it takes is a valid request, and
/// it never takes more bytes than it was given.
#[doc(hidden)]
pub fn read_heads(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut map = HeaderMap::new();
    let mut spans = Vec::new();
    // Each head taken is at least a few bytes: this ends within data.len() rounds.
    for _ in 0..=data.len() {
        let before = buf.len();
        match parse(&mut buf, &mut map, &mut spans) {
            Parsed::Request(head) => {
                assert!(buf.len() < before, "a head was taken without its bytes");
                assert!(matches!(
                    head.parts.method,
                    Method::GET | Method::HEAD | Method::OPTIONS
                ));
                map = head.parts.headers;
                map.clear();
            }
            Parsed::Partial | Parsed::Handoff => return,
        }
    }
}

type Span = (usize, usize);

/// `headers` comes empty, with room from an earlier request.
fn build(
    head: &Bytes,
    method: Method,
    target: Span,
    fields: &[(Span, Span)],
    mut headers: HeaderMap,
) -> Option<http::request::Parts> {
    let slice = |(at, len): Span| head.slice(at..at + len);
    let uri = Uri::from_maybe_shared(slice(target)).ok()?;
    headers.reserve(fields.len());
    for &(name, value) in fields {
        let name = HeaderName::from_bytes(&head[name.0..name.0 + name.1]).ok()?;
        let value = HeaderValue::from_maybe_shared(slice(value)).ok()?;
        headers.append(name, value);
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Some(parts)
}

/// How the body is delimited on the wire.
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Encodes `response`'s head into `out` and decides how its body is framed;
/// also whether the connection closes after it. A stored answer's own
/// headers come prepared (`respond::respond_stored`).
fn encode_answer_head(
    out: &mut BytesMut,
    response: &mut Response<EdgeBody>,
    head_request: bool,
    mut close: bool,
) -> (Framing, bool) {
    let status = response.status();
    let mut headers = std::mem::take(response.headers_mut());
    let body = response.body_mut();
    let shared = body.take_shared_head();
    let wire = shared.as_ref().and_then(|shared| shared.head.wire());
    if let (Some(shared), None) = (&shared, wire) {
        merge_shared(shared, &mut headers);
    }
    headers.remove(header::TRANSFER_ENCODING);
    close |= headers
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let bodyless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let declared = match (&shared, wire) {
        (Some(shared), Some(_)) => shared.head.content_length,
        _ => headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok()),
    };
    // Without prepared fields, a shared head was merged into `headers` above.
    let dated = headers.contains_key(header::DATE) || wire.is_some_and(|wire| wire.dated);
    let framing = match (bodyless, declared, body.size_hint().exact()) {
        (true, _, _) => Framing::None,
        (false, Some(len), _) => Framing::Length(len),
        (false, None, Some(len)) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            Framing::Length(len)
        }
        (false, None, None) => {
            headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            Framing::Chunked
        }
    };
    if close && !headers.contains_key(header::CONNECTION) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let prepared = wire.zip(shared.as_ref());
    encode_head(out, status, prepared, &headers, dated);
    (framing, close)
}

/// Writes `response`; true if the connection can take another request.
/// (Borrowed, not moved: the answer is a few hundred bytes, copied at each move.)
async fn write_response<I>(
    io: &mut I,
    out: &mut BytesMut,
    response: &mut Response<EdgeBody>,
    head_request: bool,
    close: bool,
) -> io::Result<bool>
where
    I: AsyncWrite + Unpin,
{
    let (framing, close) = encode_answer_head(out, response, head_request, close);
    let body = response.body_mut();
    let mut head = Some(out.split().freeze());
    if let Framing::None = framing {
        // Not read, as hyper does not: the answer has no body on the wire.
        // Let go of it (a fill's reader, the log) before writing, as a
        // moved body would be.
        drop(std::mem::replace(body, EdgeBody::empty()));
        write_all(io, &mut [IoSlice::new(&head.unwrap_or_default())]).await?;
        return Ok(!close);
    }
    let mut sent = 0u64;
    loop {
        // The head goes with the first data when that is ready; a body that
        // is still arriving (a fill, an open range) gets its head at once.
        // Once the head is out, a pending body suspends this task: a fill's
        // reader yields after its first piece, and peeking here would undo that.
        let next = if head.is_some() {
            match poll_fn(|cx| Poll::Ready(poll_data(&mut *body, cx))).await {
                Poll::Ready(next) => next,
                Poll::Pending => {
                    if let Some(head) = head.take() {
                        write_all(io, &mut [IoSlice::new(&head)]).await?;
                    }
                    poll_fn(|cx| poll_data(&mut *body, cx)).await
                }
            }
        } else {
            poll_fn(|cx| poll_data(&mut *body, cx)).await
        };
        let data = match next {
            None => break,
            // The body failed (it logs why): close without finishing the
            // message, so the client knows the body is incomplete.
            Some(Err(())) => return Ok(false),
            Some(Ok(data)) if data.is_empty() => continue,
            Some(Ok(data)) => data,
        };
        let head = head.take().unwrap_or_default();
        sent += data.len() as u64;
        match framing {
            // More than the declared length: the answer is wrong; stop here.
            Framing::Length(len) if sent > len => return Ok(false),
            Framing::Length(_) | Framing::None => {
                write_all(io, &mut [IoSlice::new(&head), IoSlice::new(&data)]).await?;
                if body.is_end_stream() {
                    // A whole body in one piece (every stored hit): no poll
                    // to learn that it has ended.
                    break;
                }
            }
            Framing::Chunked => {
                let size = format!("{:x}\r\n", data.len());
                let mut slices = [
                    IoSlice::new(&head),
                    IoSlice::new(size.as_bytes()),
                    IoSlice::new(&data),
                    IoSlice::new(b"\r\n"),
                ];
                write_all(io, &mut slices).await?;
            }
        }
    }
    match framing {
        Framing::Chunked => {
            let head = head.unwrap_or_default();
            write_all(io, &mut [IoSlice::new(&head), IoSlice::new(b"0\r\n\r\n")]).await?;
            Ok(!close)
        }
        Framing::Length(len) => {
            if let Some(head) = head {
                write_all(io, &mut [IoSlice::new(&head)]).await?;
            }
            // Short of the declared length: the client sees the connection
            // close early, never a short body passed off as whole.
            Ok(sent == len && !close)
        }
        Framing::None => Ok(!close),
    }
}

/// The body's next data, `Err` if it failed (the body logs the failure).
fn poll_data(body: &mut EdgeBody, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ()>>> {
    loop {
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(_))) => return Poll::Ready(Some(Err(()))),
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    return Poll::Ready(Some(Ok(data)));
                }
            }
        }
    }
}

/// The head on the wire: the status line, a stored head's prepared fields
/// and per-answer ones if there are, the map's, then `Date` unless `dated`.
fn encode_head(
    out: &mut BytesMut,
    status: StatusCode,
    prepared: Option<(&Wire, &SharedHead)>,
    headers: &HeaderMap,
    dated: bool,
) {
    if status == StatusCode::OK {
        // Nearly every answer: one copy instead of four.
        out.put_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(status.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
        out.put_slice(b"\r\n");
    }
    if let Some((wire, shared)) = prepared {
        out.put_slice(&wire.fields);
        shared.encode(out);
    }
    crate::headers::encode_fields(out, headers);
    if !dated {
        out.put_slice(b"date: ");
        date(|d| out.put_slice(d));
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

/// Today's `Date` value, formatted once a second per thread.
fn date(with: impl FnOnce(&[u8])) {
    use std::cell::RefCell;
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            *cached = (secs, httpdate::fmt_http_date(now));
        }
        with(cached.1.as_bytes());
    });
}

/// Writes every byte of `slices`, in as few calls as the socket allows.
async fn write_all<I>(io: &mut I, slices: &mut [IoSlice<'_>]) -> io::Result<()>
where
    I: AsyncWrite + Unpin,
{
    let mut slices = &mut slices[..];
    // Drops leading empty slices: nothing at all to write is no system call.
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let n = io.write_vectored(slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// A connection with bytes already read in front of it, for hyper.
pub struct Prefixed<I> {
    read: Bytes,
    inner: I,
}

impl<I> Prefixed<I> {
    pub fn new(read: Bytes, inner: I) -> Self {
        Self { read, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
