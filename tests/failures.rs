//! Failure is never silent, and hostile input gets a clean refusal.

mod support;

use std::time::Duration;

use outpost::metrics::Refusal;
use support::*;

/// Reads a whole response over HTTP/1.1; returns the error if the body was cut.
async fn body_result(c: &TestClient, url: &str) -> (u16, Result<bytes::Bytes, String>) {
    let got = get(c, url).await;
    (got.status.as_u16(), got.body)
}

#[tokio::test]
async fn truncated_body_is_an_error_for_every_reader_and_is_not_stored() {
    let origin = TestOrigin::start().await;
    let body = payload(200_000, 8);
    origin.set(
        "/cut.ts",
        Script::ok(body.clone())
            .throttle(20_000, Duration::from_millis(20))
            .end(End::Truncate(100_000)),
    );
    let edge = edge_for(&origin).await;
    let c = client();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (c, u) = (c.clone(), url(&edge, "/cut.ts"));
            tokio::spawn(async move { body_result(&c, &u).await })
        })
        .collect();
    for t in tasks {
        let (status, result) = t.await.unwrap();
        assert_eq!(status, 200, "headers were already sent");
        assert!(result.is_err(), "a short body must fail, never end cleanly");
    }
    assert_eq!(origin.hits("/cut.ts"), 1);
    // Nothing stored: the next request fetches again, and gets the whole object.
    origin.set("/cut.ts", Script::ok(body.clone()));
    let again = get(&c, &url(&edge, "/cut.ts")).await;
    assert_eq!(again.bytes(), &body);
    assert_eq!(origin.hits("/cut.ts"), 2);
    edge.shutdown().await;
}

#[tokio::test]
async fn reset_of_a_chunked_body_is_an_error() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/reset.ts",
        Script::ok(payload(100_000, 1)).chunked().end(End::Reset(30_000)),
    );
    let edge = edge_for(&origin).await;
    // The failure may reach the client before or after the response head: either way it is an error.
    assert!(try_get(&client(), &url(&edge, "/reset.ts")).await.is_err());
    // Over HTTP/2 the stream is reset rather than ended.
    assert!(
        try_get(&h2_client(), &url(&edge, "/reset.ts")).await.is_err(),
        "h2 stream must be reset"
    );
    assert_eq!(origin.hits("/reset.ts"), 2);
    edge.shutdown().await;
}

#[tokio::test]
async fn stalled_body_fails_after_download_timeout() {
    let origin = TestOrigin::start().await;
    origin.set("/stall.ts", Script::ok(payload(100_000, 1)).end(End::Stall(10_000)));
    let edge = edge_for(&origin).await; // download_timeout = 500ms
    let c = client();
    let (status, result) = body_result(&c, &url(&edge, "/stall.ts")).await;
    assert_eq!(status, 200);
    assert!(result.is_err());
    get(&c, &url(&edge, "/stall.ts")).await;
    assert_eq!(origin.hits("/stall.ts"), 2, "nothing stored");
    edge.shutdown().await;
}

#[tokio::test]
async fn unreachable_origin_is_502_and_slow_headers_504() {
    let origin = TestOrigin::start().await;
    origin.set("/slow", Script::ok("late").delay(Duration::from_secs(3)));
    let edge = edge_for(&origin).await; // timeout = 2s
    let c = client();
    let slow = get(&c, &url(&edge, "/slow")).await;
    assert_eq!(slow.status, 504);
    assert!(slow.text().starts_with("504 Gateway Timeout\n"), "{}", slow.text());
    assert!(
        slow.text().contains(slow.header("x-request-id")),
        "the body names the request id"
    );

    // An origin port with nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let edge2 = start_edge(&format!("[[routes]]\nurl = \"{dead}\"\n"), &origin).await;
    let got = get(&c, &url(&edge2, "/x")).await;
    assert_eq!(got.status, 502);
    // The body is terse: the origin's address and the socket error are in the
    // log and the metrics, never in the answer.
    let port = dead.rsplit(':').next().unwrap();
    assert!(
        got.text().starts_with("502 Bad Gateway\nrequest id: "),
        "{}",
        got.text()
    );
    assert!(
        !got.text().contains(port) && !got.text().contains("127.0.0.1"),
        "{}",
        got.text()
    );
    assert_eq!(got.header("x-content-type-options"), "nosniff");
    assert_eq!(
        edge2
            .edge
            .metrics()
            .upstream_errors
            .get(outpost::metrics::FetchFailure::Unreachable),
        1
    );
    edge.shutdown().await;
    edge2.shutdown().await;
}

