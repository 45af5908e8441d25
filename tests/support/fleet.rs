//! Fleets of sibling edges on loopback: ports chosen first (each member's
//! config names them all), then one edge per port.

use outpost::metrics::SourceKind;
use outpost::{Config, Edge, RunningEdge};

use super::TestOrigin;

/// The fleet's shared secret in tests.
pub const SECRET: &str = "fleet-secret-0123456789";

/// The usual route for fleet tests, with short timeouts.
pub const ROUTE: &str = "[[routes]]\nurl = \"{origin}\"\ntimeout = \"3s\"\ndownload_timeout = \"1s\"\n";

/// `n` ports on 127.0.0.1 that were free a moment ago.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// A member's URL, as its siblings reach it.
pub fn member(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// The config of the member at `me` in a fleet of `ports`: `routes` (with
/// `{origin}`) and a `[cluster]` section with `extra` lines.
pub fn member_toml(routes: &str, origin: &str, me: u16, ports: &[u16], extra: &str) -> String {
    let peers: Vec<String> = ports.iter().map(|p| format!("\"{}\"", member(*p))).collect();
    format!(
        "{}\n[cluster]\nself = \"{}\"\npeers = [{}]\nsecret = \"{SECRET}\"\n{extra}\n",
        routes.replace("{origin}", origin),
        member(me),
        peers.join(", ")
    )
}

/// Starts an edge from `toml` listening at 127.0.0.1:`port` (its admin listener on port 0).
pub async fn start_member(toml: &str, port: u16) -> RunningEdge {
    let mut config = Config::from_toml(toml).expect("test config is valid");
    config.raw.server.listen = format!("127.0.0.1:{port}");
    config.raw.admin.listen = "127.0.0.1:0".into();
    let config = Config::validate(config.raw).expect("test config is valid");
    Edge::start(config).await.expect("edge starts")
}

/// `n` edges in one fleet in front of `origin`, each with `extra` in its `[cluster]`.
pub async fn start_fleet(n: usize, origin: &TestOrigin, extra: &str) -> (Vec<u16>, Vec<RunningEdge>) {
    start_fleet_with(n, ROUTE, origin, extra).await
}

/// `start_fleet` with `routes` (with `{origin}`) in place of the one catch-all route.
pub async fn start_fleet_with(
    n: usize,
    routes: &str,
    origin: &TestOrigin,
    extra: &str,
) -> (Vec<u16>, Vec<RunningEdge>) {
    let ports = free_ports(n);
    let mut edges = Vec::new();
    for &port in &ports {
        let toml = member_toml(routes, &origin.url(), port, &ports, extra);
        edges.push(start_member(&toml, port).await);
    }
    (ports, edges)
}

/// Which of `ports` owns `key` (a cache key: the origin URL).
pub fn owner_of(ports: &[u16], key: &str) -> usize {
    let names: Vec<String> = ports.iter().map(|p| member(*p)).collect();
    let owner = outpost::rendezvous::owner(key, &names).unwrap();
    names.iter().position(|n| n == owner).unwrap()
}

/// A path under `prefix` whose key the member at `want` owns (of `ports`).
pub fn path_owned_by(origin: &TestOrigin, ports: &[u16], want: usize, prefix: &str) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}{i}.ts"))
        .find(|p| owner_of(ports, &format!("{}{p}", origin.url())) == want)
        .expect("some key is owned by each member")
}

/// Fetches this edge sent to siblings.
pub fn peer_requests(edge: &RunningEdge) -> u64 {
    edge.edge.metrics().upstream_requests.get(SourceKind::Peer)
}

/// Fetches this edge sent to origins.
pub fn origin_requests(edge: &RunningEdge) -> u64 {
    edge.edge.metrics().upstream_requests.get(SourceKind::Origin)
}

/// The members `edge` lists in `/status.json`.
pub async fn members(edge: &RunningEdge) -> Vec<serde_json::Value> {
    let text = super::get(&super::client(), &super::admin_url(edge, "/status.json"))
        .await
        .text();
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    status["cluster"]["members"].as_array().cloned().unwrap_or_default()
}

/// What `edge` says of the member at `url` in `/status.json`.
pub async fn member_status(edge: &RunningEdge, url: &str) -> serde_json::Value {
    let members = members(edge).await;
    members
        .into_iter()
        .find(|m| m["url"] == url)
        .expect("the member is listed")
}

/// Stops every edge.
pub async fn stop_all(edges: impl IntoIterator<Item = RunningEdge>) {
    for edge in edges {
        edge.shutdown().await;
    }
}
