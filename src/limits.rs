//! Limits on what one client connection may hold: connections per address,
//! time to take an answer's bytes, and time without a request in flight.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Open connections per peer address, bounded by `server.max_connections_per_ip`.
pub struct PerIp {
    /// Changed by a reload; connections open past a lowered limit stay.
    limit: AtomicUsize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: AtomicUsize::new(limit),
            open: Mutex::new(HashMap::new()),
        })
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// A slot for one more connection from `ip`, or `None` at the limit.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        // An IPv4 peer on a dual-stack socket arrives as `::ffff:a.b.c.d`:
        // counted as the IPv4 address it is.
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= self.limit.load(Ordering::Relaxed) {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            owner: Arc::clone(self),
            ip,
        })
    }

    /// Connections open now from `ip`.
    #[cfg(test)]
    fn open_from(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

/// One connection's place in its address's count, given back on drop.
pub struct IpSlot {
    owner: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                // Addresses come and go: the map holds only those with connections.
                open.remove(&self.ip);
            }
        }
    }
}

/// A client connection whose writes must make progress within `limit`
/// (`server.send_timeout`): a client that takes nothing gets an error, and
/// its connection (with whatever it held) is let go.
pub struct SendTimeout<I> {
    inner: I,
    limit: Duration,
    /// Armed while a write waits; made once per connection, when first needed.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    expired: Counter,
}

impl<I> SendTimeout<I> {
    /// `expired` counts the connections closed this way.
    pub fn new(inner: I, limit: Duration, expired: Counter) -> Self {
        Self {
            inner,
            limit,
            timer: None,
            armed: false,
            expired,
        }
    }

    /// Passes on a finished write; on a pending one, checks the clock.
    fn watch<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.armed = false;
            return polled;
        }
        let limit = self.limit;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !self.armed {
            // Armed at the first pending write after progress, not per poll.
            timer.as_mut().reset(Instant::now() + limit);
            self.armed = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.expired.inc();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client took no bytes within server.send_timeout",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for SendTimeout<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for SendTimeout<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Requests in flight on one connection, for `server.idle_timeout`: a
/// connection is idle while none is, whatever else it sends (HTTP/2 PINGs,
/// SETTINGS and WINDOW_UPDATEs are no requests). Requests only count; the
/// watch wakes when the limit could have passed, not with each request.
pub struct Activity {
    inflight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            inflight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        })
    }

    /// Marks a request in flight until the returned guard is dropped (with
    /// the answer's body, or the request if it never got one).
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(self))
    }

    /// Resolves once no request has been in flight for `limit`. A connection
    /// busy when looked at cannot be idle for `limit` before `limit` from
    /// now; one idle since a moment, before that moment plus `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            let now = Instant::now();
            let deadline = match self.inflight.load(Ordering::Acquire) {
                0 => *self.idle_since.lock().unwrap_or_else(|p| p.into_inner()) + limit,
                _ => now + limit,
            };
            if now >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// One request in flight; see [`Activity::busy`].
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
    }
}

/// A response body that keeps its request counted as in flight until it is
/// sent or dropped.
pub struct Tracked<B> {
    body: B,
    _busy: Busy,
}

impl<B> Tracked<B> {
    pub fn new(body: B, busy: Busy) -> Self {
        Self { body, _busy: busy }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_counted_apart_and_slots_come_back() {
        let per_ip = PerIp::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = per_ip.acquire(a).expect("first");
        let _second = per_ip.acquire(a).expect("second");
        assert!(per_ip.acquire(a).is_none(), "a third from one address is refused");
        // The same address in IPv4-mapped form is the same peer.
        assert!(per_ip.acquire("::ffff:127.0.0.1".parse().unwrap()).is_none());
        assert!(per_ip.acquire(b).is_some(), "another address is not held back");
        drop(first);
        assert_eq!(per_ip.open_from(a), 1);
        assert!(per_ip.acquire(a).is_some(), "a closed connection gives its slot back");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_means_no_request_in_flight_for_the_whole_limit() {
        let activity = Activity::new();
        let limit = Duration::from_secs(3);
        let busy = activity.busy();
        let idle = tokio::spawn({
            let activity = Arc::clone(&activity);
            async move {
                activity.idle_for(limit).await;
                Instant::now()
            }
        });
        // A request in flight for ten seconds holds the connection open.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!idle.is_finished());
        let done = Instant::now();
        drop(busy);
        let idle_at = idle.await.unwrap();
        assert_eq!(idle_at - done, limit, "idle from the moment the last request ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_takes_nothing_is_cut_at_the_send_timeout() {
        use tokio::io::AsyncWriteExt;
        let (near, _far) = tokio::io::duplex(1024);
        let expired = Counter::default();
        let mut io = SendTimeout::new(near, Duration::from_secs(60), expired.clone());
        // The first KiB fits the pipe; the rest waits for a reader that never comes.
        let started = Instant::now();
        let err = io.write_all(&[0u8; 4096]).await.expect_err("the write times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        assert_eq!(expired.get(), 1);
    }
}
