//! The ACS language: parser and evaluator.
//!
//! Invariants: a parsed expression keeps its source; evaluating it on any
//! context never panics and is deterministic; `(e)` means `e` and `!(e)`
//! its negation, whenever those still parse (they may hit the depth or
//! length limit); errors point inside the text (or just past its end).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::acs::{Acs, AcsContext, MAX_SOURCE_CHARS};

/// A context whose every answer comes from the fuzz input.
struct Ctx {
    b: [u8; 24],
    strings: Vec<String>,
}

impl Ctx {
    fn s(&self, i: usize) -> &str {
        self.strings.get(i).map(String::as_str).unwrap_or("")
    }
    fn u64_at(&self, i: usize) -> u64 {
        u64::from_le_bytes(self.b[i..i + 8].try_into().expect("8 bytes"))
    }
}

impl AcsContext for Ctx {
    fn required_level(&self) -> u8 {
        self.b[0]
    }
    fn factors_passed(&self) -> u8 {
        self.b[1]
    }
    fn in_group(&self, group: &str) -> bool {
        self.strings.iter().any(|s| s.eq_ignore_ascii_case(group))
    }
    fn secure_connection(&self) -> bool {
        self.b[2] & 1 == 1
    }
    fn local_connection(&self) -> bool {
        self.b[2] & 2 == 2
    }
    fn account_status(&self) -> &str {
        self.s(0)
    }
    fn login_count(&self) -> u64 {
        self.u64_at(8)
    }
    fn account_age_days(&self) -> u64 {
        self.u64_at(16)
    }
    fn user_id(&self) -> i64 {
        self.u64_at(8) as i64
    }
    fn minutes_past_midnight(&self) -> u32 {
        u32::from(self.b[3]) * 7
    }
    fn weekday(&self) -> u8 {
        self.b[4]
    }
    fn terminal_type(&self) -> &str {
        self.s(1)
    }
    fn terminal_width(&self) -> u32 {
        u32::from(self.b[5])
    }
    fn terminal_height(&self) -> u32 {
        u32::from(self.b[6])
    }
    fn encoding(&self) -> u8 {
        self.b[7] & 1
    }
    fn property(&self, name: &str) -> Option<String> {
        (name == self.s(2)).then(|| self.s(3).to_owned())
    }
    fn device_trusted(&self) -> bool {
        self.b[2] & 4 == 4
    }
    fn risk_score(&self) -> u8 {
        self.b[7] >> 1
    }
}

fuzz_target!(|data: &[u8]| {
    // First 24 bytes: the context; the rest: the expression, then after a
    // NUL the context's strings separated by NULs.
    if data.len() < 24 {
        return;
    }
    let (head, rest) = data.split_at(24);
    let Ok(rest) = std::str::from_utf8(rest) else { return };
    let mut parts = rest.split('\0');
    let src = parts.next().unwrap_or("");
    let ctx = Ctx { b: head.try_into().expect("24 bytes"), strings: parts.map(str::to_owned).collect() };

    match Acs::parse(src) {
        Ok(acs) => {
            assert_eq!(acs.source(), src);
            assert_eq!(acs.to_string(), src);
            let v = acs.eval(&ctx);
            assert_eq!(acs.eval(&ctx), v, "evaluation is not deterministic for {src:?}");
            assert_eq!(Acs::parse(src).as_ref(), Ok(&acs), "parsing is not deterministic for {src:?}");
            if !src.trim().is_empty() && src.chars().count() + 3 <= MAX_SOURCE_CHARS {
                if let Ok(p) = Acs::parse(&format!("({src})")) {
                    assert_eq!(p.eval(&ctx), v, "({src}) differs from {src:?}");
                }
                if let Ok(n) = Acs::parse(&format!("!({src})")) {
                    assert_eq!(n.eval(&ctx), !v, "!({src}) is not the negation of {src:?}");
                }
            }
        }
        Err(e) => {
            assert!(e.offset <= src.chars().count(), "error offset {} past the end of {src:?}", e.offset);
            assert!(!e.message.is_empty());
        }
    }
});
