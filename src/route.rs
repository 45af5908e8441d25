//! Routing: which origin serves a request, by Host and path prefix.
//!
//! A request that matches no route is refused (421), never forwarded: the edge
//! is not an open proxy, whatever the Host or absolute-form target says.

use std::borrow::Cow;
use std::sync::Arc;

use http::request::Parts;

use crate::config::RouteConfig;
use crate::error::EdgeError;

/// The host and normalised path a request is for, borrowed from the request
/// where nothing had to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// Lower-case, without port.
    pub host: Cow<'a, str>,
    /// Absolute, with dot segments resolved.
    pub path: Cow<'a, str>,
    pub query: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// Reads the target from an absolute-form URI's authority (HTTP/2's
    /// `:authority`), else the Host header. Two Host headers, or a Host that
    /// names another authority than the target, are refused (RFC 9112 §3.2,
    /// RFC 9113 §8.3.1): a cache and an origin could each believe a different one.
    pub fn of(parts: &'a Parts) -> Result<Self, EdgeError> {
        let mut hosts = parts.headers.get_all(http::header::HOST).iter();
        let host_header = hosts.next();
        if hosts.next().is_some() {
            return Err(EdgeError::BadRequest("the request has more than one Host"));
        }
        // The Host value's bytes as they are: the check of the host's own
        // bytes below is stricter than `to_str`'s, and one pass instead of two.
        let authority = match (parts.uri.authority(), host_header) {
            (Some(a), Some(host)) if !a.as_str().as_bytes().eq_ignore_ascii_case(host.as_bytes()) => {
                return Err(EdgeError::BadRequest(
                    "the Host header disagrees with the request target",
                ));
            }
            (Some(a), _) => a.as_str().as_bytes(),
            (None, Some(host)) => host.as_bytes(),
            (None, None) => return Err(EdgeError::BadRequest("the request has no Host")),
        };
        let host = host_without_port(authority).ok_or(EdgeError::BadRequest("the Host header is malformed"))?;
        let path = normalize_path(parts.uri.path())?;
        Ok(Self {
            host,
            path,
            query: parts.uri.query(),
        })
    }
}

/// The bytes a host may hold here (RFC 3986 §3.2.2 without percent-encoding):
/// letters, digits, `-._`, and `[]:` for IPv6 literals.
const HOST_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'[' | b']' | b':');
        b += 1;
    }
    table
};

fn host_without_port(authority: &[u8]) -> Option<Cow<'_, str>> {
    // Byte searches, and one table-driven pass to check and find upper case:
    // this runs on every request.
    let authority = match authority.iter().rposition(|&b| b == b'@') {
        // Userinfo is skipped, but must still be text.
        Some(at) if authority[..at].iter().all(|b| (b' '..=b'~').contains(b)) => &authority[at + 1..],
        Some(_) => return None,
        None => authority,
    };
    let end = if authority.first() == Some(&b'[') {
        // An IPv6 literal: keep the brackets, drop the port.
        authority.iter().position(|&b| b == b']')? + 1
    } else {
        authority.iter().position(|&b| b == b':').unwrap_or(authority.len())
    };
    let (host, port) = authority.split_at(end);
    // What follows the host is a port or nothing (RFC 9110 §7.2).
    let port_ok = match port.split_first() {
        None => true,
        Some((colon, digits)) => *colon == b':' && digits.iter().all(u8::is_ascii_digit),
    };
    if !port_ok {
        return None;
    }
    let mut upper = false;
    for &b in host {
        if !HOST_BYTE[b as usize] {
            return None;
        }
        upper |= b.is_ascii_uppercase();
    }
    if host.is_empty() {
        return None;
    }
    // Every byte is ASCII by now, so this cannot fail.
    let host = std::str::from_utf8(host).ok()?;
    Some(match upper {
        true => Cow::Owned(host.to_ascii_lowercase()),
        false => Cow::Borrowed(host),
    })
}

