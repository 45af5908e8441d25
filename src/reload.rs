//! Reloading the config while serving (SIGHUP, admin `POST /reload`): the
//! new config is read from the same layers and checked whole; only then are
//! routes, limits, CORS, the certificate and the fleet's members swapped in.
//! Connections stay open, the cache stays, requests under way finish on the
//! settings they started with. An invalid config changes nothing.
//!
//! Some keys shape what was built at start (listeners, the cache's budget,
//! the access log's file): a new value for them is kept for the next start
//! and named in the answer, while the edge goes on with the old one.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::Value;

use crate::certs::Certs;
use crate::config::{Config, ConfigError, RawConfig};
use crate::edge::{Edge, LastReload, Settings};

/// What a reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    /// Keys whose value changed and is in force now (`routes[1].url`).
    pub changed: Vec<String>,
    /// Keys whose new value waits for a restart; the old one stays in force.
    pub restart_required: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("this edge was started without a config file or flags to read again")]
    NoSource,
    #[error("invalid config{}: {source}", in_file(.file))]
    Config {
        file: Option<std::path::PathBuf>,
        source: ConfigError,
    },
    #[error("{0}")]
    Tls(String),
    /// Not expected: the new config with the old values of the fixed keys
    /// put back did not read as a config.
    #[error("the new config could not keep the values only a restart changes: {0}")]
    Merge(String),
}

fn in_file(file: &Option<std::path::PathBuf>) -> String {
    file.as_ref().map(|f| format!(" {}", f.display())).unwrap_or_default()
}

/// Keys that only a restart can change, in groups that change together: a
/// new value anywhere in a group keeps the whole group as it was.
const FIXED: &[&[&str]] = &[
    &["server.listen"],
    &["admin.listen"],
    &["cache.memory"],
    &["cache.pass_ttl"],
    &["server.sendfile"],
    &["server.access_log", "server.access_log_file"],
    &["upstream.ca_file"],
    &["media.prefetch_concurrency"],
    &["media.stream_fetches"],
    &["server.tls_listen"],
    &[
        "cluster.self",
        "cluster.secret",
        "cluster.dns",
        "cluster.dns_interval",
        "cluster.keep_copies",
    ],
];

/// Reads the config again from where it came from and puts it in place.
pub fn reload(edge: &Edge) -> Result<Reloaded, ReloadError> {
    let result = edge.source().ok_or(ReloadError::NoSource).and_then(|source| {
        let config = source.load().map_err(|e| ReloadError::Config {
            file: source.file(),
            source: e,
        })?;
        apply(edge, config)
    });
    let at = SystemTime::now();
    match &result {
        Ok(done) => {
            edge.metrics.reloads_ok.inc();
            tracing::info!(changed = ?done.changed, restart_required = ?done.restart_required, "config reloaded");
            edge.record_reload(LastReload {
                at,
                result: Ok(done.changed.clone()),
            });
        }
        Err(e) => {
            edge.metrics.reloads_refused.inc();
            tracing::error!(error = %e, "config reload refused; the config in force stays");
            edge.record_reload(LastReload {
                at,
                result: Err(e.to_string()),
            });
        }
    }
    result
}

/// Puts `new` in place of the edge's config, but for the keys only a
/// restart changes; checks the certificate files first.
pub fn apply(edge: &Edge, new: Config) -> Result<Reloaded, ReloadError> {
    let old = edge.config();
    let (raw, restart_required) = keep_fixed(&old.raw, &new.raw).map_err(ReloadError::Merge)?;
    let new = Config::validate(raw).map_err(|e| ReloadError::Config { file: None, source: e })?;
    if let Some(tls) = &new.server.tls {
        // Also when the names did not change: a renewed certificate is
        // written over the old files.
        Certs::check(tls).map_err(ReloadError::Tls)?;
    }
    let changed = differences(&flatten(&old.raw), &flatten(&new.raw));
    if let (Some(tls), Some(certs)) = (&new.server.tls, &edge.certs) {
        certs.reload(tls).map_err(ReloadError::Tls)?;
    }
    if let Some(cluster) = edge.cluster() {
        if new.cluster.dns.is_none() {
            cluster.set_members(new.cluster.peers.clone());
        }
    }
    edge.replace_settings(Settings::new(new));
    Ok(Reloaded {
        changed,
        restart_required,
    })
}

