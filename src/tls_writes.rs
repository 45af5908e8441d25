//! Larger TLS writes for large answers, from a budget the whole edge shares.
//!
//! rustls encrypts at most 64 KiB ahead of what the socket has taken, so a
//! 2 MiB segment over HTTPS HTTP/1.1 leaves in 32 writes, each of which
//! wakes the reader on the far side. With room for 256 KiB it leaves in 8,
//! and the edge spends about a fifth less CPU on it (benches/HISTORY.md).
//! But that room is also what a client that stops reading makes the edge
//! hold, so it is lent, not given: a write larger than 64 KiB borrows the
//! extra 192 KiB from one budget for the edge ([`TLS_BURST_BUDGET`]), and
//! gives it back once everything encrypted has left. When the budget is
//! spent, writes go at rustls' default size, as before.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;

use crate::budget::{Budget, Reservation};

/// rustls' own limit, kept by a connection that borrows nothing.
pub const BASE: usize = 64 << 10;
/// A connection's limit while it holds a loan.
pub const RAISED: usize = 256 << 10;
/// What all connections together may borrow: 170 connections writing large
/// answers at once, or stalled readers holding their loan until
/// `server.send_timeout` closes them.
pub const TLS_BURST_BUDGET: u64 = 32 << 20;

/// A server TLS stream whose large writes borrow room from `budget`.
pub struct TlsWrites<IO> {
    inner: TlsStream<IO>,
    budget: Arc<Budget>,
    loan: Option<Reservation>,
}

impl<IO> TlsWrites<IO> {
    pub fn new(inner: TlsStream<IO>, budget: Arc<Budget>) -> Self {
        Self {
            inner,
            budget,
            loan: None,
        }
    }

    /// Borrows for a write of `len` bytes that rustls would split.
    fn borrow_for(&mut self, len: usize) {
        if self.loan.is_some() || len <= BASE {
            return;
        }
        let mut loan = self.budget.reservation();
        if loan.grow_to((RAISED - BASE) as u64) {
            self.inner.get_mut().1.set_buffer_limit(Some(RAISED));
            self.loan = Some(loan);
        }
    }

    /// Gives the loan back once nothing encrypted waits for the socket.
    fn repay_if_sent(&mut self) {
        if self.loan.is_some() && !self.inner.get_ref().1.wants_write() {
            self.inner.get_mut().1.set_buffer_limit(Some(BASE));
            self.loan = None;
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsWrites<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsWrites<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.borrow_for(buf.len());
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.repay_if_sent();
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.borrow_for(bufs.iter().map(|b| b.len()).sum());
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.repay_if_sent();
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.repay_if_sent();
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
