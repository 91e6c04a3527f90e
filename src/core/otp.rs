//! One-time codes: HOTP (RFC 4226) and TOTP (RFC 6238) with SHA-1, SHA-256
//! or SHA-512, and the rules around them: a window of ±1 TOTP step or a
//! HOTP look-ahead, burnt steps and counters (no replay), constant-time
//! comparison of the digits.

use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;

pub use crate::model::OtpAlgorithm as Algorithm;

fn mac(alg: Algorithm, key: &[u8], msg: &[u8]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length.
        let mut m = <M as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!("hmac takes any key length"));
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    }
    match alg {
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, msg),
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, msg),
        Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, msg),
    }
}

/// The HOTP value for `counter`, as a zero-padded string of `digits`.
pub fn hotp(alg: Algorithm, secret: &[u8], counter: u64, digits: u32) -> String {
    let h = mac(alg, secret, &counter.to_be_bytes());
    let offset = (h[h.len() - 1] & 0x0f) as usize;
    let bin = u32::from_be_bytes([h[offset] & 0x7f, h[offset + 1], h[offset + 2], h[offset + 3]]);
    let value = bin % 10u32.pow(digits);
    format!("{value:0width$}", width = digits as usize)
}

/// The TOTP time step of a Unix time.
pub fn step_of(unix_secs: i64, period: u64) -> u64 {
    (unix_secs.max(0) as u64) / period
}

