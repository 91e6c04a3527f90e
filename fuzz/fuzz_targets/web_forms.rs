//! The enrollment form's cookie and CSRF checks, the link token check, and
//! the token format of `core::secrets`.
//!
//! Invariants: the CSRF cookie found is the trimmed value of a pair named
//! exactly `__Host-csrf` in one of the headers; `verify` accepts only two
//! equal, well-formed values, and any well-formed value against itself; a
//! plausible link token is 1..=128 bytes of the URL-safe alphabet; a token
//! made from any 32 bytes is well formed, plausible, decodes back to those
//! bytes and hashes to 64 lowercase hex digits.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use portcullis::core::secrets::token_hash;
use portcullis::web::fuzzing::{csrf_from_cookie_headers, csrf_verify, csrf_well_formed, plausible_token, CSRF_COOKIE, MAX_TOKEN_LEN};

fn url_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // Tokens from raw bytes.
        if data.len() >= 32 {
            let raw: [u8; 32] = data[..32].try_into().expect("32 bytes");
            let token = URL_SAFE_NO_PAD.encode(raw);
            assert!(csrf_well_formed(&token), "{token}");
            assert!(plausible_token(&token), "{token}");
            assert!(csrf_verify(Some(&token), Some(&token)));
            assert_eq!(URL_SAFE_NO_PAD.decode(&token).expect("decodes"), raw);
            let h = token_hash(&token);
            assert_eq!(h.len(), 64);
            assert!(h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{h}");
            assert_eq!(h, token_hash(&token));
        }
        return;
    };
    // Fields separated by NUL: cookie headers up to an empty field, then
    // the form's csrf field, then a link token.
    let fields: Vec<&str> = text.split('\0').collect();
    let end = fields.iter().position(|f| f.is_empty()).unwrap_or(fields.len());
    let headers = &fields[..end];
    let field = fields.get(end + 1).copied();
    let token = fields.get(end + 2).copied().unwrap_or(text);

    let cookie = csrf_from_cookie_headers(headers);
    if let Some(v) = cookie {
        assert_eq!(v, v.trim(), "cookie value not trimmed");
        assert!(!v.contains(';'), "cookie value {v:?} spans pairs");
        let found = headers.iter().flat_map(|h| h.split(';')).any(|pair| {
            pair.trim().split_once('=').is_some_and(|(n, val)| n == CSRF_COOKIE && val.trim() == v)
        });
        assert!(found, "cookie value {v:?} not from a {CSRF_COOKIE} pair in {headers:?}");
    } else {
        let any = headers
            .iter()
            .flat_map(|h| h.split(';'))
            .any(|pair| pair.trim().split_once('=').is_some_and(|(n, _)| n == CSRF_COOKIE));
        assert!(!any, "missed the {CSRF_COOKIE} pair in {headers:?}");
    }

    let ok = csrf_verify(cookie, field);
    if ok {
        let (c, f) = (cookie.expect("cookie"), field.expect("field"));
        assert_eq!(c, f);
        assert!(csrf_well_formed(c));
    }
    for v in [cookie, field].into_iter().flatten() {
        let wf = csrf_well_formed(v);
        assert_eq!(wf, v.len() == 43 && v.bytes().all(url_safe), "well_formed({v:?})");
        assert_eq!(csrf_verify(Some(v), Some(v)), wf);
        assert!(!csrf_verify(Some(v), None) && !csrf_verify(None, Some(v)));
    }

    let plausible = plausible_token(token);
    let want = !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token.bytes().all(|b| url_safe(b) || b == b'.' || b == b'~');
    assert_eq!(plausible, want, "plausible_token({token:?})");
});
