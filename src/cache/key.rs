//! Cache keys: the origin URL an object comes from.
//!
//! Keying by the upstream URL (not the client's Host) lets every host name
//! routed to one origin share entries, and makes `/purge?url=` exact.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};

use crate::config::RouteConfig;

/// The CMCD query argument (CTA-5004): player telemetry, never part of a key.
const CMCD_QUERY: &str = "CMCD";

/// `path_and_query` in the one form that is both keyed and fetched: without
/// empty query pairs, the arguments the route ignores (`ignore_query`) and
/// CMCD. What is stored under a key is then exactly what was fetched for it.
pub fn normal_form<'a>(route: &RouteConfig, path_and_query: &'a str) -> Cow<'a, str> {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return Cow::Borrowed(path_and_query);
    };
    let kept = |pair: &&str| {
        let name = pair.split('=').next().unwrap_or_default();
        !pair.is_empty() && name != CMCD_QUERY && !route.ignore_query.iter().any(|i| i == name)
    };
    if query.split('&').all(|pair| kept(&pair)) && !query.is_empty() {
        return Cow::Borrowed(path_and_query);
    }
    let kept: Vec<&str> = query.split('&').filter(kept).collect();
    if kept.is_empty() {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(format!("{path}?{}", kept.join("&")))
    }
}

/// The key URL of `path_and_query` on `route`: the origin URL of its normal form.
pub fn key_url(route: &RouteConfig, path_and_query: &str) -> String {
    route.origin.url(&normal_form(route, path_and_query))
}

/// The identity of a cached object.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(Arc<str>);

/// Hashes and compares as its text (the derived `Hash` is `str`'s), so a
/// hit looks up the URL it just built without copying it into a key.
impl std::borrow::Borrow<str> for CacheKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl CacheKey {
    pub fn new(upstream_url: &str) -> Self {
        Self(Arc::from(upstream_url))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of one variant of a response that varies on `names`:
    /// the base key plus the request's values of those headers.
    pub fn variant(&self, names: &[HeaderName], request: &HeaderMap) -> Self {
        let mut key = String::with_capacity(self.0.len() + 32);
        key.push_str(&self.0);
        for name in names {
            key.push('\n');
            key.push_str(name.as_str());
            key.push(':');
            for (i, value) in request.get_all(name).iter().enumerate() {
                if i > 0 {
                    key.push(',');
                }
                push_escaped(&mut key, value.as_bytes());
            }
        }
        Self(Arc::from(key))
    }

    /// Whether this key (or a variant of it) belongs to `base`.
    pub fn base_is(&self, base: &str) -> bool {
        self.0.split('\n').next() == Some(base)
    }
}

/// Writes a header value's bytes into a key so that different bytes always
/// make different text: visible ASCII as it is, every other byte, and the
/// `%` and `,` the key itself uses, as `%XX`. (A lossy UTF-8 form made
/// `\xff` and `\xfe` one variant.)
fn push_escaped(key: &mut String, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value {
        if b.is_ascii_graphic() && b != b'%' && b != b',' {
            key.push(b as char);
        } else {
            key.push('%');
            key.push(HEX[usize::from(b >> 4)] as char);
            key.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::ACCEPT_ENCODING;

    #[test]
    fn ignored_query_arguments_and_cmcd_leave_the_key() {
        let config = crate::config::Config::from_toml(
            "[[routes]]\nurl = \"http://o:1/base\"\nignore_query = [\"token\", \"sid\"]\n",
        )
        .unwrap();
        let route = &config.routes[0];
        let cases = [
            ("/a.ts", "http://o:1/base/a.ts"),
            ("/a.ts?token=x", "http://o:1/base/a.ts"),
            ("/a.ts?token=x&b=2&sid=9", "http://o:1/base/a.ts?b=2"),
            ("/a.ts?CMCD=br%3D3200%2Cnor%3D%22b.ts%22", "http://o:1/base/a.ts"),
            (
                "/i.m3u8?_HLS_msn=5&_HLS_part=2&token=t",
                "http://o:1/base/i.m3u8?_HLS_msn=5&_HLS_part=2",
            ),
            ("/a.ts?tokenized=1", "http://o:1/base/a.ts?tokenized=1"),
            // Empty pairs are no arguments: one form, whichever way they were written.
            ("/a.ts?&b=2&&", "http://o:1/base/a.ts?b=2"),
            ("/a.ts?", "http://o:1/base/a.ts"),
            ("/a.ts?b=&c", "http://o:1/base/a.ts?b=&c"),
        ];
        for (pq, want) in cases {
            assert_eq!(key_url(route, pq), want, "{pq}");
            // What is fetched is what is keyed.
            let fetched = route.origin.url(&normal_form(route, pq));
            assert_eq!(fetched, want, "{pq}");
        }
    }

    #[test]
    fn variants_differ_by_header_values() {
        let base = CacheKey::new("http://o/a.m3u8");
        let names = [ACCEPT_ENCODING];
        let mut gzip = HeaderMap::new();
        gzip.insert(ACCEPT_ENCODING, "gzip".parse().unwrap());
        let none = HeaderMap::new();
        let a = base.variant(&names, &gzip);
        let b = base.variant(&names, &none);
        assert_ne!(a, b);
        assert_eq!(a, base.variant(&names, &gzip.clone()));
        assert!(a.base_is("http://o/a.m3u8") && b.base_is("http://o/a.m3u8"));
        assert!(!a.base_is("http://o/a"));
    }

    #[test]
    fn variants_are_keyed_on_the_values_bytes() {
        let base = CacheKey::new("http://o/a.m3u8");
        let tag = HeaderName::from_static("x-tag");
        let with = |values: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(&tag, http::HeaderValue::from_bytes(v).unwrap());
            }
            base.variant(std::slice::from_ref(&tag), &h)
        };
        // Each pair once collided (lossy text, or the `,` that joins values).
        type Values<'a> = &'a [&'a [u8]];
        let pairs: [(Values, Values); 4] = [
            (&[b"\xff"], &[b"\xfe"]),
            (&[b"a,b"], &[b"a", b"b"]),
            (&[b"%2C"], &[b","]),
            (&[b"a b"], &[b"a%20b"]),
        ];
        for (one, other) in pairs {
            assert_ne!(with(one), with(other), "{one:?} and {other:?}");
        }
        assert_eq!(with(&[b"\xff"]), with(&[b"\xff"]));
    }
}
