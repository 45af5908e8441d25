//! The admin listener: `/healthz`, `/metrics`, `/status`, `/status.json`,
//! `/purge` and `/reload`.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::body::EdgeBody;
use crate::edge::Edge;
use crate::metrics::SourceKind;
use crate::outcome::Outcome;
use crate::plain::text;
use crate::route::Target;

pub async fn handle(edge: Arc<Edge>, req: Request<Incoming>) -> Result<Response<EdgeBody>, Infallible> {
    let path = req.uri().path();
    let response = match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET | &Method::HEAD, "/metrics") => {
            edge.refresh_gauges();
            let mut r = text(StatusCode::OK, edge.metrics.render());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (&Method::GET | &Method::HEAD, "/status.json") => {
            let mut r = text(StatusCode::OK, status_json(&edge).to_string());
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        (&Method::GET | &Method::HEAD, "/status") => {
            let mut r = text(StatusCode::OK, STATUS_PAGE);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        (&Method::POST, "/purge") => match unauthorized(&edge, &req) {
            None => purge(&edge, &req).await,
            Some(refused) => refused,
        },
        (&Method::POST, "/reload") => match unauthorized(&edge, &req) {
            None => reload(&edge),
            Some(refused) => refused,
        },
        (_, "/healthz" | "/metrics" | "/status" | "/status.json" | "/purge" | "/reload") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "404 Not Found: admin paths are /healthz /metrics /status /status.json /purge /reload\n",
        ),
    };
    Ok(response)
}

/// The figures behind `/status` and `/status.json`.
pub fn status_json(edge: &Edge) -> serde_json::Value {
    edge.refresh_gauges();
    let m = &edge.metrics;
    let served = m.response_bytes.get();
    let origin = m.upstream_bytes.get(SourceKind::Origin);
    // Undefined until some answer came from the cache or upstream: error
    // pages alone (a dead origin) would otherwise read as a perfect 100%.
    let from_content: u64 = Outcome::ALL
        .iter()
        .filter(|o| !matches!(o, Outcome::Error))
        .map(|&o| m.requests.get(o))
        .sum();
    let (by_viewers, by_bytes) = edge.audience.top(TOP);
    let offload = (served > 0 && from_content > 0).then(|| 1.0 - origin as f64 / served as f64);
    let requests: serde_json::Map<String, serde_json::Value> = Outcome::ALL
        .iter()
        .map(|&outcome| (outcome.as_str().to_string(), json!(m.requests.get(outcome))))
        .collect();
    json!({
        "uptime_seconds": edge.started.elapsed().as_secs(),
        "requests": requests,
        "response_bytes": served,
        "origin_bytes": origin,
        "origin_requests": m.upstream_requests.get(SourceKind::Origin),
        "origin_offload": offload,
        "cache_bytes": m.cache_bytes.get(),
        "cache_objects": m.cache_objects.get(),
        "cache_memory": edge.settings().config.cache.memory,
        "inflight_fetches": edge.inflight.len(),
        "fills": edge.inflight.keys(TOP),
        "series": {
            "interval_seconds": crate::history::INTERVAL.as_secs(),
            "points": edge.history.points(edge.totals()),
        },
        "streams": {
            "by_viewers": by_viewers,
            "by_bytes": by_bytes,
        },
        "peer_requests": m.upstream_requests.get(SourceKind::Peer),
        "peer_bytes": m.upstream_bytes.get(SourceKind::Peer),
        "cluster": cluster_json(edge),
        "origins_down": origins_down(edge),
        "last_reload": last_reload(edge),
    })
}

/// When the config was last reloaded, and what changed or why it was refused.
fn last_reload(edge: &Edge) -> serde_json::Value {
    let Some(reload) = edge.last_reload() else {
        return serde_json::Value::Null;
    };
    let at = reload
        .at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match reload.result {
        Ok(changed) => json!({ "at_unix": at, "ok": true, "changed": changed }),
        Err(error) => json!({ "at_unix": at, "ok": false, "error": error }),
    }
}

