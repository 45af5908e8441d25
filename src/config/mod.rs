//! Configuration: figment layers → [`RawConfig`] → [`Config::validate`] → [`Config`].
//!
//! Layers, each overriding the one before: embedded defaults, a TOML file
//! (`--config` or `$OUTPOST_CONFIG`), `OUTPOST_<SECTION>__<KEY>` variables,
//! then command-line flags. Every error names the key it is about.

mod raw;
pub mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use http::uri::{Authority, Scheme};
use http::Uri;

pub use raw::{RawAdmin, RawCache, RawCluster, RawConfig, RawMedia, RawRoute, RawServer, RawUpstream};

/// A config that failed to load or validate, naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{}{reason}", subject(key))]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

/// What a config error is about: a key, a flag, or (empty) the file as a whole.
fn subject(key: &str) -> String {
    match key {
        "" => String::new(),
        flag if flag.starts_with("--") => format!("flag `{flag}`: "),
        key => format!("config key `{key}`: "),
    }
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Command-line values that override every other layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    /// One catch-all route to this URL, replacing the configured routes.
    pub origin: Option<String>,
}

/// Where a config was loaded from, to load it again on reload: the file
/// (else `$OUTPOST_CONFIG`) and the flags; the environment is read afresh.
#[derive(Debug, Default, Clone)]
pub struct Source {
    pub file: Option<PathBuf>,
    pub overrides: Overrides,
}

impl Source {
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.file.as_deref(), &self.overrides)
    }

    /// The file the layers read, if any: named in errors.
    pub fn file(&self) -> Option<PathBuf> {
        self.file
            .clone()
            .or_else(|| std::env::var_os("OUTPOST_CONFIG").map(PathBuf::from))
    }
}

/// The validated configuration the edge runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub cache: CacheConfig,
    pub routes: Vec<RouteConfig>,
    pub media: MediaConfig,
    pub upstream: UpstreamConfig,
    pub cluster: ClusterConfig,
    /// The merged layers as written, for `outpost check`.
    pub raw: RawConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls: Option<TlsConfig>,
    pub header_timeout: Duration,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout: Duration,
    /// A client that takes no bytes of its answer this long is closed.
    pub send_timeout: Duration,
    pub max_header_size: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Peers whose `X-Forwarded-For` chain is passed on.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub cors_origins: Vec<String>,
    /// Large stored bodies go to plain-HTTP clients with sendfile(2) (see `mapped`).
    pub sendfile: bool,
    /// The kernel's send buffer for each client connection (`SO_SNDBUF`);
    /// `None` leaves it to the kernel's autotuning.
    pub send_buffer: Option<usize>,
    pub shutdown_grace: Duration,
    pub access_log: AccessLogFormat,
    pub access_log_file: Option<PathBuf>,
}

/// `server.access_log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Off,
    /// `time id=… client=… …`, one `key=value` per field.
    Text,
    /// One JSON object per line.
    Json,
}

impl AccessLogFormat {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "off" => Some(AccessLogFormat::Off),
            "text" => Some(AccessLogFormat::Text),
            "json" => Some(AccessLogFormat::Json),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// `None` when empty: mutating admin calls are then disabled.
    pub token: Option<String>,
}

impl CacheConfig {
    /// The share of `memory` that objects being filled may hold: a quarter,
    /// and at least `max_object`, so that any storable object can be kept.
    pub fn fill_memory(&self) -> u64 {
        (self.memory / 4).max(self.max_object)
    }

    /// The rest of `memory`, for stored objects.
    pub fn store_memory(&self) -> u64 {
        self.memory - self.fill_memory()
    }
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub memory: u64,
    pub max_object: u64,
    /// How long a key whose answer was not storable goes straight to the
    /// origin (Varnish's hit-for-pass) instead of queueing behind one fetch.
    pub pass_ttl: Duration,
    /// How long an entry stays past its freshness, for revalidation and stale-if-error.
    pub keep_stale: Duration,
    /// `cache.slice`: objects over it are cached in slices of this size.
    pub slice: Option<u64>,
}

/// The smallest `cache.slice`: smaller slices cost an origin request per
/// few packets.
const MIN_SLICE: u64 = 64 << 10;

