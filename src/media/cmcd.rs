//! CTA-5004 Common Media Client Data: the one key the edge acts on is `nor`
//! (next object request), a hint to fetch that object ahead of the player.

use http::{HeaderMap, HeaderName};
use percent_encoding::percent_decode_str;

pub const CMCD_REQUEST: HeaderName = HeaderName::from_static("cmcd-request");

/// The `nor` hint of a request, from the `CMCD-Request` header or the `CMCD`
/// query argument, as a URL relative to the requested object.
pub fn next_object(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    // Every request asks this, and few carry the header: a look at the names
    // costs less than hashing one the map seldom holds (`get`).
    let carried = headers.keys().any(|name| *name == CMCD_REQUEST);
    let from_header = carried
        .then(|| headers.get(CMCD_REQUEST))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(nor_of);
    from_header.or_else(|| {
        let encoded = query?.split('&').find_map(|pair| pair.strip_prefix("CMCD="))?;
        nor_of(&percent_decode_str(encoded).decode_utf8_lossy())
    })
}

/// `nor` from a CMCD payload: `key=value` pairs split by commas outside quotes;
/// the value is a quoted, URL-encoded string.
fn nor_of(payload: &str) -> Option<String> {
    let mut in_quotes = false;
    let mut start = 0;
    let mut items = Vec::new();
    for (i, c) in payload.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                items.push(&payload[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&payload[start..]);
    let value = items
        .iter()
        .find_map(|item| item.trim().strip_prefix("nor="))?
        .trim()
        .trim_matches('"');
    let decoded = percent_decode_str(value).decode_utf8().ok()?.into_owned();
    (!decoded.is_empty()).then_some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_object_from_header_or_query() {
        let mut h = HeaderMap::new();
        h.insert(
            CMCD_REQUEST,
            "bl=21300,nor=\"..%2F200kbps%2Fseg35.m4v\",nrr=\"12323-48763\""
                .parse()
                .unwrap(),
        );
        assert_eq!(next_object(&h, None).as_deref(), Some("../200kbps/seg35.m4v"));
        let q = "a=1&CMCD=bl%3D21300%2Cnor%3D%22seg36.m4v%22%2Csu";
        assert_eq!(next_object(&HeaderMap::new(), Some(q)).as_deref(), Some("seg36.m4v"));
        let mut other = HeaderMap::new();
        other.insert(CMCD_REQUEST, "bl=100,su".parse().unwrap());
        assert_eq!(next_object(&other, Some("x=1")), None);
        assert_eq!(next_object(&HeaderMap::new(), Some("CMCD=nor%3D%22%22")), None);
    }
}
