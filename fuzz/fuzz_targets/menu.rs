//! The menu compiler: `menu.hjson` text -> loaded menus -> checked graph.
//!
//! Invariants: loading and compiling never panic; every problem names the
//! file and a position (or, for the whole graph, the `menus` key); a
//! compiled graph has the start menu, and every
//! link (next, options, first-match branches) names a menu of the graph.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config::menu::load_str;
use portcullis::flow::menu::{compile, Next, START};

const ART: &[&str] = &["CONNECT", "WELCOME", "OTP", "GOODBYE", "MAINMENU", "ACCOUNT", "LOCKED"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Includes name files; reading the machine's files is not the point.
    if text.contains("include") {
        return;
    }
    let source = match load_str(text, "fuzz.hjson") {
        Ok(s) => s,
        Err(problems) => {
            assert!(!problems.is_empty());
            for p in &problems {
                assert!(p.starts_with("fuzz.hjson:"), "problem without its file: {p:?}");
            }
            return;
        }
    };
    match compile(&source, &|name| ART.contains(&name)) {
        Ok(menus) => {
            assert!(menus.menus.contains_key(START), "compiled without the start menu {START:?}");
            let known = |n: &str| menus.menus.contains_key(n);
            for (name, m) in &menus.menus {
                assert_eq!(&m.name, name);
                match &m.next {
                    Next::End => {}
                    Next::One(n) => assert!(known(n), "{name}: next {n:?} is not a menu"),
                    Next::Random(list) => list.iter().for_each(|n| assert!(known(n), "{name}: next {n:?} is not a menu")),
                    Next::FirstMatch(list) => list.iter().for_each(|(_, n)| assert!(known(n), "{name}: next {n:?} is not a menu")),
                }
                for o in &m.options {
                    assert!(known(&o.next), "{name}: option {:?} leads to {:?}, not a menu", o.key, o.next);
                }
                for (_, art) in &m.art {
                    assert!(ART.contains(&art.as_str()), "{name}: art {art:?} does not exist");
                }
            }
        }
        Err(problems) => {
            assert!(!problems.is_empty());
            for p in &problems {
                // Whole-graph problems ("no menu named ...") name the key instead.
                assert!(p.starts_with("fuzz.hjson:") || p.starts_with("menus: "), "problem without its place: {p:?}");
            }
        }
    }
});
