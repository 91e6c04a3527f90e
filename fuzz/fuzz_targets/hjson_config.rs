//! The hjson parser, its deserializer and config loading.
//!
//! Invariants: every position is 1-based and inside the text; the tree,
//! written out as JSON (which is hjson), parses back to the same tree; the
//! deserializer gives the same value as that JSON read by serde_json; and
//! config loading from the text never panics, failing only with
//! `name:...` messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config::hjson::{self, Node, Spanned};

fn write_json(n: &Spanned, out: &mut String) {
    match &n.node {
        Node::Null => out.push_str("null"),
        Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Node::Number(x) => out.push_str(x.as_str()),
        Node::String(s) => out.push_str(&serde_json::to_string(s).expect("string to json")),
        Node::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Node::Object(members) => {
            out.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(&k.name).expect("key to json"));
                out.push(':');
                write_json(v, out);
            }
            out.push('}');
        }
    }
}

/// Structural equality, ignoring positions.
fn same(a: &Spanned, b: &Spanned) -> bool {
    match (&a.node, &b.node) {
        (Node::Null, Node::Null) => true,
        (Node::Bool(x), Node::Bool(y)) => x == y,
        (Node::Number(x), Node::Number(y)) => x.as_str() == y.as_str(),
        (Node::String(x), Node::String(y)) => x == y,
        (Node::Array(x), Node::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        (Node::Object(x), Node::Object(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((kp, p), (kq, q))| kp.name == kq.name && same(p, q))
        }
        _ => false,
    }
}

fn same_value(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match (a, b) {
        (V::Number(x), V::Number(y)) => x.as_f64() == y.as_f64(),
        (V::Array(x), V::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_value(p, q)),
        (V::Object(x), V::Object(y)) => x.len() == y.len() && x.iter().all(|(k, p)| y.get(k).is_some_and(|q| same_value(p, q))),
        _ => a == b,
    }
}

fn check_positions(n: &Spanned, lines: usize) {
    assert!(n.line >= 1 && n.line <= lines && n.col >= 1, "position {}:{} outside {lines} lines", n.line, n.col);
    match &n.node {
        Node::Array(items) => items.iter().for_each(|i| check_positions(i, lines)),
        Node::Object(members) => {
            let mut names = std::collections::HashSet::new();
            for (k, v) in members {
                assert!(k.line >= 1 && k.line <= lines && k.col >= 1, "key position {}:{}", k.line, k.col);
                assert!(names.insert(k.name.as_str()), "duplicate key {:?} in the tree", k.name);
                check_positions(v, lines);
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines = text.split('\n').count();
    match hjson::parse(text) {
        Ok(tree) => {
            check_positions(&tree, lines);
            let mut json = String::new();
            write_json(&tree, &mut json);
            let again = hjson::parse(&json).unwrap_or_else(|e| panic!("our JSON {json:?} does not parse: {e}"));
            assert!(same(&tree, &again), "round trip changed the tree: {json:?}");
            // The deserializer agrees with serde_json on the same document
            // (numbers compared as f64: serde_json reads -0 as a float).
            let ours = hjson::from_spanned::<serde_json::Value>(&tree)
                .unwrap_or_else(|e| panic!("the tree of {json:?} does not deserialize: {e}"));
            if let Ok(theirs) = serde_json::from_str::<serde_json::Value>(&json) {
                assert!(same_value(&ours, &theirs), "deserializer disagrees on {json:?}: {ours} vs {theirs}");
            }
        }
        Err(e) => {
            assert!(e.line >= 1 && e.line <= lines && e.col >= 1, "error position {}:{} outside {lines} lines", e.line, e.col);
            assert!(!e.message.is_empty(), "error without a message at {}:{}", e.line, e.col);
        }
    }
    match portcullis::config::load::from_text(text, "fuzz.hjson", std::path::Path::new("/fuzz")) {
        Ok(settings) => {
            let _ = format!("{settings:?}");
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "an error without a message");
            for p in &problems {
                assert!(p.starts_with("fuzz.hjson"), "message without the file name: {p:?}");
            }
        }
    }
});
