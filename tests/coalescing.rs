//! One origin fetch per object, streamed to every waiting client as it arrives.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use support::*;
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_of_200_cold_requests_makes_one_origin_request() {
    let origin = TestOrigin::start().await;
    let body = payload(2 << 20, 7);
    origin.set(
        "/storm.ts",
        Script::ok(body.clone())
            .delay(Duration::from_millis(200))
            .throttle(64 << 10, Duration::from_millis(5)),
    );
    let edge = edge_for(&origin).await;
    let client = client();
    let url = url(&edge, "/storm.ts");
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move { get(&client, &url).await })
        })
        .collect();
    let mut statuses = std::collections::HashMap::new();
    for t in tasks {
        let got = t.await.unwrap();
        assert_eq!(got.status, 200);
        assert!(got.bytes() == &body, "every body is byte-identical to the origin's");
        *statuses.entry(got.header("cache-status").to_owned()).or_insert(0) += 1;
    }
    assert_eq!(origin.hits("/storm.ts"), 1, "exactly one origin request");
    assert_eq!(statuses.get("outpost; fwd=miss; stored"), Some(&1), "{statuses:?}");
    assert_eq!(
        statuses.get("outpost; fwd=miss; collapsed").copied().unwrap_or(0)
            + statuses.get("outpost; hit").copied().unwrap_or(0),
        199,
        "{statuses:?}"
    );
    assert_eq!(
        edge.edge
            .metrics()
            .upstream_requests
            .get(outpost::metrics::SourceKind::Origin),
        1
    );
    edge.shutdown().await;
}

/// Clients get the first body bytes while the origin is still sending: the
/// origin sends one chunk and then waits, and only after every client has
/// read that chunk is the origin allowed to finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_read_bytes_before_the_origin_finishes() {
    let origin = TestOrigin::start().await;
    let gate = Arc::new(Notify::new());
    let body = payload(256 << 10, 3);
    origin.set(
        "/live.ts",
        Script::ok(body.clone())
            .throttle(16 << 10, Duration::ZERO)
            .gated(Arc::clone(&gate)),
    );
    let edge = edge_for(&origin).await;
    let client = client();
    let mut readers = Vec::new();
    for _ in 0..5 {
        let resp = client
            .request(
                http::Request::get(url(&edge, "/live.ts"))
                    .body(Default::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-length"], body.len().to_string());
        readers.push(resp.into_body());
    }
    let mut firsts = Vec::new();
    for body_stream in &mut readers {
        let first = tokio::time::timeout(Duration::from_secs(5), body_stream.frame())
            .await
            .expect("first bytes arrive while the origin holds the rest")
            .unwrap()
            .unwrap();
        let data = first.into_data().unwrap();
        assert!(data.len() <= 16 << 10, "only the first origin chunk exists yet");
        assert_eq!(&data[..], &body[..data.len()]);
        firsts.push(data);
    }
    assert_eq!(origin.hits("/live.ts"), 1);
    gate.notify_one();
    for (i, (body_stream, first)) in readers.into_iter().zip(firsts).enumerate() {
        let rest = body_stream.collect().await.unwrap().to_bytes();
        assert_eq!([&first[..], &rest[..]].concat(), body, "reader {i} gets the whole body");
    }
    edge.shutdown().await;
}

#[tokio::test]
async fn the_fetch_survives_the_client_that_started_it() {
    let origin = TestOrigin::start().await;
    let body = payload(512 << 10, 9);
    origin.set(
        "/seg.ts",
        Script::ok(body.clone()).throttle(32 << 10, Duration::from_millis(10)),
    );
    let edge = edge_for(&origin).await;
    let client = client();
    let first = client
        .request(
            http::Request::get(url(&edge, "/seg.ts"))
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(first.headers()["cache-status"], "outpost; fwd=miss; stored");
    drop(first);
    // The fill goes on without the client that started it and is stored whole.
    let got = get(&client, &url(&edge, "/seg.ts")).await;
    assert_eq!(got.bytes(), &body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = get(&client, &url(&edge, "/seg.ts")).await;
        if again.header("cache-status") == "outpost; hit" {
            assert_eq!(again.bytes(), &body);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "object never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(origin.hits("/seg.ts"), 1);
    edge.shutdown().await;
}

/// A client that reads nothing holds its own place in the fill; the others finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_client_does_not_hold_up_the_others() {
    let origin = TestOrigin::start().await;
    let body = payload(4 << 20, 1);
    origin.set(
        "/big.ts",
        Script::ok(body.clone()).throttle(256 << 10, Duration::from_millis(2)),
    );
    let edge = edge_for(&origin).await;
    // The stalled client: sends its request on a raw socket and never reads.
    let mut stalled = tokio::net::TcpStream::connect(edge.addrs.listen).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stalled, b"GET /big.ts HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    origin.wait_hits("/big.ts", 1).await;
    let client = client();
    for _ in 0..10 {
        let got = get(&client, &url(&edge, "/big.ts")).await;
        assert_eq!(got.bytes(), &body);
    }
    assert_eq!(origin.hits("/big.ts"), 1);
    drop(stalled);
    edge.shutdown().await;
}

#[tokio::test]
async fn private_answers_go_only_to_the_client_that_asked() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/me",
        Script::ok("alice's data")
            .headers(&[("cache-control", "private, max-age=60")])
            .delay(Duration::from_millis(300)),
    );
    let edge = edge_for(&origin).await;
    let client = client();
    for got in get_many(&client, &url(&edge, "/me"), 5).await {
        assert_eq!(got.text(), "alice's data");
        assert_eq!(got.header("cache-status"), "outpost; fwd=uri-miss");
    }
    // Each waiter fetched its own copy: no private answer was shared.
    assert_eq!(origin.hits("/me"), 5);
    // Hit-for-pass: later requests go to the origin in parallel, not one by one.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (client, url) = (client.clone(), url(&edge, "/me"));
            tokio::spawn(async move { get(&client, &url).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().header("cache-status"), "outpost; fwd=uri-miss");
    }
    assert_eq!(origin.hits("/me"), 9);
    assert!(origin.peak_concurrency("/me") >= 2, "passes ran in parallel");
    edge.shutdown().await;
}

#[tokio::test]
async fn uncacheable_but_shareable_answers_are_coalesced_not_stored() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/err",
        Script::ok("origin trouble")
            .status(500)
            .headers(&[])
            .delay(Duration::from_millis(300)),
    );
    let edge = edge_for(&origin).await;
    let client = client();
    for got in get_many(&client, &url(&edge, "/err"), 20).await {
        assert_eq!(got.status, 500);
        assert_eq!(got.text(), "origin trouble");
    }
    assert_eq!(origin.hits("/err"), 1, "a failing origin is not stampeded");
    get(&client, &url(&edge, "/err")).await;
    assert_eq!(origin.hits("/err"), 2, "nothing was stored");
    edge.shutdown().await;
}
