//! The SSH pre-auth stream sniffer (the client's identification line).
//!
//! Invariants: the bytes pass through unchanged; the captured line does not
//! depend on how the stream is cut into reads; it equals a plain reference
//! reading of RFC 4253 §4.2 (the first line starting with "SSH-", CR
//! removed, at most 255 bytes kept, control characters dropped); it never
//! holds a control character.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use portcullis::ssh::sniff::{ClientId, Sniff};
use tokio::io::{AsyncRead, ReadBuf};

/// A stream that hands out `data` in reads of the given sizes.
struct Chunks<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    n: usize,
}

impl AsyncRead for Chunks<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let size = match self.sizes.get(self.n % self.sizes.len().max(1)) {
            Some(&s) => usize::from(s).max(1),
            None => self.data.len(),
        };
        self.n += 1;
        let take = size.min(buf.remaining()).min(self.data.len());
        let data = self.data;
        let (now, later) = data.split_at(take);
        buf.put_slice(now);
        self.data = later;
        Poll::Ready(Ok(()))
    }
}

/// Reads everything through a sniffer, with a read buffer of `buf_len`.
fn sniff(data: &[u8], sizes: &[u8], buf_len: usize) -> (Vec<u8>, String) {
    let id = ClientId::default();
    let mut s = Sniff::new(Chunks { data, sizes, n: 0 }, id.clone());
    let mut cx = Context::from_waker(Waker::noop());
    let mut passed = Vec::new();
    let mut space = vec![0u8; buf_len];
    loop {
        let mut buf = ReadBuf::new(&mut space);
        match Pin::new(&mut s).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => break,
            Poll::Ready(Ok(())) => passed.extend_from_slice(buf.filled()),
            other => panic!("unexpected poll result {other:?}"),
        }
    }
    (passed, id.get())
}

/// RFC 4253 §4.2 read plainly.
fn reference(data: &[u8]) -> String {
    let mut line = Vec::new();
    for &b in data {
        match b {
            b'\n' if line.starts_with(b"SSH-") => {
                return String::from_utf8_lossy(&line).chars().filter(|c| !c.is_control()).collect();
            }
            b'\n' => line.clear(),
            b'\r' => {}
            _ if line.len() < 255 => line.push(b),
            _ => {}
        }
    }
    String::new()
}

fuzz_target!(|input: &[u8]| {
    // First byte: how many chunk sizes follow; then the sizes; then the stream.
    let Some((&k, rest)) = input.split_first() else { return };
    let k = usize::from(k % 16).min(rest.len());
    let (sizes, data) = rest.split_at(k);

    let (whole_passed, whole) = sniff(data, &[], data.len().max(1));
    let (cut_passed, cut) = sniff(data, sizes, 1 + (k * 37) % 64);
    let (byte_passed, bytewise) = sniff(data, &[1], 1);
    assert_eq!(whole_passed, data, "bytes changed on the way");
    assert_eq!(cut_passed, data, "bytes changed on the way (chunked)");
    assert_eq!(byte_passed, data, "bytes changed on the way (bytewise)");
    assert_eq!(whole, cut, "chunking {sizes:?} changed the captured line");
    assert_eq!(whole, bytewise, "reading byte by byte changed the captured line");
    assert_eq!(whole, reference(data), "differs from the reference reading");
    assert!(!whole.chars().any(char::is_control), "control character kept: {whole:?}");
    assert!(whole.is_empty() || whole.starts_with("SSH-"), "not an identification line: {whole:?}");
});
