//! Sibling edges: who the members are, which of them are up, who owns a
//! key, and how their requests are signed. The fleet fetches each key from
//! the origin once: a member that does not own a key asks its owner, which
//! treats it like any other waiter.
//!
//! Members come from `cluster.peers` or, re-resolved, from `cluster.dns`;
//! each member's health is learnt passively (a sibling that refuses, times
//! out or stalls is marked down) and a down member is probed until it
//! answers (see `fleet`).

mod sign;

use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use http::{HeaderMap, HeaderName};

use crate::config::{ClusterConfig, OriginUrl};
use crate::rendezvous;

pub use sign::{Refused, Signer, SIGNATURE, WINDOW_SECS};

/// `CDN-Loop` (RFC 8586): the CDNs a request has passed through.
pub const CDN_LOOP: HeaderName = HeaderName::from_static("cdn-loop");

/// Paths the edges answer themselves: never asked of a sibling for a
/// client, where they would reach the sibling's own answer for siblings.
pub const OWN_PATHS: &str = "/.well-known/outpost/";
/// The path a member marked down is probed on, until it answers 200.
pub const PROBE_PATH: &str = "/.well-known/outpost/sibling";
/// The path a purge is passed on to siblings by: `?key=URL` or `?prefix=URL`, cache keys.
pub const PURGE_PATH: &str = "/.well-known/outpost/purge";

/// How many siblings a fill tries before the origin: the owner, and the
/// member next in line if the owner fails (which every member then agrees on).
const MAX_SIBLINGS: usize = 2;

/// One member of the fleet.
#[derive(Debug)]
pub struct Member {
    pub url: OriginUrl,
    /// The URL as text: what rendezvous hashing ranks, alike on every member.
    pub name: String,
    health: Mutex<Health>,
}

#[derive(Debug, Clone, Default)]
struct Health {
    /// `None` while up.
    down_since: Option<SystemTime>,
    last_error: Option<String>,
}

/// A member's state, for `/status` and the metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberStatus {
    pub url: String,
    pub this_edge: bool,
    pub up: bool,
    /// Seconds since the Unix epoch.
    pub down_since: Option<u64>,
    pub last_error: Option<String>,
}

impl Member {
    fn new(url: OriginUrl) -> Arc<Self> {
        Arc::new(Self {
            name: url.url(""),
            url,
            health: Mutex::new(Health::default()),
        })
    }

