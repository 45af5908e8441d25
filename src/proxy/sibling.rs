//! Requests from sibling edges (signed with the fleet's secret): the paths
//! only siblings may use, and every other request routed like a client's,
//! except that its fill never asks a third member (see `proxy::to_fleet`).

use std::sync::Arc;

use http::request::Parts;
use http::{Method, StatusCode};

use super::{route_and_look_up, Answer};
use crate::cluster::{PROBE_PATH, PURGE_PATH};
use crate::edge::Edge;
use crate::forward::Peer;
use crate::outcome::Outcome;
use crate::plain::text;

pub async fn answer(edge: &Arc<Edge>, parts: &Parts, peer: Peer) -> Answer {
    // Answered by the edge itself, like a CORS preflight: counted as a hit.
    let own = |status, body: String| Ok((text(status, body), Outcome::Hit));
    match (&parts.method, parts.uri.path()) {
        (&Method::GET | &Method::HEAD, PROBE_PATH) => own(StatusCode::OK, "ok\n".into()),
        (&Method::POST, PURGE_PATH) => {
            let query = parts.uri.query().unwrap_or_default();
            let Some((exact, key)) = purge_target(query) else {
                return own(StatusCode::BAD_REQUEST, "give one of ?key= or ?prefix=\n".into());
            };
            let purged = edge.purge(&key, exact);
            tracing::info!(key, exact, purged, "purge from a sibling");
            own(StatusCode::OK, format!("purged {purged}\n"))
        }
        _ => route_and_look_up(edge, parts, peer).await,
    }
}

/// The purge's cache key (or key prefix), and whether it is exact.
pub fn purge_target(query: &str) -> Option<(bool, String)> {
    let mut found = None;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=')?;
        let exact = match name {
            "key" => true,
            "prefix" => false,
            _ => continue,
        };
        if found.is_some() {
            return None;
        }
        let value = percent_encoding::percent_decode_str(value).decode_utf8().ok()?;
        found = Some((exact, value.into_owned()));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_names_one_key_or_one_prefix() {
        assert_eq!(
            purge_target("key=http%3A%2F%2Fo%2Fa.ts"),
            Some((true, "http://o/a.ts".into()))
        );
        assert_eq!(
            purge_target("prefix=http://o/live/"),
            Some((false, "http://o/live/".into()))
        );
        assert_eq!(purge_target("key=a&prefix=b"), None);
        assert_eq!(purge_target(""), None);
        assert_eq!(purge_target("other=1"), None);
        assert_eq!(purge_target("key=%FF"), None);
    }
}
