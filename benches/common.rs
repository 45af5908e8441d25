//! Measuring helpers shared by the benchmarks.
#![allow(dead_code)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A numeric setting from the environment, or `default` when unset or not a number.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The value at quantile `p` (0..=1) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// What a storm of clients saw: time to first body byte and to the last,
/// from `start`, sorted; and how many failed.
pub struct Storm {
    /// When the clients were released.
    pub start: Instant,
    /// When each client's task had the first body byte in hand.
    pub ttfb: Vec<Duration>,
    /// When the first body byte reached each client's socket: the kernel's
    /// receive timestamp, so without the time the client took to get to it.
    pub arrived: Vec<Duration>,
    pub done: Vec<Duration>,
    pub errors: usize,
}

/// `clients` clients, each on its own connection, GET `url` at once and read
/// the whole body; a body that is not `size` bytes long is an error.
///
/// The clients are a few lines over a `TcpStream` rather than hyper's
/// client: the receive timestamp needs `recvmsg` on the socket itself.
pub async fn storm(url: &str, clients: usize, size: usize) -> Storm {
    let uri: http::Uri = url.parse().expect("a storm URL");
    let authority = uri.authority().expect("a storm URL's authority").to_string();
    let request = format!("GET {} HTTP/1.1\r\nhost: {authority}\r\n\r\n", uri.path());
    let start = Instant::now();
    let wall = SystemTime::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (authority, request) = (authority.clone(), request.clone());
            tokio::spawn(async move {
                let (first, arrived) = storm_client(&authority, &request, size).await?;
                Ok::<_, String>((
                    first - start,
                    arrived.duration_since(wall).unwrap_or_default(),
                    start.elapsed(),
                ))
            })
        })
        .collect();
    let mut out = Storm {
        start,
        ttfb: Vec::new(),
        arrived: Vec::new(),
        done: Vec::new(),
        errors: 0,
    };
    for t in tasks {
        match t.await.expect("storm client task") {
            Ok((first, arrived, done)) => {
                out.ttfb.push(first);
                out.arrived.push(arrived);
                out.done.push(done);
            }
            Err(_) => out.errors += 1,
        }
    }
    out.ttfb.sort();
    out.arrived.sort();
    out.done.sort();
    out
}

/// One storm client: when it had its first body byte, and when that byte
/// reached its socket.
async fn storm_client(authority: &str, request: &str, size: usize) -> Result<(Instant, SystemTime), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let text = |e: std::io::Error| e.to_string();
    let mut conn = tokio::net::TcpStream::connect(authority).await.map_err(text)?;
    receive_timestamps(&conn).map_err(text)?;
    conn.write_all(request.as_bytes()).await.map_err(text)?;
    // Small reads until the first body byte, so that the timestamp (the
    // last packet a read took from) is that byte's.
    let mut buf = Vec::with_capacity(4096);
    let (body_at, length, first, arrived) = loop {
        let (n, stamp) = read_stamped(&conn, &mut buf).await.map_err(text)?;
        if n == 0 {
            return Err("closed before the first body byte".into());
        }
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut fields);
        let httparse::Status::Complete(at) = response.parse(&buf).map_err(|e| e.to_string())? else {
            continue;
        };
        if response.code != Some(200) {
            return Err(format!("status {:?}", response.code));
        }
        if buf.len() > at {
            let length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                .ok_or("no Content-Length")?;
            break (at, length, Instant::now(), stamp.ok_or("no receive timestamp")?);
        }
    };
    let mut len = buf.len() - body_at;
    let mut chunk = vec![0u8; 64 << 10];
    while len < length {
        match conn.read(&mut chunk).await.map_err(text)? {
            0 => break,
            n => len += n,
        }
    }
    if len != size {
        return Err(format!("short body: {len} of {size}"));
    }
    Ok((first, arrived))
}

/// Asks the kernel to stamp each packet this socket receives (software
/// timestamps, the wall clock).
fn receive_timestamps(conn: &tokio::net::TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags: libc::c_int = (libc::SOF_TIMESTAMPING_RX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE) as libc::c_int;
    // SAFETY: a valid socket and a c_int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPING,
            (&flags as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads into `buf`'s spare room (up to 4 KiB) with `recvmsg`; returns the
/// byte count and the receive timestamp, if the kernel gave one.
async fn read_stamped(conn: &tokio::net::TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(usize, Option<SystemTime>)> {
    use std::os::fd::AsRawFd;
    buf.reserve(4096);
    loop {
        conn.readable().await?;
        let result = conn.try_io(tokio::io::Interest::READABLE, || {
            let spare = buf.spare_capacity_mut();
            let mut iov = libc::iovec {
                iov_base: spare.as_mut_ptr().cast(),
                iov_len: spare.len().min(4096),
            };
            let mut control = [0u64; 32];
            // SAFETY: zeroed msghdr, then every pointer set to live buffers.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            // SAFETY: msg points at buffers that outlive the call.
            let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut stamp = None;
            // SAFETY: the kernel filled msg_control; the CMSG macros walk it.
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
                while !cmsg.is_null() {
                    if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPING {
                        // Three timespecs; the first is the software one.
                        let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                        stamp = Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                    }
                    cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
                }
            }
            Ok((n as usize, stamp))
        });
        match result {
            Ok((n, stamp)) => {
                // SAFETY: recvmsg initialised these n bytes.
                unsafe { buf.set_len(buf.len() + n) };
                return Ok((n, stamp));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}
