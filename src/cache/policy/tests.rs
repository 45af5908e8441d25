use super::*;

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

fn judge_of(req_headers: &[(&str, &str)], status: u16, res_headers: &[(&str, String)]) -> Disposition {
    let mut req = Request::get("http://origin/a.ts").body(()).unwrap();
    for (k, v) in req_headers {
        req.headers_mut()
            .append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::DATE, date(t0()).parse().unwrap());
    for (k, v) in res_headers {
        headers.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let status = StatusCode::from_u16(status).unwrap();
    let p = policy(&req, status, &headers, t0());
    judge(&req, &p, &headers, t0(), 1 << 20)
}

fn s(v: &str) -> String {
    v.to_owned()
}

fn store(secs: u64) -> Disposition {
    Disposition::Store {
        ttl: Duration::from_secs(secs),
    }
}

#[test]
fn table() {
    let later = date(t0() + Duration::from_secs(30));
    /// Name, request headers, status, response headers, expected disposition.
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        u16,
        Vec<(&'a str, String)>,
        Disposition,
    );
    let cases: Vec<Case> = vec![
        ("max-age", &[], 200, vec![("cache-control", s("max-age=60"))], store(60)),
        (
            "s-maxage wins for shared",
            &[],
            200,
            vec![("cache-control", s("max-age=5, s-maxage=60"))],
            store(60),
        ),
        ("expires", &[], 200, vec![("expires", later.clone())], store(30)),
        (
            "max-age beats expires",
            &[],
            200,
            vec![("cache-control", s("max-age=5")), ("expires", later)],
            store(5),
        ),
        (
            "origin age counts",
            &[],
            200,
            vec![("cache-control", s("max-age=60")), ("age", s("50"))],
            store(10),
        ),
        (
            "too old already",
            &[],
            200,
            vec![
                ("cache-control", s("max-age=60")),
                ("age", s("70")),
                ("etag", s("\"x\"")),
            ],
            store(0),
        ),
        (
            "no-cache with etag: revalidate each use",
            &[],
            200,
            vec![("cache-control", s("no-cache")), ("etag", s("\"x\""))],
            store(0),
        ),
        (
            "no-cache without validators",
            &[],
            200,
            vec![("cache-control", s("no-cache"))],
            Disposition::Share,
        ),
        ("nothing said, no validators", &[], 200, vec![], Disposition::Share),
        (
            "private",
            &[],
            200,
            vec![("cache-control", s("private, max-age=60"))],
            Disposition::Private,
        ),
        (
            "no-store",
            &[],
            200,
            vec![("cache-control", s("no-store"))],
            Disposition::Private,
        ),
        (
            "set-cookie",
            &[],
            200,
            vec![("cache-control", s("max-age=60")), ("set-cookie", s("a=b"))],
            Disposition::Private,
        ),
        (
            "set-cookie public",
            &[],
            200,
            vec![("cache-control", s("public, max-age=60")), ("set-cookie", s("a=b"))],
            store(60),
        ),
        (
            "authorization",
            &[("authorization", "Bearer x")],
            200,
            vec![("cache-control", s("max-age=60"))],
            Disposition::Private,
        ),
        (
            "authorization public",
            &[("authorization", "Bearer x")],
            200,
            vec![("cache-control", s("public, max-age=60"))],
            store(60),
        ),
        (
            "authorization s-maxage",
            &[("authorization", "Bearer x")],
            200,
            vec![("cache-control", s("s-maxage=60"))],
            store(60),
        ),
        (
            "vary star",
            &[],
            200,
            vec![("cache-control", s("max-age=60")), ("vary", s("Accept, *"))],
            Disposition::Private,
        ),
        ("server error", &[], 500, vec![], Disposition::Share),
        (
            "server error: shared with waiters, not stored",
            &[],
            503,
            vec![("cache-control", s("max-age=3"))],
            Disposition::Share,
        ),
        (
            "gone is stored when told",
            &[],
            410,
            vec![("cache-control", s("max-age=3"))],
            store(3),
        ),
        (
            "too large",
            &[],
            200,
            vec![("cache-control", s("max-age=60")), ("content-length", s("2000000"))],
            Disposition::TooLarge,
        ),
        ("not found is shared", &[], 404, vec![], Disposition::Share),
    ];
    for (name, req, status, res, want) in cases {
        assert_eq!(judge_of(req, status, &res), want, "{name}");
    }
}

#[test]
fn stale_allowed_unless_origin_forbids() {
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, "max-age=1".parse().unwrap());
    assert!(may_serve_stale(&h));
    h.insert(header::CACHE_CONTROL, "max-age=1, must-revalidate".parse().unwrap());
    assert!(!may_serve_stale(&h));
}

fn cc(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, value.parse().unwrap());
    h
}

const ROUTE: Grace = Grace {
    while_revalidate: Duration::from_secs(2),
    if_error: Duration::from_secs(300),
};

#[test]
fn the_origins_grace_wins_over_the_routes_and_each_falls_back_alone() {
    let g = grace(&cc("max-age=4, stale-while-revalidate=10"), ROUTE);
    assert_eq!(g.while_revalidate, Duration::from_secs(10));
    assert_eq!(g.if_error, Duration::from_secs(300));
    let g = grace(&cc("max-age=4, stale-if-error=0"), ROUTE);
    assert_eq!(g.while_revalidate, Duration::from_secs(2));
    assert_eq!(g.if_error, Duration::ZERO);
    // A value that is not a number of seconds is ignored, not taken as 0.
    let g = grace(&cc("max-age=4, stale-while-revalidate=soon, stale-if-error=-1"), ROUTE);
    assert_eq!(g, ROUTE);
    assert_eq!(grace(&HeaderMap::new(), ROUTE), ROUTE);
}

#[test]
fn an_origin_that_forbids_stale_gets_no_grace_whatever_it_or_the_route_says() {
    for value in [
        "max-age=4, must-revalidate, stale-while-revalidate=10",
        "no-cache, stale-if-error=60",
        "s-maxage=4, stale-if-error=60",
        "proxy-revalidate",
    ] {
        assert_eq!(grace(&cc(value), ROUTE), Grace::default(), "{value}");
    }
}

#[test]
fn a_bound_caps_both_graces() {
    let g = ROUTE.at_most(Duration::from_secs(3));
    assert_eq!(g.while_revalidate, Duration::from_secs(2));
    assert_eq!(g.if_error, Duration::from_secs(3));
    assert_eq!(g.longest(), Duration::from_secs(3));
}
