//! RFC 9111 shared-cache behaviour through real sockets.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn miss_then_hit_with_edge_headers() {
    let origin = TestOrigin::start().await;
    origin.set("/a.ts", Script::ok("segment").header("x-origin", "yes"));
    let edge = edge_for(&origin).await;
    let c = client();
    let first = get(&c, &url(&edge, "/a.ts")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("cache-status"), "outpost; fwd=miss; stored");
    assert_eq!(first.header("via"), "1.1 outpost");
    assert_eq!(first.header("x-origin"), "yes");
    assert!(!first.header("x-request-id").is_empty());
    let second = get(&c, &url(&edge, "/a.ts")).await;
    assert_eq!(second.header("cache-status"), "outpost; hit");
    assert_eq!(second.text(), "segment");
    assert_eq!(second.header("age"), "0");
    assert_eq!(origin.hits("/a.ts"), 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn origin_age_counts_against_freshness() {
    let origin = TestOrigin::start().await;
    // Already 59 of its 60 seconds old when it arrives.
    origin.set(
        "/old.ts",
        Script::ok("x").headers(&[("cache-control", "max-age=60"), ("age", "59")]),
    );
    // Already older than its lifetime: stored only if it could be revalidated, so fetched again.
    origin.set(
        "/expired.ts",
        Script::ok("x").headers(&[("cache-control", "max-age=60"), ("age", "61")]),
    );
    let edge = edge_for(&origin).await;
    let c = client();
    get(&c, &url(&edge, "/old.ts")).await;
    let hit = get(&c, &url(&edge, "/old.ts")).await;
    assert_eq!(hit.header("cache-status"), "outpost; hit");
    assert!(
        hit.header("age").parse::<u64>().unwrap() >= 59,
        "Age includes the origin's"
    );
    get(&c, &url(&edge, "/expired.ts")).await;
    get(&c, &url(&edge, "/expired.ts")).await;
    assert_eq!(origin.hits("/expired.ts"), 2);
    edge.shutdown().await;
}

#[tokio::test]
async fn stale_entries_are_revalidated_with_validators() {
    let origin = TestOrigin::start().await;
    let body = payload(100_000, 2);
    origin.set(
        "/v.m3u8",
        Script::ok(body.clone())
            .headers(&[("cache-control", "max-age=1")])
            .revalidates("\"v1\""),
    );
    let edge = edge_for(&origin).await;
    let c = client();
    assert_eq!(get(&c, &url(&edge, "/v.m3u8")).await.bytes(), &body);
    advance(Duration::from_millis(1100)).await;
    let again = get(&c, &url(&edge, "/v.m3u8")).await;
    assert_eq!(again.header("cache-status"), "outpost; fwd=stale");
    assert_eq!(again.bytes(), &body, "the stored body is served after a 304");
    let sent = origin.requests("/v.m3u8");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1]["if-none-match"], "\"v1\"");
    // The 304 refreshed the entry: fresh again.
    assert_eq!(cache_status(&c, &url(&edge, "/v.m3u8")).await, "outpost; hit");
    assert_eq!(origin.hits("/v.m3u8"), 2);
    edge.shutdown().await;
}

#[tokio::test]
async fn stale_entry_is_served_when_the_origin_fails() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/s.ts",
        Script::ok("kept").headers(&[("cache-control", "max-age=1"), ("etag", "\"e\"")]),
    );
    let edge = edge_for(&origin).await;
    let c = client();
    get(&c, &url(&edge, "/s.ts")).await;
    advance(Duration::from_millis(1100)).await;
    origin.set("/s.ts", Script::ok("down").status(503).headers(&[]));
    let got = get(&c, &url(&edge, "/s.ts")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "kept");
    assert_eq!(got.header("cache-status"), "outpost; fwd=stale");
    edge.shutdown().await;
}

#[tokio::test]
async fn must_revalidate_entries_are_not_served_stale() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/m.ts",
        Script::ok("kept").headers(&[("cache-control", "max-age=1, must-revalidate"), ("etag", "\"e\"")]),
    );
    let edge = edge_for(&origin).await;
    let c = client();
    get(&c, &url(&edge, "/m.ts")).await;
    advance(Duration::from_millis(1100)).await;
    origin.set("/m.ts", Script::ok("down").status(503).headers(&[]));
    assert_eq!(get(&c, &url(&edge, "/m.ts")).await.status, 503);
    edge.shutdown().await;
}

