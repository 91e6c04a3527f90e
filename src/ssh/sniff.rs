//! A stream wrapper that keeps what the client says of itself in the clear
//! as it passes, before russh exposes a session: its identification line
//! (the "SSH-2.0-..." version string) and the HASSH of its first
//! SSH_MSG_KEXINIT (RFC 4253 §7.1), which follows the line unencrypted.
//!
//! Bounded: at most 255 bytes of the line are kept (RFC 4253 §4.2) and at
//! most `MAX_KEXINIT_PACKET` bytes of the first packet; nothing is kept
//! after it. A first packet that is larger, malformed, or not a KEXINIT
//! gives no HASSH (the device's HASSH is then unknown); the bytes pass on
//! to russh unchanged either way.

use crate::core::devices::Hassh;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest first packet read for its KEXINIT (packet_length and the
/// packet). OpenSSH 9.2's is 1,560 bytes; RFC 4253 §6.1 has every
/// implementation accept 35,000, so a client may send more, but a KEXINIT
/// holds only name-lists, and a bigger one is refused here rather than
/// buffered.
pub const MAX_KEXINIT_PACKET: usize = 16 * 1024;

/// SSH_MSG_KEXINIT (RFC 4253 §12).
const MSG_KEXINIT: u8 = 20;

#[derive(Default)]
enum Kex {
    /// Collecting the first packet (in `Capture::packet`).
    #[default]
    Reading,
    /// Read, or given up on (`None`).
    Done(Option<Hassh>),
}

#[derive(Default)]
struct Capture {
    line: Vec<u8>,
    done: bool,
    /// The first binary packet as it arrives, up to its length.
    packet: Vec<u8>,
    kex: Kex,
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

    /// The HASSH of the client's first KEXINIT, once it has been read;
    /// `None` before, or when the first packet was not a readable KEXINIT.
    pub fn hassh(&self) -> Option<Hassh> {
        let c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match &c.kex {
            Kex::Done(h) => h.clone(),
            Kex::Reading => None,
        }
    }

    fn feed(&self, bytes: &[u8]) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut rest: &[u8] = bytes;
        if !c.done {
            rest = &[];
            for (i, &b) in bytes.iter().enumerate() {
                match b {
                    b'\n' => {
                        // Lines before the "SSH-" line are not the identification.
                        if c.line.starts_with(b"SSH-") {
                            c.done = true;
                            rest = &bytes[i + 1..];
                            break;
                        }
                        c.line.clear();
                    }
                    b'\r' => {}
                    _ if c.line.len() < 255 => c.line.push(b),
                    _ => {}
                }
            }
        }
        if !rest.is_empty() {
            c.feed_packet(rest);
        }
    }
}

impl Capture {
    /// Collects the first binary packet (RFC 4253 §6: uint32
    /// packet_length, then that many bytes; no MAC before the first key
    /// exchange) and reads its KEXINIT once it is whole.
    fn feed_packet(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && matches!(self.kex, Kex::Reading) {
            let need = if self.packet.len() < 4 {
                4
            } else {
                let length = u32::from_be_bytes([self.packet[0], self.packet[1], self.packet[2], self.packet[3]]) as usize;
                if length == 0 || length > MAX_KEXINIT_PACKET - 4 {
                    self.finish(None);
                    return;
                }
                4 + length
            };
            let take = (need - self.packet.len()).min(bytes.len());
            // Never more room than the packet needs.
            self.packet.reserve_exact(take);
            self.packet.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if need > 4 && self.packet.len() == need {
                let hassh = kexinit_lists(&self.packet).map(|l| Hassh::of(l.kex, l.encryption, l.mac, l.compression));
                self.finish(hassh);
            }
        }
    }

    fn finish(&mut self, hassh: Option<Hassh>) {
        self.kex = Kex::Done(hassh);
        self.packet = Vec::new();
    }
}

/// The four client-to-server lists HASSH uses, as sent.
#[derive(Debug, PartialEq, Eq)]
pub struct KexLists<'a> {
    pub kex: &'a [u8],
    pub encryption: &'a [u8],
    pub mac: &'a [u8],
    pub compression: &'a [u8],
}

