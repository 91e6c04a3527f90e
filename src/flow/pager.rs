//! Lists on the terminal: each row fitted to the width (long rows end in
//! "…", never wrap), shown a screen at a time with a `-- more --` prompt
//! (Enter or Space: the next screen; Q or Esc: stop), and counts in words
//! ("1 login", "2 logins").

use super::{crlf, Terminal};
use std::time::Duration;

/// How a paged list ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Paged {
    /// Every row was shown.
    All,
    /// The user pressed Q (or Esc) at a `-- more --`.
    Stopped,
    Idle,
    Closed,
}

const MORE: &str = "-- more -- (Enter: next page, Q: stop)";

/// `n` and the noun: "1 login", "2 logins".
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `line` cut to `width` characters, the last one "…" when it was longer.
pub fn fit(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let mut out: String = line.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `text` with every line longer than `width - 1` characters broken at
/// spaces (a word longer than a line is cut), the continuation lines
/// indented as their first line: messages are never clipped, and never
/// wrapped by the terminal mid-word. `\r\n` and `\n` both end lines; the
/// breaks added are `\n` (the caller's `crlf` or the line's own `\r\n`
/// style is kept by writing them back as the text had them).
pub fn wrap(text: &str, width: usize) -> String {
    let max = width.saturating_sub(1).max(10);
    let crlf = text.contains("\r\n");
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut out = Vec::new();
    for line in text.split(nl) {
        if line.chars().count() <= max {
            out.push(line.to_owned());
            continue;
        }
        let indent: String = line.chars().take_while(|c| *c == ' ').collect();
        let mut current = String::new();
        for word in line[indent.len()..].split(' ') {
            let candidate = if current.is_empty() { format!("{indent}{word}") } else { format!("{current} {word}") };
            if candidate.chars().count() <= max {
                current = candidate;
                continue;
            }
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            let mut rest = format!("{indent}{word}");
            while rest.chars().count() > max {
                let head: String = rest.chars().take(max).collect();
                rest = format!("{indent}{}", rest.chars().skip(max).collect::<String>());
                out.push(head);
            }
            current = rest;
        }
        out.push(current);
    }
    out.join(nl)
}

/// Shows `header` and then `rows`, each fitted to the terminal's width,
/// pausing every screen (the terminal's height less one line for the
/// prompt). Rows are plain text already escaped by the caller.
pub async fn show<T: Terminal>(term: &mut T, header: &str, rows: &[String], idle: Duration) -> std::io::Result<Paged> {
    let (cols, height) = term.size();
    // A client that sent no size (0) or an absurd one gets 80×24.
    let width = if (20..=1000).contains(&cols) { cols as usize } else { 80 };
    let height = if (5..=1000).contains(&height) { height as usize } else { 24 };
    let mut lines: Vec<String> = header.lines().map(|l| fit(l, width - 1)).collect();
    lines.extend(rows.iter().map(|r| fit(r, width - 1)));
    let per_screen = height - 1;
    let mut shown = 0;
    while shown < lines.len() {
        let end = (shown + per_screen).min(lines.len());
        let mut chunk = lines[shown..end].join("\n");
        chunk.push('\n');
        term.write(&crlf(&chunk)).await?;
        shown = end;
        if shown < lines.len() {
            term.write(MORE.as_bytes()).await?;
            let key = match term.read(idle).await {
                Err(_) => return Ok(Paged::Idle),
                Ok(None) => return Ok(Paged::Closed),
                Ok(Some(bytes)) => bytes,
            };
            // Back to the start of the prompt's line, and clear it.
            term.write(b"\r\x1b[K").await?;
            if key.first().is_some_and(|b| matches!(b, b'q' | b'Q' | 0x1b)) {
                return Ok(Paged::Stopped);
            }
        }
    }
    Ok(Paged::All)
}

#[cfg(test)]
mod tests {
    use super::super::prompt::tests::{block_on, Script};
    use super::*;

    #[test]
    fn rows_fit_and_counts_read() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("exactly10!", 10), "exactly10!");
        assert_eq!(fit("a bit too long", 10), "a bit too…");
        assert_eq!(fit("ååååååååååå", 5), "åååå…");
        assert_eq!(count(1, "login", "logins"), "1 login");
        assert_eq!(count(0, "login", "logins"), "0 logins");
        assert_eq!(count(2, "failure", "failures"), "2 failures");
    }

    #[test]
    fn long_messages_wrap_at_spaces() {
        let msg = "  T and a number trusts a device, U stops trusting it, R removes it (Enter for none): ";
        let w = wrap(msg, 40);
        assert_eq!(w, "  T and a number trusts a device, U\n  stops trusting it, R removes it\n  (Enter for none): ");
        assert!(w.lines().all(|l| l.chars().count() < 40), "{w:?}");
        assert_eq!(wrap("  short\n", 80), "  short\n");
        assert_eq!(wrap("  first line\r\n  a second line that is long enough to wrap", 30), "  first line\r\n  a second line that is long\r\n  enough to wrap");
        let long = format!("  {}", "x".repeat(45));
        // A word longer than a line is cut, each piece indented.
        assert_eq!(wrap(&long, 21), format!("  {}\n  {}\n  {}", "x".repeat(18), "x".repeat(18), "x".repeat(9)));
        // Every output line fits.
        for width in [20usize, 40, 80] {
            for l in wrap(&long, width).lines() {
                assert!(l.chars().count() < width, "{width}: {l:?}");
            }
        }
    }

    #[test]
    fn long_lists_page_at_the_terminal_height() {
        let rows: Vec<String> = (1..=50).map(|i| format!("row {i} {}", "x".repeat(100))).collect();
        // 80×24: 23 lines a screen (header + 22 rows), then the prompt.
        let mut t = Script::new(&[b" ", b"q"]);
        assert_eq!(block_on(show(&mut t, "  Header", &rows, Duration::from_secs(1))).unwrap(), Paged::Stopped);
        let text = t.text();
        assert_eq!(text.matches(MORE).count(), 2, "{text}");
        assert!(text.contains("row 22 ") && text.contains("row 45 ") && !text.contains("row 46 "), "{text}");
        for line in text.split("\r\n") {
            let visible = line.rsplit('\r').next().unwrap_or(line).replace("\x1b[K", "");
            assert!(visible.chars().count() < 80, "a line of {}: {visible:?}", visible.chars().count());
        }
        // Short lists need no prompt.
        let mut t = Script::new(&[]);
        assert_eq!(block_on(show(&mut t, "  Header", &rows[..3], Duration::from_secs(1))).unwrap(), Paged::All);
        assert!(!t.text().contains(MORE));
        // Enter through to the end.
        let mut t = Script::new(&[b"\r", b"\r"]);
        assert_eq!(block_on(show(&mut t, "  Header", &rows, Duration::from_secs(1))).unwrap(), Paged::All);
        assert!(t.text().contains("row 50 "));
    }
}