#[tokio::test]
async fn client_conditionals_are_answered_from_cache() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/c.ts",
        Script::ok("body").headers(&[
            ("cache-control", "max-age=60"),
            ("etag", "\"abc\""),
            ("last-modified", "Tue, 01 Oct 2024 10:00:00 GMT"),
        ]),
    );
    let edge = edge_for(&origin).await;
    let c = client();
    get(&c, &url(&edge, "/c.ts")).await;
    let inm = send(&c, "GET", &url(&edge, "/c.ts"), &[("if-none-match", "\"abc\"")]).await;
    assert_eq!(inm.status, 304);
    assert_eq!(inm.header("etag"), "\"abc\"");
    assert!(inm.bytes().is_empty());
    let ims = send(
        &c,
        "GET",
        &url(&edge, "/c.ts"),
        &[("if-modified-since", "Wed, 02 Oct 2024 10:00:00 GMT")],
    )
    .await;
    assert_eq!(ims.status, 304);
    let changed = send(&c, "GET", &url(&edge, "/c.ts"), &[("if-none-match", "\"other\"")]).await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.text(), "body");
    // Client conditionals never reach the origin.
    assert_eq!(origin.hits("/c.ts"), 1);
    assert!(origin.requests("/c.ts")[0].get("if-none-match").is_none());
    edge.shutdown().await;
}

#[tokio::test]
async fn head_is_served_from_cache_metadata_and_fills_on_miss() {
    let origin = TestOrigin::start().await;
    origin.set("/h.ts", Script::ok(payload(5000, 1)));
    let edge = edge_for(&origin).await;
    let c = client();
    let head = send(&c, "HEAD", &url(&edge, "/h.ts"), &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), "5000");
    assert!(head.bytes().is_empty());
    // The HEAD miss fetched the whole object with GET: the GET is a hit.
    let got = get(&c, &url(&edge, "/h.ts")).await;
    assert_eq!(got.header("cache-status"), "outpost; hit");
    assert_eq!(got.bytes().len(), 5000);
    let head = send(&c, "HEAD", &url(&edge, "/h.ts"), &[]).await;
    assert_eq!(head.header("cache-status"), "outpost; hit");
    assert_eq!(head.header("content-length"), "5000");
    assert_eq!(origin.hits("/h.ts"), 1);
    assert_eq!(origin.requests("/h.ts").len(), 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn set_cookie_and_authorization_are_not_shared() {
    let origin = TestOrigin::start().await;
    origin.set("/cookie", Script::ok("c").header("set-cookie", "session=1"));
    origin.set(
        "/public-cookie",
        Script::ok("p").headers(&[("cache-control", "public, max-age=60"), ("set-cookie", "s=1")]),
    );
    origin.set("/auth", Script::ok("secret"));
    origin.set(
        "/auth-public",
        Script::ok("open").headers(&[("cache-control", "public, max-age=60")]),
    );
    let edge = edge_for(&origin).await;
    let c = client();
    for _ in 0..2 {
        get(&c, &url(&edge, "/cookie")).await;
        send(&c, "GET", &url(&edge, "/auth"), &[("authorization", "Bearer t")]).await;
        send(&c, "GET", &url(&edge, "/auth-public"), &[("authorization", "Bearer t")]).await;
    }
    assert_eq!(origin.hits("/cookie"), 2);
    assert_eq!(origin.hits("/auth"), 2);
    assert_eq!(origin.hits("/auth-public"), 1);
    let first = get(&c, &url(&edge, "/public-cookie")).await;
    assert_eq!(
        first.header("set-cookie"),
        "s=1",
        "the client that fetched it gets its cookie"
    );
    let hit = get(&c, &url(&edge, "/public-cookie")).await;
    assert_eq!(hit.header("cache-status"), "outpost; hit");
    assert_eq!(
        hit.header("set-cookie"),
        "",
        "a stored cookie is never handed to others"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn vary_keeps_variants_apart_and_vary_star_is_never_stored() {
    let origin = TestOrigin::start().await;
    origin.set("/v", Script::ok("variant").header("vary", "Accept-Language"));
    origin.set("/star", Script::ok("star").header("vary", "*"));
    let edge = edge_for(&origin).await;
    let c = client();
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    send(&c, "GET", &url(&edge, "/v"), &en).await;
    assert_eq!(
        send(&c, "GET", &url(&edge, "/v"), &en).await.header("cache-status"),
        "outpost; hit"
    );
    assert_eq!(
        send(&c, "GET", &url(&edge, "/v"), &fr).await.header("cache-status"),
        "outpost; fwd=miss; stored"
    );
    assert_eq!(
        send(&c, "GET", &url(&edge, "/v"), &fr).await.header("cache-status"),
        "outpost; hit"
    );
    assert_eq!(
        send(&c, "GET", &url(&edge, "/v"), &en).await.header("cache-status"),
        "outpost; hit"
    );
    assert_eq!(origin.hits("/v"), 2);
    get(&c, &url(&edge, "/star")).await;
    get(&c, &url(&edge, "/star")).await;
    assert_eq!(origin.hits("/star"), 2);
    edge.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/hop",
        Script::ok("x").headers(&[
            ("cache-control", "max-age=60"),
            ("connection", "x-internal"),
            ("x-internal", "secret"),
            ("keep-alive", "timeout=5"),
            ("x-kept", "1"),
        ]),
    );
    let edge = edge_for(&origin).await;
    let c = client();
    for _ in 0..2 {
        let got = send(
            &c,
            "GET",
            &url(&edge, "/hop"),
            &[("connection", "x-client-hop"), ("x-client-hop", "1")],
        )
        .await;
        assert_eq!(got.header("x-internal"), "");
        assert_eq!(got.header("keep-alive"), "");
        assert_eq!(got.header("x-kept"), "1");
    }
    let sent = &origin.requests("/hop")[0];
    assert!(
        sent.get("x-client-hop").is_none(),
        "client hop-by-hop headers are not forwarded"
    );
    assert_eq!(sent["via"], "1.1 outpost");
    assert_eq!(sent["x-forwarded-for"], "127.0.0.1");
    edge.shutdown().await;
}

#[tokio::test]
async fn objects_over_max_object_stream_through_uncached() {
    let origin = TestOrigin::start().await;
    let big = payload(300_000, 5);
    origin.set("/huge.mp4", Script::ok(big.clone()));
    // Chunked: the size is only found out while streaming.
    origin.set("/huge-chunked.mp4", Script::ok(big.clone()).chunked());
    let edge = start_edge(
        "[cache]\nmax_object = \"100KiB\"\n[[routes]]\nurl = \"{origin}\"\n",
        &origin,
    )
    .await;
    let c = client();
    for path in ["/huge.mp4", "/huge-chunked.mp4"] {
        let first = get(&c, &url(&edge, path)).await;
        assert_eq!(first.bytes(), &big, "{path} streamed whole");
        let second = get(&c, &url(&edge, path)).await;
        assert_eq!(second.bytes(), &big);
        assert_eq!(second.header("cache-status"), "outpost; fwd=uri-miss", "{path}");
        assert_eq!(origin.hits(path), 2, "{path} was not stored");
    }
    edge.shutdown().await;
}

#[tokio::test]
async fn memory_budget_is_kept_by_eviction() {
    let origin = TestOrigin::start().await;
    for i in 0..12 {
        origin.set(&format!("/e{i}.ts"), Script::ok(payload(200_000, i as u8)));
    }
    let edge = start_edge(
        "[cache]\nmemory = \"1MiB\"\nmax_object = \"512KiB\"\n[[routes]]\nurl = \"{origin}\"\n",
        &origin,
    )
    .await;
    let c = client();
    for i in 0..12 {
        assert_eq!(get(&c, &url(&edge, &format!("/e{i}.ts"))).await.bytes().len(), 200_000);
    }
    let held = edge.edge.store().bytes();
    assert!(held <= 1 << 20, "cache holds {held} bytes, over its 1 MiB budget");
    assert!(held >= 200_000, "cache still holds something ({held})");
    let objects = edge.edge.store().objects();
    assert!((1..12).contains(&objects), "{objects} objects held");
    edge.shutdown().await;
}

/// Whether `values` lie end to end in memory, in this order: true of values
/// copied into one allocation of their own, false of values hyper parsed
/// (slices of its read buffer, with names and separators between them).
fn end_to_end<'a>(values: impl Iterator<Item = &'a http::HeaderValue>) -> bool {
    let spans: Vec<(usize, usize)> = values.map(|v| (v.as_bytes().as_ptr() as usize, v.len())).collect();
    spans.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0)
}