fn same_code(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A typed code, cleaned of spaces and dashes; `None` unless it is exactly
/// `digits` ASCII digits afterwards.
pub fn clean_code(input: &str, digits: u32) -> Option<String> {
    let c: String = input.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    (c.len() == digits as usize && c.bytes().all(|b| b.is_ascii_digit())).then_some(c)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Accepted at this TOTP step or HOTP counter; store it as used.
    Accepted(u64),
    /// The code was right but its step or counter was already used.
    Replay,
    Wrong,
}

/// Checks a TOTP code at `step` ±`skew`. `last_used` is the newest step
/// already accepted for this secret; it and older steps are refused.
pub fn check_totp(alg: Algorithm, secret: &[u8], digits: u32, code: &str, step: u64, skew: u64, last_used: Option<u64>) -> Check {
    let mut found = None;
    // Every candidate is computed and compared, so timing does not depend
    // on which step matched.
    for s in step.saturating_sub(skew)..=step + skew {
        if same_code(&hotp(alg, secret, s, digits), code) && found.is_none() {
            found = Some(s);
        }
    }
    match found {
        Some(s) if last_used.is_some_and(|u| s <= u) => Check::Replay,
        Some(s) => Check::Accepted(s),
        None => Check::Wrong,
    }
}

/// Checks a HOTP code against counters `next ..= next + lookahead`. On
/// success the stored next counter becomes the accepted one plus 1
/// (resynchronising a token that ran ahead). A code matching a counter
/// below `next` (already used) is a replay.
pub fn check_hotp(alg: Algorithm, secret: &[u8], digits: u32, code: &str, next: u64, lookahead: u64) -> Check {
    let mut found = None;
    for c in next..=next + lookahead {
        if same_code(&hotp(alg, secret, c, digits), code) && found.is_none() {
            found = Some(c);
        }
    }
    if let Some(c) = found {
        return Check::Accepted(c);
    }
    let mut replay = false;
    for c in next.saturating_sub(lookahead)..next {
        replay |= same_code(&hotp(alg, secret, c, digits), code);
    }
    if replay {
        Check::Replay
    } else {
        Check::Wrong
    }
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding, as authenticator apps expect.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            out.push(BASE32[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(BASE32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Reads RFC 4648 base32 as a person may copy it from a page: either case,
/// spaces between groups and `=` padding ignored. `None` for any other
/// character.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in text.bytes().filter(|c| !matches!(c, b' ' | b'=')) {
        let value = BASE32.iter().position(|x| *x == c.to_ascii_uppercase())? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    Some(out)
}

/// The `otpauth://` URI for an authenticator app.
pub fn otpauth_uri(kind: &str, issuer: &str, account: &str, secret: &[u8], alg: Algorithm, digits: u32, period_or_counter: u64) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect()
    };
    let extra = if kind == "hotp" { format!("counter={period_or_counter}") } else { format!("period={period_or_counter}") };
    format!(
        "otpauth://{kind}/{}:{}?secret={}&issuer={}&algorithm={}&digits={digits}&{extra}",
        enc(issuer),
        enc(account),
        base32(secret),
        enc(issuer),
        alg.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4226_vectors() {
        let secret = b"12345678901234567890";
        let want = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"];
        for (counter, code) in want.iter().enumerate() {
            assert_eq!(hotp(Algorithm::Sha1, secret, counter as u64, 6), *code, "counter {counter}");
        }
    }

    #[test]
    fn rfc6238_vectors_all_three_hashes() {
        // Seeds per RFC 6238 appendix B (errata 2866: 32- and 64-byte seeds).
        let sha1 = b"12345678901234567890".to_vec();
        let sha256 = b"12345678901234567890123456789012".to_vec();
        let sha512 = b"1234567890123456789012345678901234567890123456789012345678901234".to_vec();
        let table: &[(i64, &str, &str, &str)] = &[
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (t, c1, c256, c512) in table {
            let step = step_of(*t, 30);
            assert_eq!(hotp(Algorithm::Sha1, &sha1, step, 8), *c1, "sha1 t={t}");
            assert_eq!(hotp(Algorithm::Sha256, &sha256, step, 8), *c256, "sha256 t={t}");
            assert_eq!(hotp(Algorithm::Sha512, &sha512, step, 8), *c512, "sha512 t={t}");
        }
    }

    #[test]
    fn totp_window_and_replay() {
        let s = b"12345678901234567890";
        let code_at = |step| hotp(Algorithm::Sha1, s, step, 6);
        let cases: &[(u64, u64, Option<u64>, Check)] = &[
            (100, 100, None, Check::Accepted(100)),
            (99, 100, None, Check::Accepted(99)),
            (101, 100, None, Check::Accepted(101)),
            (98, 100, None, Check::Wrong),
            (102, 100, None, Check::Wrong),
            (100, 100, Some(100), Check::Replay),
            (99, 100, Some(100), Check::Replay),
            (101, 100, Some(100), Check::Accepted(101)),
        ];
        for (code_step, now_step, last, want) in cases {
            assert_eq!(&check_totp(Algorithm::Sha1, s, 6, &code_at(*code_step), *now_step, 1, *last), want, "code {code_step} now {now_step} last {last:?}");
        }
    }

    #[test]
    fn hotp_lookahead_resync_and_replay() {
        let s = b"12345678901234567890";
        let code = |c| hotp(Algorithm::Sha1, s, c, 6);
        assert_eq!(check_hotp(Algorithm::Sha1, s, 6, &code(5), 5, 10), Check::Accepted(5));
        assert_eq!(check_hotp(Algorithm::Sha1, s, 6, &code(12), 5, 10), Check::Accepted(12));
        assert_eq!(check_hotp(Algorithm::Sha1, s, 6, &code(15), 5, 10), Check::Accepted(15));
        assert_eq!(check_hotp(Algorithm::Sha1, s, 6, &code(16), 5, 10), Check::Wrong);
        assert_eq!(check_hotp(Algorithm::Sha1, s, 6, &code(4), 5, 10), Check::Replay);
    }

    #[test]
    fn codes_are_cleaned_strictly() {
        let cases = [("123456", Some("123456")), ("123 456", Some("123456")), ("123-456", Some("123456")), ("12345", None), ("12345a", None), ("１２３４５６", None), ("1234567", None)];
        for (input, want) in cases {
            assert_eq!(clean_code(input, 6).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn base32_decode_reads_rfc4648_vectors_and_what_pages_show() {
        // RFC 4648 section 10.
        let cases: &[(&str, Option<&[u8]>)] = &[
            ("", Some(b"")),
            ("MY======", Some(b"f")),
            ("MZXQ====", Some(b"fo")),
            ("MZXW6===", Some(b"foo")),
            ("MZXW6YQ=", Some(b"foob")),
            ("MZXW6YTB", Some(b"fooba")),
            ("MZXW6YTBOI======", Some(b"foobar")),
            ("mzxw 6ytb oi", Some(b"foobar")),
            ("MZXW1", None),
            ("MZ-XW", None),
        ];
        for (text, want) in cases {
            assert_eq!(base32_decode(text).as_deref(), *want, "{text:?}");
        }
        let secret: Vec<u8> = (0u8..20).collect();
        assert_eq!(base32_decode(&base32(&secret)), Some(secret));
    }

    #[test]
    fn base32_and_uri() {
        // RFC 4648 §10 vectors (without padding).
        let cases = [("", ""), ("f", "MY"), ("fo", "MZXQ"), ("foo", "MZXW6"), ("foob", "MZXW6YQ"), ("fooba", "MZXW6YTB"), ("foobar", "MZXW6YTBOI")];
        for (input, want) in cases {
            assert_eq!(base32(input.as_bytes()), want);
        }
        assert_eq!(
            otpauth_uri("totp", "My Gate", "alice", b"foobar", Algorithm::Sha1, 6, 30),
            "otpauth://totp/My%20Gate:alice?secret=MZXW6YTBOI&issuer=My%20Gate&algorithm=SHA1&digits=6&period=30"
        );
    }
}
