//! The config as written: every key the layers may set, with its default.
//!
//! `deny_unknown_fields` everywhere, so a typo is an error that names the key
//! rather than a setting silently ignored.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::{Dur, Size};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub admin: RawAdmin,
    pub cache: RawCache,
    pub routes: Vec<RawRoute>,
    pub media: RawMedia,
    pub upstream: RawUpstream,
    pub cluster: RawCluster,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMedia {
    /// Longest a live playlist is cached; unset: half its target duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playlist_max_ttl: Option<Dur>,
    pub segment_default_ttl: Dur,
    pub negative_ttl: Dur,
    pub prefetch_ahead: usize,
    pub prefetch_concurrency: usize,
    /// Send the edge's `CMSD-Dynamic` entry (CTA-5006) with every answer.
    pub cmsd: bool,
    /// Upstream fetches one stream (the folder of a key) may have at once; 0: no bound.
    pub stream_fetches: usize,
}

impl Default for RawMedia {
    fn default() -> Self {
        Self {
            playlist_max_ttl: None,
            segment_default_ttl: secs(600),
            negative_ttl: Dur(Duration::from_millis(250)),
            prefetch_ahead: 2,
            prefetch_concurrency: 4,
            cmsd: true,
            stream_fetches: 16,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    /// Extra PEM roots trusted for https origins, beside the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    pub header_timeout: Dur,
    pub idle_timeout: Dur,
    pub send_timeout: Dur,
    pub max_header_size: Size,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// CIDRs whose `X-Forwarded-For` chain is kept.
    pub trusted_proxies: Vec<String>,
    pub cors_origins: Vec<String>,
    pub sendfile: bool,
    /// SO_SNDBUF of client connections; unset: the kernel sizes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_buffer: Option<Size>,
    pub shutdown_grace: Dur,
    /// off | text | json.
    pub access_log: String,
    /// Default stderr; reopened on SIGHUP.
    pub access_log_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub listen: String,
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    pub memory: Size,
    pub max_object: Size,
    pub pass_ttl: Dur,
    pub keep_stale: Dur,
    /// Objects over this (else over max_object) are cached in slices of this size.
    pub slice: Option<Size>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(default = "any_host")]
    pub host: String,
    #[serde(default = "root_prefix")]
    pub prefix: String,
    pub url: String,
    #[serde(default)]
    pub backups: Vec<String>,
    #[serde(default = "default_route_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_download_timeout")]
    pub download_timeout: Dur,
    /// RFC 5861 grace when the origin's answer names none.
    #[serde(default)]
    pub stale_while_revalidate: Dur,
    #[serde(default = "default_stale_if_error")]
    pub stale_if_error: Dur,
    /// A 404 from an origin is asked of the next one (packagers push to several).
    #[serde(default)]
    pub retry_404: bool,
    /// Upstream fetches under way at once for this route; 0: no bound.
    #[serde(default = "default_max_fetches")]
    pub max_fetches: usize,
    /// Query arguments left out of the cache key (CDN tokens, session ids).
    #[serde(default)]
    pub ignore_query: Vec<String>,
    /// Client headers never sent to this origin, beyond the built-in list.
    #[serde(default)]
    pub strip_headers: Vec<String>,
    /// Signed URLs: requests without a valid token are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<RawSigning>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigning {
    /// HMAC-SHA256 keys: the first signs, every one verifies (rotation).
    pub keys: Vec<String>,
    /// The query argument and cookie that carry the token.
    #[serde(default = "default_token_param")]
    pub param: String,
}

fn default_token_param() -> String {
    "token".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCluster {
    #[serde(rename = "self", skip_serializing_if = "Option::is_none")]
    pub self_url: Option<String>,
    pub peers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// How often `dns` is resolved again.
    pub dns_interval: Dur,
    /// A non-owner keeps its own copy of what it fetched through the owner.
    pub keep_copies: bool,
}

impl Default for RawCluster {
    fn default() -> Self {
        Self {
            self_url: None,
            peers: Vec::new(),
            dns: None,
            secret: None,
            dns_interval: secs(5),
            keep_copies: true,
        }
    }
}

fn secs(n: u64) -> Dur {
    Dur(Duration::from_secs(n))
}

fn any_host() -> String {
    "*".into()
}

fn root_prefix() -> String {
    "/".into()
}

fn default_route_timeout() -> Dur {
    secs(10)
}

fn default_max_fetches() -> usize {
    512
}

fn default_stale_if_error() -> Dur {
    secs(300)
}

fn default_download_timeout() -> Dur {
    secs(5)
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            server: RawServer::default(),
            admin: RawAdmin::default(),
            cache: RawCache::default(),
            routes: vec![RawRoute {
                host: any_host(),
                prefix: root_prefix(),
                url: "http://127.0.0.1:9000".into(),
                backups: Vec::new(),
                timeout: default_route_timeout(),
                download_timeout: default_download_timeout(),
                stale_while_revalidate: Dur::default(),
                stale_if_error: default_stale_if_error(),
                retry_404: false,
                max_fetches: default_max_fetches(),
                ignore_query: Vec::new(),
                strip_headers: Vec::new(),
                signing: None,
            }],
            media: RawMedia::default(),
            upstream: RawUpstream::default(),
            cluster: RawCluster::default(),
        }
    }
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            header_timeout: secs(10),
            idle_timeout: secs(60),
            send_timeout: secs(60),
            max_header_size: Size(16 << 10),
            max_connections: 10_000,
            max_connections_per_ip: 1000,
            trusted_proxies: Vec::new(),
            cors_origins: vec!["*".into()],
            sendfile: false,
            send_buffer: None,
            shutdown_grace: secs(30),
            access_log: "text".into(),
            access_log_file: None,
        }
    }
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9090".into(),
            token: String::new(),
        }
    }
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            memory: Size(1 << 30),
            max_object: Size(256 << 20),
            pass_ttl: secs(10),
            keep_stale: secs(300),
            slice: None,
        }
    }
}