/// The slice size when `cache.slice` is unset: objects over `max_object`
/// are cut into pieces of this, or of `max_object` when that is smaller.
const DEFAULT_SLICE: u64 = 16 << 20;

impl CacheConfig {
    /// Objects larger than this are cached in slices.
    pub fn slice_above(&self) -> u64 {
        self.slice.unwrap_or(self.max_object)
    }

    /// The size of one slice.
    pub fn slice_size(&self) -> u64 {
        self.slice.unwrap_or(DEFAULT_SLICE.min(self.max_object)).max(1)
    }
}

/// How the edge treats playlists and segments.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Longest a live playlist is cached; `None`: half its target duration.
    pub playlist_max_ttl: Option<Duration>,
    /// Freshness of segments and VOD playlists whose origin gives none.
    pub segment_default_ttl: Duration,
    /// How long a 404 for a segment is kept (a live segment not yet published).
    pub negative_ttl: Duration,
    /// VOD: how many segments after the one requested are prefetched.
    pub prefetch_ahead: usize,
    /// Prefetches under way at once.
    pub prefetch_concurrency: usize,
    /// Send `CMSD-Dynamic` (CTA-5006) with every answer.
    pub cmsd: bool,
    /// Upstream fetches one stream may have at once; 0: no bound.
    pub stream_fetches: usize,
}

#[derive(Debug, Clone, Default)]
pub struct UpstreamConfig {
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Lower-case host without port; `None` matches any host.
    pub host: Option<String>,
    pub prefix: String,
    pub origin: OriginUrl,
    pub backups: Vec<OriginUrl>,
    pub timeout: Duration,
    pub download_timeout: Duration,
    /// How long past freshness a stored answer is served at once while one
    /// background refresh runs, when the origin's answer names no
    /// `stale-while-revalidate`.
    pub stale_while_revalidate: Duration,
    /// How long past freshness a stored answer is served when the origin
    /// fails, when the origin's answer names no `stale-if-error`.
    pub stale_if_error: Duration,
    /// A 404 from the origin (or a backup) is asked of the next backup: live
    /// packagers push to several origins, and one may lag.
    pub retry_404: bool,
    /// Upstream fetches under way at once for this route; 0: no bound.
    pub max_fetches: usize,
    /// Query argument names left out of the cache key (and so never sent upstream).
    pub ignore_query: Vec<String>,
    /// Client headers never sent to this origin, beyond the built-in list.
    pub strip_headers: Vec<http::HeaderName>,
    /// `[routes.signing]`: requests need a valid token.
    pub signing: Option<SigningConfig>,
}

/// Signed URLs on a route (see `crate::signing`).
#[derive(Debug, Clone)]
pub struct SigningConfig {
    /// HMAC-SHA256 keys; the first signs, all verify.
    pub keys: Vec<String>,
    /// The query argument and cookie name that carry the token.
    pub param: String,
}

/// An origin base URL, split so that request paths append without re-parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginUrl {
    pub scheme: Scheme,
    pub authority: Authority,
    /// The URL's path without a trailing slash (`""` for the root).
    pub base_path: String,
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub self_url: Option<OriginUrl>,
    pub peers: Vec<OriginUrl>,
    pub dns: Option<String>,
    pub secret: Option<String>,
    pub dns_interval: std::time::Duration,
    pub keep_copies: bool,
}

impl RouteConfig {
    /// How logs and errors name the route: its host and prefix.
    pub fn name(&self) -> String {
        format!("{}{}", self.host.as_deref().unwrap_or("*"), self.prefix)
    }
}

impl OriginUrl {
    /// The full URL of `path_and_query` at this origin, as text (also the cache key).
    pub fn url(&self, path_and_query: &str) -> String {
        // Sized once: this runs for every request (it is the cache key).
        let (scheme, authority) = (self.scheme.as_str(), self.authority.as_str());
        let parts = [scheme, "://", authority, &self.base_path, path_and_query];
        let mut url = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        for part in parts {
            url.push_str(part);
        }
        url
    }
}

/// The largest object the cache can weigh: moka weighs entries with a `u32`.
const MAX_OBJECT_LIMIT: u64 = u32::MAX as u64 - (64 << 10);

