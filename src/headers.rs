//! Header names the edge reads or writes, and hop-by-hop handling (RFC 9110 §7.6.1).

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub const X_CONTENT_TYPE_OPTIONS: HeaderName = HeaderName::from_static("x-content-type-options");
/// On every answer the edge makes itself: a browser must not read an error
/// text as script or markup.
pub const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

/// The `Via` pseudonym this edge adds.
pub const VIA_VALUE: &str = "1.1 outpost";

const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Whether `name` is a hop-by-hop header of its own (not counting those a
/// `Connection` header names).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// The header names `Connection` lists: hop-by-hop too (RFC 9110 §7.6.1).
pub fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Removes hop-by-hop headers, including any that `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named = connection_named(headers);
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Appends `value` to a comma-separated header, creating it when absent.
pub fn append_list(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    let joined = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(old) if !old.is_empty() => format!("{old}, {value}"),
        _ => value.to_owned(),
    };
    if let Ok(v) = joined.parse() {
        headers.insert(name, v);
    }
}

/// A copy of `headers` whose values share one small allocation of their own.
///
/// hyper parses header values without copying: each is a slice of the
/// connection's read buffer, which grows to ~400 KiB while a body streams
/// through it. A head kept in the cache would pin that whole buffer for as
/// long as the entry lives (with 2 MB segments, a fifth more memory than the
/// bodies), so what is kept is detached first.
pub fn detached(headers: &HeaderMap) -> HeaderMap {
    let mut text = BytesMut::with_capacity(headers.values().map(HeaderValue::len).sum());
    for value in headers.values() {
        text.extend_from_slice(value.as_bytes());
    }
    let mut text = text.freeze();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let own = text.split_to(value.len());
        // Bytes that were a valid value stay one; keep the original if not.
        let mut own = HeaderValue::from_maybe_shared(own).unwrap_or_else(|_| value.clone());
        own.set_sensitive(value.is_sensitive());
        out.append(name.clone(), own);
    }
    out
}

/// A number as a header value, in one allocation (`HeaderValue::from(u64)`
/// makes two, and goes through the formatter).
pub fn number(n: u64) -> HeaderValue {
    let mut digits = itoa::Buffer::new();
    HeaderValue::from_str(digits.format(n)).expect("digits are a valid header value")
}

/// The `Content-Length` header as a number, when present and valid.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Cache-Control directive names (lower-case) with their values, as written.
pub fn cache_directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| {
            let (name, value) = match d.split_once('=') {
                Some((n, v)) => (n, Some(v.trim().trim_matches('"').to_owned())),
                None => (d, None),
            };
            let name = name.trim().to_ascii_lowercase();
            (!name.is_empty()).then_some((name, value))
        })
}

/// Header fields as HTTP/1.1 writes them, one `name: value` line each.
pub fn encode_fields(out: &mut BytesMut, headers: &HeaderMap) {
    for (name, value) in headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(KEEP_ALIVE, "timeout=5".parse().unwrap());
        h.insert(header::ETAG, "\"a\"".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ETAG));
    }

    #[test]
    fn detached_values_are_equal_but_share_nothing_with_the_original() {
        let wire = bytes::Bytes::from_static(b"video/mp2tmax-age=3600abc");
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_maybe_shared(wire.slice(0..10)).unwrap(),
        );
        h.append(
            header::CACHE_CONTROL,
            HeaderValue::from_maybe_shared(wire.slice(10..22)).unwrap(),
        );
        h.append(header::CACHE_CONTROL, HeaderValue::from_static("public"));
        let mut secret = HeaderValue::from_maybe_shared(wire.slice(22..25)).unwrap();
        secret.set_sensitive(true);
        h.insert("x-token", secret);
        let own = detached(&h);
        assert_eq!(own, h);
        assert!(own["x-token"].is_sensitive());
        let wire_range = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
        for v in own.values() {
            assert!(
                !wire_range.contains(&(v.as_bytes().as_ptr() as usize)),
                "{v:?} still points into the wire buffer"
            );
        }
        let order: Vec<_> = own.get_all(header::CACHE_CONTROL).iter().collect();
        assert_eq!(order, ["max-age=3600", "public"]);
    }

    #[test]
    fn numbers_become_values() {
        for n in [0, 7, 1024, u64::MAX] {
            assert_eq!(number(n), HeaderValue::from(n));
        }
    }

    #[test]
    fn appends_to_lists() {
        let mut h = HeaderMap::new();
        append_list(&mut h, header::VIA, VIA_VALUE);
        assert_eq!(h[header::VIA], "1.1 outpost");
        append_list(&mut h, header::VIA, "1.1 other");
        assert_eq!(h[header::VIA], "1.1 outpost, 1.1 other");
    }

    #[test]
    fn parses_directives() {
        let mut h = HeaderMap::new();
        h.append(header::CACHE_CONTROL, "Public, max-age=\"60\"".parse().unwrap());
        h.append(header::CACHE_CONTROL, "no-cache=\"Set-Cookie\",,".parse().unwrap());
        let d: Vec<_> = cache_directives(&h).collect();
        assert_eq!(
            d,
            vec![
                ("public".into(), None),
                ("max-age".into(), Some("60".into())),
                ("no-cache".into(), Some("Set-Cookie".into())),
            ]
        );
    }
}
