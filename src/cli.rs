//! The command line: `serve` (the default), `check`, `health` and `demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::app::RunningEdge;
use crate::config::{Config, Overrides, Source};
use crate::demo::DemoOrigin;
use crate::edge::Edge;

#[derive(Parser)]
#[command(name = "outpost", version, about = "A caching edge for live and on-demand video")]
#[command(after_help = HELP_AFTER)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge (what a bare `outpost` does).
    Serve(ServeArgs),
    /// Validate a config and print the effective settings, secrets masked.
    Check {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Ask a running edge's admin listener for /healthz: exit 0 when it
    /// answers 200 within 2 s, 1 otherwise (a container health check).
    Health {
        /// The admin address (default: admin.listen of the config that
        /// `serve` would load: --config, $OUTPOST_CONFIG, OUTPOST_* variables).
        #[arg(long, value_name = "ADDR")]
        admin: Option<String>,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Start a synthetic origin and an edge in front of it.
    Demo,
    /// Print a signed URL for a route with [routes.signing], signed with its first key.
    Sign {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The path as clients request it, e.g. /live/s1/index.m3u8.
        #[arg(long, value_name = "PATH")]
        path: String,
        /// Sign for every path this covers instead of PATH alone: a prefix
        /// ending in *, or a playlist (covers its folder).
        #[arg(long, value_name = "ACL")]
        acl: Option<String>,
        /// How long the token is good for.
        #[arg(long, value_name = "DURATION", default_value = "1h")]
        ttl: String,
        /// The Host the URL is for, to pick the route.
        #[arg(long, value_name = "HOST", default_value = "*")]
        host: String,
    },
}

#[derive(Args, Default)]
struct ServeArgs {
    /// TOML config file (default: $OUTPOST_CONFIG, else the embedded defaults).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address for plain HTTP/1.1 and h2c, overriding server.listen.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// One catch-all route to this origin URL, replacing [[routes]].
    #[arg(long, value_name = "URL")]
    origin: Option<String>,
}

/// What `--help` says beyond the flags.
const HELP_AFTER: &str = "\
Configuration: embedded defaults, then the TOML file (--config, else $OUTPOST_CONFIG),
then environment variables OUTPOST_<SECTION>__<KEY> (e.g. OUTPOST_SERVER__LISTEN=0.0.0.0:8080,
OUTPOST_ADMIN__LISTEN), then flags. conf/outpost.toml documents every key with its default.

The admin listener (admin.listen, default 127.0.0.1:9090) serves /healthz, /metrics,
/status, /status.json, /purge and /reload (the last two with Authorization: Bearer <admin.token>).

Logs: the edge's own log goes to stderr, filtered by OUTPOST_LOG (e.g. debug, warn);
the access log by server.access_log (off | text | json) and server.access_log_file.
SIGTERM or Ctrl-C stops gracefully; SIGHUP reloads the config (as POST /reload) and
reopens the access log file.

Exit codes: 0 ok, 1 failure at start (or `health`: unhealthy), 2 bad config or usage.";

const EXIT_FAILURE: u8 = 1;
const EXIT_CONFIG: u8 = 2;

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_CONFIG } else { 0 });
        }
    };
    init_logging();
    match cli.command {
        Some(Command::Check { config }) => check(&config),
        Some(Command::Serve(args)) => serve(args),
        None => serve(cli.serve),
        Some(Command::Demo) => demo(),
        Some(Command::Health { admin, config }) => health(admin, config),
        Some(Command::Sign {
            config,
            path,
            acl,
            ttl,
            host,
        }) => sign(config, &path, acl.as_deref(), &ttl, &host),
    }
}