impl Config {
    /// Loads every layer: defaults, `file` (or `$OUTPOST_CONFIG`), environment, overrides.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
        let env_file = std::env::var_os("OUTPOST_CONFIG").map(PathBuf::from);
        if let Some(path) = file.map(Path::to_path_buf).or(env_file) {
            if !path.is_file() {
                return Err(ConfigError::new(
                    "--config",
                    format!("{} is not a readable file", path.display()),
                ));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(env_layer());
        let mut raw: RawConfig = figment.extract().map_err(from_figment)?;
        if let Some(listen) = &overrides.listen {
            raw.server.listen = listen.clone();
        }
        if let Some(origin) = &overrides.origin {
            raw.routes = vec![RawRoute {
                url: origin.clone(),
                ..RawConfig::default().routes.remove(0)
            }];
        }
        // A value a flag set is named by its flag.
        Self::validate(raw).map_err(|mut e| {
            let flag = match e.key.as_str() {
                "server.listen" if overrides.listen.is_some() => Some("--listen"),
                "routes[0].url" if overrides.origin.is_some() => Some("--origin"),
                _ => None,
            };
            if let Some(flag) = flag {
                e.key = flag.to_owned();
            }
            e
        })
    }

    /// Parses a TOML text on top of the defaults, without env or files (for tests and `check`).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(from_figment)?;
        Self::validate(raw)
    }

    /// Turns the written config into typed values, refusing what cannot work.
    pub fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        let server = server(&raw.server)?;
        let admin = AdminConfig {
            listen: socket_addr("admin.listen", &raw.admin.listen)?,
            token: Some(raw.admin.token.clone()).filter(|t| !t.is_empty()),
        };
        let cache = cache(&raw.cache)?;
        if raw.routes.is_empty() {
            return Err(ConfigError::new("routes", "at least one [[routes]] entry is needed"));
        }
        let routes = raw
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| route(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        let media = media(&raw.media)?;
        if let Some(ca) = &raw.upstream.ca_file {
            if !ca.is_file() {
                return Err(ConfigError::new(
                    "upstream.ca_file",
                    format!("{} is not a readable file", ca.display()),
                ));
            }
        }
        let upstream = UpstreamConfig {
            ca_file: raw.upstream.ca_file.clone(),
        };
        let cluster = cluster(&raw.cluster)?;
        Ok(Self {
            server,
            admin,
            cache,
            routes,
            media,
            upstream,
            cluster,
            raw,
        })
    }

