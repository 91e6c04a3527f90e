//! Web user agents (SPEC §9, "Web: the parsed user agent"): what a browser
//! says of itself, read with the `woothee` crate (Project Woothee's
//! dataset compiled into Rust: no data file, no start-up cost, its
//! patterns on the `regex` crate, which runs in linear time). The only
//! module that names `woothee` (tests/tidy.rs).
//!
//! Why woothee: the maintained uap family (`ua-parser`, last released
//! 2026) ships no data; it would mean vendoring uap-core's
//! `regexes.yaml` (210 KB, about 1,000 patterns, refreshed by hand), a
//! YAML loader, and 160 ms and 30 MB to build its matcher. `fast_uaparser`
//! downloads its data at build time and matches with backtracking
//! regexes; `uaparser` and `user-agent-parser` need the same external
//! file. woothee has not been released since 2021, but since Chrome's and
//! Firefox's user-agent reduction the strings it has to read no longer
//! change shape (only the major version moves), and the table below pins
//! what it answers for today's browsers: an upgrade that changes that
//! fails it.
//!
//! A web device's identity is the browser family, the system and the form
//! factor, never the version: browsers update every four weeks, and a
//! device that changed with each update would mail its owner a
//! "new device" notice every month. The name shows the major version last
//! seen ("Firefox 128 on Linux"). The identity is only what the browser
//! claims: anyone can send the same string, so it is a record of where a
//! link was used, never a credential (trusting a web device opens nothing).

use crate::model::strip_unsafe;
use sha2::Digest as _;

/// Longest user agent kept (bytes), in events and on the device.
pub const MAX_USER_AGENT: usize = 256;
/// Longest family or product name kept from a client's own text.
const MAX_PRODUCT: usize = 32;