#[tokio::test]
async fn stored_heads_do_not_keep_the_connections_read_buffer() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/kept.ts",
        Script::ok(payload(300_000, 9)).headers(&[
            ("cache-control", "max-age=60"),
            ("content-type", "video/mp2t"),
            ("etag", "\"k1\""),
        ]),
    );
    let edge = edge_for(&origin).await;
    let c = client();
    let got = send(
        &c,
        "GET",
        &url(&edge, "/kept.ts"),
        &[("accept-language", "fi"), ("x-player", "p1")],
    )
    .await;
    assert_eq!(got.bytes(), &payload(300_000, 9));
    let key = outpost::cache::CacheKey::new(&outpost::cache::key::key_url(&edge.edge.config().routes[0], "/kept.ts"));
    let entry = edge.edge.store().get(&key).expect("stored");
    let head = &entry.head.headers;
    assert!(head.len() >= 4, "{head:?}");
    // The digest is added once the body is in, in an allocation of its own.
    assert!(head.contains_key("repr-digest"));
    let from_origin = head.iter().filter(|(name, _)| *name != "repr-digest").map(|(_, v)| v);
    assert!(
        end_to_end(from_origin),
        "stored response header values are slices of a read buffer"
    );
    assert!(
        end_to_end(entry.request.headers().values()),
        "the kept request's header values are slices of the client's read buffer"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let origin = TestOrigin::start().await;
    origin.set("/h2.ts", Script::ok(payload(70_000, 4)));
    let edge = edge_for(&origin).await;
    let c = h2_client();
    let got = get(&c, &url(&edge, "/h2.ts")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.bytes(), &payload(70_000, 4));
    assert_eq!(cache_status(&c, &url(&edge, "/h2.ts")).await, "outpost; hit");
    edge.shutdown().await;
}