    /// The effective config as TOML, with the admin token and cluster secret masked.
    pub fn to_masked_toml(&self) -> String {
        let mut raw = self.raw.clone();
        if !raw.admin.token.is_empty() {
            raw.admin.token = "********".into();
        }
        if raw.cluster.secret.is_some() {
            raw.cluster.secret = Some("********".into());
        }
        for signing in raw.routes.iter_mut().filter_map(|r| r.signing.as_mut()) {
            signing.keys.iter_mut().for_each(|k| *k = "********".into());
        }
        toml::to_string_pretty(&raw).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

fn server(s: &RawServer) -> Result<ServerConfig, ConfigError> {
    let tls = match (&s.tls_listen, &s.tls_cert, &s.tls_key) {
        (None, _, _) => None,
        (Some(listen), Some(cert), Some(key)) => Some(TlsConfig {
            listen: socket_addr("server.tls_listen", listen)?,
            cert: cert.clone(),
            key: key.clone(),
        }),
        (Some(_), None, _) => {
            return Err(ConfigError::new(
                "server.tls_cert",
                "required when server.tls_listen is set",
            ))
        }
        (Some(_), _, None) => {
            return Err(ConfigError::new(
                "server.tls_key",
                "required when server.tls_listen is set",
            ))
        }
    };
    if s.header_timeout.0.is_zero() {
        return Err(ConfigError::new("server.header_timeout", "must be more than 0"));
    }
    for (key, d) in [
        ("server.idle_timeout", s.idle_timeout.0),
        ("server.send_timeout", s.send_timeout.0),
    ] {
        if d.is_zero() {
            return Err(ConfigError::new(key, "must be more than 0"));
        }
    }
    if s.max_connections == 0 {
        return Err(ConfigError::new("server.max_connections", "must be at least 1"));
    }
    if s.max_connections_per_ip == 0 {
        return Err(ConfigError::new("server.max_connections_per_ip", "must be at least 1"));
    }
    let trusted_proxies = s
        .trusted_proxies
        .iter()
        .map(|text| cidr(text).ok_or_else(|| bad_cidr(text)))
        .collect::<Result<Vec<_>, _>>()?;
    if s.max_header_size.0 < 1024 || s.max_header_size.0 > (1 << 20) {
        return Err(ConfigError::new(
            "server.max_header_size",
            "must be between 1KiB and 1MiB",
        ));
    }
    if let Some(size) = s.send_buffer {
        if size.0 < (4 << 10) || size.0 > (64 << 20) {
            return Err(ConfigError::new("server.send_buffer", "must be between 4KiB and 64MiB"));
        }
    }
    for origin in &s.cors_origins {
        if origin != "*" && http::HeaderValue::from_str(origin).is_err() {
            return Err(ConfigError::new(
                "server.cors_origins",
                format!("{origin:?} is not a valid Origin value"),
            ));
        }
    }
    Ok(ServerConfig {
        listen: socket_addr("server.listen", &s.listen)?,
        tls,
        header_timeout: s.header_timeout.0,
        idle_timeout: s.idle_timeout.0,
        send_timeout: s.send_timeout.0,
        max_header_size: s.max_header_size.0 as usize,
        max_connections: s.max_connections,
        max_connections_per_ip: s.max_connections_per_ip,
        trusted_proxies,
        cors_origins: s.cors_origins.clone(),
        sendfile: s.sendfile,
        send_buffer: s.send_buffer.map(|size| size.0 as usize),
        shutdown_grace: s.shutdown_grace.0,
        access_log: AccessLogFormat::parse(&s.access_log).ok_or_else(|| {
            ConfigError::new(
                "server.access_log",
                format!("{:?} is not one of off, text, json", s.access_log),
            )
        })?,
        access_log_file: s.access_log_file.clone(),
    })
}

fn cache(c: &RawCache) -> Result<CacheConfig, ConfigError> {
    if c.memory.0 == 0 {
        return Err(ConfigError::new("cache.memory", "must be more than 0"));
    }
    if c.max_object.0 > c.memory.0 / 2 {
        // Objects being filled draw on their own share of the budget, at
        // least max_object (see `CacheConfig::fill_memory`).
        return Err(ConfigError::new(
            "cache.max_object",
            "must not exceed half of cache.memory",
        ));
    }
    if c.max_object.0 > MAX_OBJECT_LIMIT {
        return Err(ConfigError::new("cache.max_object", "must be below 4GiB"));
    }
    if let Some(slice) = c.slice {
        if slice.0 < MIN_SLICE || slice.0 > c.max_object.0 {
            return Err(ConfigError::new(
                "cache.slice",
                format!(
                    "must be from {MIN_SLICE} bytes to cache.max_object ({})",
                    c.max_object.0
                ),
            ));
        }
    }
    Ok(CacheConfig {
        memory: c.memory.0,
        max_object: c.max_object.0,
        pass_ttl: c.pass_ttl.0,
        keep_stale: c.keep_stale.0,
        slice: c.slice.map(|s| s.0),
    })
}

fn media(m: &RawMedia) -> Result<MediaConfig, ConfigError> {
    if m.playlist_max_ttl.is_some_and(|t| t.0.is_zero()) {
        return Err(ConfigError::new(
            "media.playlist_max_ttl",
            "must be more than 0 (leave it unset for half the target duration)",
        ));
    }
    if m.prefetch_concurrency == 0 && m.prefetch_ahead > 0 {
        return Err(ConfigError::new(
            "media.prefetch_concurrency",
            "must be at least 1 while prefetch_ahead is set",
        ));
    }
    Ok(MediaConfig {
        playlist_max_ttl: m.playlist_max_ttl.map(|d| d.0),
        segment_default_ttl: m.segment_default_ttl.0,
        negative_ttl: m.negative_ttl.0,
        prefetch_ahead: m.prefetch_ahead,
        prefetch_concurrency: m.prefetch_concurrency,
        cmsd: m.cmsd,
        stream_fetches: m.stream_fetches,
    })
}

fn route(i: usize, r: &RawRoute) -> Result<RouteConfig, ConfigError> {
    let key = |name: &str| format!("routes[{i}].{name}");
    let host = match r.host.trim() {
        "" => {
            return Err(ConfigError::new(
                key("host"),
                "must not be empty; use \"*\" for any host",
            ))
        }
        "*" => None,
        h if h.contains(['/', ':', ' ']) => {
            return Err(ConfigError::new(
                key("host"),
                format!("{h:?} must be a host name without port"),
            ))
        }
        h => Some(h.to_ascii_lowercase()),
    };
    if !r.prefix.starts_with('/') {
        return Err(ConfigError::new(
            key("prefix"),
            format!("{:?} must start with /", r.prefix),
        ));
    }
    let backups = r
        .backups
        .iter()
        .map(|u| origin_url(&key("backups"), u))
        .collect::<Result<_, _>>()?;
    if r.timeout.0.is_zero() {
        return Err(ConfigError::new(key("timeout"), "must be more than 0"));
    }
    if r.download_timeout.0.is_zero() {
        return Err(ConfigError::new(key("download_timeout"), "must be more than 0"));
    }
    let strip_headers = r
        .strip_headers
        .iter()
        .map(|name| {
            http::HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| ConfigError::new(key("strip_headers"), format!("{name:?} is not a header name")))
        })
        .collect::<Result<_, _>>()?;
    Ok(RouteConfig {
        host,
        prefix: r.prefix.clone(),
        origin: origin_url(&key("url"), &r.url)?,
        backups,
        timeout: r.timeout.0,
        download_timeout: r.download_timeout.0,
        stale_while_revalidate: r.stale_while_revalidate.0,
        stale_if_error: r.stale_if_error.0,
        retry_404: r.retry_404,
        max_fetches: r.max_fetches,
        ignore_query: r.ignore_query.clone(),
        strip_headers,
        signing: r.signing.as_ref().map(|s| signing(&key("signing"), s)).transpose()?,
    })
}

fn signing(key: &str, s: &raw::RawSigning) -> Result<SigningConfig, ConfigError> {
    if s.keys.is_empty() {
        return Err(ConfigError::new(format!("{key}.keys"), "give at least one key"));
    }
    if let Some(short) = s.keys.iter().position(|k| k.len() < MIN_SECRET) {
        return Err(ConfigError::new(
            format!("{key}.keys[{short}]"),
            format!("must be at least {MIN_SECRET} bytes"),
        ));
    }
    let param = s.param.trim();
    if param.is_empty()
        || !param
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ConfigError::new(
            format!("{key}.param"),
            format!("{param:?} must be letters, digits, - or _"),
        ));
    }
    Ok(SigningConfig {
        keys: s.keys.clone(),
        param: param.to_owned(),
    })
}