/// A parsed user agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAgent {
    /// The user agent as stored: control and bidi characters removed, at
    /// most [`MAX_USER_AGENT`] bytes.
    pub raw: String,
    /// "Firefox", "Chrome", "Safari", "curl", "python-requests"; "unknown"
    /// when nothing could be read.
    pub family: String,
    /// The major version, digits only: "128".
    pub major: Option<String>,
    /// "Linux", "Windows", "macOS", "iPhone", "Android"; `None` when unknown.
    pub os: Option<String>,
    /// woothee's category: "pc", "smartphone", "mobilephone", "appliance",
    /// "crawler", "misc"; "unknown" otherwise.
    pub category: String,
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub fn truncate_bytes(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The leading digits of a version ("131.0.6778.73" → "131"), at most 6.
fn major_of(version: &str) -> Option<String> {
    let digits: String = version.chars().take_while(|c| c.is_ascii_digit()).take(6).collect();
    (!digits.is_empty()).then_some(digits)
}

/// The client's first product token ("python-requests/2.32.3" →
/// ("python-requests", Some("2"))), kept only when it is made of letters,
/// digits and `-._` (anything else is not shown).
fn product_token(ua: &str) -> Option<(String, Option<String>)> {
    let token = ua.split([' ', '(']).next().unwrap_or("");
    let (name, version) = token.split_once('/').unwrap_or((token, ""));
    let ok = !name.is_empty() && name.len() <= MAX_PRODUCT && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    ok.then(|| (name.to_owned(), major_of(version)))
}

/// woothee's system names, as we show them. Windows 11 says "Windows NT
/// 10.0" like 10, and every macOS browser says 10.15.7, so no version.
fn os_name(os: &str) -> Option<String> {
    let name = match os {
        "UNKNOWN" | "" => return None,
        o if o.starts_with("Windows Phone") => "Windows Phone",
        o if o.starts_with("Windows") => "Windows",
        "Mac OSX" | "Mac" => "macOS",
        "iPhone" | "iPad" | "iPod" | "Android" | "Linux" | "ChromeOS" | "BSD" => os,
        other => return Some(strip_unsafe(truncate_bytes(other, MAX_PRODUCT))),
    };
    Some(name.to_owned())
}

impl UserAgent {
    /// Reads a `User-Agent` header's value (`None`: no header).
    pub fn parse(header: Option<&str>) -> UserAgent {
        let cleaned = strip_unsafe(header.unwrap_or(""));
        let raw = truncate_bytes(cleaned.trim(), MAX_USER_AGENT).to_owned();
        let parsed = woothee::parser::Parser::new().parse(&raw);
        let unknown = |category: &str| {
            let (family, major) = match product_token(&raw) {
                // Mozilla/5.0 is every browser's prefix: not a name.
                Some((name, _)) if name.eq_ignore_ascii_case("mozilla") => ("unknown browser".to_owned(), None),
                Some(x) => x,
                None => ("unknown".to_owned(), None),
            };
            (family, major, category.to_owned())
        };
        let (family, major, os, category) = match &parsed {
            Some(r) if r.name == "HTTP Library" => {
                // woothee names the library in `version` ("curl", "wget",
                // "Java"); its version (and spelling) is the client's token.
                let family = strip_unsafe(truncate_bytes(r.version, MAX_PRODUCT));
                match product_token(&raw) {
                    Some((name, major)) if name.eq_ignore_ascii_case(&family) => (name, major, None, r.category.to_owned()),
                    _ => (family, None, None, r.category.to_owned()),
                }
            }
            Some(r) if r.name != "UNKNOWN" => {
                let family = strip_unsafe(truncate_bytes(r.name, MAX_PRODUCT));
                let category = if r.category == "UNKNOWN" { "unknown" } else { r.category };
                (family, major_of(r.version), os_name(r.os), category.to_owned())
            }
            Some(r) => {
                let (family, major, category) = unknown(if r.category == "UNKNOWN" { "unknown" } else { r.category });
                (family, major, os_name(r.os), category)
            }
            None => {
                let (family, major, category) = unknown("unknown");
                (family, major, None, category)
            }
        };
        UserAgent { raw, family, major, os, category }
    }

    /// "Firefox 128 on Linux", "curl 8", "unknown web client".
    pub fn name(&self) -> String {
        let mut name = if self.family == "unknown" { "unknown web client".to_owned() } else { self.family.clone() };
        if let Some(m) = &self.major {
            name.push(' ');
            name.push_str(m);
        }
        if let Some(os) = &self.os {
            name.push_str(" on ");
            name.push_str(os);
        }
        name
    }

    /// The device's key among the account's devices: SHA-256 over the
    /// family, the system and the category (each with its length), in a
    /// namespace of its own so it never equals an SSH device's.
    pub fn fingerprint(&self) -> String {
        let mut h = sha2::Sha256::new();
        h.update(b"portcullis web device v1");
        for part in [self.family.as_str(), self.os.as_deref().unwrap_or(""), self.category.as_str()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Current user agents (as the browsers sent them in late 2024 to
    /// 2026) and what the gate makes of them.
    #[test]
    fn names_and_identities_of_user_agents() {
        // (user agent, name, family, category)
        let cases: &[(Option<&str>, &str, &str, &str)] = &[
            (Some("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"), "Firefox 128 on Linux", "Firefox", "pc"),
            (Some("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"), "Firefox 133 on Linux", "Firefox", "pc"),
            (Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"), "Firefox 133 on Windows", "Firefox", "pc"),
            (Some("Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:133.0) Gecko/20100101 Firefox/133.0"), "Firefox 133 on macOS", "Firefox", "pc"),
            (Some("Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0"), "Firefox 133 on Android", "Firefox", "smartphone"),
            (Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"), "Chrome 131 on Windows", "Chrome", "pc"),
            (Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"), "Chrome 131 on Linux", "Chrome", "pc"),
            (Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36"), "Chrome 131 on Linux", "Chrome", "pc"),
            (Some("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"), "Chrome 131 on macOS", "Chrome", "pc"),
            (Some("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36"), "Chrome 131 on Android", "Chrome", "smartphone"),
            (Some("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"), "Chrome 131 on ChromeOS", "Chrome", "pc"),
            (Some("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1"), "Chrome 131 on iPhone", "Chrome", "smartphone"),
            (Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.70"), "Edge 131 on Windows", "Edge", "pc"),
            (Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0"), "Opera 115 on Windows", "Opera", "pc"),
            (Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Vivaldi/7.0.3495.18"), "Vivaldi 7 on Windows", "Vivaldi", "pc"),
            (Some("Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36"), "SamsungBrowser 26 on Android", "SamsungBrowser", "smartphone"),
            (Some("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15"), "Safari 18 on macOS", "Safari", "pc"),
            (Some("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"), "Safari 18 on iPhone", "Safari", "smartphone"),
            (Some("Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"), "Safari 18 on iPad", "Safari", "smartphone"),
            (Some("curl/8.14.1"), "curl 8", "curl", "misc"),
            (Some("Wget/1.21.3"), "Wget 1", "Wget", "misc"),
            (Some("Java/17.0.2"), "Java 17", "Java", "misc"),
            (Some("python-requests/2.32.3"), "python-requests 2", "python-requests", "unknown"),
            (Some("Go-http-client/1.1"), "Go-http-client 1", "Go-http-client", "unknown"),
            (Some("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"), "Googlebot", "Googlebot", "crawler"),
            (Some("Mozilla/5.0 (X11; Linux) Test/1.0"), "unknown browser on Linux", "unknown browser", "pc"),
            (Some(""), "unknown web client", "unknown", "unknown"),
            (Some("   "), "unknown web client", "unknown", "unknown"),
            (None, "unknown web client", "unknown", "unknown"),
            // Hostile: escapes, bidi overrides and C1 controls never reach a name.
            (Some("\u{1b}[2J\u{202e}evil/1.0"), "unknown web client", "unknown", "unknown"),
            (Some("evil\u{9b}2J\u{202e}/6.6"), "evil2J 6", "evil2J", "unknown"),
            (Some("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\u{1b}[2J\u{2066}"), "Firefox 128 on Linux", "Firefox", "pc"),
            (Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/99999999999999999999.0 Safari/537.36"), "Chrome 999999 on Linux", "Chrome", "pc"),
            (Some("<script>alert(1)</script>/1"), "unknown web client", "unknown", "unknown"),
        ];
        for (ua, name, family, category) in cases {
            let parsed = UserAgent::parse(*ua);
            assert_eq!((parsed.name().as_str(), parsed.family.as_str(), parsed.category.as_str()), (*name, *family, *category), "{ua:?}");
            assert!(!parsed.raw.chars().any(crate::model::is_terminal_unsafe), "{ua:?} stored as {:?}", parsed.raw);
        }
    }

    /// Another minor or major version is the same device; another browser,
    /// system or form factor is another one.
    #[test]
    fn identity_is_family_system_and_form_not_version() {
        let fp = |ua: &str| UserAgent::parse(Some(ua)).fingerprint();
        let firefox = |v: &str, os: &str| fp(&format!("Mozilla/5.0 ({os}; rv:{v}) Gecko/20100101 Firefox/{v}"));
        let a = firefox("128.0", "X11; Linux x86_64");
        assert_eq!(a.len(), 32);
        assert_eq!(a, firefox("128.5.1", "X11; Linux x86_64"), "a minor update");
        assert_eq!(a, firefox("133.0", "X11; Linux x86_64"), "a major update");
        assert_eq!(a, firefox("133.0", "X11; Ubuntu; Linux x86_64"), "the same system named more closely");
        let others = [
            firefox("128.0", "Windows NT 10.0; Win64; x64"),
            fp("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
            fp("Mozilla/5.0 (Android 14; Mobile; rv:128.0) Gecko/128.0 Firefox/128.0"),
            fp("curl/8.14.1"),
            fp(""),
        ];
        for (i, x) in others.iter().enumerate() {
            assert_ne!(&a, x, "case {i}");
            for y in &others[i + 1..] {
                assert_ne!(x, y);
            }
        }
        assert_eq!(fp("curl/8.14.1"), fp("curl/7.88.1"));
        // Never an SSH device's key: another namespace and shape of input.
        let ssh = super::super::devices::DeviceIdentity { client_version: "curl", hassh: None, key_fingerprint: None }.fingerprint();
        assert_ne!(fp("curl/8.14.1"), ssh);
    }

    /// Stored bounded, at a character boundary, control characters gone.
    #[test]
    fn long_and_hostile_agents_are_bounded() {
        let long = format!("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0 {}", "é".repeat(400));
        let ua = UserAgent::parse(Some(&long));
        assert!(ua.raw.len() <= MAX_USER_AGENT && ua.raw.len() >= MAX_USER_AGENT - 1, "{}", ua.raw.len());
        assert!(long.starts_with(&ua.raw));
        assert_eq!(ua.name(), "Firefox 128 on Linux");
        let junk = format!("{}/1.0", "A".repeat(5000));
        let ua = UserAgent::parse(Some(&junk));
        assert_eq!(ua.raw.len(), MAX_USER_AGENT);
        assert_eq!(ua.name(), "unknown web client", "a product name longer than {MAX_PRODUCT} is not shown");
        assert!(UserAgent::parse(Some(&"(".repeat(10_000))).name().len() < 40);
    }
}