#[tokio::test]
async fn backups_take_over_when_the_origin_fails() {
    let origin = TestOrigin::start().await;
    let backup = TestOrigin::start().await;
    origin.set("/b.ts", Script::ok("primary down").status(503).headers(&[]));
    backup.set("/b.ts", Script::ok("from backup"));
    let toml = format!("[[routes]]\nurl = \"{{origin}}\"\nbackups = [\"{}\"]\n", backup.url());
    let edge = start_edge(&toml, &origin).await;
    let got = get(&client(), &url(&edge, "/b.ts")).await;
    assert_eq!(got.text(), "from backup");
    assert_eq!((origin.hits("/b.ts"), backup.hits("/b.ts")), (1, 1));
    edge.shutdown().await;
}

#[tokio::test]
async fn never_an_open_proxy() {
    let origin = TestOrigin::start().await;
    origin.set("/x", Script::ok("x"));
    let edge = start_edge("[[routes]]\nhost = \"video.example\"\nurl = \"{origin}\"\n", &origin).await;
    let c = client();
    let wrong_host = get(&c, &url(&edge, "/x")).await;
    assert_eq!(wrong_host.status, 421);
    // Absolute-form targets are routed by their authority, like Host.
    let absolute = raw_exchange(
        edge.addrs.listen,
        format!(
            "GET http://{0}/x HTTP/1.1\r\nHost: {0}\r\nConnection: close\r\n\r\n",
            origin.addr
        )
        .as_bytes(),
    )
    .await;
    assert!(absolute.starts_with("HTTP/1.1 421"), "{absolute}");
    let routed = raw_exchange(
        edge.addrs.listen,
        b"GET http://video.example/x HTTP/1.1\r\nHost: video.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(routed.starts_with("HTTP/1.1 200"), "{routed}");
    // A Host that names another authority than the target: refused, not routed by either.
    let split = raw_exchange(
        edge.addrs.listen,
        b"GET http://video.example/x HTTP/1.1\r\nHost: elsewhere\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(split.starts_with("HTTP/1.1 400"), "{split}");
    assert_eq!(origin.total(), 1, "only the routed request reached the origin");
    edge.shutdown().await;
}

#[tokio::test]
async fn hostile_requests_get_clean_refusals() {
    let origin = TestOrigin::start().await;
    origin.set("/ok", Script::ok("ok"));
    let edge = start_edge(
        "[server]\nmax_header_size = \"8KiB\"\n[[routes]]\nurl = \"{origin}\"\n",
        &origin,
    )
    .await;
    let addr = edge.addrs.listen;
    let escape = raw_exchange(
        addr,
        b"GET /a/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(escape.starts_with("HTTP/1.1 400"), "{escape}");
    let garbage = raw_exchange(addr, b"GARBAGE\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let huge = format!("GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    let too_big = raw_exchange(addr, huge.as_bytes()).await;
    assert!(too_big.starts_with("HTTP/1.1 431"), "{too_big}");
    // Over the limit but under twice it: the edge's own refusal, counted.
    let big = format!(
        "GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let too_big = raw_exchange(addr, big.as_bytes()).await;
    assert!(too_big.starts_with("HTTP/1.1 431"), "{too_big}");
    let post = send(&client(), "POST", &url(&edge, "/ok"), &[]).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), "GET, HEAD, OPTIONS");
    assert_eq!(origin.total(), 0, "none of these reached the origin");
    let refused = &edge.edge.metrics().refused;
    assert!(refused.get(Refusal::HeadersTooLarge) >= 1);
    assert!(refused.get(Refusal::BadRequest) >= 2, "the escape and the garbage");
    edge.shutdown().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off_at_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = TestOrigin::start().await;
    let edge = start_edge(
        "[server]\nheader_timeout = \"300ms\"\n[[routes]]\nurl = \"{origin}\"\n",
        &origin,
    )
    .await;
    let mut slow = tokio::net::TcpStream::connect(edge.addrs.listen).await.unwrap();
    slow.write_all(b"GET /x HTTP/1.1\r\nHost:").await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "the edge closed the connection of a client that never finished its headers"
    );
    // A client that connects and sends nothing is dropped too.
    let mut silent = tokio::net::TcpStream::connect(edge.addrs.listen).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut buf)).await;
    assert!(closed.is_ok());
    assert_eq!(origin.total(), 0);
    assert_eq!(edge.edge.metrics().refused.get(Refusal::HeaderTimeout), 2);
    edge.shutdown().await;
}

#[tokio::test]
async fn connections_past_the_limit_are_refused_with_503() {
    use tokio::io::AsyncWriteExt;
    let origin = TestOrigin::start().await;
    origin.set("/ok", Script::ok("ok"));
    let edge = start_edge(
        "[server]\nmax_connections = 2\n[[routes]]\nurl = \"{origin}\"\n",
        &origin,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(edge.addrs.listen).await.unwrap();
        s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        held.push(s);
    }
    origin.wait_hits("/ok", 1).await;
    // Both held connections have been accepted (one reached the origin) — wait for the other's permit.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = raw_exchange(edge.addrs.listen, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.to_ascii_lowercase().contains("connection: close"));
    assert_eq!(edge.edge.metrics().refused.get(Refusal::MaxConnections), 1);
    drop(held);
    edge.shutdown().await;
}

