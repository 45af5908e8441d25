//! No client may hold the edge's memory or connections beyond its share:
//! clients that read nothing, connections that only ping, one address that
//! opens a hundred connections.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use outpost::metrics::Refusal;

const MIB: u64 = 1 << 20;

/// A client that asks for `path` and then reads nothing.
async fn non_reader(listen: &str, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(listen).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    s
}

/// Waits until the origin has sent nothing more for a second (at most `limit`).
async fn settled(origin: &RawOrigin, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    let mut last = origin.body_sent();
    let mut still_since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = origin.body_sent();
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= Duration::from_secs(1) && now > 0 {
            break;
        }
    }
    last
}

fn big(len: u64, cache: &'static str) -> impl Fn(&RawRequest) -> RawAnswer + Send + Sync + 'static {
    move |_| RawAnswer::Stream {
        head: format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\ncache-control: {cache}\r\n\r\n"),
        len,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_of_a_huge_object_does_not_pull_it_into_memory() {
    let origin = RawOrigin::start(big(400_000_000, "max-age=60")).await;
    let edge = Binary::start(&format!("[[routes]]\nurl = \"{}\"\n", origin.url()));
    let before = edge.rss();
    let _client = non_reader(&edge.listen, "/huge.ts").await;
    let sent = settled(&origin, Duration::from_secs(15)).await;
    let grown = edge.rss().saturating_sub(before);
    println!("origin sent {} MiB; RSS grew {} MiB", sent / MIB, grown / MIB);
    assert!(
        sent < 64 * MIB,
        "the origin sent {sent} bytes for a client that reads nothing"
    );
    assert!(grown < 48 * MIB, "RSS grew by {grown} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_clients_that_read_nothing_stay_within_the_cache_budget() {
    let origin = RawOrigin::start(big(15_000_000, "max-age=60")).await;
    let edge = Binary::start(&format!(
        "[cache]\nmemory = \"64MiB\"\nmax_object = \"16MiB\"\n[[routes]]\nurl = \"{}\"\n",
        origin.url()
    ));
    let before = edge.rss();
    let mut clients = Vec::new();
    for i in 0..12 {
        clients.push(non_reader(&edge.listen, &format!("/obj-{i}.ts")).await);
    }
    let sent = settled(&origin, Duration::from_secs(20)).await;
    let grown = edge.rss().saturating_sub(before);
    println!("origin sent {} MiB; RSS grew {} MiB", sent / MIB, grown / MIB);
    assert!(grown < (64 + 48) * MIB, "RSS grew by {grown} bytes");
}

#[tokio::test]
async fn a_client_that_takes_nothing_is_closed_at_the_send_timeout_and_its_fetch_stops() {
    let origin = RawOrigin::start(big(400_000_000, "max-age=60")).await;
    let edge = start_edge_at(
        "[server]\nsend_timeout = \"1s\"\n[[routes]]\nurl = \"{origin}\"\n",
        &origin.url(),
    )
    .await;
    let mut client = non_reader(&edge.addrs.listen.to_string(), "/huge.ts").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while edge.edge.metrics().refused.get(Refusal::SendTimeout) == 0 {
        assert!(Instant::now() < deadline, "the client was not cut off");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = settled(&origin, Duration::from_secs(10)).await;
    assert!(sent < 64 * MIB, "the fetch went on: {sent} bytes");
    // What the client still reads is what was in flight, then the end: the
    // answer is short of its length, never passed off as whole.
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection was closed");
    assert!((got.len() as u64) < 400_000_000);
    edge.shutdown().await;
}

/// Reads `at_least` body bytes of `path` (over HTTP/1.1), then hangs up.
async fn read_some_then_leave(listen: &str, path: &str, at_least: usize) {
    let mut s = non_reader(listen, path).await;
    let mut got = 0;
    let mut buf = vec![0u8; 64 << 10];
    while got < at_least {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("bytes within 10 s")
            .unwrap();
        assert!(n > 0, "the answer ended early");
        got += n;
    }
}

#[tokio::test]
async fn fetches_nobody_waits_for_stop() {
    let origin = RawOrigin::start(big(400_000_000, "private")).await;
    let edge = start_edge_at("[[routes]]\nurl = \"{origin}\"\n", &origin.url()).await;
    let listen = edge.addrs.listen.to_string();
    // The first request fills (and finds the answer private); the second is
    // passed straight through (hit-for-pass). Each client leaves after 1 MiB.
    for round in 1..=2u64 {
        read_some_then_leave(&listen, "/private.ts", 1 << 20).await;
        let sent = settled(&origin, Duration::from_secs(10)).await;
        assert!(sent < round * 64 * MIB, "round {round}: the origin sent {sent} bytes");
    }
    assert_eq!(origin.requests().len(), 2);
    edge.shutdown().await;
}

#[tokio::test]
async fn an_http2_stream_reset_after_its_headers_stops_an_uncacheable_fetch() {
    let stream = big(400_000_000, "no-store");
    let origin =
        RawOrigin::start(move |req| RawAnswer::Delayed(Duration::from_millis(300), Box::new(stream(req)))).await;
    let edge = start_edge_at("[[routes]]\nurl = \"{origin}\"\n", &origin.url()).await;
    let h2 = h2_client();
    let asked = h2.request(
        http::Request::get(url(&edge, "/reset.ts"))
            .body(http_body_util::Empty::new())
            .unwrap(),
    );
    // Dropping the request once the origin has it resets the stream.
    let deadline = Instant::now() + Duration::from_secs(10);
    tokio::select! {
        _ = asked => panic!("the answer came before the test could reset it"),
        _ = async {
            while origin.requests().is_empty() {
                assert!(Instant::now() < deadline, "the request never reached the origin");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        } => {}
    }
    let sent = settled(&origin, Duration::from_secs(10)).await;
    assert!(sent < 64 * MIB, "the fetch went on: {sent} bytes");
    let inflight = edge.edge.inflight().len();
    assert_eq!(inflight, 0, "no fill is left running");
    edge.shutdown().await;
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let origin = TestOrigin::start().await;
    origin.set("/ok", Script::ok("ok"));
    let edge = start_edge(
        "[server]\nmax_connections = 64\nmax_connections_per_ip = 16\n[[routes]]\nurl = \"{origin}\"\n",
        &origin,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(TcpStream::connect(edge.addrs.listen).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while edge.edge.metrics().refused.get(Refusal::PerIp) < 84 {
        assert!(
            Instant::now() < deadline,
            "the connections past the share were not closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another address still gets in, at once.
    let started = Instant::now();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket.connect(edge.addrs.listen).await.unwrap();
    other
        .write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), other.read_to_end(&mut answer))
        .await
        .expect("an answer within 2 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    println!("127.0.0.2 answered in {:?}", started.elapsed());
    assert_eq!(edge.edge.metrics().refused.get(Refusal::PerIp), 84);
    drop(held);
    edge.shutdown().await;
}

/// An HTTP/2 connection (prior knowledge) that sends only PINGs, and answers
/// the edge's SETTINGS and PINGs as a client must. Returns whether the edge
/// sent GOAWAY, once it closed the connection; `None` if it did not within `limit`.
async fn pinging_h2(addr: std::net::SocketAddr, limit: Duration) -> Option<bool> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let (to_send, mut sending) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                frame = sending.recv() => match frame {
                    Some(frame) => if wr.write_all(&frame).await.is_err() { return },
                    None => return,
                },
                _ = tick.tick() => {
                    let ping = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
                    if wr.write_all(&ping).await.is_err() { return }
                }
            }
        }
    });
    let read = async {
        let mut goaway = false;
        loop {
            let mut header = [0u8; 9];
            if rd.read_exact(&mut header).await.is_err() {
                return goaway;
            }
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let (kind, flags) = (header[3], header[4]);
            let mut payload = vec![0u8; len];
            if rd.read_exact(&mut payload).await.is_err() {
                return goaway;
            }
            match (kind, flags & 1) {
                (4, 0) => {
                    let _ = to_send.send(vec![0, 0, 0, 4, 1, 0, 0, 0, 0]);
                }
                (6, 0) => {
                    let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                    ack.extend_from_slice(&payload);
                    let _ = to_send.send(ack);
                }
                (7, _) => goaway = true,
                _ => {}
            }
        }
    };
    let ended = tokio::time::timeout(limit, read).await.ok();
    writer.abort();
    ended
}

#[tokio::test]
async fn connections_with_no_request_in_flight_are_closed_at_the_idle_timeout() {
    let origin = TestOrigin::start().await;
    origin.set("/ok", Script::ok("ok"));
    let edge = start_edge(
        "[server]\nidle_timeout = \"3s\"\n[[routes]]\nurl = \"{origin}\"\n",
        &origin,
    )
    .await;
    let pinging = pinging_h2(edge.addrs.listen, Duration::from_secs(8));
    let kept_alive = async {
        let mut s = TcpStream::connect(edge.addrs.listen).await.unwrap();
        s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut rest))
            .await
            .is_ok()
    };
    let (pinging, kept_alive) = tokio::join!(pinging, kept_alive);
    assert_eq!(
        pinging,
        Some(true),
        "the pinging HTTP/2 connection got GOAWAY and was closed"
    );
    assert!(kept_alive, "the idle HTTP/1.1 connection was closed");
    assert_eq!(edge.edge.metrics().refused.get(Refusal::Idle), 2);
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_answer_longer_than_the_idle_timeout_keeps_its_connection_until_it_ends() {
    let origin = TestOrigin::start().await;
    // 16 pieces, one each 150 ms: about 2.4 s in flight, past the 1 s limit.
    let body = payload(256 << 10, 5);
    origin.set(
        "/slow.bin",
        Script::ok(body.clone()).throttle(16 << 10, Duration::from_millis(150)),
    );
    let edge = start_edge(
        "[server]\nidle_timeout = \"1s\"\n[[routes]]\nurl = \"{origin}\"\n",
        &origin,
    )
    .await;
    let idle = || edge.edge.metrics().refused.get(Refusal::Idle);
    let c = h2_client();
    let got = get(&c, &url(&edge, "/slow.bin")).await;
    assert_eq!(got.body.as_deref(), Ok(&body[..]), "the whole answer");
    assert_eq!(idle(), 0, "closed as idle while its answer was under way");
    // Once the answer is done the connection is idle, and is closed for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while idle() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(idle(), 1, "the idle connection was not closed");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runaway_stream_cannot_take_every_origin_fetch() {
    let origin = TestOrigin::start().await;
    for i in 0..6 {
        origin.set(
            &format!("/runaway/seg-{i}.ts"),
            Script::ok(payload(1_000, i)).delay(Duration::from_millis(400)),
        );
    }
    origin.set("/calm/seg-1.ts", Script::ok(payload(1_000, 9)));
    let edge = start_edge(
        "[media]\nstream_fetches = 2\nprefetch_ahead = 0\n[[routes]]\nurl = \"{origin}\"\ntimeout = \"5s\"\n",
        &origin,
    )
    .await;
    let runaway: Vec<_> = (0..6)
        .map(|i| {
            let u = url(&edge, &format!("/runaway/seg-{i}.ts"));
            tokio::spawn(async move { get(&client(), &u).await.status })
        })
        .collect();
    let arrived = || {
        (0..6)
            .filter(|i| origin.hits(&format!("/runaway/seg-{i}.ts")) > 0)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while arrived() < 2 {
        assert!(Instant::now() < deadline, "the stream's first fetches did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Another stream is not held up behind them.
    let calm = get(&client(), &url(&edge, "/calm/seg-1.ts")).await;
    assert_eq!(calm.status, 200);
    let waiting = 6 - arrived();
    assert!(
        waiting >= 3,
        "the other stream was answered while {waiting} of one stream's fetches waited"
    );
    for r in runaway {
        assert_eq!(r.await.unwrap(), 200, "they wait their turn, then are fetched");
    }
    assert!(
        origin.peak_total_concurrency() <= 3,
        "two of the stream at once, plus the other stream: {}",
        origin.peak_total_concurrency()
    );
    // Past the route's timeout a waiting fetch is refused with 503.
    let short = start_edge(
        "[media]\nstream_fetches = 1\nprefetch_ahead = 0\n[[routes]]\nurl = \"{origin}\"\ntimeout = \"300ms\"\n",
        &origin,
    )
    .await;
    origin.set(
        "/slow/a.ts",
        Script::ok(payload(1_000, 1)).throttle(100, Duration::from_millis(100)),
    );
    origin.set("/slow/b.ts", Script::ok(payload(1_000, 2)));
    let first = tokio::spawn({
        let u = url(&short, "/slow/a.ts");
        async move { get(&client(), &u).await.status }
    });
    origin.wait_hits("/slow/a.ts", 1).await;
    let refused = get(&client(), &url(&short, "/slow/b.ts")).await;
    assert_eq!(refused.status, 503);
    assert_eq!(origin.hits("/slow/b.ts"), 0);
    assert_eq!(first.await.unwrap(), 200);
    let metrics = get(&client(), &admin_url(&short, "/metrics")).await.text();
    assert!(
        metrics.contains("outpost_upstream_errors_total{reason=\"stream_busy\"} 1"),
        "{metrics}"
    );
    short.shutdown().await;
    edge.shutdown().await;
}

#[tokio::test]
async fn a_route_has_at_most_max_fetches_under_way_and_refuses_past_its_timeout() {
    let origin = TestOrigin::start().await;
    for path in ["/a/1.ts", "/b/2.ts"] {
        origin.set(
            path,
            Script::ok(payload(1_000, 1)).throttle(100, Duration::from_millis(100)),
        );
    }
    origin.set("/c/3.ts", Script::ok(payload(1_000, 3)));
    let edge = start_edge(
        "[media]\nprefetch_ahead = 0\n[[routes]]\nurl = \"{origin}\"\ntimeout = \"300ms\"\nmax_fetches = 2\n",
        &origin,
    )
    .await;
    // Two slow fetches, in two streams, take the route's two slots.
    let slow: Vec<_> = ["/a/1.ts", "/b/2.ts"]
        .into_iter()
        .map(|p| {
            let u = url(&edge, p);
            tokio::spawn(async move { get(&client(), &u).await.status })
        })
        .collect();
    origin.wait_hits("/a/1.ts", 1).await;
    origin.wait_hits("/b/2.ts", 1).await;
    // A third stream waits the route's timeout, then gets a 503.
    let refused = get(&client(), &url(&edge, "/c/3.ts")).await;
    assert_eq!(refused.status, 503);
    assert_eq!(origin.hits("/c/3.ts"), 0, "never sent upstream");
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
    // Slots free again once those are in.
    assert_eq!(get(&client(), &url(&edge, "/c/3.ts")).await.status, 200);
    let metrics = get(&client(), &admin_url(&edge, "/metrics")).await.text();
    assert!(
        metrics.contains("outpost_upstream_errors_total{reason=\"route_busy\"} 1"),
        "{metrics}"
    );
    edge.shutdown().await;
}

/// HTTPS connections writing large answers borrow room for larger TLS
/// writes from one budget for the whole edge. Readers that stall keep their
/// loan, but all of them together never more than the budget; the rest
/// write at rustls' own size. A reader that resumes gets its answer whole,
/// and every loan comes back when its connection ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_https_readers_borrow_no_more_than_the_edge_lends() {
    use outpost::tls_writes::{BASE, RAISED, TLS_BURST_BUDGET};
    let origin = TestOrigin::start().await;
    let body = payload(2 << 20, 31);
    origin.set(
        "/big.ts",
        Script::ok(body.clone()).header("cache-control", "max-age=60"),
    );
    let cert = TestCert::new("burst");
    // A small send buffer, as a slow viewer's connection has: the edge's
    // writes wait with little in the kernel.
    let edge = start_edge(&cert.edge_toml("send_buffer = \"16KiB\"\n"), &origin).await;
    assert_eq!(get(&client(), &url(&edge, "/big.ts")).await.bytes(), &body);
    let port = edge.addrs.tls_listen.expect("tls listener bound").port();
    let borrowed = || {
        edge.edge.refresh_gauges();
        edge.edge.metrics().tls_burst_bytes.get() as u64
    };
    let loan = (RAISED - BASE) as u64;
    let most = TLS_BURST_BUDGET / loan;
    let config = Arc::new(cert.tls_config());
    let mut stalled = Vec::new();
    for _ in 0..most + 10 {
        let mut tls = TestCert::connect(&config, port).await;
        tls.write_all(b"GET /big.ts HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        stalled.push(tls);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while borrowed() < most * loan && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(borrowed(), most * loan, "{most} loans of {loan} bytes");
    assert!(borrowed() <= TLS_BURST_BUDGET);
    // One of them reads on, and gets every byte.
    let mut answer = Vec::new();
    let mut first = stalled.swap_remove(0);
    let mut chunk = vec![0u8; 64 << 10];
    while !answer.ends_with(&body[body.len() - 64..]) {
        let n = tokio::time::timeout(Duration::from_secs(10), first.read(&mut chunk))
            .await
            .expect("the answer goes on")
            .unwrap();
        assert!(n > 0, "closed after {} bytes", answer.len());
        answer.extend_from_slice(&chunk[..n]);
    }
    let start = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&answer[start..], &body[..]);
    drop((first, stalled));
    let deadline = Instant::now() + Duration::from_secs(30);
    while borrowed() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(borrowed(), 0, "every loan comes back");
    edge.shutdown().await;
}