/// The shortest `cluster.secret`: an HMAC key guessable in less is no key.
const MIN_SECRET: usize = 16;

fn cluster(c: &RawCluster) -> Result<ClusterConfig, ConfigError> {
    let peers = c
        .peers
        .iter()
        .map(|u| origin_url("cluster.peers", u))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(dns) = &c.dns {
        if !dns
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        {
            return Err(ConfigError::new("cluster.dns", format!("{dns:?} must be host:port")));
        }
    }
    if !peers.is_empty() && c.dns.is_some() {
        return Err(ConfigError::new("cluster.dns", "set peers or dns, not both"));
    }
    let self_url = c
        .self_url
        .as_deref()
        .map(|u| origin_url("cluster.self", u))
        .transpose()?;
    // A member is an edge's address: a path would be signed apart from the
    // request and make every sibling request look forged.
    for (key, url) in peers
        .iter()
        .map(|u| ("cluster.peers", u))
        .chain(self_url.iter().map(|u| ("cluster.self", u)))
    {
        if !url.base_path.is_empty() {
            return Err(ConfigError::new(
                key,
                format!("{} must be scheme://host:port, without a path", url.url("")),
            ));
        }
    }
    let clustered = !peers.is_empty() || c.dns.is_some();
    let secret = c.secret.clone().filter(|s| !s.is_empty());
    if clustered {
        match &secret {
            None => {
                return Err(ConfigError::new(
                    "cluster.secret",
                    "required when cluster.peers or cluster.dns is set",
                ))
            }
            Some(s) if s.len() < MIN_SECRET => {
                return Err(ConfigError::new(
                    "cluster.secret",
                    format!("must be at least {MIN_SECRET} bytes"),
                ))
            }
            Some(_) => {}
        }
        let Some(me) = &self_url else {
            return Err(ConfigError::new(
                "cluster.self",
                "required when cluster.peers or cluster.dns is set: this edge's URL as its siblings reach it",
            ));
        };
        if !peers.is_empty() && !peers.contains(me) {
            return Err(ConfigError::new("cluster.self", "must be one of cluster.peers"));
        }
    }
    if c.dns_interval.0.is_zero() {
        return Err(ConfigError::new("cluster.dns_interval", "must be more than 0"));
    }
    Ok(ClusterConfig {
        self_url,
        peers,
        dns: c.dns.clone(),
        secret,
        dns_interval: c.dns_interval.0,
        keep_copies: c.keep_copies,
    })
}

