//! A fill: one upstream fetch that any number of clients read while it arrives.
//!
//! The fetch task holds the [`Writer`]; every client holds a [`Reader`],
//! created when it joins (even before the origin's headers are in). Readers
//! wait on wakers, not on a timer, and each reads at its own pace from the
//! same `Bytes` chunks: nothing is copied per client. If the writer fails,
//! every reader gets an error, never an end of body, so a short body is
//! never taken for a whole one (Pingora #932, ATS #9274, Squid #528).
//!
//! Memory: a fill that keeps its body holds a [`Reservation`] of the fill
//! budget for it until the last reader lets go. One that keeps nothing
//! (too large, private, or no room) holds only what its readers have yet to
//! read, and its writer waits while that is over a bound: the origin is read
//! at the pace of the slowest reader, and a reader that takes nothing for
//! the writer's patience is cut off rather than let the bytes pile up.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::budget::{Budget, Reservation};
use crate::cache::{Disposition, Head};
use crate::outcome::{CacheStatus, Outcome, PassReason};
use crate::upstream::FetchError;

/// The upstream answer's head as every reader of the fill sees it.
#[derive(Debug)]
pub struct FillHead {
    pub head: Arc<Head>,
    pub disposition: Disposition,
    /// The body is a stored entry that the origin confirmed (304), or that is
    /// served because the origin failed and the entry allows it.
    pub revalidated: bool,
    /// The fetch was a prefetch, started before any player asked.
    pub prefetched: bool,
    /// A sibling edge is sending the body.
    pub from_peer: bool,
    /// Headers of the request the edge sent upstream (for `Vary` checks).
    pub request_headers: HeaderMap,
    /// `Set-Cookie` values of a shared answer: for the client that fetched it only.
    pub starter_cookies: Vec<http::HeaderValue>,
}

/// What a client reading a fill is to do with it, once its head is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Read it; the answer's `Cache-Status` says this.
    Read(CacheStatus),
    /// Leave it and ask upstream for an answer of its own.
    Pass(PassReason),
}

impl FillHead {
    /// What a client does with this fill: one that `joined` it (`Miss`: its
    /// request started the fetch; `Collapsed`: it joined one under way) and
    /// whose request selects `same_variant` of a `Vary` answer, or not. The
    /// one place the fill's state becomes a cache outcome.
    pub fn reading(&self, joined: Outcome, same_variant: bool) -> Reading {
        let started = joined == Outcome::Miss;
        let outcome = match (self.revalidated, self.disposition) {
            // The answer belongs to the client that fetched it; another asks for its own.
            (_, Disposition::Private) if !started => return Reading::Pass(PassReason::Private),
            _ if !started && !same_variant => return Reading::Pass(PassReason::Vary),
            (true, _) => Outcome::Stale,
            (false, Disposition::Private) => Outcome::Pass(PassReason::Private),
            (false, Disposition::TooLarge) if started => Outcome::Pass(PassReason::TooLarge),
            _ => joined,
        };
        Reading::Read(CacheStatus {
            outcome,
            stored: self.disposition.is_stored(),
            prefetched: self.prefetched,
            peer: self.from_peer,
        })
    }
}

/// An in-flight fetch.
#[derive(Debug, Default)]
pub struct Fill {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    head: Option<Result<Arc<FillHead>, FetchError>>,
    chunks: VecDeque<Bytes>,
    /// Chunks dropped from the front; `chunks[0]` has this absolute index.
    dropped: usize,
    end: Option<Result<(), FetchError>>,
    wakers: Vec<Waker>,
    /// Bumped whenever `wakers` is drained, so a reader knows whether its waker is still listed.
    generation: u64,
    /// Per reader slot: where that reader is.
    positions: Vec<Slot>,
    /// Not kept in the cache: drop chunks every reader has passed.
    trim: bool,
    /// Bytes in `chunks`.
    buffered: u64,
    /// What the kept chunks hold of the fill budget, given back with them.
    reservation: Option<Reservation>,
    /// The writer, waiting for readers to make room.
    writer_waker: Option<Waker>,
}