#[tokio::test]
async fn h2_body_failure_resets_only_that_stream() {
    let origin = TestOrigin::start().await;
    origin.set("/bad.ts", Script::ok(payload(50_000, 1)).end(End::Truncate(20_000)));
    origin.set("/good.ts", Script::ok(payload(50_000, 2)));
    let edge = edge_for(&origin).await;
    let c = h2_client();
    assert!(
        try_get(&c, &url(&edge, "/bad.ts")).await.is_err(),
        "stream reset, not a clean end"
    );
    // The same h2 connection still serves other streams.
    assert_eq!(get(&c, &url(&edge, "/good.ts")).await.bytes(), &payload(50_000, 2));
    edge.shutdown().await;
}

/// An edge whose route has `primary` as origin and `backup` as its backup.
async fn edge_with_backup(primary: &TestOrigin, backup: &TestOrigin) -> outpost::RunningEdge {
    let toml = format!(
        "[[routes]]\nurl = \"{}\"\nbackups = [\"{}\"]\ntimeout = \"2s\"\ndownload_timeout = \"500ms\"\n",
        primary.url(),
        backup.url()
    );
    start_edge(&toml, primary).await
}

#[tokio::test]
async fn a_body_that_breaks_off_is_finished_from_the_backup_with_a_range_of_the_same_version() {
    let (primary, backup) = (TestOrigin::start().await, TestOrigin::start().await);
    let body = noise(1 << 20, 5);
    primary.set(
        "/r.ts",
        Script::ok(body.clone())
            .header("etag", "\"v1\"")
            .end(End::Reset(300_000)),
    );
    backup.set("/r.ts", Script::ok(body.clone()).header("etag", "\"v1\"").ranges());
    let edge = edge_with_backup(&primary, &backup).await;
    let c = client();
    let got = get(&c, &url(&edge, "/r.ts")).await;
    assert_eq!(got.status, 200);
    assert!(got.bytes()[..] == body[..], "the body is whole, with no seam");
    let asked = &backup.requests("/r.ts")[0];
    let from: usize = asked["range"].to_str().unwrap()["bytes=".len()..]
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(from > 0 && from <= 300_000, "the rest from byte {from}");
    assert_eq!(asked["if-range"], "\"v1\"");
    // Stored whole: the next player gets a hit.
    assert_eq!(cache_status(&c, &url(&edge, "/r.ts")).await, "outpost; hit");
    edge.shutdown().await;
}

#[tokio::test]
async fn a_backup_that_cannot_send_the_same_bytes_is_never_spliced_on() {
    let body = noise(1 << 20, 6);
    // What the backup answers the range with: the whole body (200), or
    // another version's bytes (200 as If-Range asks, or a 206 regardless).
    let other = || Script::ok(noise(1 << 20, 7)).header("etag", "\"v2\"");
    let backups = [
        ("a 200", Script::ok(body.clone()).header("etag", "\"v1\"")),
        ("another version", other().ranges()),
        ("a range of another version", other().ranges_ignoring_if_range()),
    ];
    for (what, script) in backups {
        let (primary, backup) = (TestOrigin::start().await, TestOrigin::start().await);
        primary.set(
            "/s.ts",
            Script::ok(body.clone())
                .header("etag", "\"v1\"")
                .end(End::Reset(300_000)),
        );
        backup.set("/s.ts", script);
        let edge = edge_with_backup(&primary, &backup).await;
        let c = client();
        let (status, result) = body_result(&c, &url(&edge, "/s.ts")).await;
        assert_eq!(status, 200, "{what}");
        assert!(result.is_err(), "{what}: the body must be cut, not spliced");
        assert_eq!(backup.hits("/s.ts"), 1, "{what}: the backup was asked for the rest");
        let key = format!("{}/s.ts", primary.url());
        assert!(edge.edge.store().get(key.as_str()).is_none(), "{what}: nothing stored");
        edge.shutdown().await;
    }
    // Without a validator there is nothing to make a range conditional on: no resume.
    let (primary, backup) = (TestOrigin::start().await, TestOrigin::start().await);
    primary.set("/n.ts", Script::ok(body.clone()).end(End::Reset(300_000)));
    backup.set("/n.ts", Script::ok(body.clone()).ranges());
    let edge = edge_with_backup(&primary, &backup).await;
    let (_, result) = body_result(&client(), &url(&edge, "/n.ts")).await;
    assert!(result.is_err());
    assert_eq!(backup.hits("/n.ts"), 0);
    edge.shutdown().await;
}

