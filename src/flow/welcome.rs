//! The welcome screen: art, the user's previous login, and `Q` to log off.

use super::{art, crlf, Ending, Terminal};
use crate::model::Millis;
use std::path::Path;
use std::time::Duration;

pub struct Welcome<'a> {
    pub username: &'a str,
    pub previous_login: Option<(Millis, String)>,
    pub art_dir: Option<&'a Path>,
    pub idle: Duration,
}

pub async fn run<T: Terminal>(term: &mut T, w: &Welcome<'_>) -> std::io::Result<Ending> {
    let mut screen = String::from("\x1b[2J\x1b[H");
    if let Some(a) = art::load(w.art_dir, "WELCOME") {
        screen.push_str(&a);
    }
    // Usernames are restricted to letters, digits and `_-.`; escaping
    // anyway keeps this safe should that rule ever loosen.
    let name = crate::model::escape_control(w.username);
    screen.push_str(&format!("\n  Welcome, {name}.\n"));
    match &w.previous_login {
        Some((at, ip)) => screen.push_str(&format!("  Last login: {} from {}\n", at.rfc3339(), crate::model::escape_control(ip))),
        None => screen.push_str("  This is your first login.\n"),
    }
    screen.push_str("\n  Press Q to log off.\n");
    term.write(&crlf(&screen)).await?;
    loop {
        match term.read(w.idle).await {
            Err(_) => {
                term.write(&crlf("\n  Idle too long: logging you off.\n")).await?;
                return Ok(Ending::IdleTimeout);
            }
            Ok(None) => return Ok(Ending::Disconnected),
            Ok(Some(bytes)) => {
                if bytes.iter().any(|b| matches!(b, b'q' | b'Q')) {
                    let bye = art::load(w.art_dir, "GOODBYE").unwrap_or_else(|| "\n  Goodbye.\n".into());
                    term.write(&crlf(&bye)).await?;
                    return Ok(Ending::LoggedOff);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A terminal fed from a script, recording what was written.
    struct Script {
        input: Vec<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Terminal for Script {
        async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            self.output.extend_from_slice(bytes);
            Ok(())
        }
        async fn read(&mut self, _idle: Duration) -> Result<Option<Vec<u8>>, super::super::Idle> {
            if self.input.is_empty() {
                Err(super::super::Idle)
            } else {
                Ok(Some(self.input.remove(0)))
            }
        }
        fn size(&self) -> (u32, u32) {
            (80, 24)
        }
    }

    fn check(input: &[&[u8]], previous: Option<(Millis, String)>, want_end: Ending, want_text: &[&str]) {
        let mut t = Script { input: input.iter().map(|b| b.to_vec()).collect(), output: Vec::new() };
        let w = Welcome { username: "alice", previous_login: previous, art_dir: None, idle: Duration::from_secs(1) };
        let end = futures_lite_block_on(run(&mut t, &w)).expect("run");
        assert_eq!(end, want_end);
        let text = String::from_utf8_lossy(&t.output);
        for want in want_text {
            assert!(text.contains(want), "missing {want:?} in {text:?}");
        }
        assert!(!text.replace("\r\n", "").contains('\n'), "bare newline in output");
    }

    fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    #[test]
    fn welcome_transcripts() {
        check(&[b"x", b"q"], None, Ending::LoggedOff, &["Welcome, alice.", "This is your first login.", "Press Q to log off.", "Farewell"]);
        check(
            &[b"Q"],
            Some((Millis(1_764_072_000_000), "127.0.0.1".into())),
            Ending::LoggedOff,
            &["Last login: 2025-11-25T12:00:00.000Z from 127.0.0.1"],
        );
        check(&[b"a"], None, Ending::IdleTimeout, &["Idle too long"]);
    }
}
