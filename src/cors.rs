//! CORS for players in browsers: the edge answers preflights itself and lets
//! pages read the headers players need (`Content-Range`, `Age`, `Cache-Status`).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::headers::{NOSNIFF, X_CONTENT_TYPE_OPTIONS};

const EXPOSE: &str =
    "Content-Length, Content-Range, Age, Cache-Status, Date, ETag, Repr-Digest, CMSD-Dynamic, CMSD-Static";
/// What [`Cors::apply`] adds for any origin (`*`), as HTTP/1.1 header lines:
/// the same for every answer, so a plain hit writes them from here.
pub const ANY_ORIGIN_LINES: &[u8] = b"access-control-allow-origin: *\r\n\
access-control-expose-headers: Content-Length, Content-Range, Age, Cache-Status, Date, ETag, Repr-Digest, CMSD-Dynamic, CMSD-Static\r\n";
const METHODS: &str = "GET, HEAD, OPTIONS";
/// Request headers a player may send cross-origin besides the safelisted ones.
const ALLOWED_HEADERS: [&str; 4] = ["range", "if-none-match", "if-modified-since", "if-range"];

pub struct Cors {
    any: bool,
    origins: Vec<HeaderValue>,
}

impl Cors {
    pub fn new(origins: &[String]) -> Self {
        Self {
            any: origins.iter().any(|o| o == "*"),
            origins: origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect(),
        }
    }

    fn allow_origin(&self, request: &HeaderMap) -> Option<HeaderValue> {
        if self.any {
            return Some(ANY_ORIGIN);
        }
        let origin = request.get(header::ORIGIN)?;
        self.origins.contains(origin).then(|| origin.clone())
    }

    /// True when every answer gets the same CORS headers, whatever the
    /// request: those of [`ANY_ORIGIN_LINES`] and [`insert_any_origin`].
    pub fn is_any(&self) -> bool {
        self.any
    }

    /// Adds the CORS response headers for a request with these headers.
    pub fn apply(&self, request: &HeaderMap, response: &mut HeaderMap) {
        if self.any {
            insert_any_origin(response);
            return;
        }
        crate::headers::append_list(response, header::VARY, "Origin");
        if let Some(origin) = self.allow_origin(request) {
            insert_allowed(response, origin);
        }
    }

    /// The answer to an OPTIONS request, answered by the edge: a 204 with
    /// no body.
    pub fn preflight(&self, request: &HeaderMap) -> Response<()> {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let h = response.headers_mut();
        h.insert(header::ALLOW, HeaderValue::from_static(METHODS));
        h.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
        if self.allow_origin(request).is_some() && request.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(METHODS));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
            if let Some(allowed) = allowed_request_headers(request) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed);
            }
        }
        response
    }
}

// Constants: `from_static` called at run time checks every byte, per answer.
const ANY_ORIGIN: HeaderValue = HeaderValue::from_static("*");
const EXPOSED: HeaderValue = HeaderValue::from_static(EXPOSE);

/// The CORS headers of every answer when any origin may read it.
pub fn insert_any_origin(response: &mut HeaderMap) {
    insert_allowed(response, ANY_ORIGIN);
}

fn insert_allowed(response: &mut HeaderMap, origin: HeaderValue) {
    response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    response.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED);
}

/// The requested headers a player may send: `Range`, conditionals and CMCD (CTA-5004).
fn allowed_request_headers(request: &HeaderMap) -> Option<HeaderValue> {
    let asked = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS)?.to_str().ok()?;
    let allowed: Vec<String> = asked
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| ALLOWED_HEADERS.contains(&h.as_str()) || h.starts_with("cmcd-"))
        .collect();
    if allowed.is_empty() {
        return None;
    }
    HeaderValue::from_str(&allowed.join(", ")).ok()
}

pub fn is_preflight(method: &Method) -> bool {
    method == Method::OPTIONS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn any_origin_gets_star_and_exposed_headers() {
        let cors = Cors::new(&["*".into()]);
        let mut out = HeaderMap::new();
        cors.apply(&headers(&[("origin", "https://player.example")]), &mut out);
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let exposed = out[header::ACCESS_CONTROL_EXPOSE_HEADERS].to_str().unwrap();
        for name in ["Content-Range", "Age", "Cache-Status"] {
            assert!(exposed.contains(name), "{name} exposed");
        }
    }

    #[test]
    fn any_origin_lines_are_what_apply_adds() {
        let mut out = HeaderMap::new();
        Cors::new(&["*".into()]).apply(&HeaderMap::new(), &mut out);
        let mut wire = bytes::BytesMut::new();
        crate::headers::encode_fields(&mut wire, &out);
        assert_eq!(&wire[..], ANY_ORIGIN_LINES);
    }

    #[test]
    fn listed_origins_only() {
        let cors = Cors::new(&["https://ok.example".into()]);
        let mut out = HeaderMap::new();
        cors.apply(&headers(&[("origin", "https://evil.example")]), &mut out);
        assert!(!out.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(out[header::VARY], "Origin");
        let mut out = HeaderMap::new();
        cors.apply(&headers(&[("origin", "https://ok.example")]), &mut out);
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://ok.example");
    }

    #[test]
    fn preflight_allows_range_and_cmcd_only() {
        let cors = Cors::new(&["*".into()]);
        let resp = cors.preflight(&headers(&[
            ("origin", "https://player.example"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "Range, CMCD-Request, X-Evil"),
        ]));
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let h = resp.headers();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_HEADERS], "range, cmcd-request");
        assert!(h[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .contains("GET"));
    }
}
