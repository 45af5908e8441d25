//! Large stored bodies kept in memfd mappings, so that a socket can be handed
//! their pages with sendfile(2) instead of a copy.
//!
//! A 1 MiB hit costs the edge mostly one copy: `writev` copies the body from
//! the cache into the socket buffer (a third of its CPU in a profile). A body
//! kept in a memfd, an in-memory file, can be sent with sendfile, which gives
//! the socket references to the file's pages. The rest of the edge reads the
//! body as ordinary `Bytes` over a read-only mapping of that file; a registry
//! of mapped ranges lets [`crate::sendfile`] recognise a slice hyper asks it to
//! write as part of one, and find the file and offset to send it from.
//!
//! Only with `server.sendfile`, which is off by default: on loopback it halves
//! the proxy's CPU per large hit but costs the client more than that (see the
//! README's Performance section).
//!
//! Each mapped body holds one file descriptor, so their number is capped
//! below the process's limit ([`init`]); past the cap, or when the kernel
//! refuses, a body stays on the heap and is sent with `writev` as before.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

use bytes::Bytes;

/// Bodies smaller than this stay on the heap: their copy is cheap next to
/// the request, and each mapping costs a descriptor and a page of rounding.
pub const MIN_BODY: usize = 256 << 10;

/// Mapped ranges by start address: `(length, memfd)`.
static REGIONS: RwLock<BTreeMap<usize, (usize, RawFd)>> = RwLock::new(BTreeMap::new());
/// Mapped bodies alive now, and how many may be (0 until [`init`]).
static OPEN: AtomicUsize = AtomicUsize::new(0);
static BUDGET: AtomicUsize = AtomicUsize::new(0);

/// Raises the soft descriptor limit to the hard one and lets mapped bodies
/// use what `connections` (plus upstream sockets and files) leave, but at
/// least half of it: a `max_connections` past the limit could not be reached.
pub fn init(connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        limit.rlim_cur
    };
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    let budget = soft - connections.saturating_add(1024).min(soft / 2);
    BUDGET.store(budget, Ordering::Relaxed);
    tracing::debug!(descriptors = soft, mapped_bodies = budget, "sendfile budget");
}

/// The body `chunks` make, copied into a new mapping; `None` keeps it on the
/// heap (too small, over the descriptor budget, or refused by the kernel).
pub fn store(chunks: &[Bytes]) -> Option<Bytes> {
    let len: usize = chunks.iter().map(Bytes::len).sum();
    if len < MIN_BODY {
        return None;
    }
    if OPEN.fetch_add(1, Ordering::Relaxed) >= BUDGET.load(Ordering::Relaxed) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    match Mapping::new(chunks, len) {
        Ok(mapping) => Some(Bytes::from_owner(mapping)),
        Err(e) => {
            OPEN.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(bytes = len, error = %e, "could not map a body for sendfile; keeping it on the heap");
            None
        }
    }
}

/// The memfd and offset that hold `slice`, if it lies wholly in one mapped body.
///
/// The answer is good for as long as the caller holds the `Bytes` that
/// `slice` borrows from: that keeps the mapping, and its descriptor, alive.
pub fn find(slice: &[u8]) -> Option<(RawFd, u64)> {
    if OPEN.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let addr = slice.as_ptr() as usize;
    let regions = REGIONS.read().unwrap_or_else(PoisonError::into_inner);
    let (&start, &(len, fd)) = regions.range(..=addr).next_back()?;
    (addr + slice.len() <= start + len).then_some((fd, (addr - start) as u64))
}

/// How many mapped bodies are alive now.
pub fn open() -> usize {
    OPEN.load(Ordering::Relaxed)
}

/// A read-only shared mapping of a memfd that nothing writes to again.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Held open for sendfile; closed after the mapping is gone.
    _file: File,
}

// SAFETY: the mapping is read-only and lives until `drop`; any thread may read it.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(chunks: &[Bytes], len: usize) -> io::Result<Self> {
        // SAFETY: memfd_create takes a NUL-terminated name; the descriptor it
        // returns is new and owned by `file` from here on.
        let file = unsafe {
            let fd = libc::memfd_create(c"outpost-body".as_ptr(), libc::MFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            File::from_raw_fd(fd)
        };
        let mut at = 0;
        for chunk in chunks {
            file.write_all_at(chunk, at)?;
            at += chunk.len() as u64;
        }
        // MAP_POPULATE: the pages are resident anyway; mapping them now keeps
        // them counted in RSS and spares readers the page faults.
        // SAFETY: a fresh mapping of `len` bytes of a file that is `len` long.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        REGIONS
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ptr.as_ptr() as usize, (len, file.as_raw_fd()));
        Ok(Self { ptr, len, _file: file })
    }
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `drop`, and they never change.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Out of the registry first, so no writer looks up a range being unmapped.
        REGIONS
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(self.ptr.as_ptr() as usize));
        // SAFETY: the range was mapped in `new`, and no `Bytes` refers to it any
        // more. Pages a socket still holds from sendfile stay valid: it holds
        // references to them, not to the mapping.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
        // The file closes after this, once nothing can look its descriptor up.
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(len: usize) -> Vec<Bytes> {
        let bytes: Vec<u8> = (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let bytes = Bytes::from(bytes);
        (0..len)
            .step_by(16_000)
            .map(|at| bytes.slice(at..len.min(at + 16_000)))
            .collect()
    }

    #[test]
    fn a_stored_body_reads_back_as_written_and_is_found_by_any_slice() {
        init(0);
        let parts = chunks(MIN_BODY + 12_345);
        let body = store(&parts).expect("mapped");
        assert_eq!(body, crate::fill::concat(parts.iter()));
        let (fd, offset) = find(&body[1000..200_000]).expect("a slice of a mapped body is found");
        assert_eq!(offset, 1000);
        let (whole_fd, zero) = find(&body).expect("the whole body is found");
        assert_eq!((whole_fd, zero), (fd, 0));
        // The descriptor holds the same bytes at the same offsets.
        let mut read = vec![0u8; 5000];
        // SAFETY: `fd` stays open while `body` is alive.
        let file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
        file.read_exact_at(&mut read, 70_000).unwrap();
        assert_eq!(read, body[70_000..75_000]);
        // A copy on the heap is not part of any mapping.
        let copy = body.to_vec();
        assert!(find(&copy).is_none());
        let start = body.as_ptr() as usize;
        drop(body);
        let regions = REGIONS.read().unwrap();
        assert!(!regions.contains_key(&start), "a dropped body leaves the registry");
    }

    #[test]
    fn small_bodies_stay_on_the_heap() {
        init(0);
        assert!(store(&chunks(MIN_BODY - 1)).is_none());
    }
}