/// A CIDR (`10.0.0.0/8`), or one address standing for itself.
fn cidr(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

fn bad_cidr(text: &str) -> ConfigError {
    ConfigError::new(
        "server.trusted_proxies",
        format!("{text:?} is not an address or CIDR like 10.0.0.0/8"),
    )
}

fn socket_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("{text:?} is not an address like 0.0.0.0:8080 or [::1]:8080"),
        )
    })
}

/// Parses an http or https base URL.
pub fn origin_url(key: &str, text: &str) -> Result<OriginUrl, ConfigError> {
    let bad = |why: &str| ConfigError::new(key, format!("{text:?} {why}"));
    let uri: Uri = text.parse().map_err(|_| bad("is not a URL"))?;
    let scheme = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
        _ => return Err(bad("must start with http:// or https://")),
    };
    let authority = uri.authority().cloned().ok_or_else(|| bad("has no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("must not carry credentials"));
    }
    if uri.query().is_some() {
        return Err(bad("must not have a query"));
    }
    Ok(OriginUrl {
        scheme,
        authority,
        base_path: uri.path().trim_end_matches('/').to_owned(),
    })
}

/// `OUTPOST_<SECTION>__<KEY>` variables. Others with the prefix (`OUTPOST_LOG`,
/// `OUTPOST_CONFIG`) are not config keys and are left alone.
fn env_layer() -> Env {
    Env::raw().filter_map(|key| {
        let rest = key.as_str().strip_prefix("OUTPOST_")?;
        rest.contains("__")
            .then(|| rest.replace("__", ".").to_ascii_lowercase().into())
    })
}

/// Renders a figment error as the key it concerns, where it was set, and
/// why; an unknown key with the nearest known one.
fn from_figment(err: figment::Error) -> ConfigError {
    use figment::error::Kind;
    let mut path = err.path.clone();
    let reason = match &err.kind {
        Kind::UnknownField(field, known) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            let nearest = known
                .iter()
                .map(|k| (strsim::jaro_winkler(field, k), *k))
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            match nearest {
                Some((_, k)) => format!("unknown key; did you mean `{k}`?"),
                None => "unknown key".to_owned(),
            }
        }
        Kind::MissingField(field) => {
            if path.last().map(String::as_str) != Some(field.as_ref()) {
                path.push(field.to_string());
            }
            "required key is missing".to_owned()
        }
        kind => kind.to_string(),
    };
    let key = key_of(&path);
    let source = err.metadata.as_ref().map(|m| match &m.source {
        Some(figment::Source::File(file)) => format!(" (in {})", file.display()),
        _ if m.name.contains("environment") && !path.is_empty() => {
            format!(
                " (from the environment variable OUTPOST_{})",
                path.join("__").to_ascii_uppercase()
            )
        }
        _ => format!(" (from {})", m.name),
    });
    ConfigError::new(key, format!("{reason}{}", source.unwrap_or_default()))
}

/// A figment path as the edge names keys everywhere: `routes[0].url`.
fn key_of(path: &[String]) -> String {
    let mut key = String::new();
    for part in path {
        if part.parse::<usize>().is_ok() {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    key
}

#[cfg(test)]
mod tests;
