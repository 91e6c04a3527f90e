//! PHC string parsing (`$pbkdf2-sha256$i=N,l=L$SALT$HASH`).
//!
//! Invariants: parsing never panics; a string is accepted only when it is
//! exactly the canonical form of what was parsed (decimal parameters
//! without sign or leading zero, in one of the two orders, the salt and
//! hash in unpadded canonical base64, lengths and iterations in range); and
//! `verify` says `Malformed` exactly when the parser refuses (checked with
//! cheap iteration counts only).
#![no_main]

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use portcullis::core::password::{parse_phc_fields, verify, Verify, MAX_ITERATIONS};

fuzz_target!(|data: &[u8]| {
    let Ok(phc) = std::str::from_utf8(data) else { return };
    let parsed = parse_phc_fields(phc);
    if let Some((iterations, salt, hash)) = &parsed {
        assert!((1..=MAX_ITERATIONS).contains(iterations), "iterations {iterations}");
        assert!((8..=64).contains(&salt.len()), "salt of {} bytes", salt.len());
        assert!((16..=64).contains(&hash.len()), "hash of {} bytes", hash.len());
        let (s, h, l) = (B64.encode(salt), B64.encode(hash), hash.len());
        let a = format!("$pbkdf2-sha256$i={iterations},l={l}${s}${h}");
        let b = format!("$pbkdf2-sha256$l={l},i={iterations}${s}${h}");
        assert!(phc == a || phc == b, "accepted a non-canonical string {phc:?} (canonical {a:?})");
        assert_eq!(parse_phc_fields(&a).as_ref(), Some(&(*iterations, salt.clone(), hash.clone())));
    }
    if parsed.is_none() || parsed.as_ref().is_some_and(|(i, _, _)| *i <= 64) {
        let v = verify("fuzz", phc);
        assert_eq!(v == Verify::Malformed, parsed.is_none(), "verify {v:?} disagrees with the parser on {phc:?}");
    }
});
