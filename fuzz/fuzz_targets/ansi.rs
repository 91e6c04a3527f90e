//! ANSI/SAUCE art conversion.
//!
//! Invariants: the output carries no control characters other than
//! ESC CR LF BS TAB (on a CP437 terminal the glyph bytes 0x01-0x1F stay,
//! except ENQ SO SI), never BEL or NUL; every ESC starts one of the kept CSI
//! sequences (SGR, cursor moves, erase, save/restore), so no OSC, DCS or
//! other string or mode sequence gets through; every LF follows a CR; UTF-8
//! output is valid UTF-8 without DEL or C1 controls; SAUCE stripping keeps a
//! prefix; CP437 -> UTF-8 -> CP437 gives the bytes back (less NUL and BEL).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::flow::ansi::{cp437_to_utf8, render, sauce_columns, strip_sauce, utf8_to_cp437, Encoding, Source};

const ESC: u8 = 0x1b;

/// Checks the escape sequences and line ends of rendered output.
fn check_sequences(out: &[u8], what: &str) {
    let mut i = 0;
    while i < out.len() {
        match out[i] {
            ESC => {
                assert_eq!(out.get(i + 1), Some(&b'['), "{what}: ESC not followed by '[' at {i}: {out:?}");
                let mut j = i + 2;
                while j < out.len() && (out[j].is_ascii_digit() || out[j] == b';' || out[j] == b':') {
                    j += 1;
                }
                let fin = *out.get(j).unwrap_or_else(|| panic!("{what}: unterminated CSI at {i}: {out:?}"));
                assert!(b"mABCDHfJKsu".contains(&fin), "{what}: CSI with final {:?} at {i}", fin as char);
                let params = &out[i + 2..j];
                if fin != b'm' {
                    assert!(!params.contains(&b':'), "{what}: ':' outside SGR at {i}");
                }
                if fin == b's' || fin == b'u' {
                    assert!(params.is_empty(), "{what}: parameters on save/restore at {i}");
                }
                i = j + 1;
            }
            b'\n' => {
                assert!(i > 0 && out[i - 1] == b'\r', "{what}: LF without CR at {i}: {out:?}");
                i += 1;
            }
            _ => i += 1,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (flags, art) = (data[0], &data[3..]);
    let width = u32::from(u16::from_le_bytes([data[1], data[2]]) % 300);
    let source = if flags & 1 == 0 { Source::Ansi } else { Source::Ascii };
    let target = if flags & 2 == 0 { Encoding::Utf8 } else { Encoding::Cp437 };

    let body = strip_sauce(art);
    assert!(art.starts_with(body), "strip_sauce did not keep a prefix");
    if let Some(cols) = sauce_columns(art) {
        assert!((1..=1000).contains(&cols), "SAUCE width {cols}");
    }

    let out = render(art, source, target, width);
    let what = format!("{source:?} -> {target:?} width {width}");
    check_sequences(&out, &what);
    match target {
        Encoding::Utf8 => {
            let s = std::str::from_utf8(&out).unwrap_or_else(|e| panic!("{what}: output is not UTF-8: {e}"));
            for c in s.chars() {
                let bad = c.is_control() && !matches!(c, '\x1b' | '\r' | '\n' | '\x08' | '\t');
                assert!(!bad, "{what}: control {c:?} in the output");
            }
        }
        Encoding::Cp437 => {
            // Other C0 bytes are CP437 glyphs here (e.g. 0x01 for a smiley).
            for (i, &b) in out.iter().enumerate() {
                assert!(!matches!(b, 0x00 | 0x07 | 0x05 | 0x0e | 0x0f), "{what}: control byte {b:#04x} at {i}");
            }
        }
    }

    // The code page round trip.
    let text = cp437_to_utf8(art);
    let back = utf8_to_cp437(&text);
    let want: Vec<u8> = art.iter().copied().filter(|&b| b != 0x00 && b != 0x07).collect();
    assert_eq!(back, want, "CP437 round trip");
});
