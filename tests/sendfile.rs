//! Large stored bodies sent with sendfile(2): the same bytes as a copy would
//! send, whole ranges, slow readers, pipelined requests, and the switch off.

#![cfg(target_os = "linux")]

mod support;

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LEN: usize = 3 * 1024 * 1024 + 17;

const SENDFILE_ON: &str = "[server]\nsendfile = true\n[[routes]]\nurl = \"{origin}\"\ntimeout = \"2s\"\n";

/// Mapped bodies are counted process-wide; `cargo test` runs these tests in
/// one process, so they take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn large_segment(origin: &TestOrigin, path: &str, body: bytes::Bytes) {
    origin.set(
        path,
        Script::ok(body).headers(&[("cache-control", "max-age=60"), ("content-type", "video/mp2t")]),
    );
}

fn sent_by_sendfile(edge: &outpost::RunningEdge) -> u64 {
    edge.edge.metrics().sendfile_bytes.get()
}

#[tokio::test]
async fn large_hits_and_ranges_go_out_with_sendfile_byte_for_byte() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let origin = TestOrigin::start().await;
    let body = noise(LEN, 7);
    large_segment(&origin, "/big.ts", body.clone());
    origin.set(
        "/small.ts",
        Script::ok(noise(1024, 3)).header("cache-control", "max-age=60"),
    );
    let edge = start_edge(SENDFILE_ON, &origin).await;
    let c = client();

    let miss = get(&c, &url(&edge, "/big.ts")).await;
    assert_eq!(miss.bytes(), &body);
    assert_eq!(sent_by_sendfile(&edge), 0, "a miss streams the origin's chunks");

    let hit = get(&c, &url(&edge, "/big.ts")).await;
    assert_eq!(hit.header("cache-status"), "outpost; hit");
    assert_eq!(hit.bytes(), &body);
    assert_eq!(sent_by_sendfile(&edge), LEN as u64, "the hit's body went by sendfile");

    let part = ranged(&c, &url(&edge, "/big.ts"), "bytes=100000-1099999").await;
    assert_eq!(part.status(), 206);
    let part = part.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(part, body.slice(100_000..1_100_000));
    assert_eq!(sent_by_sendfile(&edge), LEN as u64 + 1_000_000);

    // Short ranges and small objects are copied: sendfile would cost more.
    let short = ranged(&c, &url(&edge, "/big.ts"), "bytes=5000-5999").await;
    assert_eq!(
        short.into_body().collect().await.unwrap().to_bytes(),
        body.slice(5000..6000)
    );
    get(&c, &url(&edge, "/small.ts")).await;
    assert_eq!(get(&c, &url(&edge, "/small.ts")).await.bytes(), &noise(1024, 3));
    assert_eq!(sent_by_sendfile(&edge), LEN as u64 + 1_000_000);

    let metrics = get(&c, &admin_url(&edge, "/metrics")).await.text();
    assert!(
        metrics.contains(&format!("outpost_sendfile_bytes_total {}", LEN + 1_000_000)),
        "{metrics}"
    );
    assert_eq!(origin.hits("/big.ts"), 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn many_clients_at_once_get_the_whole_mapped_body() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let origin = TestOrigin::start().await;
    let body = noise(LEN, 11);
    large_segment(&origin, "/many.ts", body.clone());
    let edge = start_edge(SENDFILE_ON, &origin).await;
    let c = client();
    get(&c, &url(&edge, "/many.ts")).await;
    for got in get_many(&c, &url(&edge, "/many.ts"), 24).await {
        assert_eq!(got.bytes(), &body);
    }
    assert_eq!(sent_by_sendfile(&edge), 24 * LEN as u64);
    edge.shutdown().await;
}

