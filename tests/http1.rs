//! The edge's own HTTP/1.1 loop (`src/http1.rs`), over raw TCP: pipelined
//! requests, heads split across reads, keep-alive and close, chunked answers,
//! the hand-over to hyper, and stored heads written from prepared bytes.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CACHEABLE: [(&str, &str); 2] = [("cache-control", "max-age=600"), ("content-type", "video/mp2t")];

/// One response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Lowercased names, in the order sent.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n == name).count()
    }
}

/// A raw client connection that reads whole responses, bounded in time.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(edge: &outpost::RunningEdge) -> Self {
        Self {
            stream: TcpStream::connect(edge.addrs.listen).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads more; false at the end of the connection.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .expect("bytes within 10 s")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next response; `bodyless` for an answer to HEAD. Panics if the
    /// connection ends before the response is complete.
    async fn response(&mut self, bodyless: bool) -> Answer {
        let head_end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            assert!(self.fill().await, "the connection ended inside a head");
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).unwrap();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("a header line");
                (n.to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        if bodyless || status == 304 || status == 204 {
            return answer;
        }
        if answer.header("transfer-encoding") == Some("chunked") {
            answer.body = self.chunked_body().await;
        } else {
            let len: usize = answer.header("content-length").expect("a length").parse().unwrap();
            while self.buf.len() < len {
                assert!(self.fill().await, "the connection ended inside a body");
            }
            answer.body = self.buf.drain(..len).collect();
        }
        answer
    }

    async fn chunked_body(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break end;
                }
                assert!(self.fill().await, "the connection ended before the last chunk");
            };
            let size = usize::from_str_radix(std::str::from_utf8(&self.buf[..line_end]).unwrap(), 16).unwrap();
            while self.buf.len() < line_end + 2 + size + 2 {
                assert!(self.fill().await, "the connection ended inside a chunk");
            }
            body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            assert_eq!(&self.buf[line_end + 2 + size..line_end + 4 + size], b"\r\n");
            self.buf.drain(..line_end + 4 + size);
            if size == 0 {
                return body;
            }
        }
    }

    /// Whether the edge closes the connection within 5 s (without sending more).
    async fn closes(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").into_bytes()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_byte_for_byte() {
    let origin = TestOrigin::start().await;
    let a = noise(5_000, 3);
    let b = noise(70_000, 5);
    origin.set("/a.ts", Script::ok(a.clone()).headers(&CACHEABLE));
    origin.set(
        "/b.ts",
        Script::ok(b.clone())
            .headers(&CACHEABLE)
            .throttle(16_000, Duration::from_millis(5)),
    );
    let edge = edge_for(&origin).await;
    let mut warm = Conn::open(&edge).await;
    warm.send(&get("/a.ts", "")).await;
    assert_eq!(warm.response(false).await.body, a);

    // A hit, HEAD, a miss streamed from its fill, a range, the whole object
    // again (no header of the request before carries over: the loop reuses
    // its header map), and an error, in one write.
    let mut c = Conn::open(&edge).await;
    let mut all = get("/a.ts", "");
    all.extend(b"HEAD /a.ts HTTP/1.1\r\nHost: x\r\n\r\n");
    all.extend(get("/b.ts", ""));
    all.extend(get("/a.ts", "Range: bytes=10-19\r\n"));
    all.extend(get("/a.ts", ""));
    all.extend(get("/missing.ts", ""));
    c.send(&all).await;
    let hit = c.response(false).await;
    assert_eq!((hit.status, hit.header("cache-status")), (200, Some("outpost; hit")));
    assert_eq!(hit.body, a);
    let head = c.response(true).await;
    assert_eq!((head.status, head.header("content-length")), (200, Some("5000")));
    let miss = c.response(false).await;
    assert_eq!(miss.status, 200);
    assert_eq!(miss.body, b);
    let range = c.response(false).await;
    assert_eq!(
        (range.status, range.header("content-range")),
        (206, Some("bytes 10-19/5000"))
    );
    assert_eq!(range.body, &a[10..20]);
    let whole = c.response(false).await;
    assert_eq!((whole.status, whole.header("content-range")), (200, None));
    assert_eq!(whole.body, a);
    let missing = c.response(false).await;
    assert_eq!(missing.status, 404);
    // Nothing more was sent: every byte belonged to one of the six.
    assert!(c.buf.is_empty(), "{} stray bytes", c.buf.len());
    assert_eq!(origin.hits("/a.ts"), 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn a_head_split_across_many_reads_is_read_whole() {
    let origin = TestOrigin::start().await;
    origin.set("/a.ts", Script::ok("whole").headers(&CACHEABLE));
    let edge = edge_for(&origin).await;
    let mut c = Conn::open(&edge).await;
    // One byte at a time (about 40 writes, a millisecond apart).
    for byte in get("/a.ts", "") {
        c.send(&[byte]).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let answer = c.response(false).await;
    assert_eq!((answer.status, answer.body.as_slice()), (200, &b"whole"[..]));
    edge.shutdown().await;
}

#[tokio::test]
async fn a_segment_name_with_a_multi_byte_character_is_served() {
    // The bytes of `é` before the number: the segment's rendition name (kept
    // once a DASH manifest has been read) was cut inside the character, a
    // panic that dropped the connection.
    let path = "/v/\u{e9}12.ts";
    let mpd = r#"<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static"
        mediaPresentationDuration="PT10S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"><Period/></MPD>"#;
    let origin = TestOrigin::start().await;
    origin.set(
        "/v/manifest.mpd",
        Script::ok(mpd).headers(&[("content-type", "application/dash+xml")]),
    );
    origin.set(path, Script::ok("twelve").headers(&CACHEABLE));
    let edge = edge_for(&origin).await;
    let mut c = Conn::open(&edge).await;
    c.send(&get("/v/manifest.mpd", "")).await;
    assert_eq!(c.response(false).await.status, 200);
    // The manifest is read just after its fill ends: a moment for that.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..2 {
        c.send(&get(path, "")).await;
        let answer = c.response(false).await;
        assert_eq!((answer.status, answer.body.as_slice()), (200, &b"twelve"[..]));
    }
    assert_eq!(origin.hits(path), 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn requests_the_loop_does_not_take_hand_the_connection_to_hyper() {
    let origin = TestOrigin::start().await;
    origin.set("/a.ts", Script::ok("aaa").headers(&CACHEABLE));
    let edge = edge_for(&origin).await;
    let mut c = Conn::open(&edge).await;
    c.send(&get("/a.ts", "")).await;
    assert_eq!(c.response(false).await.body, b"aaa");
    // A request with a body: hyper reads it and the edge refuses the method.
    c.send(b"POST /a.ts HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        .await;
    let post = c.response(false).await;
    assert_eq!((post.status, post.header("allow")), (405, Some("GET, HEAD, OPTIONS")));
    // The same connection goes on, served by hyper from here.
    c.send(&get("/a.ts", "")).await;
    let after = c.response(false).await;
    assert_eq!((after.status, after.body.as_slice()), (200, &b"aaa"[..]));
    assert_eq!(after.header("cache-status"), Some("outpost; hit"));

    // HTTP/1.0 goes to hyper too, which closes after the answer.
    let mut old = Conn::open(&edge).await;
    old.send(b"GET /a.ts HTTP/1.0\r\nHost: x\r\n\r\n").await;
    let answer = old.response(false).await;
    assert_eq!((answer.status, answer.body.as_slice()), (200, &b"aaa"[..]));
    assert!(old.closes().await);
    assert_eq!(origin.hits("/a.ts"), 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn connection_close_and_idle_keep_alive_end_the_connection() {
    let origin = TestOrigin::start().await;
    origin.set("/a.ts", Script::ok("aaa").headers(&CACHEABLE));
    let edge = start_edge(
        "[server]\nidle_timeout = \"300ms\"\n[[routes]]\nurl = \"{origin}\"\n",
        &origin,
    )
    .await;
    let mut c = Conn::open(&edge).await;
    c.send(&get("/a.ts", "Connection: keep-alive, close\r\n")).await;
    let answer = c.response(false).await;
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(c.closes().await, "closed after the answer the client asked to be last");

    // A kept-alive connection that sends nothing more is closed at the idle timeout.
    let mut idle = Conn::open(&edge).await;
    idle.send(&get("/a.ts", "")).await;
    assert_eq!(idle.response(false).await.status, 200);
    let waited = Instant::now();
    assert!(idle.closes().await, "an idle connection is closed");
    assert!(
        waited.elapsed() >= Duration::from_millis(200),
        "not before the idle timeout"
    );
    assert_eq!(edge.edge.metrics().refused.get(outpost::metrics::Refusal::Idle), 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn an_answer_of_unknown_length_is_chunked_and_a_failed_one_never_ends() {
    let origin = TestOrigin::start().await;
    let body = noise(40_000, 9);
    origin.set(
        "/live.ts",
        Script::ok(body.clone())
            .headers(&CACHEABLE)
            .chunked()
            .throttle(10_000, Duration::from_millis(5)),
    );
    origin.set(
        "/broken.ts",
        Script::ok(noise(40_000, 10))
            .headers(&CACHEABLE)
            .chunked()
            .throttle(10_000, Duration::from_millis(5))
            .end(End::Reset(20_000)),
    );
    let edge = edge_for(&origin).await;
    let mut c = Conn::open(&edge).await;
    c.send(&get("/live.ts", "")).await;
    let answer = c.response(false).await;
    assert_eq!(answer.header("transfer-encoding"), Some("chunked"));
    assert_eq!(answer.body, body);
    // The framing was exact: the connection takes the next request.
    c.send(&get("/live.ts", "")).await;
    assert_eq!(c.response(false).await.body, body);

    let mut broken = Conn::open(&edge).await;
    broken.send(&get("/broken.ts", "")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while broken.fill().await {
        assert!(Instant::now() < deadline, "the edge ends a failed answer");
    }
    let seen = String::from_utf8_lossy(&broken.buf).into_owned();
    assert!(
        seen.contains("transfer-encoding: chunked"),
        "{}",
        &seen[..seen.len().min(300)]
    );
    assert!(
        !seen.ends_with("0\r\n\r\n"),
        "a failed body must not end with the last chunk"
    );
    edge.shutdown().await;
}

/// The headers of a stored answer, from this loop and from hyper (HTTP/2),
/// without the ones that differ per answer.
async fn both_ways(edge: &outpost::RunningEdge, path: &str) -> (Answer, Vec<(String, String)>) {
    let mut c = Conn::open(edge).await;
    c.send(&get(path, "")).await;
    let ours = c.response(false).await;
    let h2 = support::get(&h2_client(), &url(edge, path)).await;
    let mut theirs: Vec<(String, String)> = h2
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    // hyper's answer carries its own id too (merged from the shared head).
    let ids = theirs.iter().filter(|(n, _)| n == "x-request-id").count();
    assert_eq!(ids, 1, "{path}: {theirs:?}");
    theirs.retain(|(n, _)| n != "x-request-id" && n != "date");
    (ours, theirs)
}

fn sorted_without_per_answer(answer: &Answer) -> Vec<(String, String)> {
    let mut headers: Vec<_> = answer
        .headers
        .iter()
        // Measured per answer: the round trip and throughput of that connection.
        .filter(|(n, _)| n != "x-request-id" && n != "date" && n != "cmsd-dynamic")
        .cloned()
        .collect();
    headers.sort();
    headers
}

#[tokio::test]
async fn a_stored_head_is_the_same_from_prepared_bytes_as_from_hyper() {
    let origin = TestOrigin::start().await;
    let plain = [
        ("cache-control", "max-age=600"),
        ("content-type", "video/mp2t"),
        ("etag", "\"v1\""),
        ("x-origin", "one"),
        ("date", "Sat, 28 Nov 2026 01:00:00 GMT"),
    ];
    origin.set("/plain.ts", Script::ok(noise(3_000, 1)).headers(&plain));
    // A Vary, or an upstream Cache-Status: heads the prepared bytes do not
    // serve, since the edge changes those headers per answer.
    let varied = [("cache-control", "max-age=600"), ("vary", "Accept-Encoding")];
    origin.set("/varied.ts", Script::ok(noise(3_000, 2)).headers(&varied));
    let relayed = [("cache-control", "max-age=600"), ("cache-status", "origin-cdn; hit")];
    origin.set("/relayed.ts", Script::ok(noise(3_000, 3)).headers(&relayed));
    let edge = edge_for(&origin).await;
    for path in ["/plain.ts", "/varied.ts", "/relayed.ts"] {
        let mut warm = Conn::open(&edge).await;
        warm.send(&get(path, "")).await;
        assert_eq!(warm.response(false).await.status, 200);
        let (ours, mut theirs) = both_ways(&edge, path).await;
        let measured = theirs.iter().filter(|(n, _)| n == "cmsd-dynamic").count();
        assert_eq!((ours.count("cmsd-dynamic"), measured), (1, 1), "{path}");
        theirs.retain(|(n, _)| n != "cmsd-dynamic");
        theirs.sort();
        assert_eq!(sorted_without_per_answer(&ours), theirs, "{path}");
        assert_eq!(ours.header("cache-status"), Some("outpost; hit"), "{path}");
        assert_eq!(ours.count("date"), 1, "{path}: one Date");
        assert_eq!(ours.count("x-request-id"), 1, "{path}");
    }
    let (plain_ours, _) = both_ways(&edge, "/plain.ts").await;
    assert_eq!(
        plain_ours.header("date"),
        Some("Sat, 28 Nov 2026 01:00:00 GMT"),
        "the origin's Date is kept"
    );
    assert_eq!(plain_ours.header("x-origin"), Some("one"));
    edge.shutdown().await;
}
