//! A client socket that sends slices of mapped bodies with sendfile(2).
//!
//! hyper writes a response as a list of slices: its header buffer, then the
//! body's `Bytes` as the edge gave them (it does not copy large bodies). This
//! wrapper looks for a slice lying in a mapped body ([`crate::mapped`]) and
//! sends it from the body's memfd with sendfile, after the slices before it
//! (the head) in the same call. Every other write goes to the socket
//! unchanged. The bytes on the wire are the same either way: the slice and
//! the file hold them at the same offsets.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::mapped;

/// Shorter slices are written as before: a copy this small costs less than the
/// extra system call (HTTP/2 DATA frames, 16 KiB, stay on `writev`).
pub const MIN_SLICE: usize = 64 << 10;

/// A plain TCP client connection; `sent` counts bytes that went by sendfile.
pub struct SendfileStream {
    inner: TcpStream,
    sent: Counter,
}

impl SendfileStream {
    pub fn new(inner: TcpStream, sent: Counter) -> Self {
        Self { inner, sent }
    }

    /// Runs `op` on the socket once it is writable, until it does not block.
    fn poll_io(&self, cx: &mut Context<'_>, op: impl Fn(RawFd) -> io::Result<usize>) -> Poll<io::Result<usize>> {
        let socket = self.inner.as_raw_fd();
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            match self.inner.try_io(Interest::WRITABLE, || op(socket)) {
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
                result => return Poll::Ready(result),
            }
        }
    }
}

fn mapped_slice(slice: &[u8]) -> Option<(RawFd, u64)> {
    if slice.len() < MIN_SLICE {
        return None;
    }
    mapped::find(slice)
}

/// `sendmsg` of the slices before a mapped one (hyper's head buffer).
///
/// Not with `MSG_MORE`: a corked head in front of spliced pages made each
/// 1 MiB sendfile cost 360-550 µs of kernel time instead of 90-105 µs
/// (`python3 benches/probes/sendfile.py send sendfile sendfile-more`).
fn send_head(socket: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no address, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix, and sendmsg only reads them.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    // SAFETY: `msg` points at `bufs`, which outlive the call.
    let sent = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

/// Sends `len` bytes of `file` from `offset` (as much as the socket takes now).
fn send_file(socket: RawFd, file: RawFd, offset: u64, len: usize) -> io::Result<usize> {
    let mut offset = libc::off_t::try_from(offset).map_err(|_| io::Error::other("offset out of range"))?;
    // Linux sends at most this much per call.
    let len = len.min(0x7fff_f000);
    // SAFETY: both are open descriptors; sendfile reads `file`, never memory of ours.
    let sent = unsafe { libc::sendfile(socket, file, &mut offset, len) };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

impl AsyncWrite for SendfileStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.len() < MIN_SLICE {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let found = bufs
            .iter()
            .enumerate()
            .find_map(|(i, b)| mapped_slice(b).map(|(file, offset)| (i, file, offset)));
        let Some((at, file, offset)) = found else {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        };
        let before: usize = bufs[..at].iter().map(|b| b.len()).sum();
        let mut written = 0;
        if before > 0 {
            match this.poll_io(cx, |socket| send_head(socket, &bufs[..at])) {
                Poll::Ready(Ok(n)) if n < before => return Poll::Ready(Ok(n)),
                Poll::Ready(Ok(n)) => written = n,
                other => return other,
            }
        }
        let len = bufs[at].len();
        match this.poll_io(cx, |socket| send_file(socket, file, offset, len)) {
            Poll::Ready(Ok(n)) => {
                this.sent.inc_by(n as u64);
                Poll::Ready(Ok(written + n))
            }
            // The head went out: report it, and the body's wait or error on the next call.
            _ if written > 0 => Poll::Ready(Ok(written)),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}
