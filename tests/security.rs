//! No request may change what other viewers get: tried as an attacker would,
//! against an origin that frames requests like nginx.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An origin that answers every path with its own name and the request's
/// headers (as a web framework that builds URLs from them would), cacheable.
async fn echo_origin() -> RawOrigin {
    RawOrigin::start(|req| RawAnswer::ok("cache-control: max-age=60\r\n", &req.echo())).await
}

/// Sends `request` on a new connection and reads the answer until the edge
/// has sent a whole response to it (or closed).
async fn exchange(edge: &outpost::RunningEdge, request: &[u8]) -> String {
    raw_exchange(edge.addrs.listen, request).await
}

/// Five ordinary players after an attack: each gets its own answer.
async fn five_players_get_their_own(edge: &outpost::RunningEdge, round: &str) {
    let c = client();
    for i in 0..5 {
        let path = format!("/{round}/p{i}.ts");
        let got = get(&c, &url(edge, &path)).await;
        assert_eq!(got.status, 200, "{path}: {}", got.text());
        assert!(
            got.text().starts_with(&format!("answer for {path}\n")),
            "{path} got someone else's answer: {}",
            got.text()
        );
    }
}

fn assert_clean_framing(origin: &RawOrigin) {
    assert_eq!(origin.garbage(), 0, "the origin parsed a request that was not one");
    for req in origin.requests() {
        assert_eq!(req.method, "GET", "{req:?}");
        for name in ["content-length", "transfer-encoding", "expect", "trailer"] {
            assert!(req.header(name).is_none(), "{name} reached the origin: {req:?}");
        }
    }
}

#[tokio::test]
async fn body_framing_on_a_get_never_reaches_the_pooled_origin_connection() {
    let origin = echo_origin().await;
    let edge = start_edge_at("[[routes]]\nurl = \"{origin}\"\n", &origin.url()).await;
    // The 40 bytes an nginx-like origin would take from the next request.
    let smuggled = "GET /live/index.m3u8 HTTP/1.1\r\nHost: x\r\n";
    assert_eq!(smuggled.len(), 40);
    let attacks = [
        format!("GET /a/cl.ts HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nConnection: close\r\n\r\n{smuggled}"),
        format!(
            "GET /a/chunked.ts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n28\r\n{smuggled}\r\n0\r\n\r\n"
        ),
        format!(
            "GET /a/expect.ts HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 40\r\nConnection: close\r\n\r\n{smuggled}"
        ),
    ];
    for (round, attack) in attacks.iter().enumerate() {
        let answer = exchange(&edge, attack.as_bytes()).await;
        assert!(answer.contains(" 200 OK"), "{answer}");
        five_players_get_their_own(&edge, &format!("r{round}")).await;
    }
    assert_clean_framing(&origin);
    assert_eq!(origin.requests().len(), 3 + 3 * 5, "{:?}", origin.paths());
    edge.shutdown().await;
}

#[tokio::test]
async fn an_http2_get_with_a_body_never_reaches_the_origin_with_its_length() {
    let origin = echo_origin().await;
    let edge = start_edge_at("[[routes]]\nurl = \"{origin}\"\n", &origin.url()).await;
    let h2: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let req = http::Request::get(url(&edge, "/a/h2.ts"))
        .header("content-length", "40")
        .body(Full::new(Bytes::from_static(
            b"GET /live/index.m3u8 HTTP/1.1\r\nHost: x\r\n",
        )))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), h2.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    five_players_get_their_own(&edge, "h2").await;
    assert_clean_framing(&origin);
    edge.shutdown().await;
}

