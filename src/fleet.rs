//! Keeping the fleet's view current: members from DNS, re-resolved every
//! `cluster.dns_interval`; members marked down probed until they answer;
//! and purges passed on to every sibling.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::cluster::{Cluster, PROBE_PATH, PURGE_PATH};
use crate::config::{ClusterConfig, OriginUrl};
use crate::edge::Edge;

/// How often members marked down are probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a probe or a passed-on purge may take.
const PATIENCE: Duration = Duration::from_secs(2);

/// Runs until `stop`: resolves `cluster.dns` and probes members marked down.
pub async fn maintain(edge: Arc<Edge>, mut stop: watch::Receiver<bool>) {
    let Some(cluster) = edge.cluster().cloned() else {
        return;
    };
    let config = edge.config().cluster.clone();
    let mut probe = tokio::time::interval(PROBE_EVERY);
    let mut resolve = tokio::time::interval(config.dns_interval);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = probe.tick() => probe_down(&edge, &cluster).await,
            _ = resolve.tick(), if config.dns.is_some() => resolve_members(&cluster, &config).await,
        }
    }
}

async fn probe_down(edge: &Edge, cluster: &Cluster) {
    for member in cluster.down() {
        let answer = edge
            .upstream
            .to_sibling(&member, Method::GET, PROBE_PATH, PATIENCE)
            .await;
        match answer {
            Ok(response) if response.status() == StatusCode::OK => cluster.answered(&member),
            Ok(response) => tracing::debug!(member = member.name, status = %response.status(), "probe refused"),
            Err(e) => tracing::debug!(member = member.name, error = e, "probe failed"),
        }
    }
}

/// Replaces the members with what `cluster.dns` resolves to now; keeps
/// them when the lookup fails (a DNS hiccup must not split the fleet).
async fn resolve_members(cluster: &Cluster, config: &ClusterConfig) {
    let Some(name) = &config.dns else {
        return;
    };
    match tokio::net::lookup_host(name.as_str()).await {
        Ok(addrs) => {
            let members = members_of(addrs);
            if members.is_empty() {
                tracing::warn!(dns = name, "cluster.dns resolved to no address; members kept");
            } else {
                cluster.set_members(members);
            }
        }
        Err(e) => tracing::warn!(dns = name, error = %e, "cluster.dns did not resolve; members kept"),
    }
}

/// Each resolved address as a member `http://IP:port`.
pub fn members_of(addrs: impl Iterator<Item = std::net::SocketAddr>) -> Vec<OriginUrl> {
    let mut urls: Vec<OriginUrl> = Vec::new();
    for addr in addrs {
        let authority = match addr.ip() {
            std::net::IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
            std::net::IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
        };
        let Ok(authority) = authority.parse() else {
            continue;
        };
        let url = OriginUrl {
            scheme: http::uri::Scheme::HTTP,
            authority,
            base_path: String::new(),
        };
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    urls
}

/// What became of a purge passed on to one sibling.
#[derive(Debug, serde::Serialize)]
pub struct Passed {
    pub member: String,
    /// The sibling's answer (`purged N`), or why it could not be reached.
    pub result: Result<String, String>,
}

/// Passes a purge of `key` (a cache key, or a prefix of keys) on to every
/// other member, signed, all at once; the results in member order.
pub async fn purge_siblings(edge: &Arc<Edge>, key: &str, exact: bool) -> Vec<Passed> {
    let Some(cluster) = edge.cluster() else {
        return Vec::new();
    };
    let arg = if exact { "key" } else { "prefix" };
    let encoded = percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC);
    let path = format!("{PURGE_PATH}?{arg}={encoded}");
    let mut asks = tokio::task::JoinSet::new();
    for member in cluster.members().iter().filter(|m| m.name != cluster.me().name) {
        let (edge, member, path) = (Arc::clone(edge), Arc::clone(member), path.clone());
        asks.spawn(async move {
            let result = match edge.upstream.to_sibling(&member, Method::POST, &path, PATIENCE).await {
                Ok(response) if response.status() == StatusCode::OK => {
                    let body = response.into_body().collect().await.map(|b| b.to_bytes());
                    Ok(body.map_or_else(|_| String::new(), |b| String::from_utf8_lossy(&b).trim().to_owned()))
                }
                Ok(response) => Err(format!("answered {}", response.status())),
                Err(e) => Err(e),
            };
            Passed {
                member: member.name.clone(),
                result,
            }
        });
    }
    let mut passed = asks.join_all().await;
    passed.sort_by(|a, b| a.member.cmp(&b.member));
    passed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_resolved_address_is_a_member_once() {
        let addrs = ["10.0.0.2:8080", "10.0.0.1:8080", "[fd00::1]:8080", "10.0.0.2:8080"]
            .iter()
            .map(|a| a.parse().unwrap());
        let urls: Vec<String> = members_of(addrs).iter().map(|u| u.url("")).collect();
        assert_eq!(
            urls,
            ["http://10.0.0.2:8080", "http://10.0.0.1:8080", "http://[fd00::1]:8080"]
        );
    }
}
