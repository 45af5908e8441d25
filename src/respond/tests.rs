use super::*;

fn h(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
        .collect()
}

#[test]
fn conditional_requests() {
    let res = h(&[("etag", "\"v1\""), ("last-modified", "Tue, 01 Oct 2024 10:00:00 GMT")]);
    let cases = [
        (vec![("if-none-match", "\"v1\"")], true),
        (vec![("if-none-match", "W/\"v1\"")], true),
        (vec![("if-none-match", "\"v0\", \"v1\"")], true),
        (vec![("if-none-match", "*")], true),
        (vec![("if-none-match", "\"v2\"")], false),
        // If-None-Match wins over If-Modified-Since.
        (
            vec![
                ("if-none-match", "\"v2\""),
                ("if-modified-since", "Wed, 02 Oct 2024 10:00:00 GMT"),
            ],
            false,
        ),
        (vec![("if-modified-since", "Wed, 02 Oct 2024 10:00:00 GMT")], true),
        (vec![("if-modified-since", "Tue, 01 Oct 2024 10:00:00 GMT")], true),
        (vec![("if-modified-since", "Mon, 30 Sep 2024 10:00:00 GMT")], false),
        (vec![("if-modified-since", "garbage")], false),
        (vec![], false),
    ];
    for (req, want) in cases {
        assert_eq!(not_modified(&h(&req), &res), want, "{req:?}");
    }
}

#[test]
fn ranges() {
    let res = h(&[("etag", "\"v1\""), ("last-modified", "Tue, 01 Oct 2024 10:00:00 GMT")]);
    let ok = |req: &[(&str, &str)]| select_range(&h(req), &res, 1000).expect("satisfiable");
    assert_eq!(ok(&[("range", "bytes=0-99")]), Some((0, 99)));
    assert_eq!(ok(&[("range", "bytes=900-")]), Some((900, 999)));
    assert_eq!(ok(&[("range", "bytes=-100")]), Some((900, 999)));
    assert_eq!(ok(&[("range", "bytes=990-5000")]), Some((990, 999)));
    assert_eq!(ok(&[]), None);
    // Malformed or several ranges: the whole object.
    assert_eq!(ok(&[("range", "bytes=abc")]), None);
    assert_eq!(ok(&[("range", "bytes=0-1,5-6")]), None);
    assert_eq!(ok(&[("range", "items=0-1")]), None);
    // If-Range that matches applies the range; one that does not sends everything.
    assert_eq!(ok(&[("range", "bytes=0-9"), ("if-range", "\"v1\"")]), Some((0, 9)));
    assert_eq!(ok(&[("range", "bytes=0-9"), ("if-range", "\"v0\"")]), None);
    assert_eq!(ok(&[("range", "bytes=0-9"), ("if-range", "W/\"v1\"")]), None);
    assert_eq!(
        ok(&[("range", "bytes=0-9"), ("if-range", "Tue, 01 Oct 2024 10:00:00 GMT")]),
        Some((0, 9))
    );
    // Past the end: 416.
    assert!(matches!(
        select_range(&h(&[("range", "bytes=1000-")]), &res, 1000),
        Err(EdgeError::Range { len: 1000 })
    ));
}

fn request(headers: &[(&str, &str)]) -> Parts {
    let mut req = http::Request::get("/seg.ts").body(()).unwrap();
    *req.headers_mut() = h(headers);
    req.into_parts().0
}

/// How a plain cache hit is served at `now`.
fn hit(now: std::time::SystemTime) -> Served {
    Served {
        status: CacheStatus {
            outcome: Outcome::Hit,
            stored: true,
            prefetched: false,
            peer: false,
        },
        now,
    }
}

/// The first data frame of an answer, polled by hand.
fn first_frame(response: Response<EdgeBody>) -> Bytes {
    use http_body::Body;
    let mut body = std::pin::pin!(response.into_body());
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match body.as_mut().poll_frame(&mut cx) {
        std::task::Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap(),
        _ => panic!("a stored body is ready at once"),
    }
}

#[test]
fn hits_share_the_stored_bytes_without_copying() {
    let now = std::time::SystemTime::now();
    let head = Head::from_upstream(StatusCode::OK, h(&[("etag", "\"v1\"")]), now);
    let stored = Bytes::from(vec![7u8; 4096]);
    let served = hit(now);
    let whole = respond(&request(&[]), &head, Content::Stored(stored.clone()), served).unwrap();
    assert_eq!(whole.headers()["content-length"], "4096");
    assert_eq!(
        first_frame(whole).as_ptr(),
        stored.as_ptr(),
        "the hit points into the stored buffer"
    );
    let part = respond(
        &request(&[("range", "bytes=100-199")]),
        &head,
        Content::Stored(stored.clone()),
        served,
    )
    .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    let frame = first_frame(part);
    assert_eq!(frame.len(), 100);
    assert_eq!(
        frame.as_ptr(),
        stored[100..].as_ptr(),
        "a range is a slice of the stored buffer"
    );
}