/// Reads `n` responses with a `Content-Length` from `stream`, slowly: a small
/// receive window and a pause per read keep the edge's socket full, so its
/// sendfile calls send part of a body and then wait.
async fn read_slowly(stream: &mut tokio::net::TcpStream, n: usize) -> Vec<(String, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    while out.len() < n {
        assert!(Instant::now() < deadline, "responses within 30 s");
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .expect("a content-length")
                .parse()
                .unwrap();
            if buf.len() >= end + 4 + length {
                let body = buf[end + 4..end + 4 + length].to_vec();
                buf.drain(..end + 4 + length);
                out.push((head, body));
                continue;
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("bytes within 10 s")
            .unwrap();
        assert!(read > 0, "the edge closed the connection after {} responses", out.len());
        buf.extend_from_slice(&chunk[..read]);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(buf.is_empty(), "{} stray bytes after the responses", buf.len());
    out
}

#[tokio::test]
async fn a_slow_reader_with_pipelined_requests_gets_every_byte_in_order() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let origin = TestOrigin::start().await;
    let first = noise(LEN, 21);
    let second = noise(LEN / 2, 22);
    large_segment(&origin, "/a.ts", first.clone());
    large_segment(&origin, "/b.ts", second.clone());
    let edge = start_edge(SENDFILE_ON, &origin).await;
    let c = client();
    get(&c, &url(&edge, "/a.ts")).await;
    get(&c, &url(&edge, "/b.ts")).await;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut stream = socket.connect(edge.addrs.listen).await.unwrap();
    let host = edge.addrs.listen;
    let requests = format!(
        "GET /a.ts HTTP/1.1\r\nhost: {host}\r\n\r\nGET /b.ts HTTP/1.1\r\nhost: {host}\r\n\r\nGET /a.ts HTTP/1.1\r\nhost: {host}\r\nrange: bytes=70000-\r\n\r\n"
    );
    stream.write_all(requests.as_bytes()).await.unwrap();
    let got = read_slowly(&mut stream, 3).await;
    assert!(got[0].0.starts_with("HTTP/1.1 200"), "{}", got[0].0);
    assert!(got[0].1 == first, "first body differs");
    assert!(got[1].0.starts_with("HTTP/1.1 200"), "{}", got[1].0);
    assert!(got[1].1 == second, "second body differs");
    assert!(got[2].0.starts_with("HTTP/1.1 206"), "{}", got[2].0);
    assert!(got[2].1 == first[70_000..], "range body differs");
    let expected = (LEN + LEN / 2 + LEN - 70_000) as u64;
    assert_eq!(sent_by_sendfile(&edge), expected);
    edge.shutdown().await;
}

#[tokio::test]
async fn by_default_the_same_bytes_are_copied() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let origin = TestOrigin::start().await;
    let body = noise(LEN, 31);
    large_segment(&origin, "/off.ts", body.clone());
    // Off is the default.
    let edge = edge_for(&origin).await;
    let c = client();
    get(&c, &url(&edge, "/off.ts")).await;
    let hit = get(&c, &url(&edge, "/off.ts")).await;
    assert_eq!(hit.header("cache-status"), "outpost; hit");
    assert_eq!(hit.bytes(), &body);
    assert_eq!(sent_by_sendfile(&edge), 0);
    edge.shutdown().await;
}

#[tokio::test]
async fn h2c_and_https_clients_read_mapped_bodies_by_copy() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let origin = TestOrigin::start().await;
    let body = noise(LEN, 41);
    large_segment(&origin, "/m.ts", body.clone());
    let cert = TestCert::new("mapped");
    let toml = cert.edge_toml("sendfile = true\n");
    let edge = start_edge(&toml, &origin).await;
    get(&client(), &url(&edge, "/m.ts")).await;
    let h2 = get(&h2_client(), &url(&edge, "/m.ts")).await;
    assert_eq!(h2.header("cache-status"), "outpost; hit");
    assert_eq!(h2.bytes(), &body);
    let tls_addr = edge.addrs.tls_listen.expect("tls listener bound");
    for alpn_h2 in [false, true] {
        let resp = cert
            .client(alpn_h2)
            .request(
                http::Request::get(format!("https://127.0.0.1:{}/m.ts", tls_addr.port()))
                    .body(Default::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), body);
    }
    // HTTP/2 frames are below the sendfile threshold, and TLS must encrypt.
    assert_eq!(sent_by_sendfile(&edge), 0);
    assert_eq!(origin.hits("/m.ts"), 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn purged_bodies_give_back_their_mappings() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let origin = TestOrigin::start().await;
    for i in 0..3 {
        large_segment(&origin, &format!("/p{i}.ts"), noise(LEN, 50 + i));
    }
    let edge = start_edge(SENDFILE_ON, &origin).await;
    let c = client();
    for i in 0..3 {
        get(&c, &url(&edge, &format!("/p{i}.ts"))).await;
    }
    assert_eq!(outpost::mapped::open(), 3);
    assert_eq!(edge.edge.store().purge(|_| true), 3);
    assert_eq!(outpost::mapped::open(), 0, "a purged body still holds its memfd");
    edge.shutdown().await;
}
