use super::*;

fn h(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
        .collect()
}

#[test]
fn conditional_requests() {
    let res = h(&[
        ("etag", "\"v1\""),
        ("last-modified", "Tue, 01 Oct 2024 10:00:00 GMT"),
    ]);
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
        (
            vec![("if-modified-since", "Wed, 02 Oct 2024 10:00:00 GMT")],
            true,
        ),
        (
            vec![("if-modified-since", "Tue, 01 Oct 2024 10:00:00 GMT")],
            true,
        ),
        (
            vec![("if-modified-since", "Mon, 30 Sep 2024 10:00:00 GMT")],
            false,
        ),
        (vec![("if-modified-since", "garbage")], false),
        (vec![], false),
    ];
    for (req, want) in cases {
        assert_eq!(not_modified(&h(&req), &res), want, "{req:?}");
    }
}

#[test]
fn ranges() {
    let res = h(&[
        ("etag", "\"v1\""),
        ("last-modified", "Tue, 01 Oct 2024 10:00:00 GMT"),
    ]);
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
    assert_eq!(
        ok(&[("range", "bytes=0-9"), ("if-range", "\"v1\"")]),
        Some((0, 9))
    );
    assert_eq!(ok(&[("range", "bytes=0-9"), ("if-range", "\"v0\"")]), None);
    assert_eq!(
        ok(&[("range", "bytes=0-9"), ("if-range", "W/\"v1\"")]),
        None
    );
    assert_eq!(
        ok(&[
            ("range", "bytes=0-9"),
            ("if-range", "Tue, 01 Oct 2024 10:00:00 GMT")
        ]),
        Some((0, 9))
    );
    // Past the end: 416.
    assert!(matches!(
        select_range(&h(&[("range", "bytes=1000-")]), &res, 1000),
        Err(EdgeError::Range { len: 1000 })
    ));
}
