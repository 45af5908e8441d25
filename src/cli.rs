//! The command line: `serve` (the default), `check` and `demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::app::RunningEdge;
use crate::config::{Config, Overrides};
use crate::demo::DemoOrigin;
use crate::edge::Edge;

#[derive(Parser)]
#[command(name = "outpost", version, about = "A caching edge for live and on-demand video")]
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
    /// Start a synthetic origin and an edge in front of it.
    Demo,
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

fn load(args: &ServeArgs) -> Result<Config, ExitCode> {
    let overrides = Overrides {
        listen: args.listen.clone(),
        origin: args.origin.clone(),
    };
    Config::load(args.config.as_deref(), &overrides).map_err(|e| {
        eprintln!("outpost: invalid config: {e}");
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
            Ok(edge) => run_until_signal(edge).await,
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
        origin.attach(Arc::clone(&edge.edge));
        let edge_url = local_url(edge.addrs.listen);
        let admin_url = local_url(edge.addrs.admin);
        println!("outpost demo is running (Ctrl-C to stop)");
        println!("  player page     {edge_url}/");
        println!("  live playlist   {edge_url}/live/stream.m3u8");
        println!("  VOD playlist    {edge_url}/vod/clip.m3u8");
        println!("  on-demand       {edge_url}/vod/large.bin");
        println!("  dashboard       {admin_url}/status");
        println!("  metrics         {admin_url}/metrics");
        println!("  origin          {}", origin.url());
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
    wait_for_signal().await;
    tracing::info!("stopping: finishing responses under way");
    edge.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
