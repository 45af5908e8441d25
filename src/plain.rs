//! Answers the edge writes itself: a short text with the same headers,
//! whether it is an error, an admin path or a refusal.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::EdgeBody;
use crate::error::EdgeError;
use crate::headers::{NOSNIFF, X_CONTENT_TYPE_OPTIONS};

/// `body` as a plain-text answer that no cache keeps and no browser sniffs.
pub fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<EdgeBody> {
    let body = body.into();
    let len = body.len();
    let mut response = Response::new(EdgeBody::full(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    response
}

/// Turns any error into its answer: the status, and a terse text body, the
/// same for every error of that status, with the request id to find the log
/// line by. What went wrong (an origin's address, a socket error, the
/// client's own input) goes to the log, never to the client.
pub fn rescue(err: &EdgeError, request_id: &str) -> Response<EdgeBody> {
    let status = err.status();
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = match err {
        // The short reason is the client's to know: what to fix in its URL.
        EdgeError::Forbidden(why) => format!("{} {reason}: {why}\nrequest id: {request_id}\n", status.as_u16()),
        _ => format!("{} {reason}\nrequest id: {request_id}\n", status.as_u16()),
    };
    let mut response = text(status, body);
    let h = response.headers_mut();
    match err {
        EdgeError::Method(_) => {
            h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, OPTIONS"));
        }
        EdgeError::Range { len } => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        _ => {}
    }
    response
}
