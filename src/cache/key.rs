//! Cache keys: the origin URL an object comes from.
//!
//! Keying by the upstream URL (not the client's Host) lets every host name
//! routed to one origin share entries, and makes `/purge?url=` exact.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};

use crate::config::RouteConfig;
use crate::upstream::origin_url;

/// The CMCD query argument (CTA-5004): player telemetry, never part of a key.
const CMCD_QUERY: &str = "CMCD";

/// The key URL of `path_and_query` on `route`: the origin URL without the
/// query arguments the route ignores (`ignore_query`) and without CMCD.
pub fn key_url(route: &RouteConfig, path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return origin_url(&route.origin, path_and_query);
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            !pair.is_empty() && name != CMCD_QUERY && !route.ignore_query.iter().any(|i| i == name)
        })
        .collect();
    if kept.is_empty() {
        origin_url(&route.origin, path)
    } else {
        origin_url(&route.origin, &format!("{path}?{}", kept.join("&")))
    }
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
                key.push_str(&String::from_utf8_lossy(value.as_bytes()));
            }
        }
        Self(Arc::from(key))
    }

    /// Whether this key (or a variant of it) belongs to `base`.
    pub fn base_is(&self, base: &str) -> bool {
        self.0.split('\n').next() == Some(base)
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
        ];
        for (pq, want) in cases {
            assert_eq!(key_url(route, pq), want, "{pq}");
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
}
