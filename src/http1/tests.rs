use super::*;

fn parsed(raw: &[u8]) -> (Parsed, BytesMut) {
    let mut buf = BytesMut::from(raw);
    let parsed = parse(&mut buf, &mut HeaderMap::new(), &mut Vec::new());
    (parsed, buf)
}

#[test]
fn get_and_head_are_taken_one_after_another() {
    let raw = b"GET /live/seg-1.ts?cmcd=x HTTP/1.1\r\nHost: video.example\r\nX-Trace: abc\r\n\r\nHEAD /a HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut buf = BytesMut::from(&raw[..]);
    let Parsed::Request(first) = parse(&mut buf, &mut HeaderMap::new(), &mut Vec::new()) else {
        panic!("a GET is taken")
    };
    assert_eq!(first.parts.method, Method::GET);
    assert_eq!(first.parts.uri, "/live/seg-1.ts?cmcd=x");
    assert_eq!(first.parts.headers["host"], "video.example");
    assert!(!first.close);
    assert_eq!(first.parts.headers["x-trace"], "abc");
    let Parsed::Request(second) = parse(&mut buf, &mut HeaderMap::new(), &mut Vec::new()) else {
        panic!("the pipelined HEAD is taken")
    };
    assert_eq!(second.parts.method, Method::HEAD);
    assert!(buf.is_empty());
    assert!(matches!(
        parse(&mut buf, &mut HeaderMap::new(), &mut Vec::new()),
        Parsed::Partial
    ));
}

#[test]
fn header_values_point_into_the_head_buffer() {
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: 0123456789abcdef\r\n\r\n");
    let (start, end) = (buf.as_ptr() as usize, buf.as_ptr() as usize + buf.len());
    let Parsed::Request(head) = parse(&mut buf, &mut HeaderMap::new(), &mut Vec::new()) else {
        panic!("taken")
    };
    let at = head.parts.headers["x-long"].as_bytes().as_ptr() as usize;
    assert!(
        (start..end).contains(&at),
        "the value was copied out of the read buffer"
    );
}

#[test]
fn a_cors_preflight_is_taken() {
    let (p, buf) = parsed(b"OPTIONS /live/seg.ts HTTP/1.1\r\nHost: x\r\nOrigin: https://player.example\r\nAccess-Control-Request-Method: GET\r\n\r\n");
    let Parsed::Request(head) = p else { panic!("taken") };
    assert_eq!(head.parts.method, Method::OPTIONS);
    assert!(buf.is_empty());
}

#[test]
fn a_partial_head_waits_and_consumes_nothing() {
    let (p, buf) = parsed(b"GET /a HTTP/1.1\r\nHost: x\r\n");
    assert!(matches!(p, Parsed::Partial));
    assert_eq!(buf.len(), 26);
}

#[test]
fn everything_else_goes_to_hyper_with_every_byte() {
    let many_fields: String = (0..MAX_FIELDS + 1).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\n{many_fields}\r\n");
    let cases: [&[u8]; 10] = [
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
        b"GET /a HTTP/1.0\r\nHost: x\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, upgrade\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        many.as_bytes(),
    ];
    for raw in cases {
        let (p, buf) = parsed(raw);
        let shown = String::from_utf8_lossy(&raw[..raw.len().min(40)]);
        assert!(matches!(p, Parsed::Handoff), "{shown}");
        assert_eq!(&buf[..], raw, "{shown}: bytes kept for hyper");
    }
}

#[test]
fn an_invalid_target_goes_to_hyper_from_the_start() {
    // httparse takes it; `http` refuses the target, after the head was split off.
    let raw = b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\n";
    let mut fields = [httparse::EMPTY_HEADER; 4];
    let taken = httparse::Request::new(&mut fields).parse(raw);
    assert!(matches!(taken, Ok(httparse::Status::Complete(_))), "httparse takes it");
    let (p, buf) = parsed(raw);
    assert!(matches!(p, Parsed::Handoff));
    assert_eq!(&buf[..], &raw[..]);
}

#[test]
fn connection_close_is_seen_among_other_tokens() {
    let (p, _) = parsed(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n");
    let Parsed::Request(head) = p else { panic!("taken") };
    assert!(head.close);
}

#[test]
fn the_head_has_one_date_and_the_prepared_fields_first() {
    let mut out = BytesMut::new();
    let mut own = HeaderMap::new();
    own.insert(header::VARY, HeaderValue::from_static("Origin"));
    let prepared = crate::cache::Wire {
        fields: Bytes::from_static(b"content-length: 5\r\n"),
        dated: false,
    };
    let shared = SharedHead {
        head: Arc::new(crate::cache::Head::from_upstream(
            StatusCode::OK,
            HeaderMap::new(),
            SystemTime::now(),
        )),
        age: Some(3),
        cache_status: crate::outcome::CacheStatus {
            outcome: crate::outcome::Outcome::Hit,
            stored: true,
            prefetched: true,
            peer: false,
        },
        request_id: None,
        any_origin: true,
        cmsd: Some(crate::cmsd::Entry {
            etp: Some(800),
            rtt: Some(2),
            mb: None,
            du: false,
        }),
    };
    encode_head(&mut out, StatusCode::OK, Some((&prepared, &shared)), &own, false);
    let text = String::from_utf8(out.split().to_vec()).unwrap();
    assert!(
        text.starts_with(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nage: 3\r\ncache-status: outpost; hit; detail=prefetch\r\n\
             access-control-allow-origin: *\r\naccess-control-expose-headers: Content-Length, \
             Content-Range, Age, Cache-Status, Date, ETag, Repr-Digest, CMSD-Dynamic, CMSD-Static\r\n\
             cmsd-dynamic: \"outpost\";etp=800;rtt=2\r\nvary: Origin\r\ndate: "
        ),
        "{text}"
    );
    assert!(text.ends_with(" GMT\r\n\r\n"), "{text}");
    encode_head(&mut out, StatusCode::NOT_FOUND, None, &own, true);
    assert_eq!(&out[..], b"HTTP/1.1 404 Not Found\r\nvary: Origin\r\n\r\n");
}

/// A storm's waiters all get their first bytes before any gets the rest only
/// if the loop lets a fill's reader step back after its first piece.
#[test]
fn a_fill_answer_steps_back_after_its_first_piece() {
    use std::future::Future;
    use std::task::Waker;
    let (_fill, writer, reader) = crate::fill::Fill::start();
    for part in ["first", "second"] {
        writer.push(Bytes::from(part));
    }
    writer.finish(Ok(()));
    let mut response = Response::new(EdgeBody::fill(reader.into_body(0, None)));
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("11"));
    let mut wire = Vec::new();
    let mut out = BytesMut::new();
    let mut written = Box::pin(write_response(&mut wire, &mut out, &mut response, false, false));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        written.as_mut().poll(&mut cx).is_pending(),
        "the whole answer went out in one turn: the reader's step back was skipped"
    );
    assert!(matches!(written.as_mut().poll(&mut cx), Poll::Ready(Ok(true))));
    drop(written);
    let text = String::from_utf8(wire).expect("text");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nfirstsecond"), "{text}");
}