/// One reader slot of a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Free,
    /// The absolute index of the next chunk this reader will read.
    At(usize),
    /// Cut off: it fell behind a fill that keeps nothing for it.
    Cut,
}

impl Slot {
    fn at(self) -> Option<usize> {
        match self {
            Slot::At(i) => Some(i),
            _ => None,
        }
    }
}

impl State {
    fn wake_all(&mut self) -> Vec<Waker> {
        self.generation += 1;
        std::mem::take(&mut self.wakers)
    }

    fn register(&mut self, reg: &mut Registration, cx: &Context<'_>) {
        match reg.listed {
            Some((generation, idx)) if generation == self.generation => self.wakers[idx].clone_from(cx.waker()),
            _ => {
                reg.listed = Some((self.generation, self.wakers.len()));
                self.wakers.push(cx.waker().clone());
            }
        }
    }

    fn trim(&mut self) {
        if !self.trim {
            return;
        }
        let keep_from = self.positions.iter().filter_map(|s| s.at()).min().unwrap_or(usize::MAX);
        let mut freed = false;
        while self.dropped < keep_from {
            let Some(chunk) = self.chunks.pop_front() else {
                break;
            };
            self.buffered -= chunk.len() as u64;
            self.dropped += 1;
            freed = true;
        }
        if freed {
            if let Some(writer) = self.writer_waker.take() {
                writer.wake();
            }
        }
    }

    fn live_readers(&self) -> usize {
        self.positions.iter().filter(|s| s.at().is_some()).count()
    }

    /// Cuts off the readers furthest behind, so that the chunks only they
    /// still needed can go.
    fn cut_slowest(&mut self) {
        let Some(slowest) = self.positions.iter().filter_map(|s| s.at()).min() else {
            return;
        };
        for slot in &mut self.positions {
            if *slot == Slot::At(slowest) {
                *slot = Slot::Cut;
            }
        }
        self.trim();
    }
}

/// Where a reader's waker sits in the fill's list, if it is there.
#[derive(Debug, Default)]
struct Registration {
    listed: Option<(u64, usize)>,
}

impl Fill {
    /// A new fill with its writer and the first reader (the client that started it).
    pub fn start() -> (Arc<Fill>, Writer, Reader) {
        let fill = Arc::new(Fill::default());
        let reader = fill.join();
        let writer = Writer {
            fill: Arc::clone(&fill),
            done: false,
        };
        (fill, writer, reader)
    }

    /// A reader that will see the whole answer from its first byte.
    pub fn join(self: &Arc<Self>) -> Reader {
        let mut st = self.lock();
        let slot = match st.positions.iter().position(|s| *s == Slot::Free) {
            Some(free) => free,
            None => {
                st.positions.push(Slot::Free);
                st.positions.len() - 1
            }
        };
        st.positions[slot] = Slot::At(st.dropped);
        Reader {
            fill: Arc::clone(self),
            slot,
            reg: Registration::default(),
        }
    }

    /// Whether a new reader could still see the answer from its start.
    pub fn joinable(&self) -> bool {
        let st = self.lock();
        // A finished fill is not joined: its answer is in the cache if it may be
        // reused, and a new request must not get a stale copy that was never stored.
        st.dropped == 0 && !st.trim && st.end.is_none()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State half-updated in a
        // way readers misread, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let wakers = {
            let mut st = self.lock();
            f(&mut st);
            st.wake_all()
        };
        for w in wakers {
            w.wake();
        }
    }
}

/// The fetch task's handle: publishes the head, the body chunks and the end.
#[derive(Debug)]
pub struct Writer {
    fill: Arc<Fill>,
    done: bool,
}

impl Writer {
    pub fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    pub fn head(&self, head: Arc<FillHead>) {
        self.fill.update(|st| st.head = Some(Ok(head)));
    }

    pub fn push(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.fill.update(|st| {
            st.buffered += chunk.len() as u64;
            st.chunks.push_back(chunk);
            st.trim();
        });
    }

