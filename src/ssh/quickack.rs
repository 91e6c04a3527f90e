//! A stream wrapper that keeps the socket out of delayed-ACK mode
//! (`TCP_QUICKACK`, re-armed after every read and every write).
//!
//! Why: both sides send KEXINIT as soon as the version lines are
//! exchanged, so the client's KEXINIT crosses ours and reaches us when we
//! have nothing to send back. Linux then holds the ACK for up to 40 ms (a
//! connection that just sent data right after receiving some is treated as
//! interactive: delayed ACKs). Meanwhile the OpenSSH client, whose socket
//! has Nagle's algorithm on until the session is interactive, has its
//! small `SSH2_MSG_KEX_ECDH_INIT` ready but keeps it back until its
//! KEXINIT is acknowledged: the login stalls for the whole delayed-ACK
//! time. `TCP_NODELAY` on our side cannot help (it is the client that
//! waits). Setting `TCP_QUICKACK` leaves delayed-ACK mode (and sends an
//! ACK still pending); the kernel re-enters the mode by itself whenever we
//! send data soon after receiving some, so it is re-armed after every
//! write (the next segment that arrives is then acknowledged by the kernel
//! at once, however late this task gets the CPU) and after every read (for
//! a segment that arrived in the moment between our write and the
//! re-arming). The cost is a `setsockopt` per read and per write and a few
//! more bare ACKs; the gate reads small messages (keystrokes, handshake
//! packets), never bulk uploads.

use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

fn set_quickack(fd: RawFd, on: bool) -> std::io::Result<()> {
    let value: libc::c_int = on.into();
    // SAFETY: a plain setsockopt on a descriptor we borrow, with a pointer
    // to a live c_int and its exact size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
fn quickack(fd: RawFd) -> std::io::Result<bool> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a live c_int with its size.
    let r = unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_QUICKACK, (&mut value as *mut libc::c_int).cast(), &mut len) };
    if r == 0 {
        Ok(value != 0)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub struct QuickAck<S> {
    inner: S,
}

impl<S: AsRawFd> QuickAck<S> {
    pub fn new(inner: S) -> Self {
        QuickAck { inner }
    }
}

impl<S: AsyncRead + AsRawFd + Unpin> AsyncRead for QuickAck<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            if buf.filled().len() > before {
                self.arm();
            }
        }
        r
    }
}

impl<S: AsRawFd> QuickAck<S> {
    /// Best effort: a socket that refuses the option still works, only
    /// with the kernel's delayed ACKs.
    fn arm(&self) {
        if let Err(e) = set_quickack(self.inner.as_raw_fd(), true) {
            tracing::debug!(error = %e, "setting TCP_QUICKACK failed");
        }
    }

    fn after_write(&self, r: &Poll<std::io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = r {
            if *n > 0 {
                self.arm();
            }
        }
    }
}

impl<S: AsyncWrite + AsRawFd + Unpin> AsyncWrite for QuickAck<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(&r);
        r
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(&r);
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A read through the wrapper takes the socket out of delayed-ACK
    /// mode. The socket is put into that mode (as our own writes would)
    /// after the bytes arrived, so nothing but the wrapper can leave it:
    /// a plain read keeps it.
    #[tokio::test]
    async fn a_read_re_arms_quick_acks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (server, _) = tokio::time::timeout(std::time::Duration::from_secs(10), listener.accept()).await.expect("accept in time").expect("accept");
        let fd = server.as_raw_fd();
        let mut buf = [0u8; 16];

        // Without the wrapper: the mode stays as it was.
        client.write_all(b"plain").await.expect("write");
        tokio::time::timeout(std::time::Duration::from_secs(10), server.readable()).await.expect("readable in time").expect("readable");
        set_quickack(fd, false).expect("enter delayed-ACK mode");
        assert!(!quickack(fd).expect("get"), "the kernel reports delayed-ACK mode");
        let mut server = server;
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), server.read(&mut buf)).await.expect("read in time").expect("read");
        assert_eq!(&buf[..n], b"plain");
        assert!(!quickack(fd).expect("get"), "a plain read leaves delayed-ACK mode alone");

        // Through the wrapper: re-armed after the read.
        let mut wrapped = QuickAck::new(server);
        client.write_all(b"kexinit").await.expect("write");
        tokio::time::timeout(std::time::Duration::from_secs(10), wrapped.inner.readable()).await.expect("readable in time").expect("readable");
        set_quickack(fd, false).expect("enter delayed-ACK mode");
        assert!(!quickack(fd).expect("get"));
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), wrapped.read(&mut buf)).await.expect("read in time").expect("read");
        assert_eq!(&buf[..n], b"kexinit");
        assert!(quickack(fd).expect("get"), "the wrapper re-armed quick ACKs after the read");

        // A write through the wrapper re-arms too (a plain write would
        // keep the socket in delayed-ACK mode: see the next test), and
        // the bytes pass through unchanged.
        set_quickack(fd, false).expect("enter delayed-ACK mode");
        wrapped.write_all(b"reply").await.expect("write back");
        assert!(quickack(fd).expect("get"), "the wrapper re-armed quick ACKs after the write");
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), client.read(&mut buf)).await.expect("read in time").expect("read");
        assert_eq!(&buf[..n], b"reply");
    }

    /// The kernel's side of the story, which the wrapper relies on: a
    /// plain write leaves the socket in delayed-ACK mode.
    #[tokio::test]
    async fn a_plain_write_keeps_delayed_acks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut server, _) = tokio::time::timeout(std::time::Duration::from_secs(10), listener.accept()).await.expect("accept in time").expect("accept");
        let fd = server.as_raw_fd();
        set_quickack(fd, false).expect("enter delayed-ACK mode");
        server.write_all(b"kexinit").await.expect("write");
        assert!(!quickack(fd).expect("get"), "a plain write leaves delayed-ACK mode alone");
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), client.read(&mut buf)).await.expect("read in time").expect("read");
        assert_eq!(&buf[..n], b"kexinit");
    }
}