#[tokio::test]
async fn a_body_that_stalls_is_finished_from_the_backup_byte_exact() {
    let (primary, backup) = (TestOrigin::start().await, TestOrigin::start().await);
    let body = noise(1 << 20, 8);
    primary.set(
        "/stall.ts",
        Script::ok(body.clone())
            .header("etag", "\"v1\"")
            .end(End::Stall(200_000)),
    );
    backup.set("/stall.ts", Script::ok(body.clone()).header("etag", "\"v1\"").ranges());
    let edge = edge_with_backup(&primary, &backup).await;
    let got = get(&client(), &url(&edge, "/stall.ts")).await;
    assert_eq!(got.status, 200);
    assert!(got.bytes()[..] == body[..], "the body is whole, with no seam");
    assert!(backup.requests("/stall.ts")[0].contains_key("range"));
    edge.shutdown().await;
}

/// The edge's `/status.json`.
async fn status(c: &TestClient, edge: &outpost::RunningEdge) -> serde_json::Value {
    serde_json::from_slice(get(c, &admin_url(edge, "/status.json")).await.bytes()).unwrap()
}

#[tokio::test]
async fn a_failed_origin_is_asked_after_its_backups_until_a_probe_finds_it_answering() {
    let (primary, backup) = (TestOrigin::start().await, TestOrigin::start().await);
    // The probe asks for `HEAD /`: down while that is a 5xx.
    primary.set("/", Script::ok("down").status(503).headers(&[]));
    primary.set("/a.ts", Script::ok("down").status(503).headers(&[]));
    for path in ["/b.ts", "/c.ts"] {
        primary.set(path, Script::ok("from primary"));
    }
    for path in ["/a.ts", "/b.ts", "/c.ts"] {
        backup.set(path, Script::ok("from backup"));
    }
    let edge = edge_with_backup(&primary, &backup).await;
    let c = client();
    assert_eq!(get(&c, &url(&edge, "/a.ts")).await.text(), "from backup");
    // Out of turn: the next miss goes to the backup first.
    assert_eq!(get(&c, &url(&edge, "/b.ts")).await.text(), "from backup");
    assert_eq!(primary.hits("/b.ts"), 0, "a down origin is not asked first");
    let down = &status(&c, &edge).await["origins_down"];
    assert_eq!(down.as_array().unwrap().len(), 1, "{down}");
    assert_eq!(down[0]["origin"], primary.url());
    assert!(down[0]["error"].as_str().unwrap().contains("503"), "{down}");
    let metrics = get(&c, &admin_url(&edge, "/metrics")).await.text();
    assert!(metrics.contains("outpost_origins{state=\"down\"} 1\n"), "{metrics}");
    // It answers its probe again: back in turn.
    primary.set("/", Script::ok("up"));
    let mut back = false;
    for _ in 0..50 {
        if status(&c, &edge).await["origins_down"].as_array().unwrap().is_empty() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the probe never found the origin answering");
    assert!(primary.hits("/") >= 1, "probed");
    assert_eq!(get(&c, &url(&edge, "/c.ts")).await.text(), "from primary");
    assert_eq!(backup.hits("/c.ts"), 0);
    edge.shutdown().await;
}

#[tokio::test]
async fn retry_404_asks_the_backup_for_what_the_primary_does_not_have_yet() {
    let (primary, backup) = (TestOrigin::start().await, TestOrigin::start().await);
    for p in [&primary, &backup] {
        p.set("/live/seg-5.ts", Script::ok("pushed").headers(&[]));
    }
    primary.set("/live/seg-5.ts", Script::ok("not yet").status(404).headers(&[]));
    let c = client();
    // Without retry_404 the primary's 404 is the answer.
    let plain = edge_with_backup(&primary, &backup).await;
    assert_eq!(get(&c, &url(&plain, "/live/seg-5.ts")).await.status, 404);
    assert_eq!(backup.hits("/live/seg-5.ts"), 0);
    plain.shutdown().await;
    let toml = format!(
        "[[routes]]\nurl = \"{}\"\nbackups = [\"{}\"]\nretry_404 = true\n",
        primary.url(),
        backup.url()
    );
    let edge = start_edge(&toml, &primary).await;
    let got = get(&c, &url(&edge, "/live/seg-5.ts")).await;
    assert_eq!((got.status, got.text()), (http::StatusCode::OK, "pushed".to_owned()));
    assert_eq!(backup.hits("/live/seg-5.ts"), 1);
    // A 404 does not take the primary out of turn.
    assert!(status(&c, &edge).await["origins_down"].as_array().unwrap().is_empty());
    edge.shutdown().await;
}
