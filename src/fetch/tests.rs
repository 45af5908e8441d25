//! The fetch behind a fill, driven on its own: a loopback origin, the
//! pieces of state a fetch uses, and no edge around them.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::fill::Fill;
use crate::metrics::SourceKind;
use crate::upstream::client_tls;

/// An origin on loopback that answers every request with `answer`, then closes.
async fn origin(answer: &'static [u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let _ = s.write_all(answer).await;
            });
        }
    });
    addr
}

/// The state a fetch uses, with a fill budget of `budget` bytes.
struct State {
    config: Config,
    upstream: Upstream,
    store: Store,
    inflight: Inflight,
    budget: Arc<Budget>,
    metrics: Arc<Metrics>,
    clock: Clock,
    streams: StreamLimits,
    slices: crate::slicing::Slices,
}

impl State {
    fn new(origin: SocketAddr, budget: u64) -> Self {
        let config = Config::from_toml(&format!("[[routes]]\nurl = \"http://{origin}\"\n")).unwrap();
        let metrics = Arc::new(Metrics::new());
        Self {
            upstream: Upstream::new(client_tls(None).unwrap(), Arc::clone(&metrics), None),
            store: Store::new(1 << 20),
            inflight: Inflight::new(Duration::from_secs(1)),
            budget: Budget::new(budget),
            metrics,
            clock: Clock::default(),
            streams: StreamLimits::new(4),
            slices: crate::slicing::Slices::new(),
            config,
        }
    }

    fn fetcher(&self) -> Fetcher<'_> {
        Fetcher {
            config: std::sync::Arc::new(self.config.clone()),
            upstream: &self.upstream,
            store: &self.store,
            inflight: &self.inflight,
            fill_budget: &self.budget,
            metrics: &self.metrics,
            clock: &self.clock,
            streams: &self.streams,
            slices: &self.slices,
        }
    }

    fn job(&self, path: &str) -> FetchJob {
        let route = Arc::new(self.config.routes[0].clone());
        let key = CacheKey::new(&route.origin.url(path));
        FetchJob {
            base: key.clone(),
            key,
            request: UpstreamRequest {
                route,
                method: Method::GET,
                path_and_query: path.to_owned(),
                headers: HeaderMap::new(),
                blocking: None,
                fleet: false,
            },
            stale: None,
            prefetch: false,
        }
    }
}

/// Runs the fetch for `path` with one reader; what the reader got, and the
/// disposition its head said.
async fn fill(state: &State, path: &str) -> (Result<Bytes, FetchError>, Option<Disposition>) {
    let (_fill, writer, mut reader) = Fill::start();
    let cx = state.fetcher();
    let read = async move {
        let head = match reader.head().await {
            Ok(head) => head,
            Err(e) => return (Err(e), None),
        };
        let body = reader.into_body(0, None).collect().await.map(|b| b.to_bytes());
        (body, Some(head.disposition))
    };
    let (playlist, got) = tokio::join!(run(&cx, state.job(path), writer), read);
    assert!(playlist.is_none(), "not a playlist");
    got
}

#[tokio::test]
async fn a_fill_stores_what_it_fetched_and_gives_its_room_back() {
    let addr = origin(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncache-control: max-age=60\r\n\r\nhello").await;
    let state = State::new(addr, 1 << 20);
    let (body, disposition) = fill(&state, "/a.ts").await;
    assert_eq!(body.unwrap(), "hello");
    assert!(matches!(disposition, Some(Disposition::Store { .. })));
    let key = state.job("/a.ts").key;
    assert_eq!(state.store.get(&key).expect("stored").body, "hello");
    assert_eq!(state.budget.used(), 0, "stored: the fill's room is given back");
    assert_eq!(state.metrics.upstream_bytes.get(SourceKind::Origin), 5);
    assert!(state.inflight.is_empty());
}

#[tokio::test]
async fn a_short_body_fails_its_readers_and_nothing_is_stored() {
    let addr = origin(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\ncache-control: max-age=60\r\n\r\nhello").await;
    let state = State::new(addr, 1 << 20);
    let (body, _) = fill(&state, "/short.ts").await;
    assert!(body.is_err(), "a short body is never passed off as whole");
    assert!(state.store.get(&state.job("/short.ts").key).is_none());
}

#[tokio::test]
async fn a_malformed_answer_fails_before_its_head_reaches_anyone() {
    let addr = origin(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n").await;
    let state = State::new(addr, 1 << 20);
    let (body, disposition) = fill(&state, "/bad.ts").await;
    assert!(body.is_err());
    assert!(disposition.is_none(), "the reader got the failure, not a head");
}

#[tokio::test]
async fn a_fill_without_room_streams_through_uncached() {
    let addr = origin(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncache-control: max-age=60\r\n\r\nhello").await;
    let state = State::new(addr, 4);
    let (body, disposition) = fill(&state, "/big.ts").await;
    assert_eq!(body.unwrap(), "hello", "the reader there gets it all");
    assert_eq!(disposition, Some(Disposition::NoRoom));
    assert!(state.store.get(&state.job("/big.ts").key).is_none());
}
