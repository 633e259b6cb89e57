//! A TCP stream that remembers when the kernel received the bytes of its latest read
//! (`SO_TIMESTAMPNS`: the arrival of the last packet that read consumed; packets merged in the
//! receive queue keep the later one's). A reply completed by that read arrived at or before
//! that time, so its latency can also be taken at arrival on this machine, as an upper bound,
//! leaving out how long the generator took to get round to reading it: at loads where the
//! generator is at its core's limit, that wait is a large part of the round trip it measures,
//! and it is the generator's, not the server's.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Wall-clock nanoseconds since the Unix epoch (the clock `SO_TIMESTAMPNS` uses).
pub fn wall_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A connected TCP stream whose reads record their time stamp in [`StampedTcp::arrivals`].
pub struct StampedTcp {
    io: TcpStream,
    arrived: Arc<AtomicU64>,
}

impl StampedTcp {
    /// Ask the kernel to time-stamp what `io` receives. Fails where the option is refused.
    pub fn new(io: TcpStream) -> io::Result<StampedTcp> {
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and a pointer to an int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                io.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(StampedTcp {
            io,
            arrived: Arc::default(),
        })
    }

    /// Wall-clock nanoseconds at which the kernel received the last packet of the latest read;
    /// 0 when that read carried no time stamp (the kernel turns stamping on shortly after the
    /// first socket asks for it, so the first packets of a fresh machine may have none).
    /// Shared: the reader of the split socket keeps it.
    pub fn arrivals(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.arrived)
    }
}

/// One `recvmsg` into `buf`, storing its time stamp (or 0) in `arrived`.
fn recv_stamped(fd: libc::c_int, buf: &mut [u8], arrived: &AtomicU64) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one SCM_TIMESTAMPNS (a header and a timespec), 8-byte aligned.
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths); filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at `iov` (into `buf`) and `control`, both alive for the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // A read without a (whole) time stamp leaves 0, not the previous read's.
    let mut stamp = 0;
    // SAFETY: arithmetic on a length, no memory touched.
    let stamp_len =
        unsafe { libc::CMSG_LEN(std::mem::size_of::<libc::timespec>() as u32) } as usize;
    // SAFETY: walking the control messages the kernel wrote into `control`, within
    // `msg_controllen`, with the libc macros made for it; the payload is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET
                && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
                && (*cmsg).cmsg_len as usize >= stamp_len
                && msg.msg_flags & libc::MSG_CTRUNC == 0
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let (Ok(s), Ok(ns)) = (u64::try_from(ts.tv_sec), u64::try_from(ts.tv_nsec)) else {
                    break;
                };
                stamp = s * 1_000_000_000 + ns;
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    arrived.store(stamp, Relaxed);
    Ok(n as usize)
}

impl AsyncRead for StampedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.io.poll_read_ready(cx))?;
            let fd = this.io.as_raw_fd();
            let arrived = &this.arrived;
            let unfilled = buf.initialize_unfilled();
            match this
                .io
                .try_io(Interest::READABLE, || recv_stamped(fd, unfilled, arrived))
            {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for StampedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_read_records_when_its_bytes_arrived() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut client = StampedTcp::new(client.unwrap()).unwrap();
        let (mut server, _) = server.unwrap();
        let arrivals = client.arrivals();
        assert_eq!(arrivals.load(Relaxed), 0);
        // The kernel switches stamping on a moment after the first socket asks (deferred work).
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let before = wall_nanos();
        server.write_all(b"hello").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut buf = [0u8; 16];
        let n = client.read(&mut buf).await.unwrap();
        let read_at = wall_nanos();
        assert_eq!(&buf[..n], b"hello");
        let at = arrivals.load(Relaxed);
        // Stamped on arrival, not when it was read 50 ms later.
        assert!(
            at >= before && at <= read_at,
            "{before} <= {at} <= {read_at}"
        );
        assert!(
            read_at - at >= 40_000_000,
            "read {} ns after arrival",
            read_at - at
        );
        client.write_all(b"back").await.unwrap();
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"back");
    }
}
