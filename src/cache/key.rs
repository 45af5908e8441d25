//! Cache keys: the origin URL an object comes from.
//!
//! Keying by the upstream URL (not the client's Host) lets every host name
//! routed to one origin share entries, and makes `/purge?url=` exact.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};

/// The identity of a cached object.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(Arc<str>);

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
