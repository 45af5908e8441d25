//! Why a request could not be served, and why the edge could not start.
//! [`crate::plain::rescue`] turns a request's error into its answer.

use std::net::SocketAddr;

use http::{Method, StatusCode};

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
    /// 403: the route wants signed URLs and this one's token is not good.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
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
            EdgeError::Forbidden(_) => StatusCode::FORBIDDEN,
            EdgeError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            EdgeError::Range { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            EdgeError::Upstream(e) => e.status(),
        }
    }
}

/// Why the edge could not start (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {key} = {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("cannot open server.access_log_file = {}: {source}", .path.display())]
    AccessLog {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}