    /// Reserves room in `budget` for a kept body of `total` bytes so far
    /// (or announced); false when there is none.
    pub fn reserve(&self, budget: &Arc<Budget>, total: u64) -> bool {
        let mut st = self.fill.lock();
        st.reservation
            .get_or_insert_with(|| budget.reservation())
            .grow_to(total)
    }

    /// For a fill that keeps nothing: waits until its readers have at most
    /// `limit` bytes left to read. A reader that lets `patience` pass
    /// without making that room is cut off.
    pub async fn room(&self, limit: u64, patience: Duration) {
        loop {
            let waited = tokio::time::timeout(
                patience,
                poll_fn(|cx| {
                    let mut st = self.fill.lock();
                    if !st.trim || st.buffered <= limit {
                        return Poll::Ready(());
                    }
                    st.writer_waker = Some(cx.waker().clone());
                    Poll::Pending
                }),
            )
            .await;
            if waited.is_ok() {
                return;
            }
            self.fill.update(State::cut_slowest);
        }
    }

    /// Stops keeping the body for readers yet to come: only the readers there
    /// now get it, and chunks they have all read are released.
    pub fn stop_keeping(&self) {
        self.fill.update(|st| {
            st.trim = true;
            st.trim();
        });
    }

    /// How many readers are attached now.
    pub fn readers(&self) -> usize {
        self.fill.lock().live_readers()
    }

    /// The body received so far, as shared chunks (complete only when nothing was trimmed).
    pub fn body_chunks(&self) -> Option<Vec<Bytes>> {
        let st = self.fill.lock();
        (st.dropped == 0 && !st.trim).then(|| st.chunks.iter().cloned().collect())
    }

    /// Once the whole body is stored as `stored` (the chunks joined): the
    /// chunks become slices of it, so that readers still reading share the
    /// store's bytes instead of holding a second copy, and the fill gives
    /// its reservation back (the store counts those bytes now).
    pub fn rebase(&self, stored: &Bytes) {
        let mut st = self.fill.lock();
        let total: u64 = st.chunks.iter().map(|c| c.len() as u64).sum();
        if st.dropped != 0 || st.trim || total != stored.len() as u64 {
            return;
        }
        let mut at = 0;
        for chunk in st.chunks.iter_mut() {
            let len = chunk.len();
            *chunk = stored.slice(at..at + len);
            at += len;
        }
        st.reservation = None;
    }

    /// Ends the fill. An error reaches every reader, and any reader still waiting for the head.
    pub fn finish(mut self, result: Result<(), FetchError>) {
        self.done = true;
        self.fill.update(|st| {
            if let Err(e) = &result {
                st.head.get_or_insert_with(|| Err(e.clone()));
            }
            st.end = Some(result);
        });
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.done {
            // The fetch task ended without finishing (a panic, or its runtime
            // stopping): readers must see a failure, not a clean end.
            self.fill.update(|st| {
                st.head.get_or_insert_with(|| Err(FetchError::Abandoned));
                st.end = Some(Err(FetchError::Abandoned));
            });
        }
    }
}

/// One client's view of a fill.
#[derive(Debug)]
pub struct Reader {
    fill: Arc<Fill>,
    slot: usize,
    reg: Registration,
}

impl Reader {
    /// Waits for the upstream head (or the fetch's failure).
    pub async fn head(&mut self) -> Result<Arc<FillHead>, FetchError> {
        poll_fn(|cx| self.poll_head(cx)).await
    }

    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Arc<FillHead>, FetchError>> {
        let mut st = self.fill.lock();
        match &st.head {
            Some(head) => Poll::Ready(head.clone()),
            None => {
                st.register(&mut self.reg, cx);
                Poll::Pending
            }
        }
    }

