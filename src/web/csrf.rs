//! Double-submit CSRF protection: a random 256-bit value set in a
//! `__Host-` cookie on the GET and repeated in a hidden form field; the
//! POST compares the two in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use subtle::ConstantTimeEq;

/// Cookie name. The `__Host-` prefix makes browsers insist on `Secure`,
/// `Path=/` and no `Domain`, so a sibling host cannot plant the value.
pub(super) const COOKIE_NAME: &str = "__Host-csrf";

/// 32 random bytes in unpadded base64url.
const TOKEN_LEN: usize = 43;

/// A fresh random token (256 bits, base64url without padding).
pub(super) fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether `value` has the shape of a token we issue.
pub(super) fn well_formed(value: &str) -> bool {
    value.len() == TOKEN_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The `Set-Cookie` header value carrying `token`.
pub(super) fn set_cookie(token: &str) -> String {
    format!("{COOKIE_NAME}={token}; Secure; HttpOnly; SameSite=Strict; Path=/")
}

/// The CSRF cookie value among all `Cookie` header values, if present.
/// With several cookies of that name (should not happen with `__Host-`),
/// the first wins.
pub(super) fn from_cookie_headers<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    headers
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim())
}

/// True when both values are present, well formed and equal. The
/// comparison of equal-length values runs in constant time.
pub(super) fn verify(cookie: Option<&str>, field: Option<&str>) -> bool {
    match (cookie, field) {
        (Some(c), Some(f)) if well_formed(c) && well_formed(f) => {
            bool::from(c.as_bytes().ct_eq(f.as_bytes()))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_well_formed() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert!(well_formed(&a), "{a}");
        assert!(well_formed(&b), "{b}");
        assert_ne!(a, b);
    }

    #[test]
    fn verify_table() {
        let t = new_token().unwrap();
        let u = new_token().unwrap();
        let short = &t[..42];
        let bad_char = format!("{}!", &t[..42]);
        let cases: &[(Option<&str>, Option<&str>, bool)] = &[
            (Some(&t), Some(&t), true),
            (Some(&t), Some(&u), false),
            (None, Some(&t), false),
            (Some(&t), None, false),
            (None, None, false),
            (Some(""), Some(""), false),
            (Some(short), Some(short), false),
            (Some(&bad_char), Some(&bad_char), false),
        ];
        for (i, (cookie, field, want)) in cases.iter().enumerate() {
            assert_eq!(verify(*cookie, *field), *want, "case {i}");
        }
    }

    #[test]
    fn cookie_parsing_table() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["__Host-csrf=abc"], Some("abc")),
            (&["a=1; __Host-csrf=abc; b=2"], Some("abc")),
            (&["a=1", "__Host-csrf=xyz"], Some("xyz")),
            (&["csrf=abc"], None),
            (&["__host-csrf=abc"], None),
            (&["x__Host-csrf=abc"], None),
            (&[], None),
            (&["garbage"], None),
        ];
        for (headers, want) in cases {
            assert_eq!(from_cookie_headers(headers.iter().copied()), *want, "{headers:?}");
        }
    }

    #[test]
    fn set_cookie_has_every_attribute() {
        let c = set_cookie("v");
        for attr in ["__Host-csrf=v", "Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(attr), "{c}");
        }
        assert!(!c.contains("Domain"));
    }
}