/// `outpost sign`: the path with its token, for the route that serves it.
fn sign(config: Option<PathBuf>, path: &str, acl: Option<&str>, ttl: &str, host: &str) -> ExitCode {
    let args = ServeArgs {
        config,
        ..ServeArgs::default()
    };
    let Ok(config) = load(&args) else {
        return ExitCode::from(EXIT_CONFIG);
    };
    let ttl = match humantime::parse_duration(ttl) {
        Ok(ttl) => ttl,
        Err(e) => {
            eprintln!("outpost: --ttl {ttl:?}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let routes = crate::route::Routes::new(&config.routes);
    let target = crate::route::Target {
        host: host.into(),
        path: path.into(),
        query: None,
    };
    let Some(signing) = routes.find(&target).and_then(|(route, _)| route.signing.clone()) else {
        eprintln!("outpost: no route with [routes.signing] serves host {host:?} and path {path:?}");
        return ExitCode::from(EXIT_CONFIG);
    };
    let exp = crate::cluster::unix_secs(std::time::SystemTime::now() + ttl);
    let token = crate::signing::sign(&signing.keys[0], exp, acl, path);
    let encoded = percent_encoding::utf8_percent_encode(&token, TOKEN_ESCAPES);
    println!("{path}?{}={encoded}", signing.param);
    ExitCode::SUCCESS
}

/// What a token's text escapes in a query: its own `=` and `/` travel as
/// they are; `&`, `#`, `+`, `%` and spaces would change the query's meaning.
const TOKEN_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'&')
    .add(b'#')
    .add(b'+')
    .add(b'%')
    .add(b'"');

/// `outpost health`: GET /healthz on the admin listener.
fn health(admin: Option<String>, config: Option<PathBuf>) -> ExitCode {
    let addr = match admin {
        Some(addr) => addr,
        None => {
            let args = ServeArgs {
                config,
                ..ServeArgs::default()
            };
            let Ok(config) = load(&args) else {
                return ExitCode::from(EXIT_CONFIG);
            };
            reachable(config.admin.listen).to_string()
        }
    };
    match healthz(&addr) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("outpost: unhealthy: http://{addr}/healthz {why}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Where to reach a listener bound to `addr` from this host: the loopback
/// address for an unspecified one (0.0.0.0, [::]).
fn reachable(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// One HTTP/1.0 GET of /healthz with a 2 s bound on each step.
fn healthz(addr: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(2);
    let target = addr
        .to_socket_addrs()
        .map_err(|e| format!("has no address: {e}"))?
        .next()
        .ok_or("has no address")?;
    let mut stream = std::net::TcpStream::connect_timeout(&target, LIMIT).map_err(|e| format!("refused: {e}"))?;
    stream.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
    write!(stream, "GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| format!("write failed: {e}"))?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| format!("no answer: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.split_whitespace().nth(1).unwrap_or_default();
    match status {
        "200" => Ok(()),
        _ => Err(format!("answered {:?}", line.lines().next().unwrap_or_default())),
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("OUTPOST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(Some(path), &Overrides::default()) {
        Ok(config) => {
            print!("{}", config.to_masked_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("outpost: invalid config {}: {e}", path.display());
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Where `args` say the config comes from: read again on reload.
fn source(args: &ServeArgs) -> Source {
    Source {
        file: args.config.clone(),
        overrides: Overrides {
            listen: args.listen.clone(),
            origin: args.origin.clone(),
        },
    }
}

fn load(args: &ServeArgs) -> Result<Config, ExitCode> {
    let overrides = source(args).overrides;
    let file = args
        .config
        .clone()
        .or_else(|| std::env::var_os("OUTPOST_CONFIG").map(PathBuf::from));
    Config::load(args.config.as_deref(), &overrides).map_err(|e| {
        match &file {
            Some(file) => eprintln!("outpost: invalid config {}: {e}", file.display()),
            None => eprintln!("outpost: invalid config: {e}"),
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match load(&args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    runtime().block_on(async move {
        match Edge::start(config).await {
            Ok(edge) => {
                edge.edge.set_source(source(&args));
                run_until_signal(edge).await
            }
            Err(e) => {
                eprintln!("outpost: {e}");
                ExitCode::from(EXIT_FAILURE)
            }
        }
    })
}

fn demo() -> ExitCode {
    runtime().block_on(async {
        let origin = match DemoOrigin::start(([127, 0, 0, 1], 0).into()).await {
            Ok(o) => o,
            Err(e) => {
                eprintln!("outpost demo: cannot start the demo origin: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let args = ServeArgs {
            origin: Some(origin.url()),
            ..ServeArgs::default()
        };
        let config = match load(&args) {
            Ok(c) => c,
            Err(code) => return code,
        };
        let edge = match Edge::start(config).await {
            Ok(edge) => edge,
            Err(e) => {
                eprintln!("outpost demo: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        edge.edge.set_source(source(&args));
        origin.attach(Arc::clone(&edge.edge));
        let edge_url = local_url(edge.addrs.listen);
        let admin_url = local_url(edge.addrs.admin);
        origin.show_dashboard(format!("{admin_url}/status"));
        println!("outpost demo is running (Ctrl-C to stop)");
        println!("  player page     {edge_url}/");
        println!("  live playlist   {edge_url}/live/stream.m3u8");
        println!("  VOD playlist    {edge_url}/vod/clip.m3u8");
        println!("  on-demand       {edge_url}/vod/large.bin");
        println!("  dashboard       {admin_url}/status");
        println!("  metrics         {admin_url}/metrics");
        println!("  origin          {}", origin.url());
        match crate::demo::local_player() {
            Some((path, _)) => println!("  hls.js          {}", path.display()),
            None => println!(
                "  hls.js          the public CDN (no local copy: `npm ci --prefix tests/browser` or OUTPOST_DEMO_HLSJS=FILE)"
            ),
        }
        run_until_signal(edge).await
    })
}

/// A URL a browser on this machine can open for a listen address.
fn local_url(addr: std::net::SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}", addr.port())
}

async fn run_until_signal(edge: RunningEdge) -> ExitCode {
    wait_for_signal(&edge.edge).await;
    tracing::info!("stopping: finishing responses under way");
    edge.shutdown().await;
    ExitCode::SUCCESS
}

/// Waits for SIGTERM or Ctrl-C; on SIGHUP meanwhile, opens the access log
/// file again (after logrotate moved it) and reloads the config.
async fn wait_for_signal(edge: &Edge) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut hangup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = tokio::signal::ctrl_c() => return,
                _ = hangup.recv() => {
                    edge.reopen_access_log();
                    // The outcome is logged and shown on /status.
                    let _ = crate::reload::reload(edge);
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = edge;
        let _ = tokio::signal::ctrl_c().await;
    }
}