    /// Waits until the whole body is in, and returns it (for answers whose length is only known at the end).
    pub async fn whole_body(&mut self) -> Result<Bytes, FetchError> {
        poll_fn(|cx| {
            let mut st = self.fill.lock();
            match &st.end {
                Some(Ok(())) if st.dropped == 0 => Poll::Ready(Ok(concat(st.chunks.iter()))),
                Some(Ok(())) => Poll::Ready(Err(FetchError::Abandoned)),
                Some(Err(e)) => Poll::Ready(Err(e.clone())),
                None => {
                    st.register(&mut self.reg, cx);
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The body bytes `start..end` (`end` `None`: to the end) as they arrive.
    pub fn into_body(self, start: u64, end: Option<u64>) -> FillBody {
        FillBody {
            reader: self,
            next: 0,
            offset: 0,
            start,
            end: end.unwrap_or(u64::MAX),
            yielded: Yield::BeforeFirst,
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut st = self.fill.lock();
        if let Some(pos) = st.positions.get_mut(self.slot) {
            *pos = Slot::Free;
        }
        st.trim();
    }
}

/// A response body fed by a fill.
#[derive(Debug)]
pub struct FillBody {
    reader: Reader,
    /// Absolute index of the next chunk to read.
    next: usize,
    /// Body offset at which chunk `next` begins.
    offset: u64,
    start: u64,
    end: u64,
    /// Whether the first piece has gone out and the reader yielded after it.
    yielded: Yield,
}

/// The first piece of a fill goes out alone: after it the body yields once, so
/// that a storm of waiters all get their first bytes before any gets the rest.
#[derive(Debug, PartialEq)]
enum Yield {
    BeforeFirst,
    Due,
    Done,
}

impl Body for FillBody {
    type Data = Bytes;
    type Error = FetchError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, FetchError>>> {
        let this = self.get_mut();
        if this.yielded == Yield::Due {
            // hyper writes what it holds when the body is pending; the wake puts
            // this connection behind the others that are ready.
            this.yielded = Yield::Done;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let mut st = this.reader.fill.lock();
        if st.positions[this.reader.slot] == Slot::Cut {
            return Poll::Ready(Some(Err(FetchError::Overtaken)));
        }
        while this.offset < this.end {
            let Some(chunk) = this
                .next
                .checked_sub(st.dropped)
                .and_then(|i| st.chunks.get(i))
                .cloned()
            else {
                if this.next < st.dropped {
                    // Cannot happen while this reader's position holds trimming back.
                    return Poll::Ready(Some(Err(FetchError::Abandoned)));
                }
                return match &st.end {
                    Some(Ok(())) => Poll::Ready(None),
                    Some(Err(e)) => Poll::Ready(Some(Err(e.clone()))),
                    None => {
                        st.register(&mut this.reader.reg, cx);
                        Poll::Pending
                    }
                };
            };
            let chunk_start = this.offset;
            let chunk_end = chunk_start + chunk.len() as u64;
            this.next += 1;
            this.offset = chunk_end;
            st.positions[this.reader.slot] = Slot::At(this.next);
            st.trim();
            let lo = this.start.max(chunk_start);
            let hi = this.end.min(chunk_end);
            if lo < hi {
                let piece = chunk.slice((lo - chunk_start) as usize..(hi - chunk_start) as usize);
                if this.yielded == Yield::BeforeFirst {
                    this.yielded = Yield::Due;
                }
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        match self.end {
            u64::MAX => SizeHint::default(),
            end => SizeHint::with_exact(end.saturating_sub(self.offset.max(self.start))),
        }
    }
}

/// Joins chunks into one buffer (one copy per object, when it is stored).
pub fn concat<'a>(chunks: impl Iterator<Item = &'a Bytes> + Clone) -> Bytes {
    let mut iter = chunks.clone();
    match (iter.next(), iter.next()) {
        (None, _) => Bytes::new(),
        (Some(only), None) => only.clone(),
        _ => {
            let len = chunks.clone().map(Bytes::len).sum();
            let mut buf = Vec::with_capacity(len);
            for c in chunks {
                buf.extend_from_slice(c);
            }
            Bytes::from(buf)
        }
    }
}

#[cfg(test)]
mod tests;