/// Resolves `.` and `..` segments (RFC 3986 §5.2.4), also when percent-encoded,
/// and refuses a path that climbs above the root or hides separators in
/// percent-encoding (`%2F`, `%5C`), which an origin could decode into an escape.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, EdgeError> {
    const SEPARATOR: EdgeError = EdgeError::BadRequest("the path holds an encoded separator");
    if !raw.starts_with('/') {
        return Err(EdgeError::BadRequest("the path must start with /"));
    }
    // One pass finds nearly every request's path as it stands: no `\`, no
    // percent-encoding, no segment that starts with a dot.
    let mut plain = true;
    let mut segment_starts = false;
    for &b in raw.as_bytes() {
        match b {
            b'\\' => return Err(SEPARATOR),
            b'%' => plain = false,
            b'.' if segment_starts => plain = false,
            _ => {}
        }
        segment_starts = b == b'/';
    }
    if plain {
        return Ok(Cow::Borrowed(raw));
    }
    if hides_separator(raw) {
        return Err(SEPARATOR);
    }
    let segments = raw[1..].split('/');
    if segments.clone().all(|s| dots(s).is_none()) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out: Vec<&str> = Vec::new();
    let last = segments.clone().count() - 1;
    for (i, segment) in segments.enumerate() {
        match dots(segment) {
            Some(1) => {
                if i == last {
                    out.push("");
                }
            }
            Some(_) => {
                if out.pop().is_none() {
                    return Err(EdgeError::BadRequest("the path climbs above the root"));
                }
                if i == last {
                    out.push("");
                }
            }
            None => out.push(segment),
        }
    }
    Ok(Cow::Owned(format!("/{}", out.join("/"))))
}

/// `%2F`, `%5C` or `%00` anywhere, in either case.
fn hides_separator(raw: &str) -> bool {
    raw.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && [b"2f", b"5c", b"00"]
                .iter()
                .any(|code| w[1..].eq_ignore_ascii_case(*code))
    })
}

/// `Some(n)` when the segment is `n` dots (1 or 2), each literal or as `%2e`.
fn dots(segment: &str) -> Option<usize> {
    let mut rest = segment.as_bytes();
    let mut n = 0;
    while !rest.is_empty() && n < 3 {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', a, b, tail @ ..] if [*a, *b].eq_ignore_ascii_case(b"2e") => tail,
            _ => return None,
        };
        n += 1;
    }
    (rest.is_empty() && (1..=2).contains(&n)).then_some(n)
}

/// The configured routes, tried in order.
pub struct Routes(Vec<Arc<RouteConfig>>);

impl Routes {
    pub fn new(routes: &[RouteConfig]) -> Self {
        Self(routes.iter().cloned().map(Arc::new).collect())
    }

    /// The first route for `target`, and the path-and-query to ask its origin
    /// for: a slice of the target's path when the request has no query.
    pub fn find<'t>(&self, target: &'t Target) -> Option<(Arc<RouteConfig>, Cow<'t, str>)> {
        self.0.iter().find_map(|route| {
            if route.host.as_ref().is_some_and(|h| *h != *target.host) {
                return None;
            }
            let rest = strip_prefix(&target.path, &route.prefix)?;
            let path_and_query = match target.query {
                None => Cow::Borrowed(rest),
                Some(q) => Cow::Owned([rest, "?", q].concat()),
            };
            Some((Arc::clone(route), path_and_query))
        })
    }
}

