//! TLS, HTTPS origins, CORS, the admin listener and graceful shutdown.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use support::*;

#[tokio::test]
async fn tls_listener_speaks_h2_and_http11_by_alpn() {
    let origin = TestOrigin::start().await;
    origin.set("/t.ts", Script::ok("over tls"));
    let cert = TestCert::new("listener");
    let toml = cert.edge_toml("");
    let edge = start_edge(&toml, &origin).await;
    let tls_addr = edge.addrs.tls_listen.expect("tls listener bound");
    for (h2, version) in [(true, http::Version::HTTP_2), (false, http::Version::HTTP_11)] {
        let c = cert.client(h2);
        let resp = c
            .request(
                http::Request::get(format!("https://127.0.0.1:{}/t.ts", tls_addr.port()))
                    .body(Empty::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.version(), version);
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "over tls");
    }
    assert_eq!(origin.hits("/t.ts"), 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn https_origins_are_fetched_with_verified_tls() {
    let cert = TestCert::new("origin");
    let origin = TestOrigin::start_tls(&cert).await;
    origin.set("/s.ts", Script::ok("secure origin"));
    let trusted = format!(
        "[upstream]\nca_file = \"{}\"\n[[routes]]\nurl = \"{}\"\n",
        cert.cert_path(),
        origin.https_url()
    );
    let edge = start_edge(&trusted, &origin).await;
    assert_eq!(get(&client(), &url(&edge, "/s.ts")).await.text(), "secure origin");
    edge.shutdown().await;
    // Without the CA the certificate is refused: 502, and the origin never answers a request.
    let untrusted = format!("[[routes]]\nurl = \"{}\"\n", origin.https_url());
    let edge = start_edge(&untrusted, &origin).await;
    let got = get(&client(), &url(&edge, "/s.ts")).await;
    assert_eq!(got.status, 502);
    assert_eq!(origin.hits("/s.ts"), 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn cors_for_browser_players() {
    let origin = TestOrigin::start().await;
    origin.set("/p.m3u8", Script::ok("#EXTM3U\n"));
    let edge = edge_for(&origin).await;
    let c = client();
    let pre = send(
        &c,
        "OPTIONS",
        &url(&edge, "/p.m3u8"),
        &[
            ("origin", "https://player.example"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "range, cmcd-request"),
        ],
    )
    .await;
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("access-control-allow-origin"), "*");
    assert_eq!(pre.header("access-control-allow-headers"), "range, cmcd-request");
    assert_eq!(origin.total(), 0, "the preflight is answered by the edge");
    let got = send(
        &c,
        "GET",
        &url(&edge, "/p.m3u8"),
        &[("origin", "https://player.example")],
    )
    .await;
    assert_eq!(got.header("access-control-allow-origin"), "*");
    let exposed = got.header("access-control-expose-headers");
    assert!(exposed.contains("Cache-Status") && exposed.contains("Age") && exposed.contains("Content-Range"));
    // Error answers carry CORS too, so a player can read why it failed.
    let err = send(
        &c,
        "POST",
        &url(&edge, "/p.m3u8"),
        &[("origin", "https://player.example")],
    )
    .await;
    assert_eq!(err.header("access-control-allow-origin"), "*");

    let strict = start_edge(
        "[server]\ncors_origins = [\"https://ok.example\"]\n[[routes]]\nurl = \"{origin}\"\n",
        &origin,
    )
    .await;
    let denied = send(
        &c,
        "GET",
        &url(&strict, "/p.m3u8"),
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(denied.header("access-control-allow-origin"), "");
    let allowed = send(&c, "GET", &url(&strict, "/p.m3u8"), &[("origin", "https://ok.example")]).await;
    assert_eq!(allowed.header("access-control-allow-origin"), "https://ok.example");
    edge.shutdown().await;
    strict.shutdown().await;
}

#[tokio::test]
async fn admin_health_metrics_and_status() {
    let origin = TestOrigin::start().await;
    origin.set("/m.ts", Script::ok(payload(1000, 1)));
    let edge = edge_for(&origin).await;
    let c = client();
    for _ in 0..4 {
        get(&c, &url(&edge, "/m.ts")).await;
    }
    assert_eq!(get(&c, &admin_url(&edge, "/healthz")).await.text(), "ok\n");
    let metrics = get(&c, &admin_url(&edge, "/metrics")).await.text();
    for line in [
        "outpost_requests_total{cache=\"miss\"} 1",
        "outpost_requests_total{cache=\"hit\"} 3",
        "outpost_response_bytes_total 4000",
        "outpost_upstream_requests_total{source=\"origin\"} 1",
        "outpost_upstream_bytes_total{source=\"origin\"} 1000",
        "outpost_cache_objects 1",
        "outpost_inflight_fetches 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    let status: serde_json::Value =
        serde_json::from_slice(get(&c, &admin_url(&edge, "/status.json")).await.bytes()).unwrap();
    assert_eq!(status["origin_offload"], 0.75);
    let page = get(&c, &admin_url(&edge, "/status")).await;
    assert!(page.header("content-type").starts_with("text/html"));
    assert_eq!(get(&c, &admin_url(&edge, "/nope")).await.status, 404);
    edge.shutdown().await;
}

#[tokio::test]
async fn purge_needs_the_token_and_drops_entries() {
    let origin = TestOrigin::start().await;
    for p in ["/live/a.ts", "/live/b.ts", "/vod/c.ts"] {
        origin.set(p, Script::ok("x"));
    }
    let c = client();
    let open = edge_for(&origin).await;
    let disabled = send(&c, "POST", &admin_url(&open, "/purge?url=http://x/live/a.ts"), &[]).await;
    assert_eq!(disabled.status, 404, "purge is off without admin.token");
    open.shutdown().await;

    let edge = start_edge("[admin]\ntoken = \"s3cret\"\n[[routes]]\nurl = \"{origin}\"\n", &origin).await;
    for p in ["/live/a.ts", "/live/b.ts", "/vod/c.ts"] {
        get(&c, &url(&edge, p)).await;
    }
    let purge = |q: &str| admin_url(&edge, &format!("/purge?{q}"));
    assert_eq!(
        send(&c, "POST", &purge("url=http://x/live/a.ts"), &[]).await.status,
        401
    );
    assert_eq!(
        send(
            &c,
            "POST",
            &purge("url=http://x/live/a.ts"),
            &[("authorization", "Bearer nope")]
        )
        .await
        .status,
        401
    );
    let auth = [("authorization", "Bearer s3cret")];
    let one = send(&c, "POST", &purge("url=http://x/live/a.ts"), &auth).await;
    assert_eq!((one.status.as_u16(), one.text()), (200, "purged 1\n".to_string()));
    assert_eq!(
        cache_status(&c, &url(&edge, "/live/a.ts")).await,
        "outpost; fwd=miss; stored"
    );
    assert_eq!(cache_status(&c, &url(&edge, "/vod/c.ts")).await, "outpost; hit");
    let prefix = send(&c, "POST", &purge("prefix=http%3A%2F%2Fx%2Flive%2F"), &auth).await;
    assert_eq!(prefix.text(), "purged 2\n");
    assert_eq!(
        cache_status(&c, &url(&edge, "/live/b.ts")).await,
        "outpost; fwd=miss; stored"
    );
    assert_eq!(cache_status(&c, &url(&edge, "/vod/c.ts")).await, "outpost; hit");
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_responses_under_way() {
    let origin = TestOrigin::start().await;
    let body = payload(400_000, 3);
    origin.set(
        "/slow.ts",
        Script::ok(body.clone()).throttle(40_000, Duration::from_millis(40)),
    );
    let edge = edge_for(&origin).await;
    let addr = edge.addrs.listen;
    let c = client();
    let resp = c
        .request(http::Request::get(url(&edge, "/slow.ts")).body(Empty::new()).unwrap())
        .await
        .unwrap();
    let stopping = tokio::spawn(edge.shutdown());
    let rest = resp
        .into_body()
        .collect()
        .await
        .expect("the response under way completes")
        .to_bytes();
    assert_eq!(rest, body);
    stopping.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn offload_is_undefined_while_only_errors_were_served() {
    // No origin listens here: every answer is the edge's own 502.
    let edge = start_edge_at(
        "[[routes]]\nurl = \"{origin}\"\ntimeout = \"1s\"\n",
        "http://127.0.0.1:9",
    )
    .await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(get(&c, &url(&edge, "/x.ts")).await.status, 502);
    }
    let status = |edge: &outpost::RunningEdge| {
        let u = admin_url(edge, "/status.json");
        let c = client();
        async move { serde_json::from_slice::<serde_json::Value>(get(&c, &u).await.bytes()).unwrap() }
    };
    let before = status(&edge).await;
    assert!(
        before["response_bytes"].as_u64().unwrap() > 0,
        "the error pages were counted"
    );
    assert!(before["origin_offload"].is_null(), "{before}");
    edge.shutdown().await;
}

/// Connects over TLS with `config`; says whether the session was resumed.
async fn tls_handshake(config: &Arc<rustls::ClientConfig>, port: u16) -> bool {
    let mut tls = TestCert::connect(config, port).await;
    // A request and its answer, so that the tickets sent after the
    // handshake are read and kept.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET /t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

#[tokio::test]
async fn a_returning_https_client_resumes_its_session_after_hundreds_of_others() {
    let origin = TestOrigin::start().await;
    origin.set("/t", Script::ok("t"));
    let cert = TestCert::new("resume");
    let edge = start_edge(&cert.edge_toml(""), &origin).await;
    let port = edge.addrs.tls_listen.expect("tls listener bound").port();
    let returning = Arc::new(cert.tls_config());
    assert!(
        !tls_handshake(&returning, port).await,
        "a first visit is a full handshake"
    );
    assert!(tls_handshake(&returning, port).await, "a second visit resumes");
    // 300 other viewers, each once: more sessions than an edge that keeps
    // them in memory remembers (256 by rustls' default).
    for _ in 0..300 {
        let other = Arc::new(cert.tls_config());
        assert!(!tls_handshake(&other, port).await);
    }
    assert!(
        tls_handshake(&returning, port).await,
        "the returning client resumes all the same"
    );
    edge.shutdown().await;
}

/// A viewer that reads slowly over HTTPS HTTP/1.1 gets every byte of a
/// large answer, and then the next one on the same connection. When the
/// socket is full, TLS keeps up to 64 KiB of records back; they must leave
/// once the socket has room, not wait for a next write that never comes.
/// A small `server.send_buffer` makes the socket fill as a slow viewer's
/// does on a real network.
#[tokio::test]
async fn a_slow_https_http11_reader_gets_the_whole_answer_and_the_next() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = TestOrigin::start().await;
    let body = payload(2 << 20, 21);
    origin.set(
        "/big.ts",
        Script::ok(body.clone()).header("cache-control", "max-age=60"),
    );
    let cert = TestCert::new("slow-reader");
    let edge = start_edge(&cert.edge_toml("send_buffer = \"16KiB\"\n"), &origin).await;
    // Stored first, so that the answer leaves in one write of the whole body.
    assert_eq!(get(&client(), &url(&edge, "/big.ts")).await.bytes(), &body);
    let port = edge.addrs.tls_listen.expect("tls listener bound").port();
    let mut tls = TestCert::connect(&Arc::new(cert.tls_config()), port).await;
    let mut read = Vec::new();
    for round in 0..2 {
        tls.write_all(b"GET /big.ts HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        // Nothing read for a while: the edge's socket fills and its writes wait.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut chunk = vec![0u8; 64 << 10];
        let (head_end, length) = loop {
            if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&read[..end]).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "round {round}: {head}");
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .expect("a content-length")
                    .parse()
                    .unwrap();
                break (end + 4, length);
            }
            let n = tls.read(&mut chunk).await.unwrap();
            assert!(n > 0, "round {round}: closed before the head");
            read.extend_from_slice(&chunk[..n]);
        };
        while read.len() < head_end + length {
            // A bound on the hang this test is about, not on speed.
            let n = match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk)).await {
                Ok(n) => n.unwrap(),
                Err(_) => panic!(
                    "round {round}: the answer stopped at {} of {length} bytes",
                    read.len() - head_end
                ),
            };
            assert!(
                n > 0,
                "round {round}: closed at {} of {length} bytes",
                read.len() - head_end
            );
            read.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(&read[head_end..head_end + length], &body[..], "round {round}");
        read.drain(..head_end + length);
    }
    edge.shutdown().await;
}

#[tokio::test]
async fn https_bodies_are_byte_exact_under_concurrency_over_h2_and_http11() {
    let origin = TestOrigin::start().await;
    let cert = TestCert::new("concurrency");
    let edge = start_edge(&cert.edge_toml(""), &origin).await;
    let port = edge.addrs.tls_listen.expect("tls listener bound").port();
    for (h2, path) in [(true, "/h2.bin"), (false, "/h1.bin")] {
        let body = payload(1 << 20, if h2 { 11 } else { 12 });
        // Slow enough that the first clients read it while it arrives.
        origin.set(
            path,
            Script::ok(body.clone())
                .header("cache-control", "max-age=60")
                .throttle(64 << 10, std::time::Duration::from_millis(5)),
        );
        let c = cert.client(h2);
        let url = format!("https://127.0.0.1:{port}{path}");
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (c, url) = (c.clone(), url.clone());
                tokio::spawn(async move {
                    let mut bodies = Vec::new();
                    for _ in 0..2 {
                        let resp = c
                            .request(http::Request::get(&url).body(Empty::new()).unwrap())
                            .await
                            .unwrap();
                        let version = resp.version();
                        bodies.push((version, resp.into_body().collect().await.unwrap().to_bytes()));
                    }
                    bodies
                })
            })
            .collect();
        for t in tasks {
            for (version, got) in t.await.unwrap() {
                let want = if h2 {
                    http::Version::HTTP_2
                } else {
                    http::Version::HTTP_11
                };
                assert_eq!(version, want);
                assert!(got == body, "{path}: {} bytes, not the origin's", got.len());
            }
        }
        assert_eq!(origin.hits(path), 1, "{path}");
        // The origin is told the client came over HTTPS, whichever protocol.
        let sent = &origin.requests(path)[0];
        assert_eq!(sent.get("x-forwarded-proto").unwrap(), "https", "{path}");
    }
    edge.shutdown().await;
}