/// `new` with every [`FIXED`] group that differs from `old` set back to
/// `old`'s values, and the keys of those groups that differed. Turning the
/// fleet or HTTPS on or off is fixed whole: half of either cannot work.
fn keep_fixed(old: &RawConfig, new: &RawConfig) -> Result<(RawConfig, Vec<String>), String> {
    let (old_keys, new_keys) = (flatten(old), flatten(new));
    let fleet = |keys: &BTreeMap<String, Value>| {
        keys.iter()
            .any(|(k, v)| (k.starts_with("cluster.peers[") || k == "cluster.dns") && !v.is_null())
    };
    let tls = |keys: &BTreeMap<String, Value>| keys.get("server.tls_listen").is_some_and(|v| !v.is_null());
    let mut groups: Vec<&[&str]> = FIXED.to_vec();
    if fleet(&old_keys) != fleet(&new_keys) {
        groups.push(&["cluster"]);
    }
    if tls(&old_keys) != tls(&new_keys) {
        groups.push(&["server.tls_listen", "server.tls_cert", "server.tls_key"]);
    }
    let differing = differences(&old_keys, &new_keys);
    let (old_value, mut value) = (to_value(old), to_value(new));
    let mut kept = Vec::new();
    for group in groups {
        // A group's entry is a section's key, or a whole section.
        let in_group = |k: &str| {
            group
                .iter()
                .any(|g| k == *g || k.strip_prefix(g).is_some_and(|rest| rest.starts_with(['.', '['])))
        };
        let group_differs: Vec<&String> = differing.iter().filter(|k| in_group(k)).collect();
        if group_differs.is_empty() {
            continue;
        }
        kept.extend(group_differs.into_iter().cloned());
        for path in group.iter() {
            let pointer = format!("/{}", path.replace('.', "/"));
            let (section, field) = pointer.rsplit_once('/').unwrap_or(("", &pointer));
            let Some(Value::Object(parent)) = value.pointer_mut(if section.is_empty() { "" } else { section }) else {
                continue;
            };
            match old_value.pointer(&pointer) {
                Some(old) => parent.insert(field.to_owned(), old.clone()),
                None => parent.remove(field),
            };
        }
    }
    kept.sort();
    kept.dedup();
    let raw = serde_json::from_value(value).map_err(|e| e.to_string())?;
    Ok((raw, kept))
}

fn to_value(raw: &RawConfig) -> Value {
    serde_json::to_value(raw).unwrap_or(Value::Null)
}

/// The keys whose values differ between two flattened configs.
fn differences(old: &BTreeMap<String, Value>, new: &BTreeMap<String, Value>) -> Vec<String> {
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Every leaf of a config under its key as errors name it (`routes[0].url`).
fn flatten(raw: &RawConfig) -> BTreeMap<String, Value> {
    fn walk(prefix: String, value: &Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(key, v, out);
                }
            }
            Value::Array(items) if !items.is_empty() => {
                for (i, v) in items.iter().enumerate() {
                    walk(format!("{prefix}[{i}]"), v, out);
                }
            }
            leaf => {
                out.insert(prefix, leaf.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(String::new(), &to_value(raw), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawConfig {
        Config::from_toml(text).unwrap().raw
    }

    const BASE: &str = r#"
        [server]
        listen = "127.0.0.1:8080"
        max_connections = 100
        [[routes]]
        url = "http://127.0.0.1:9000"
    "#;

    #[test]
    fn a_new_listen_address_waits_for_a_restart_and_the_rest_applies() {
        let old = raw(BASE);
        let new = raw(&BASE
            .replace("127.0.0.1:8080", "127.0.0.1:8081")
            .replace("max_connections = 100", "max_connections = 5"));
        let (kept, restart) = keep_fixed(&old, &new).unwrap();
        assert_eq!(restart, ["server.listen"]);
        assert_eq!(kept.server.listen, "127.0.0.1:8080");
        assert_eq!(kept.server.max_connections, 5);
    }

    #[test]
    fn turning_on_the_fleet_is_kept_whole_for_a_restart() {
        let old = raw(BASE);
        let new = raw(&format!(
            "{BASE}\n[cluster]\nself = \"http://127.0.0.1:1\"\npeers = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]\nsecret = \"a-secret-of-16-bytes-or-more\"\n"
        ));
        let (kept, restart) = keep_fixed(&old, &new).unwrap();
        assert!(kept.cluster.peers.is_empty(), "{:?}", kept.cluster.peers);
        assert!(restart.contains(&"cluster.secret".to_owned()), "{restart:?}");
        assert!(restart.iter().any(|k| k.starts_with("cluster.peers[")), "{restart:?}");
        // What is kept is still a valid config.
        Config::validate(kept).unwrap();
    }

    #[test]
    fn new_peers_of_a_running_fleet_apply() {
        let fleet = "[cluster]\nself = \"http://127.0.0.1:1\"\nsecret = \"a-secret-of-16-bytes-or-more\"\n";
        let old = raw(&format!("{BASE}\n{fleet}peers = [\"http://127.0.0.1:1\"]\n"));
        let new = raw(&format!(
            "{BASE}\n{fleet}peers = [\"http://127.0.0.1:1\", \"http://127.0.0.1:3\"]\n"
        ));
        let (kept, restart) = keep_fixed(&old, &new).unwrap();
        assert!(restart.is_empty(), "{restart:?}");
        assert_eq!(kept.cluster.peers.len(), 2);
        assert_eq!(differences(&flatten(&old), &flatten(&kept)), ["cluster.peers[1]"]);
    }

    #[test]
    fn routes_added_and_removed_are_named_by_key() {
        let old = raw(BASE);
        let new = raw(&format!(
            "{BASE}\n[[routes]]\nprefix = \"/b\"\nurl = \"http://127.0.0.1:9001\"\n"
        ));
        let changed = differences(&flatten(&old), &flatten(&new));
        assert!(changed.contains(&"routes[1].url".to_owned()), "{changed:?}");
        assert!(changed.iter().all(|k| k.starts_with("routes[1].")), "{changed:?}");
        let back = differences(&flatten(&new), &flatten(&old));
        assert_eq!(changed, back);
    }
}
