//! Password spraying is one password tried against many accounts. The
//! login path cannot tell the detector the password, and nothing may keep
//! it; it tells it a tag instead: HMAC-SHA256 of the attempt under a key
//! made at process start (random, held only in this struct, never stored,
//! logged or sent anywhere), cut to 16 bytes. Equal attempts give equal
//! tags within one run of the daemon, and nothing else can be learnt from
//! a tag without the key. The key dies with the process, so spray state
//! does not survive a restart, and `security scan suspicious` (another
//! process, reading history) cannot see sprays at all: by design.
//!
//! Tags reach the detector over a bounded in-memory channel with
//! `try_send`: a login never waits for the detector; a tag that finds the
//! queue full is dropped and counted (`dropped`).

use crate::model::{Millis, Secret};
use hmac::{Hmac, KeyInit, Mac};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;

/// A keyed hash of one attempted password. Printing it shows nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PasswordTag(pub(crate) [u8; 16]);

impl std::fmt::Debug for PasswordTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordTag(<secret>)")
    }
}

/// A failed password attempt's tag and what pairs it with its
/// `login_failed` event: the event's time, address and username as stored.
#[derive(Debug)]
pub struct TagMessage {
    pub at: Millis,
    pub ip: String,
    pub username: String,
    pub tag: PasswordTag,
}

/// Makes tags (the key lives here only) and queues them for the detector.
pub struct Tagger {
    key: Option<Secret<[u8; 32]>>,
    tx: SyncSender<TagMessage>,
    rx: Mutex<Option<Receiver<TagMessage>>>,
    /// Set once a detector has taken the receiving end: before that (a CLI
    /// process) no tag is even computed.
    active: AtomicBool,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Tagger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tagger(<secret>)")
    }
}

impl Tagger {
    /// A fresh random key and a queue of `queue` tags.
    pub fn new(queue: usize) -> Tagger {
        let mut key = [0u8; 32];
        let key = match getrandom::fill(&mut key) {
            Ok(()) => Some(Secret::new(key)),
            Err(e) => {
                tracing::error!(error = %e, "no randomness for the password-spraying key; spraying is not detected");
                None
            }
        };
        Tagger::with_key(key, queue)
    }

    /// With a known key (tests only need equal tags for equal passwords).
    pub(crate) fn with_key(key: Option<Secret<[u8; 32]>>, queue: usize) -> Tagger {
        let (tx, rx) = sync_channel(queue.max(1));
        Tagger { key, tx, rx: Mutex::new(Some(rx)), active: AtomicBool::new(false), dropped: AtomicU64::new(0) }
    }

    /// The receiving end, once (for the detection thread).
    pub fn take_receiver(&self) -> Option<Receiver<TagMessage>> {
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if rx.is_some() {
            self.active.store(true, Ordering::Release);
        }
        rx
    }

    pub fn active(&self) -> bool {
        self.active.load(Ordering::Acquire) && self.key.is_some()
    }

    /// The tag of `password` (None without a key).
    pub fn tag(&self, password: &[u8]) -> Option<PasswordTag> {
        let key = self.key.as_ref()?;
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.expose()).ok()?;
        mac.update(password);
        let full = mac.finalize().into_bytes();
        let mut t = [0u8; 16];
        t.copy_from_slice(&full[..16]);
        Some(PasswordTag(t))
    }

    /// Tags a failed attempt and queues it without waiting; a full queue
    /// drops it (counted). Does nothing until a detector listens.
    pub fn offer(&self, password: &[u8], at: Millis, ip: String, username: String) {
        if !self.active() {
            return;
        }
        let Some(tag) = self.tag(password) else { return };
        match self.tx.try_send(TagMessage { at, ip, username, tag }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Tags dropped because the queue was full (or the detector gone).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_equal_for_equal_passwords_keyed_and_queued_without_waiting() {
        let t = Tagger::with_key(Some(Secret::new([7; 32])), 2);
        let other = Tagger::with_key(Some(Secret::new([8; 32])), 2);
        assert_eq!(t.tag(b"Summer2026!"), t.tag(b"Summer2026!"));
        assert_ne!(t.tag(b"Summer2026!"), t.tag(b"Summer2026?"));
        assert_ne!(t.tag(b"Summer2026!"), other.tag(b"Summer2026!"), "another key, another tag");
        assert_eq!(format!("{:?}", t.tag(b"x")), "Some(PasswordTag(<secret>))");
        assert_eq!(format!("{t:?}"), "Tagger(<secret>)");
        // Nobody listens: nothing is computed or queued.
        t.offer(b"p", Millis(1), "192.0.2.1".into(), "a".into());
        assert_eq!(t.dropped(), 0);
        let rx = t.take_receiver().expect("receiver");
        assert!(t.take_receiver().is_none(), "only once");
        for i in 0..5 {
            t.offer(b"p", Millis(i), "192.0.2.1".into(), format!("u{i}"));
        }
        // Two fit; three were dropped, none waited.
        assert_eq!(t.dropped(), 3);
        let got: Vec<String> = rx.try_iter().map(|m| m.username).collect();
        assert_eq!(got, vec!["u0", "u1"]);
        let none = Tagger::with_key(None, 2);
        let _rx = none.take_receiver();
        assert!(none.tag(b"x").is_none());
        none.offer(b"x", Millis(1), "192.0.2.1".into(), "a".into());
        assert_eq!(none.dropped(), 0);
    }
}
