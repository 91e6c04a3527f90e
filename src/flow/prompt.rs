//! Line input on a raw terminal: printable characters are collected (and
//! echoed unless hidden), backspace edits, Enter ends, Esc / Ctrl-C /
//! Ctrl-D cancel. Control characters are never echoed.

use super::{Idle, Terminal};
use std::time::Duration;

#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Text(String),
    Cancelled,
    Idle,
    Closed,
}

/// Longest line accepted, in bytes (passwords over 1 KiB are refused
/// anyway, before any hashing).
pub const MAX_LINE: usize = 1024;

/// `read_line` for a visible answer of a logged-in user: the line is also
/// handed to `core` (`Core::prompt_input`), which records injection-looking
/// text as a `suspicious_input` event. `name` says which prompt. Never for
/// hidden input (a password is never looked at, nor stored).
pub async fn read_visible_line<T: Terminal>(s: &super::session::Session<'_>, term: &mut T, prompt: &str, name: &str) -> std::io::Result<Line> {
    let line = read_line(term, prompt, false, s.idle).await?;
    if let Line::Text(text) = &line {
        s.core.prompt_input(&s.auth.user, s.auth.session_id, s.ip, name, text, crate::model::Millis::now()).await;
    }
    Ok(line)
}

pub async fn read_line<T: Terminal>(term: &mut T, prompt: &str, hidden: bool, idle: Duration) -> std::io::Result<Line> {
    term.write(prompt.as_bytes()).await?;
    let mut line = String::new();
    // Bytes of a UTF-8 character not yet complete.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let chunk = match term.read(idle).await {
            Err(Idle) => return Ok(Line::Idle),
            Ok(None) => return Ok(Line::Closed),
            Ok(Some(c)) if term.input_is_cp437() && c.iter().any(|b| *b >= 0x80) => super::ansi::cp437_to_utf8(&c).into_bytes(),
            Ok(Some(c)) => c,
        };
        for &b in &chunk {
            if !pending.is_empty() || b >= 0x80 {
                pending.push(b);
                match std::str::from_utf8(&pending) {
                    Ok(s) => {
                        let c = s.chars().next().unwrap_or('\u{fffd}');
                        pending.clear();
                        // C1 controls and other invisible controls are dropped.
                        if !c.is_control() && line.len() + c.len_utf8() <= MAX_LINE {
                            line.push(c);
                            if !hidden {
                                term.write(c.to_string().as_bytes()).await?;
                            }
                        }
                    }
                    Err(e) if e.error_len().is_some() || pending.len() >= 4 => {
                        // Not UTF-8: the whole line is refused rather than guessed at.
                        term.write(b"\r\n").await?;
                        return Ok(Line::Cancelled);
                    }
                    Err(_) => {}
                }
                continue;
            }
            match b {
                b'\r' | b'\n' => {
                    term.write(b"\r\n").await?;
                    return Ok(Line::Text(line));
                }
                0x1b | 0x03 | 0x04 => {
                    term.write(b"\r\n").await?;
                    return Ok(Line::Cancelled);
                }
                0x7f | 0x08 => {
                    if line.pop().is_some() && !hidden {
                        term.write(b"\x08 \x08").await?;
                    }
                }
                b if b < 0x20 => {}
                b => {
                    if line.len() < MAX_LINE {
                        line.push(b as char);
                        if !hidden {
                            term.write(&[b]).await?;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A terminal fed from a script, recording what was written.
    pub struct Script {
        pub input: Vec<Vec<u8>>,
        pub output: Vec<u8>,
    }

    impl Script {
        pub fn new(input: &[&[u8]]) -> Script {
            Script { input: input.iter().map(|b| b.to_vec()).collect(), output: Vec::new() }
        }
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.output).into_owned()
        }
    }

    impl Terminal for Script {
        async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            self.output.extend_from_slice(bytes);
            Ok(())
        }
        async fn read(&mut self, _idle: Duration) -> Result<Option<Vec<u8>>, Idle> {
            if self.input.is_empty() {
                Err(Idle)
            } else {
                Ok(Some(self.input.remove(0)))
            }
        }
        fn size(&self) -> (u32, u32) {
            (80, 24)
        }
    }

    pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
    }

    #[test]
    fn line_editing() {
        let cases: &[(&[&[u8]], bool, Line, &str)] = &[
            (&[b"abc\r"], false, Line::Text("abc".into()), "> abc\r\n"),
            (&[b"ab", b"c\x7fd\r"], false, Line::Text("abd".into()), "> abc\x08 \x08d\r\n"),
            (&[b"secret\r"], true, Line::Text("secret".into()), "> \r\n"),
            (&[b"x\x1b[A"], false, Line::Cancelled, "> x\r\n"),
            (&[b"a\x01\x02b\n"], false, Line::Text("ab".into()), "> ab\r\n"),
            (&["é\x7fe\r".as_bytes()], true, Line::Text("e".into()), "> \r\n"),
            (&[b"\xff\r"], true, Line::Cancelled, "> \r\n"),
            (&["a\u{9b}31mb\r".as_bytes()], false, Line::Text("a31mb".into()), "> a31mb\r\n"),
            (&[b"na\xc3", b"\xafve\r"], false, Line::Text("na\u{ef}ve".into()), "> na\u{ef}ve\r\n"),
            (&[b"abc"], false, Line::Idle, "> abc"),
        ];
        for (input, hidden, want, screen) in cases {
            let mut t = Script::new(input);
            let got = block_on(read_line(&mut t, "> ", *hidden, Duration::from_secs(1))).expect("read");
            assert_eq!(&got, want, "input {input:?}");
            assert_eq!(t.text(), *screen, "input {input:?}");
        }
    }
}
