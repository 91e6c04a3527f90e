//! Reading a password: the first line of standard input, or from the
//! terminal with echo turned off.

use crate::model::Secret;
use anyhow::{bail, Context as _};
use std::io::{BufRead, IsTerminal, Write};

/// Reads at most 4 KiB; the trailing newline is removed.
pub fn from_stdin() -> anyhow::Result<Secret<String>> {
    let mut line = String::new();
    std::io::stdin().lock().take_limited(4096).read_line(&mut line).context("reading the password from standard input")?;
    let trimmed = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line);
    if trimmed.is_empty() {
        bail!("no password on standard input");
    }
    Ok(Secret::new(trimmed.to_owned()))
}

trait TakeLimited: BufRead + Sized {
    fn take_limited(self, n: u64) -> std::io::Take<Self> {
        std::io::Read::take(self, n)
    }
}
impl<T: BufRead> TakeLimited for T {}

pub fn from_terminal(prompt: &str, again: &str) -> anyhow::Result<Secret<String>> {
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to read the password from: use --password-stdin");
    }
    let first = read_hidden(prompt)?;
    let second = read_hidden(again)?;
    if first.expose() != second.expose() {
        bail!("the two passwords differ");
    }
    Ok(first)
}

fn read_hidden(prompt: &str) -> anyhow::Result<Secret<String>> {
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a valid fd.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut term) } != 0 {
        bail!("cannot read terminal settings");
    }
    let saved = term;
    term.c_lflag &= !libc::ECHO;
    term.c_lflag |= libc::ECHONL;
    // SAFETY: a termios value obtained from tcgetattr, modified in flags only.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) };
    let result = from_stdin();
    // SAFETY: restoring the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    result
}
