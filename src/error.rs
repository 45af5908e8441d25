//! Errors of the client side, and the one place any error becomes an HTTP answer.

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::body::EdgeBody;
use crate::headers::{NOSNIFF, X_CONTENT_TYPE_OPTIONS};
use crate::upstream::FetchError;

/// Why a request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// 400: the request itself is unusable.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// 431: the request head is over `server.max_header_size`.
    #[error("request headers of {size} bytes exceed the limit of {limit}")]
    HeadersTooLarge { size: usize, limit: usize },
    /// 421: no route for this host and path; never forwarded.
    #[error("no route for host {host:?} and path {path:?}")]
    Misdirected { host: String, path: String },
    /// 405: the edge serves only GET, HEAD and OPTIONS.
    #[error("method {0} is not served here: use GET, HEAD or OPTIONS")]
    Method(Method),
    /// 416: the range lies outside the object.
    #[error("range not satisfiable: the object has {len} bytes")]
    Range { len: u64 },
    /// 502 or 504: the upstream fetch failed before the response began.
    #[error(transparent)]
    Upstream(#[from] FetchError),
}

impl EdgeError {
    pub fn status(&self) -> StatusCode {
        match self {
            EdgeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            EdgeError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            EdgeError::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            EdgeError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            EdgeError::Range { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            EdgeError::Upstream(e) => e.status(),
        }
    }
}

/// Turns any error into its answer: the status, and a terse text body, the
/// same for every error of that status, with the request id to find the log
/// line by. What went wrong (an origin's address, a socket error, the
/// client's own input) goes to the log, never to the client.
pub fn rescue(err: &EdgeError, request_id: &str) -> Response<EdgeBody> {
    let status = err.status();
    let text = format!(
        "{} {}\nrequest id: {request_id}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let mut response = Response::new(EdgeBody::full(text.clone()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
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
