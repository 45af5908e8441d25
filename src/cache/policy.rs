//! What may be done with an upstream answer: store it, share it with waiters,
//! or hand it only to the client that asked. Pure functions of the request,
//! the response and `now`.
//!
//! RFC 9111 freshness and storability come from `http-cache-semantics`; this
//! module adds the shared-edge rules on top of it.

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, Request, StatusCode};
use http_cache_semantics::{CacheOptions, CachePolicy};

use crate::headers::cache_directives;

/// How an upstream answer may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Store it once complete; it is fresh for `ttl` (zero: revalidate on every use).
    Store { ttl: Duration },
    /// Give it to every client waiting for this fetch, but keep nothing: it can
    /// neither be reused fresh nor revalidated (e.g. an error without caching headers).
    Share,
    /// Give it only to the client whose request fetched it: the origin marked it
    /// private, no-store, set a cookie, authorised it, or varies on everything.
    Private,
    /// Larger than `cache.max_object`: streamed through to the clients already
    /// waiting, never stored.
    TooLarge,
    /// Storable, but the fill budget had no room for it: streamed through to
    /// the clients already waiting, never stored.
    NoRoom,
}

impl Disposition {
    pub fn is_stored(self) -> bool {
        matches!(self, Disposition::Store { .. })
    }
}

/// The shared-cache policy of an answer, from `http-cache-semantics`.
pub fn policy(request: &Request<()>, status: StatusCode, headers: &HeaderMap, now: SystemTime) -> CachePolicy {
    let response = response_parts(status, headers);
    let options = CacheOptions {
        shared: true,
        ..CacheOptions::default()
    };
    CachePolicy::new_options(request, &response, now, options)
}

/// Decides what the edge may do with an answer. `request` is the request the
/// edge sent upstream (client cache directives are not in it: one player's
/// `no-store` must not turn off caching for everyone).
pub fn judge(
    request: &Request<()>,
    policy: &CachePolicy,
    headers: &HeaderMap,
    now: SystemTime,
    max_object: u64,
) -> Disposition {
    if is_private(request.headers(), headers) {
        return Disposition::Private;
    }
    if crate::headers::content_length(headers).is_some_and(|len| len > max_object) {
        return Disposition::TooLarge;
    }
    if !policy.is_storable() {
        return Disposition::Share;
    }
    let ttl = policy.time_to_live(now);
    let revalidatable = headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    if ttl.is_zero() && !revalidatable {
        Disposition::Share
    } else {
        Disposition::Store { ttl }
    }
}

/// The origin's answer belongs to the one client that asked for it.
fn is_private(request: &HeaderMap, response: &HeaderMap) -> bool {
    let mut public = false;
    let mut authorised_ok = false;
    for (name, _) in cache_directives(response) {
        match name.as_str() {
            "private" | "no-store" => return true,
            "public" => {
                public = true;
                authorised_ok = true;
            }
            // RFC 9111 §3.5: these also let a shared cache store an authorised answer.
            "s-maxage" | "must-revalidate" => authorised_ok = true,
            _ => {}
        }
    }
    let vary_all = response
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == "*");
    vary_all
        || (response.contains_key(header::SET_COOKIE) && !public)
        || (request.contains_key(header::AUTHORIZATION) && !authorised_ok)
}

/// Whether a stored answer may be served stale when the origin fails
/// (RFC 9111 §4.2.4: not when the origin said must-revalidate or no-cache).
pub fn may_serve_stale(headers: &HeaderMap) -> bool {
    !cache_directives(headers).any(|(name, _)| {
        matches!(
            name.as_str(),
            "must-revalidate" | "proxy-revalidate" | "no-cache" | "s-maxage"
        )
    })
}

/// How long past its freshness a stored answer may still be served
/// (RFC 5861): at once while one background refresh runs, and when the
/// origin fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grace {
    pub while_revalidate: Duration,
    pub if_error: Duration,
}

impl Grace {
    /// Neither grace reaches past `bound` (a live playlist's window moves on).
    pub fn at_most(self, bound: Duration) -> Grace {
        Grace {
            while_revalidate: self.while_revalidate.min(bound),
            if_error: self.if_error.min(bound),
        }
    }

    pub fn longest(self) -> Duration {
        self.while_revalidate.max(self.if_error)
    }
}

/// The grace an answer gets: the origin's `stale-while-revalidate` and
/// `stale-if-error`, each falling back to the route's; none at all when the
/// origin forbids serving it stale.
pub fn grace(headers: &HeaderMap, route: Grace) -> Grace {
    if !may_serve_stale(headers) {
        return Grace::default();
    }
    let mut grace = route;
    for (name, value) in cache_directives(headers) {
        let seconds = || {
            value
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs)
        };
        match name.as_str() {
            "stale-while-revalidate" => grace.while_revalidate = seconds().unwrap_or(grace.while_revalidate),
            "stale-if-error" => grace.if_error = seconds().unwrap_or(grace.if_error),
            _ => {}
        }
    }
    grace
}

fn response_parts(status: StatusCode, headers: &HeaderMap) -> http::response::Parts {
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.headers = headers.clone();
    parts
}

#[cfg(test)]
mod tests;