#[tokio::test]
async fn a_get_body_past_the_bound_is_refused_and_the_connection_closed() {
    let origin = echo_origin().await;
    let edge = start_edge_at("[[routes]]\nurl = \"{origin}\"\n", &origin.url()).await;
    let mut s = tokio::net::TcpStream::connect(edge.addrs.listen).await.unwrap();
    s.write_all(b"GET /big.ts HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[b'x'; 1000]).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(read.is_ok(), "the connection is closed after the refusal: {text}");
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.to_ascii_lowercase().contains("connection: close"), "{text}");
    assert!(origin.requests().is_empty(), "nothing went upstream");
    assert_eq!(
        edge.edge.metrics().refused.get(outpost::metrics::Refusal::BadRequest),
        1
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn a_later_viewer_gets_nothing_of_the_first_viewers_forwarding_headers() {
    let origin = echo_origin().await;
    let edge = start_edge_at("[[routes]]\nurl = \"{origin}\"\n", &origin.url()).await;
    let hostile = [
        ("x-forwarded-host", "evil.example"),
        ("x-original-url", "/evil-original"),
        ("x-rewrite-url", "/evil-rewrite"),
        ("forwarded", "host=evil-forwarded.example"),
        ("x-forwarded-proto", "gopher"),
        ("x-forwarded-scheme", "gopher-scheme"),
        ("x-host", "evil-xhost.example"),
        ("x-http-method-override", "DELETE"),
        ("x-forwarded-for", "6.6.6.6"),
        ("via", "1.1 evil-via"),
    ];
    let c = client();
    let first = send(&c, "GET", &url(&edge, "/live/index.m3u8"), &hostile).await;
    let later = get(&c, &url(&edge, "/live/index.m3u8")).await;
    assert_eq!(later.header("cache-status"), "outpost; hit");
    for answer in [first.text(), later.text()] {
        for (_, value) in hostile {
            assert!(!answer.contains(value), "{value} reached the origin: {answer}");
        }
        // Set by the edge from what it knows.
        assert!(answer.contains("x-forwarded-for: 127.0.0.1\n"), "{answer}");
        assert!(answer.contains("x-forwarded-proto: http\n"), "{answer}");
        assert!(answer.contains("via: 1.1 outpost\n"), "{answer}");
    }
    edge.shutdown().await;
}

#[tokio::test]
async fn a_trusted_proxys_chain_is_kept_and_strip_headers_are_dropped() {
    let origin = echo_origin().await;
    let edge = start_edge_at(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n[[routes]]\nurl = \"{origin}\"\nstrip_headers = [\"X-Debug\"]\n",
        &origin.url(),
    )
    .await;
    let got = send(
        &client(),
        "GET",
        &url(&edge, "/t.ts"),
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-debug", "secret"),
            ("x-tag", "kept"),
        ],
    )
    .await;
    let text = got.text();
    assert!(text.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"), "{text}");
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains("x-tag: kept\n"), "{text}");
    edge.shutdown().await;
}

#[tokio::test]
async fn two_host_headers_are_refused_and_go_nowhere() {
    let origin = echo_origin().await;
    let edge = start_edge_at("[[routes]]\nurl = \"{origin}\"\n", &origin.url()).await;
    for request in [
        &b"GET /h.ts HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n"[..],
        b"GET /h.ts HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        b"GET http://a.example/h.ts HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    ] {
        let answer = exchange(&edge, request).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("x-content-type-options: nosniff"));
    }
    // HTTP/2: a `host` that disagrees with `:authority`.
    let got = send(&h2_client(), "GET", &url(&edge, "/h.ts"), &[("host", "b.example")]).await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert!(origin.requests().is_empty());
    edge.shutdown().await;
}

#[tokio::test]
async fn vary_values_that_are_not_text_are_two_variants() {
    let origin = TestOrigin::start().await;
    origin.set("/v.m3u8", Script::ok("variant").header("vary", "X-Tag"));
    let edge = start_edge("[[routes]]\nurl = \"{origin}\"\n", &origin).await;
    let ask = |tag: u8| {
        let mut request = b"GET /v.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Tag: ".to_vec();
        request.push(tag);
        request.extend_from_slice(b"\r\n\r\n");
        request
    };
    for tag in [0xff, 0xfe, 0xff] {
        let answer = exchange(&edge, &ask(tag)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_eq!(
        origin.hits("/v.m3u8"),
        2,
        "\\xff and \\xfe are two variants; \\xff again is a hit"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn an_origin_answer_that_breaks_before_its_body_is_a_502_and_never_stored() {
    let huge = format!("x-filler: {}\r\n", "a".repeat(100 << 10));
    let origin = RawOrigin::start(move |req| match req.path.as_str() {
        "/bad-chunk.ts" => RawAnswer::Wire(
            b"HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
        ),
        "/huge-head.ts" => RawAnswer::ok(&format!("cache-control: max-age=60\r\n{huge}"), "body"),
        _ => RawAnswer::ok("", "ok"),
    })
    .await;
    let edge = start_edge_at("[[routes]]\nurl = \"{origin}\"\n", &origin.url()).await;
    let c = client();
    for path in ["/bad-chunk.ts", "/huge-head.ts"] {
        for _ in 0..2 {
            let got = get(&c, &url(&edge, path)).await;
            assert_eq!(got.status, 502, "{path}");
            assert_eq!(got.header("x-content-type-options"), "nosniff");
            assert!(
                got.text().starts_with("502 Bad Gateway\nrequest id: "),
                "{}",
                got.text()
            );
        }
        let asked = origin.paths().iter().filter(|p| *p == path).count();
        assert_eq!(asked, 2, "{path}: nothing stored, the next request asks again");
    }
    edge.shutdown().await;
}

#[tokio::test]
async fn the_key_and_the_upstream_url_have_one_normal_form() {
    let origin = TestOrigin::start().await;
    origin.set("/n.ts?a=1", Script::ok("one"));
    let edge = start_edge("[[routes]]\nurl = \"{origin}\"\n", &origin).await;
    let c = client();
    assert_eq!(get(&c, &url(&edge, "/n.ts?&a=1&&")).await.text(), "one");
    assert_eq!(cache_status(&c, &url(&edge, "/n.ts?a=1")).await, "outpost; hit");
    assert_eq!(origin.paths(), ["/n.ts?a=1"], "fetched as keyed");
    edge.shutdown().await;
}
