//! `outpost demo`: an origin serving a real live HLS stream (a short clip
//! looped), the clip as VOD, an on-demand object and a player page, with
//! the edge in front of it.
//!
//! The page plays with hls.js, served by the origin itself from a local npm
//! install when there is one (see [`local_player`]); else the page falls back
//! to the public CDN, and says so on the page when no player could load.
//!
//! The origin counts requests per path, so a test (or a curious operator,
//! at `/origin-hits.json`) can see that each segment left it once.

mod live;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use live::{SEGMENT_SECONDS, WINDOW};

use crate::edge::Edge;

const PLAYER_PAGE: &str = include_str!("player.html");
const VOD_OBJECT_BYTES: usize = 4 << 20;

/// The demo origin, serving until dropped.
pub struct DemoOrigin {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

struct State {
    started: Instant,
    /// Requests per path, as the edge sent them.
    hits: Mutex<HashMap<String, u64>>,
    /// The edge in front, for the page's offload figure.
    edge: OnceLock<Arc<Edge>>,
    /// Where the edge's dashboard is, for the page's link.
    dashboard: OnceLock<String>,
    /// hls.js, when a local copy was found.
    player: Option<Bytes>,
}

/// The public copy the page falls back to.
const PLAYER_CDN: &str = "https://cdn.jsdelivr.net/npm/hls.js@1.7.4/dist/hls.min.js";

/// A local hls.js: `$OUTPOST_DEMO_HLSJS`, else an npm install of it in
/// `tests/browser` (what `.ci/run` makes) or `node_modules` under the
/// current folder or this source tree. Never committed to the repository.
pub fn local_player() -> Option<(std::path::PathBuf, Bytes)> {
    const IN_NPM: &str = "node_modules/hls.js/dist/hls.min.js";
    let mut candidates: Vec<std::path::PathBuf> = std::env::var_os("OUTPOST_DEMO_HLSJS")
        .map(Into::into)
        .into_iter()
        .collect();
    for base in [
        std::path::PathBuf::from("."),
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    ] {
        candidates.push(base.join("tests/browser").join(IN_NPM));
        candidates.push(base.join(IN_NPM));
    }
    candidates
        .into_iter()
        .find_map(|path| std::fs::read(&path).ok().map(|bytes| (path, Bytes::from(bytes))))
}

impl Drop for DemoOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DemoOrigin {
    /// Starts the origin on `addr`, with a local hls.js if one is found.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_with_player(addr, local_player().map(|(_, bytes)| bytes)).await
    }

    /// Starts the origin on `addr`, serving `player` as `/hls.min.js`.
    pub async fn start_with_player(addr: SocketAddr, player: Option<Bytes>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            started: Instant::now(),
            hits: Mutex::default(),
            edge: OnceLock::new(),
            dashboard: OnceLock::new(),
            player,
        });
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(&state, &req)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets `/stats.json` report the figures of the edge in front.
    pub fn attach(&self, edge: Arc<Edge>) {
        let _ = self.state.edge.set(edge);
    }

    /// Lets the page link to the edge's dashboard at `url`.
    pub fn show_dashboard(&self, url: String) {
        let _ = self.state.dashboard.set(url);
    }

    /// Whether the page's hls.js comes from this origin (else from the CDN).
    pub fn has_local_player(&self) -> bool {
        self.state.player.is_some()
    }

    /// Requests the origin has answered for `path`.
    pub fn hits(&self, path: &str) -> u64 {
        self.state
            .hits
            .lock()
            .expect("hit counts")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Every path requested so far with its count.
    pub fn all_hits(&self) -> HashMap<String, u64> {
        self.state.hits.lock().expect("hit counts").clone()
    }
}

fn answer(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    *state
        .hits
        .lock()
        .expect("hit counts")
        .entry(path.to_owned())
        .or_default() += 1;
    let published = live::published(state.started.elapsed().as_secs());
    match path {
        "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", "max-age=60", PLAYER_PAGE),
        "/live/stream.m3u8" => reply(
            StatusCode::OK,
            "application/vnd.apple.mpegurl",
            "max-age=1",
            live::live_playlist(published),
        ),
        "/vod/clip.m3u8" => reply(
            StatusCode::OK,
            "application/vnd.apple.mpegurl",
            "max-age=3600",
            live::vod_playlist(),
        ),
        "/vod/large.bin" => {
            let mut r = reply(
                StatusCode::OK,
                "application/octet-stream",
                "max-age=3600",
                pattern(VOD_OBJECT_BYTES),
            );
            r.headers_mut()
                .insert(header::ETAG, HeaderValue::from_static("\"vod-large\""));
            r
        }
        "/stats.json" => match state.edge.get() {
            Some(edge) => reply(
                StatusCode::OK,
                "application/json",
                "no-store",
                crate::admin::status_json(edge).to_string(),
            ),
            None => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "no-store",
                "no edge yet\n",
            ),
        },
        "/hls.min.js" => match &state.player {
            Some(player) => reply(StatusCode::OK, "application/javascript", "max-age=3600", player.clone()),
            None => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "max-age=5",
                "no local hls.js: run `npm ci --prefix tests/browser` or set OUTPOST_DEMO_HLSJS\n",
            ),
        },
        "/demo.json" => {
            let json = serde_json::json!({
                "dashboard": state.dashboard.get(),
                "local_player": state.player.is_some(),
                "player_cdn": PLAYER_CDN,
            });
            reply(StatusCode::OK, "application/json", "no-store", json.to_string())
        }
        "/origin-hits.json" => {
            let hits = state.hits.lock().expect("hit counts").clone();
            let json = serde_json::to_string(&hits).unwrap_or_default();
            reply(StatusCode::OK, "application/json", "no-store", json)
        }
        _ => segment(path, published),
    }
}

/// `/live/seg-N.ts` once published (a short-lived 404 before), `/vod/seg-N.ts`.
fn segment(path: &str, published: u64) -> Response<Full<Bytes>> {
    if let Some(name) = path.strip_prefix("/live/") {
        if let Some(n) = live::segment_number(name, published) {
            return reply(StatusCode::OK, "video/mp2t", "max-age=3600", live::segment(n));
        }
        if live::segment_number(name, u64::MAX).is_some() {
            return reply(StatusCode::NOT_FOUND, "text/plain", "max-age=0", "not yet published\n");
        }
    }
    if let Some(n) = path
        .strip_prefix("/vod/")
        .and_then(|name| live::segment_number(name, live::clip_segments()))
    {
        return reply(StatusCode::OK, "video/mp2t", "max-age=3600", live::segment(n));
    }
    reply(StatusCode::NOT_FOUND, "text/plain", "max-age=10", "no such object\n")
}

/// Deterministic bytes (byte `i` is `i mod 251`), to check ranges against.
pub fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    cache: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}