    pub fn is_up(&self) -> bool {
        self.health().down_since.is_none()
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        // A poisoned lock still holds a usable state.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fleet as this member sees it.
pub struct Cluster {
    me: Arc<Member>,
    members: RwLock<Arc<[Arc<Member>]>>,
    signer: Signer,
    pub keep_copies: bool,
}

impl Cluster {
    /// The fleet `config` describes, or `None` for a single edge.
    pub fn new(config: &ClusterConfig) -> Option<Arc<Self>> {
        let me = config.self_url.clone()?;
        let secret = config.secret.as_deref()?;
        if config.peers.is_empty() && config.dns.is_none() {
            return None;
        }
        let me = Member::new(me);
        let cluster = Arc::new(Self {
            members: RwLock::new(Arc::from([])),
            me,
            signer: Signer::new(secret.as_bytes()),
            keep_copies: config.keep_copies,
        });
        cluster.set_members(config.peers.clone());
        Some(cluster)
    }

    /// Replaces the member list (from DNS): members that stay keep their
    /// health; this member is always one.
    pub fn set_members(&self, urls: Vec<OriginUrl>) {
        let old = self.members();
        let mut next: Vec<Arc<Member>> = vec![Arc::clone(&self.me)];
        for url in urls {
            if next.iter().any(|m| m.url == url) {
                continue;
            }
            let kept = old.iter().find(|m| m.url == url).cloned();
            next.push(kept.unwrap_or_else(|| Member::new(url)));
        }
        next.sort_by(|a, b| a.name.cmp(&b.name));
        let changed = next.len() != old.len() || next.iter().zip(old.iter()).any(|(a, b)| !Arc::ptr_eq(a, b));
        if changed {
            tracing::info!(members = ?next.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), "cluster members");
            *self.members.write().unwrap_or_else(|e| e.into_inner()) = next.into();
        }
    }

    /// Every member, this one included, in name order.
    pub fn members(&self) -> Arc<[Arc<Member>]> {
        Arc::clone(&self.members.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// This member.
    pub fn me(&self) -> &Member {
        &self.me
    }

    /// The siblings a fill of `key` asks before the origin, in order: the
    /// members that are up and rank above this one for the key (at most
    /// [`MAX_SIBLINGS`]). Empty when this member owns the key.
    pub fn siblings_for(&self, key: &str) -> Vec<Arc<Member>> {
        let members = self.members();
        let up: Vec<&Arc<Member>> = members
            .iter()
            .filter(|m| Arc::ptr_eq(m, &self.me) || m.is_up())
            .collect();
        let names: Vec<&str> = up.iter().map(|m| m.name.as_str()).collect();
        rendezvous::ranked(key, &names)
            .into_iter()
            .take_while(|name| **name != self.me.name)
            .take(MAX_SIBLINGS)
            .filter_map(|name| up.iter().find(|m| m.name == *name).map(|m| Arc::clone(m)))
            .collect()
    }

    /// The share of `keys` each member owns among those up now, by member name.
    pub fn shares<'k>(&self, keys: impl Iterator<Item = &'k str>) -> Vec<(String, f64)> {
        let members = self.members();
        let up: Vec<&str> = members
            .iter()
            .filter(|m| Arc::ptr_eq(m, &self.me) || m.is_up())
            .map(|m| m.name.as_str())
            .collect();
        let mut owned = vec![0usize; up.len()];
        let mut total = 0usize;
        for key in keys {
            if let Some(owner) = rendezvous::owner(key, &up) {
                if let Some(i) = up.iter().position(|m| m == owner) {
                    owned[i] += 1;
                }
            }
            total += 1;
        }
        up.iter()
            .zip(owned)
            .map(|(name, n)| {
                let share = if total == 0 {
                    1.0 / up.len() as f64
                } else {
                    n as f64 / total as f64
                };
                (name.to_string(), share)
            })
            .collect()
    }

    /// A sibling failed to connect, to answer in time or to keep sending:
    /// its keys go to the next member until a probe finds it answering again.
    pub fn failed(&self, member: &Member, error: &str, now: SystemTime) {
        let mut health = member.health();
        if health.down_since.is_none() {
            tracing::warn!(member = member.name, error, "sibling marked down");
            health.down_since = Some(now);
        }
        health.last_error = Some(error.to_owned());
    }

    /// A sibling answered a probe.
    pub fn answered(&self, member: &Member) {
        let mut health = member.health();
        if health.down_since.take().is_some() {
            tracing::info!(member = member.name, "sibling is up again");
        }
    }

    /// Members that are down now, to probe.
    pub fn down(&self) -> Vec<Arc<Member>> {
        self.members().iter().filter(|m| !m.is_up()).cloned().collect()
    }

    /// Each member's state.
    pub fn status(&self) -> Vec<MemberStatus> {
        self.members()
            .iter()
            .map(|m| {
                let health = m.health().clone();
                MemberStatus {
                    url: m.name.clone(),
                    this_edge: Arc::ptr_eq(m, &self.me),
                    up: health.down_since.is_none(),
                    down_since: health
                        .down_since
                        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs()),
                    last_error: health.last_error,
                }
            })
            .collect()
    }

    /// How many members are up and down (this one counts as up).
    pub fn counts(&self) -> (usize, usize) {
        let members = self.members();
        let up = members.iter().filter(|m| m.is_up()).count();
        (up, members.len() - up)
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Whether a request comes from a sibling: it carries a valid signature
    /// for its method and target. Anything else is an ordinary client.
    pub fn is_sibling(&self, method: &str, path_and_query: &str, headers: &HeaderMap, now: SystemTime) -> bool {
        let Some(value) = headers.get(SIGNATURE) else {
            return false;
        };
        let secs = unix_secs(now);
        match self.signer.verify(value.as_bytes(), method, path_and_query, secs) {
            Ok(()) => true,
            Err(why) => {
                tracing::info!(path = path_and_query, %why, "sibling signature refused; served as a client");
                false
            }
        }
    }

    /// Whether `headers` show the request has passed through this fleet
    /// already (`CDN-Loop` holds the fleet's token): it is never sent to a
    /// sibling again.
    pub fn looped(&self, headers: &HeaderMap) -> bool {
        let token = self.signer.token();
        headers.get_all(CDN_LOOP).iter().any(|v| {
            v.to_str().is_ok_and(|text| {
                text.split(',')
                    .any(|entry| entry.split(';').next().is_some_and(|id| id.trim() == token))
            })
        })
    }
}

/// Seconds since the Unix epoch.
pub fn unix_secs(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