/// The path below `prefix`, starting with `/`, when `prefix` matches whole segments.
fn strip_prefix<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix)?;
    if prefix.ends_with('/') {
        // The prefix's own last `/` starts what is below it.
        Some(&path[prefix.len() - 1..])
    } else if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        let ok = [
            ("/a/b.ts", "/a/b.ts"),
            ("/a/./b.ts", "/a/b.ts"),
            ("/a/x/../b.ts", "/a/b.ts"),
            ("/a/%2e%2E/b", "/b"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/", "/"),
            ("/live//x", "/live//x"),
            ("/a/.../b", "/a/.../b"),
            ("/a/.%2e/b", "/b"),
            ("/a/%2/b", "/a/%2/b"),
            ("/seg-1.ts?x", "/seg-1.ts?x"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/b./c", "/a/b./c"),
            ("/a/%41/b", "/a/%41/b"),
        ];
        for (raw, want) in ok {
            assert_eq!(normalize_path(raw).unwrap(), want, "{raw}");
        }
        for bad in [
            "/..",
            "/a/../../etc/passwd",
            "/%2e%2e/x",
            "/a%2f..%2fb",
            "/a%5Cb",
            "/a%00",
            "/a\\b",
            "x",
        ] {
            assert!(normalize_path(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn hosts_lose_ports_and_case() {
        assert_eq!(host_without_port(b"Edge.Example:8080").as_deref(), Some("edge.example"));
        assert_eq!(host_without_port(b"[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(host_without_port(b"a b"), None);
        assert_eq!(host_without_port(b""), None);
        assert_eq!(host_without_port(b":80"), None);
        assert_eq!(host_without_port(b"[::1"), None);
        assert_eq!(host_without_port(b"user@Edge:80").as_deref(), Some("edge"));
        assert_eq!(host_without_port(b"a@b@edge").as_deref(), Some("edge"));
        assert_eq!(host_without_port(b"edge.example").as_deref(), Some("edge.example"));
        // Header bytes that are not text, or text that is not a host, are refused.
        assert_eq!(host_without_port("édge".as_bytes()), None);
        assert_eq!(host_without_port(b"edge\x80:80"), None);
        assert_eq!(host_without_port(b"edge\t"), None);
        assert_eq!(host_without_port(b"edge/x"), None);
        assert_eq!(host_without_port(b"edge:\xff"), None);
        assert_eq!(host_without_port(b"edge:80x"), None);
        assert_eq!(host_without_port(b"[::1]x"), None);
        assert_eq!(host_without_port(b"\x01@edge"), None);
        assert_eq!(host_without_port(b"edge:").as_deref(), Some("edge"));
    }

    #[test]
    fn one_host_and_one_authority() {
        let parts = |target: &str, hosts: &[&str]| {
            let mut req = http::Request::get(target);
            for h in hosts {
                req = req.header(http::header::HOST, *h);
            }
            req.body(()).unwrap().into_parts().0
        };
        let ok = [
            ("/a.ts", vec!["edge"], "edge"),
            ("http://edge/a.ts", vec![], "edge"),
            ("http://Edge:8080/a.ts", vec!["edge:8080"], "edge"),
        ];
        for (target, hosts, want) in ok {
            let p = parts(target, &hosts);
            assert_eq!(Target::of(&p).unwrap().host, want, "{target} {hosts:?}");
        }
        let refused = [
            ("/a.ts", vec!["edge", "edge"]),
            ("/a.ts", vec!["edge", "other"]),
            ("/a.ts", vec![]),
            ("http://edge/a.ts", vec!["other"]),
            ("http://edge/a.ts", vec!["edge:81"]),
        ];
        for (target, hosts) in refused {
            let p = parts(target, &hosts);
            assert!(
                matches!(Target::of(&p), Err(EdgeError::BadRequest(_))),
                "{target} {hosts:?}"
            );
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert_eq!(strip_prefix("/live/a.ts", "/live/"), Some("/a.ts"));
        assert_eq!(strip_prefix("/live/", "/live/"), Some("/"));
        assert_eq!(strip_prefix("/live/a.ts", "/live"), Some("/a.ts"));
        assert_eq!(strip_prefix("/live", "/live"), Some("/"));
        assert_eq!(strip_prefix("/livestream/a", "/live"), None);
        assert_eq!(strip_prefix("/x", "/"), Some("/x"));
        assert_eq!(strip_prefix("/x", ""), Some("/x"));
    }

    #[test]
    fn routes_by_host_then_prefix() {
        let config = crate::config::Config::from_toml(
            r#"
            [[routes]]
            host = "a.example"
            prefix = "/live/"
            url = "http://127.0.0.1:1/origin-a"
            [[routes]]
            prefix = "/"
            url = "http://127.0.0.1:2"
            "#,
        )
        .unwrap();
        let routes = Routes::new(&config.routes);
        let target = |host: &'static str, path: &'static str| Target {
            host: host.into(),
            path: path.into(),
            query: Some("x=1"),
        };
        let a = target("a.example", "/live/s.m3u8");
        let (r, pq) = routes.find(&a).unwrap();
        assert_eq!(r.origin.base_path, "/origin-a");
        assert_eq!(pq, "/s.m3u8?x=1");
        let b = target("b.example", "/live/s.m3u8");
        let (r, pq) = routes.find(&b).unwrap();
        assert_eq!(r.origin.authority.as_str(), "127.0.0.1:2");
        assert_eq!(pq, "/live/s.m3u8?x=1");
        // Without a query, the path below the prefix is a slice of the target's.
        let bare = Target {
            query: None,
            ..target("a.example", "/live/s.m3u8")
        };
        let (_, pq) = routes.find(&bare).unwrap();
        assert!(matches!(pq, Cow::Borrowed("/s.m3u8")), "{pq:?}");
    }
}