#[test]
fn a_whole_stored_hit_keeps_the_entry_headers_shared_and_the_body_uncopied() {
    let now = std::time::SystemTime::now();
    let head = Arc::new(Head::from_upstream(
        StatusCode::OK,
        h(&[("etag", "\"v1\""), ("content-length", "4096")]),
        now,
    ));
    let stored = Bytes::from(vec![7u8; 4096]);
    let served = hit(now);
    let mut whole = respond_stored(&request(&[]), &head, stored.clone(), served).unwrap();
    // The map is empty: the entry's head and the per-answer headers travel
    // with the body.
    assert!(whole.headers().is_empty(), "{:?}", whole.headers());
    let shared = whole
        .body_mut()
        .take_shared_head()
        .expect("the entry's head goes with the body");
    assert!(Arc::ptr_eq(&shared.head, &head));
    // Merged (as for hyper), the map is the one `respond` builds.
    let mut merged = whole.headers().clone();
    merge_shared(&shared, &mut merged);
    let general = respond(&request(&[]), &head, Content::Stored(stored.clone()), served).unwrap();
    assert_eq!(merged, *general.headers());
    assert_eq!(
        first_frame(whole).as_ptr(),
        stored.as_ptr(),
        "the hit points into the stored buffer"
    );

    // A range, or a validator, takes the general path.
    for extra in [
        ("range", "bytes=0-9"),
        ("if-none-match", "\"v1\""),
        ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ] {
        let mut other = respond_stored(&request(&[("accept", "*/*"), extra]), &head, stored.clone(), served).unwrap();
        assert!(other.body_mut().take_shared_head().is_none(), "{extra:?}");
    }
    for extra in [("range", "bytes=0-9"), ("if-none-match", "\"v1\"")] {
        let other = respond_stored(&request(&[extra]), &head, stored.clone(), served).unwrap();
        assert_ne!(other.status(), StatusCode::OK, "{extra:?}");
    }
    // So does a head whose headers the answer changes (an origin's Vary).
    let varied = Arc::new(Head::from_upstream(
        StatusCode::OK,
        h(&[("vary", "Accept-Encoding"), ("content-length", "4096")]),
        now,
    ));
    let mut other = respond_stored(&request(&[]), &varied, stored, served).unwrap();
    assert!(other.body_mut().take_shared_head().is_none());
    assert_eq!(other.headers()["vary"], "Accept-Encoding");
}

#[test]
fn head_and_not_modified_have_no_body() {
    let now = std::time::SystemTime::now();
    let head = Head::from_upstream(StatusCode::OK, h(&[("etag", "\"v1\"")]), now);
    let served = hit(now);
    let body = Bytes::from_static(b"0123456789");
    let mut req = request(&[]);
    req.method = Method::HEAD;
    let resp = respond(&req, &head, Content::Stored(body.clone()), served).unwrap();
    assert_eq!(resp.headers()["content-length"], "10");
    assert!(http_body::Body::is_end_stream(resp.body()));
    let resp = respond(
        &request(&[("if-none-match", "\"v1\"")]),
        &head,
        Content::Stored(body),
        served,
    )
    .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(resp.headers()["etag"], "\"v1\"");
    assert_eq!(resp.headers()["cache-status"], "outpost; hit");
    assert!(http_body::Body::is_end_stream(resp.body()));
}

#[test]
fn open_ranges_for_bodies_of_unknown_length() {
    let res = h(&[("etag", "\"p1\"")]);
    let open = |range: &str| open_range(&h(&[("range", range)]), &res);
    assert_eq!(open("bytes=100-"), Some((100, None)));
    assert_eq!(open("bytes=100-199"), Some((100, Some(199))));
    // RFC 8673's "to the end" is an open end, not a length.
    assert_eq!(open("bytes=100-9007199254740991"), Some((100, None)));
    assert_eq!(open("bytes=-500"), None, "a suffix needs the end");
    assert_eq!(open("bytes=0-1,5-6"), None, "one range only");
    assert_eq!(open("items=0-1"), None);
    let stale = h(&[("range", "bytes=100-"), ("if-range", "\"p0\"")]);
    assert_eq!(
        open_range(&stale, &res),
        None,
        "If-Range that does not match: the whole body"
    );
}

#[test]
fn every_answer_from_a_prepared_head_gets_the_edge_headers_once() {
    let now = std::time::SystemTime::now();
    let served = hit(now);
    // The origin sent its own Via and no Content-Length (a chunked answer).
    let head = Head::from_upstream(StatusCode::OK, h(&[("via", "1.1 origin-cdn")]), now);
    let body = Bytes::from_static(b"0123456789");
    for _ in 0..3 {
        let r = respond(&request(&[]), &head, Content::Stored(body.clone()), served).unwrap();
        let via: Vec<_> = r.headers().get_all("via").iter().collect();
        assert_eq!(
            via,
            ["1.1 origin-cdn, 1.1 outpost"],
            "Via is added once, not once per answer"
        );
        assert_eq!(r.headers()["accept-ranges"], "bytes");
        assert_eq!(r.headers()["content-length"], "10");
        assert_eq!(r.headers()["cache-status"], "outpost; hit");
        assert!(r.headers().contains_key("age"));
    }
    let missing = Head::from_upstream(StatusCode::NOT_FOUND, h(&[("content-length", "3")]), now);
    let r = respond(
        &request(&[]),
        &missing,
        Content::Stored(Bytes::from_static(b"no\n")),
        served,
    )
    .unwrap();
    assert!(
        !r.headers().contains_key("accept-ranges"),
        "ranges are offered on 200s only"
    );
    assert_eq!(r.headers().get_all("content-length").iter().count(), 1);
}
