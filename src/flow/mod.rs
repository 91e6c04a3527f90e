//! The terminal side of a session after login: the ENiGMA-style menu
//! engine (`engine`) over the menus of `menu.hjson` (`menu`), with art,
//! prompts, the account menu and doors. It talks to the user through the
//! `Terminal` trait, so SSH is one transport among possible others.

pub mod account;
pub mod ansi;
pub mod art;
pub mod door;
pub mod engine;
pub mod menu;
pub mod prompt;
pub mod session;
pub mod pager;
pub mod welcome;

use std::time::Duration;

/// What a transport offers the flow.
pub trait Terminal: Send {
    /// Writes bytes as they are (the caller has already turned `\n` into
    /// `\r\n` where a PTY needs it).
    fn write(&mut self, bytes: &[u8]) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
    /// The next chunk of input, `None` at end of input, or `Err` after
    /// `idle` with no input.
    fn read(&mut self, idle: Duration) -> impl std::future::Future<Output = Result<Option<Vec<u8>>, Idle>> + Send;
    /// Columns and rows.
    fn size(&self) -> (u32, u32);
    /// Whether the user types CP437 (the gate's own prompts decode it;
    /// doors get the bytes as typed).
    fn input_is_cp437(&self) -> bool {
        false
    }
    /// The session has now passed every factor it requires (the transport
    /// may stop treating it as a login in progress).
    fn fully_authenticated(&mut self) {}
}

#[derive(Debug, PartialEq, Eq)]
pub struct Idle;

/// How a flow ended, for the session row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    LoggedOff,
    IdleTimeout,
    Disconnected,
    PasswordChangeRequired,
    CodeRequired,
    DoorFailed,
    /// The current password was given wrong too often in the account menu.
    WrongCurrentPassword,
}

impl Ending {
    pub fn reason(&self) -> &'static str {
        match self {
            Ending::LoggedOff => "logged off",
            Ending::IdleTimeout => "idle timeout",
            Ending::Disconnected => "client disconnected",
            Ending::PasswordChangeRequired => "password change required",
            Ending::CodeRequired => "one-time code not given",
            Ending::DoorFailed => "door failed",
            Ending::WrongCurrentPassword => "current password given wrong too often",
        }
    }
}

/// Turns lone `\n` into `\r\n` for a terminal in raw mode.
pub fn crlf(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut prev = 0u8;
    for &b in text.as_bytes() {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}
