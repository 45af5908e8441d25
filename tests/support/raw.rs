//! A raw HTTP/1.1 origin that frames requests as nginx does: it answers a
//! request, then reads and discards the body its `Content-Length` or
//! chunked `Transfer-Encoding` announced before it reads the next request on
//! that connection. An edge that forwards a client's body framing without
//! the body desyncs it, as it would desync nginx. It also writes answers no
//! well-behaved server would (a bad chunk size, a huge head), and counts
//! the body bytes it managed to send.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request as the origin parsed it.
#[derive(Clone, Debug)]
pub struct RawRequest {
    pub method: String,
    pub path: String,
    /// Names lower-cased, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RawRequest {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// The request's header lines, as text, for an answer that echoes them.
    pub fn echo(&self) -> String {
        let mut out = format!("answer for {}\n", self.path);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value)));
        }
        out
    }
}

/// How the origin answers one request.
pub enum RawAnswer {
    /// These bytes, exactly, as the whole answer.
    Wire(Vec<u8>),
    /// This head, then `len` generated body bytes, sent as fast as the edge
    /// takes them (each write counted once it is accepted).
    Stream { head: String, len: u64 },
    /// The answer, after a pause.
    Delayed(Duration, Box<RawAnswer>),
}

impl RawAnswer {
    /// A 200 with `body` and these extra header lines (each ending in CRLF).
    pub fn ok(extra: &str, body: &str) -> Self {
        RawAnswer::Wire(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{extra}\r\n{body}", body.len()).into_bytes())
    }
}

type Handler = dyn Fn(&RawRequest) -> RawAnswer + Send + Sync;

struct State {
    requests: Mutex<Vec<RawRequest>>,
    /// Request heads that did not parse: the edge desynced a connection.
    garbage: AtomicUsize,
    body_sent: AtomicU64,
    handler: Box<Handler>,
}

pub struct RawOrigin {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawOrigin {
    pub async fn start(handler: impl Fn(&RawRequest) -> RawAnswer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            garbage: AtomicUsize::new(0),
            body_sent: AtomicU64::new(0),
            handler: Box::new(handler),
        });
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                conns.spawn(serve(Arc::clone(&st), stream));
            }
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request parsed so far, in order.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn paths(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.path).collect()
    }

    /// Request heads that were not HTTP: the framing was broken.
    pub fn garbage(&self) -> usize {
        self.state.garbage.load(Ordering::SeqCst)
    }

    /// Body bytes of `Stream` answers the edge has taken.
    pub fn body_sent(&self) -> u64 {
        self.state.body_sent.load(Ordering::SeqCst)
    }
}

async fn serve(st: Arc<State>, mut stream: TcpStream) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some(end) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        let head: Vec<u8> = buf.drain(..end).collect();
        let Some(request) = parse(&head) else {
            st.garbage.fetch_add(1, Ordering::SeqCst);
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
            return;
        };
        st.requests.lock().unwrap().push(request.clone());
        let mut answer = (st.handler)(&request);
        if let RawAnswer::Delayed(pause, then) = answer {
            tokio::time::sleep(pause).await;
            answer = *then;
        }
        let written = match answer {
            RawAnswer::Wire(bytes) => stream.write_all(&bytes).await.is_ok(),
            RawAnswer::Stream { head, len } => stream_body(&st, &mut stream, &head, len).await,
            RawAnswer::Delayed(..) => false,
        };
        if !written {
            return;
        }
        // nginx reads (and drops) the body the request announced before the
        // next request: bytes that were never sent are taken from the next one.
        if let Some(len) = request.header("content-length") {
            let len: usize = String::from_utf8_lossy(len).trim().parse().unwrap_or(0);
            if !discard(&mut stream, &mut buf, len).await {
                return;
            }
        } else if request
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"))
            && !discard_chunked(&mut stream, &mut buf).await
        {
            return;
        }
    }
}

/// Reads until `buf` holds a whole head; its length, or `None` at the end.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        let mut chunk = [0u8; 16 << 10];
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

fn parse(head: &[u8]) -> Option<RawRequest> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    Some(RawRequest {
        method: req.method?.to_owned(),
        path: req.path?.to_owned(),
        headers: req
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect(),
    })
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, want: usize) -> bool {
    while buf.len() < want {
        let mut chunk = [0u8; 16 << 10];
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    }
    true
}

async fn discard(stream: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> bool {
    if !fill(stream, buf, len).await {
        return false;
    }
    buf.drain(..len);
    true
}

async fn discard_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    loop {
        let line_end = loop {
            if let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
                break at;
            }
            let want = buf.len() + 1;
            if !fill(stream, buf, want).await {
                return false;
            }
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let Ok(size) = usize::from_str_radix(size_text.trim(), 16) else {
            return false;
        };
        buf.drain(..line_end + 2);
        if !discard(stream, buf, size + 2).await {
            return false;
        }
        if size == 0 {
            return true;
        }
    }
}

async fn stream_body(st: &State, stream: &mut TcpStream, head: &str, len: u64) -> bool {
    if stream.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    let piece = vec![b'v'; 64 << 10];
    let mut sent = 0u64;
    while sent < len {
        let n = piece.len().min((len - sent) as usize);
        if stream.write_all(&piece[..n]).await.is_err() {
            return false;
        }
        sent += n as u64;
        st.body_sent.fetch_add(n as u64, Ordering::SeqCst);
    }
    true
}