/// Reads a whole unencrypted packet (`packet_length` included) as a
/// KEXINIT (RFC 4253 §7.1): byte 20, a 16-byte cookie, then ten
/// name-lists (kex, host key, encryption c→s and s→c, MAC c→s and s→c,
/// compression c→s and s→c, languages c→s and s→c), a boolean and a
/// reserved uint32. `None` for anything else. Every length is checked
/// against what is there; nothing is allocated.
pub fn kexinit_lists(packet: &[u8]) -> Option<KexLists<'_>> {
    let length = u32::from_be_bytes(packet.get(..4)?.try_into().ok()?) as usize;
    let body = packet.get(4..)?;
    if body.len() != length {
        return None;
    }
    let padding = *body.first()? as usize;
    // payload = packet_length - padding_length - 1 bytes after the padding length.
    let payload_len = length.checked_sub(padding)?.checked_sub(1)?;
    let payload = body.get(1..1 + payload_len)?;
    if payload.first() != Some(&MSG_KEXINIT) {
        return None;
    }
    let mut rest = payload.get(17..)?;
    let mut lists: [&[u8]; 10] = [&[]; 10];
    for list in &mut lists {
        let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        *list = rest.get(4..4usize.checked_add(n)?)?;
        rest = &rest[4 + n..];
    }
    // first_kex_packet_follows and the reserved uint32.
    if rest.len() < 5 {
        return None;
    }
    Some(KexLists { kex: lists[0], encryption: lists[2], mac: lists[4], compression: lists[6] })
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

    /// A capture (`testdata/*.hex`: hex, `#` comment lines).
    fn capture(text: &str) -> Vec<u8> {
        let hex: String = text.lines().filter(|l| !l.starts_with('#')).collect::<String>();
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
    }

    const DEFAULT: &str = include_str!("testdata/openssh-9.2p1-default.hex");
    const PINNED: &str = include_str!("testdata/openssh-9.2p1-pinned.hex");

    /// The HASSH of real OpenSSH 9.2p1 offers (checked against an
    /// independent reading of the same bytes with Python's hashlib), and
    /// the same value however the stream is cut into reads.
    #[test]
    fn hassh_of_a_real_openssh_kexinit() {
        let cases = [
            (
                DEFAULT,
                "472b5de333ad665af5cbf10ff892c4df",
                "sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group14-sha256,ext-info-c,kex-strict-c-v00@openssh.com;chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com;umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha1-etm@openssh.com,umac-64@openssh.com,umac-128@openssh.com,hmac-sha2-256,hmac-sha2-512,hmac-sha1;none,zlib@openssh.com,zlib",
            ),
            (
                PINNED,
                "792583c412f27ef0a20e044bfbff54ac",
                "curve25519-sha256,ext-info-c,kex-strict-c-v00@openssh.com;aes256-gcm@openssh.com;umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha1-etm@openssh.com,umac-64@openssh.com,umac-128@openssh.com,hmac-sha2-256,hmac-sha2-512,hmac-sha1;none,zlib@openssh.com,zlib",
            ),
        ];
        for (text, hash, algorithms) in cases {
            let stream = capture(text);
            let whole = ClientId::default();
            whole.feed(&stream);
            assert_eq!(whole.get(), "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10");
            let h = whole.hassh().expect("a hassh");
            assert_eq!((h.hash.as_str(), h.algorithms.as_str()), (hash, algorithms));
            // Cut anywhere, or byte by byte: the same.
            for cut in (0..stream.len()).step_by(7).chain([40, 41, 42, 44, 45, 46, stream.len() - 1]) {
                let id = ClientId::default();
                id.feed(&stream[..cut]);
                id.feed(&stream[cut..]);
                assert_eq!(id.hassh().as_ref(), Some(&h), "cut at {cut}");
            }
            let id = ClientId::default();
            for b in &stream {
                id.feed(std::slice::from_ref(b));
            }
            assert_eq!(id.hassh().as_ref(), Some(&h), "byte by byte");
            // What follows the packet is never read (the next packets are encrypted).
            let id = ClientId::default();
            id.feed(&stream);
            id.feed(&[0xff; 100_000]);
            assert_eq!(id.hassh().as_ref(), Some(&h));
        }
    }

    /// A packet built from its payload (padding of `pad` bytes).
    fn packet(payload: &[u8], pad: u8) -> Vec<u8> {
        let length = (payload.len() + 1 + pad as usize) as u32;
        let mut p = length.to_be_bytes().to_vec();
        p.push(pad);
        p.extend_from_slice(payload);
        p.extend(std::iter::repeat_n(0u8, pad as usize));
        p
    }

    fn kexinit(lists: &[&[u8]], trailer: &[u8]) -> Vec<u8> {
        let mut payload = vec![MSG_KEXINIT];
        payload.extend_from_slice(&[7u8; 16]);
        for l in lists {
            payload.extend_from_slice(&(l.len() as u32).to_be_bytes());
            payload.extend_from_slice(l);
        }
        payload.extend_from_slice(trailer);
        payload
    }

    /// Hostile and malformed first packets: no HASSH, no panic, nothing
    /// buffered past the bound; the version line is kept either way.
    #[test]
    fn malformed_first_packets_give_no_hassh() {
        let ten: Vec<&[u8]> = vec![b"k", b"h", b"e", b"e2", b"m", b"m2", b"c", b"c2", b"", b""];
        let good = kexinit(&ten, &[0, 0, 0, 0, 0]);
        let huge_list = {
            let mut p = vec![MSG_KEXINIT];
            p.extend_from_slice(&[0u8; 16]);
            p.extend_from_slice(&u32::MAX.to_be_bytes());
            p.extend_from_slice(b"short");
            p
        };
        let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
            ("well formed", packet(&good, 4), Some("k;e;m;c")),
            ("no padding", packet(&good, 0), Some("k;e;m;c")),
            ("not a KEXINIT (msg 21)", packet(&[&[21u8][..], &good[1..]].concat(), 4), None),
            ("a name-list longer than the packet", packet(&huge_list, 4), None),
            ("nine name-lists", packet(&kexinit(&ten[..9], &[0, 0, 0, 0, 0]), 4), None),
            ("no trailer", packet(&kexinit(&ten, &[]), 4), None),
            ("cookie cut short", packet(&[MSG_KEXINIT, 1, 2, 3], 4), None),
            ("empty payload", packet(&[], 4), None),
            ("padding longer than the packet", {
                let mut p = packet(&good, 4);
                p[4] = 255;
                p
            }, None),
            ("packet_length 0", vec![0, 0, 0, 0, 0xff, 0xff], None),
            ("packet_length over the bound", [&(MAX_KEXINIT_PACKET as u32).to_be_bytes()[..], &[4u8; 64][..]].concat(), None),
            ("packet_length 4 GiB", [&u32::MAX.to_be_bytes()[..], &[4u8; 64][..]].concat(), None),
        ];
        for (what, bytes, want) in &cases {
            let id = ClientId::default();
            id.feed(b"SSH-2.0-x\r\n");
            id.feed(bytes);
            id.feed(&[0u8; 64]);
            assert_eq!(id.get(), "SSH-2.0-x", "{what}");
            assert_eq!(id.hassh().map(|h| h.algorithms), want.map(str::to_owned), "{what}");
            let c = id.0.lock().expect("lock");
            assert!(c.packet.capacity() <= MAX_KEXINIT_PACKET, "{what}: {} bytes held", c.packet.capacity());
        }
        // The largest packet read is read; one byte more is not.
        let filler = vec![b'a'; MAX_KEXINIT_PACKET - 4 - 1 - 4 - good.len()];
        let mut lists = ten.clone();
        lists[8] = &filler;
        let big = packet(&kexinit(&lists, &[0, 0, 0, 0, 0]), 4);
        assert_eq!(big.len(), MAX_KEXINIT_PACKET);
        for (bytes, readable) in [(big.clone(), true), (packet(&[&kexinit(&lists, &[0, 0, 0, 0, 0])[..], b"!"].concat(), 4), false)] {
            let id = ClientId::default();
            id.feed(b"SSH-2.0-x\n");
            id.feed(&bytes);
            assert_eq!(id.hassh().is_some(), readable, "{} bytes", bytes.len());
        }
        // Nothing before the line ends is a packet; an unfinished packet is no HASSH yet.
        let id = ClientId::default();
        id.feed(&packet(&good, 4));
        assert_eq!(id.hassh(), None);
        let id = ClientId::default();
        id.feed(b"SSH-2.0-x\n");
        let p = packet(&good, 4);
        id.feed(&p[..p.len() - 1]);
        assert_eq!(id.hassh(), None);
        id.feed(&p[p.len() - 1..]);
        assert_eq!(id.hassh().map(|h| h.algorithms).as_deref(), Some("k;e;m;c"));
    }
}