/// The origins taken out of turn after failing, with when and why.
fn origins_down(edge: &Edge) -> Vec<serde_json::Value> {
    edge.upstream
        .ejections()
        .down()
        .into_iter()
        .map(|(origin, down)| {
            let since = down
                .since
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            json!({ "origin": origin, "since_unix": since, "error": down.error })
        })
        .collect()
}

/// The fleet as this edge sees it: each member's state and the share of
/// keys it owns (over the keys cached here, or evenly when none are).
fn cluster_json(edge: &Edge) -> serde_json::Value {
    let Some(cluster) = edge.cluster() else {
        return serde_json::Value::Null;
    };
    let keys = edge.store.base_keys(SHARE_SAMPLE);
    let shares = cluster.shares(keys.iter().map(String::as_str));
    let members: Vec<serde_json::Value> = cluster
        .status()
        .into_iter()
        .map(|member| {
            let share = shares.iter().find(|(name, _)| *name == member.url).map_or(0.0, |s| s.1);
            let mut value = json!(member);
            value["share"] = json!(share);
            value
        })
        .collect();
    json!({ "self": cluster.me().name, "members": members })
}

/// Streams and fills listed on the dashboard, at most.
const TOP: usize = 10;

/// At most this many cached keys are ranked for the members' shares.
const SHARE_SAMPLE: usize = 10_000;

/// The refusal of a mutating call without `Authorization: Bearer
/// <admin.token>` (404 while `admin.token` is empty: such calls are off).
fn unauthorized(edge: &Edge, req: &Request<Incoming>) -> Option<Response<EdgeBody>> {
    let config = edge.config();
    let Some(token) = &config.admin.token else {
        return Some(text(
            StatusCode::NOT_FOUND,
            format!(
                "404 Not Found: {} is disabled (admin.token is empty)\n",
                req.uri().path().trim_start_matches('/')
            ),
        ));
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "401 Unauthorized: send Authorization: Bearer <admin.token>\n",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Some(r);
    }
    None
}

/// `POST /reload`: the config read again from its layers and put in place;
/// 200 with what changed, or 400 with why not (the config in force stays).
fn reload(edge: &Edge) -> Response<EdgeBody> {
    let (status, body) = match crate::reload::reload(edge) {
        Ok(done) => (
            StatusCode::OK,
            json!({ "reloaded": true, "changed": done.changed, "restart_required": done.restart_required }),
        ),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            json!({ "reloaded": false, "error": e.to_string() }),
        ),
    };
    let mut r = text(status, format!("{body}\n"));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `POST /purge?url=URL` or `?prefix=URL` (authorized).
/// In a fleet, the purge is passed on to every sibling, signed.
async fn purge(edge: &Arc<Edge>, req: &Request<Incoming>) -> Response<EdgeBody> {
    let query = req.uri().query().unwrap_or_default();
    let arg = |name: &str| {
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
        })
    };
    let (url, exact) = match (arg("url"), arg("prefix")) {
        (Some(u), None) => (u, true),
        (None, Some(p)) => (p, false),
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: give exactly one of ?url=URL or ?prefix=URL\n",
            )
        }
    };
    let Some(upstream) = upstream_url(edge, &url) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("400 Bad Request: {url:?} is not a URL this edge routes\n"),
        );
    };
    let purged = edge.purge(&upstream, exact);
    tracing::info!(url = %url, exact, purged, "purge");
    let mut answer = format!("purged {purged}\n");
    for passed in crate::fleet::purge_siblings(edge, &upstream, exact).await {
        match passed.result {
            Ok(said) => answer.push_str(&format!("{}: {said}\n", passed.member)),
            Err(e) => answer.push_str(&format!("{}: failed: {e}\n", passed.member)),
        }
    }
    text(StatusCode::OK, answer)
}

/// The cache key (origin URL) of a URL as clients request it from the edge.
fn upstream_url(edge: &Edge, url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let mut parts = Request::new(()).into_parts().0;
    parts.uri = uri;
    let target = Target::of(&parts).ok()?;
    let (route, path_and_query) = edge.settings().routes.find(&target)?;
    Some(crate::cache::key::key_url(&route, &path_and_query))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const STATUS_PAGE: &str = include_str!("status.html");
