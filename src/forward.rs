//! The headers the edge sends upstream: built from what the client sent, not
//! copied. A fetch is shared by every viewer who joins it, so nothing the
//! first client sends may change what the origin answers for all of them:
//! no body framing (a `Content-Length` with no body desyncs the pooled origin
//! connection), no URL-rewriting or forwarding headers that a web framework
//! behind the origin would trust, and forwarding headers only from the edge.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::RouteConfig;
use crate::headers::{self, X_FORWARDED_FOR};

/// The client a request came from, as the edge saw its connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The TCP peer's address.
    pub ip: IpAddr,
    /// The connection was HTTPS.
    pub tls: bool,
    /// This request is a sibling edge's, signed with the fleet's secret.
    pub sibling: bool,
    /// What the kernel measured of the connection (`TCP_INFO`, see
    /// `cmsd::Probe`); nothing known where there is no socket to ask.
    pub path: crate::cmsd::Path,
}

impl Peer {
    pub fn plain(ip: IpAddr) -> Self {
        Self {
            ip,
            tls: false,
            sibling: false,
            path: crate::cmsd::Path::default(),
        }
    }
}

const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Whether a client header is never sent upstream, whoever sent it, beside
/// the hop-by-hop ones. Names are lower case (`http` keeps them so).
fn never_forwarded(name: &str) -> bool {
    matches!(
        name,
        // Body framing beside the hop-by-hop headers: the upstream request
        // is a GET or HEAD without a body, framed by the edge's client.
        "content-length"
            | "expect"
            | "host"
            // Set by the edge from what it knows.
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "via"
            // A sibling's signature is for the request it came with.
            | "outpost-sibling"
            // Inputs that frameworks use to build URLs or pick a method, and
            // that are not in the cache key.
            | "forwarded"
            | "x-forwarded-host"
            | "x-forwarded-port"
            | "x-forwarded-prefix"
            | "x-forwarded-scheme"
            | "x-forwarded-server"
            | "x-forwarded-ssl"
            | "x-host"
            | "x-original-host"
            | "x-original-url"
            | "x-rewrite-url"
            | "x-http-method"
            | "x-http-method-override"
            | "x-method-override"
    )
}

/// Headers that make an answer one client's own: left out of a shared fill,
/// which fetches the whole object for everyone (ranges and conditionals are
/// answered from it).
fn only_for_one(name: &HeaderName) -> bool {
    [
        header::RANGE,
        header::IF_RANGE,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::CACHE_CONTROL,
        header::PRAGMA,
    ]
    .contains(name)
}

/// Where a request goes, for the headers sent with it.
pub struct Forwarding<'a> {
    pub route: &'a RouteConfig,
    /// `server.trusted_proxies`.
    pub trusted: &'a [ipnet::IpNet],
    /// A shared fill rather than one client's own pass-through request.
    pub shared: bool,
}

/// The headers sent upstream for a client's request.
pub fn upstream_headers(client: &HeaderMap, peer: Peer, to: &Forwarding) -> HeaderMap {
    let listed = headers::connection_named(client);
    let mut out = HeaderMap::with_capacity(client.len() + 3);
    for (name, value) in client {
        let dropped = headers::is_hop_by_hop(name)
            || never_forwarded(name.as_str())
            || (to.shared && only_for_one(name))
            || to.route.strip_headers.contains(name)
            || listed.contains(name);
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    // A signed sibling edge is trusted like a proxy.
    let trusted = peer.sibling || to.trusted.iter().any(|net| net.contains(&peer.ip.to_canonical()));
    let ip = peer.ip.to_canonical().to_string();
    let chain = match joined(client, &X_FORWARDED_FOR) {
        Some(chain) if trusted => format!("{chain}, {ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&chain) {
        out.insert(X_FORWARDED_FOR, v);
    }
    let proto = if peer.tls { "https" } else { "http" };
    out.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    let via = match joined(client, &header::VIA) {
        Some(chain) if trusted => format!("{chain}, {}", headers::VIA_VALUE),
        _ => headers::VIA_VALUE.to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&via) {
        out.insert(header::VIA, v);
    }
    out
}

/// Every value of a list header, joined, when all are text.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<_>>()?;
    let text = values.join(", ");
    (!text.trim().is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(strip: &str) -> RouteConfig {
        let text = format!("[[routes]]\nurl = \"http://127.0.0.1:1\"\nstrip_headers = [{strip}]\n");
        crate::config::Config::from_toml(&text).unwrap().routes.remove(0)
    }

    fn client(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn body_framing_and_unkeyed_inputs_never_go_upstream() {
        let sent = client(&[
            ("content-length", "40"),
            ("transfer-encoding", "chunked"),
            ("expect", "100-continue"),
            ("trailer", "x-t"),
            ("host", "edge.example"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("forwarded", "host=evil.example"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-scheme", "https"),
            ("x-host", "evil.example"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-http-method-override", "DELETE"),
            ("x-debug", "1"),
            ("outpost-sibling", "1796000000.00"),
            ("accept", "*/*"),
            ("range", "bytes=0-1"),
            ("user-agent", "player"),
        ]);
        let r = route("\"X-Debug\"");
        let to = Forwarding {
            route: &r,
            trusted: &[],
            shared: true,
        };
        let out = upstream_headers(&sent, Peer::plain("192.0.2.7".parse().unwrap()), &to);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            ["accept", "user-agent", "x-forwarded-for", "x-forwarded-proto", "via"]
        );
        assert_eq!(out["x-forwarded-for"], "192.0.2.7");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["via"], "1.1 outpost");
        // One client's own request keeps its range.
        let own = Forwarding { shared: false, ..to };
        assert!(upstream_headers(&sent, Peer::plain("192.0.2.7".parse().unwrap()), &own).contains_key("range"));
    }

    #[test]
    fn a_forwarded_chain_is_kept_only_from_trusted_proxies() {
        let sent = client(&[("x-forwarded-for", "203.0.113.9, 198.51.100.1"), ("via", "1.1 lb")]);
        let r = route("");
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let to = Forwarding {
            route: &r,
            trusted: &trusted,
            shared: true,
        };
        let from_lb = Peer {
            ip: "10.1.2.3".parse().unwrap(),
            tls: true,
            sibling: false,
            path: crate::cmsd::Path::default(),
        };
        let out = upstream_headers(&sent, from_lb, &to);
        assert_eq!(out["x-forwarded-for"], "203.0.113.9, 198.51.100.1, 10.1.2.3");
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out["via"], "1.1 lb, 1.1 outpost");
        // The same chain from anyone else is replaced, not extended.
        let stranger = Peer::plain("192.0.2.7".parse().unwrap());
        let out = upstream_headers(&sent, stranger, &to);
        assert_eq!(out["x-forwarded-for"], "192.0.2.7");
        assert_eq!(out["via"], "1.1 outpost");
        // A signed sibling edge is trusted like a proxy.
        let sibling = Peer {
            sibling: true,
            ..stranger
        };
        let out = upstream_headers(&sent, sibling, &to);
        assert_eq!(out["x-forwarded-for"], "203.0.113.9, 198.51.100.1, 192.0.2.7");
        // An IPv4 peer seen on a dual-stack socket is written as IPv4, and matched so.
        let mapped = Peer::plain("::ffff:10.9.9.9".parse().unwrap());
        assert_eq!(
            upstream_headers(&sent, mapped, &to)["x-forwarded-for"],
            "203.0.113.9, 198.51.100.1, 10.9.9.9"
        );
    }
}
