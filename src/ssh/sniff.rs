//! A stream wrapper that keeps the client's identification line (its
//! "SSH-2.0-..." version string) as it passes, so the login can record it
//! before russh exposes a session. Bounded: at most 255 bytes are kept
//! (RFC 4253 §4.2), and nothing is kept after the first line.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Default)]
struct Capture {
    line: Vec<u8>,
    done: bool,
}

#[derive(Clone, Default)]
pub struct ClientId(Arc<Mutex<Capture>>);

impl ClientId {
    /// The version string with control characters (C0, DEL, C1) and
    /// bidirectional formatting characters removed, or "" when the client
    /// has not sent one yet.
    pub fn get(&self) -> String {
        let c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !c.done {
            return String::new();
        }
        crate::model::strip_unsafe(&String::from_utf8_lossy(&c.line))
    }

    fn feed(&self, bytes: &[u8]) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for &b in bytes {
            if c.done {
                return;
            }
            match b {
                b'\n' => {
                    // Lines before the "SSH-" line are not the identification.
                    if c.line.starts_with(b"SSH-") {
                        c.done = true;
                    } else {
                        c.line.clear();
                    }
                }
                b'\r' => {}
                _ if c.line.len() < 255 => c.line.push(b),
                _ => {}
            }
        }
    }
}

pub struct Sniff<S> {
    inner: S,
    id: ClientId,
}

impl<S> Sniff<S> {
    pub fn new(inner: S, id: ClientId) -> Self {
        Sniff { inner, id }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniff<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                self.id.feed(new);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniff<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

    #[test]
    fn keeps_the_identification_line() {
        let cases: &[(&[&[u8]], &str)] = &[
            (&[b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n\x00\x00binary"], "SSH-2.0-OpenSSH_9.2p1 Debian"),
            (&[b"SSH-2.0-Op", b"enSSH_9.2\r", b"\nmore"], "SSH-2.0-OpenSSH_9.2"),
            (&[b"banner line\r\nSSH-2.0-x\r\n"], "SSH-2.0-x"),
            (&[b"SSH-2.0-evil\x1b[2J\r\n"], "SSH-2.0-evil[2J"),
            (&["SSH-2.0-rtl\u{202e}gnp.exe\r\n".as_bytes()], "SSH-2.0-rtlgnp.exe"),
            (&["SSH-2.0-\u{2066}iso\u{2069}\u{200f}\r\n".as_bytes()], "SSH-2.0-iso"),
            (&["SSH-2.0-c1\u{9b}2J\u{9d}0;x\u{7f}\r\n".as_bytes()], "SSH-2.0-c12J0;x"),
            (&["SSH-2.0-ünï\r\n".as_bytes()], "SSH-2.0-ünï"),
            (&[b"SSH-2.0-incomplete"], ""),
        ];
        for (chunks, want) in cases {
            let id = ClientId::default();
            for c in *chunks {
                id.feed(c);
            }
            assert_eq!(id.get(), *want);
        }
        let id = ClientId::default();
        let long = [b'A'; 1000];
        id.feed(b"SSH-2.0-");
        id.feed(&long);
        id.feed(b"\n");
        assert_eq!(id.get().len(), 255);
    }
}
