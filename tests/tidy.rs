//! Keeps the layering of ARCHITECTURE.md true: each outside crate is named
//! only inside its one module, front ends never name each other, and SQL
//! lives only in `store`. Fails with the file and line of every offence.

use std::path::{Path, PathBuf};

/// (crate path prefix, the folders or files of `src/` allowed to name it)
const CRATE_HOMES: &[(&str, &[&str])] = &[
    ("russh", &["src/ssh/"]),
    ("rusqlite", &["src/store/"]),
    ("clap", &["src/cli/"]),
    ("clap_complete", &["src/cli/"]),
    ("clap_mangen", &["src/cli/"]),
    ("x509_cert", &["src/core/webauthn.rs"]),
    ("jiff", &["src/config/time.rs"]),
    ("indicatif", &["src/cli/"]),
    ("tracing_subscriber", &["src/cli/"]),
    ("libc", &["src/cli/", "src/flow/door.rs", "src/daemon.rs", "src/ssh/quickack.rs"]),
    ("pbkdf2", &["src/core/password.rs"]),
    ("zxcvbn", &["src/core/password.rs"]),
    ("hmac", &["src/core/"]),
    ("aes_gcm", &["src/core/secrets.rs"]),
    ("sha1", &["src/core/otp.rs"]),
    ("md5", &["src/core/devices.rs"]),
    ("woothee", &["src/core/useragent.rs"]),
    ("webauthn_rs", &["src/core/webauthn.rs"]),
    ("serde_cbor_2", &["src/core/webauthn.rs"]),
    ("lettre", &["src/mail/"]),
    ("url", &["src/config/smtp.rs"]),
    ("axum", &["src/web/"]),
    ("hyper", &["src/web/"]),
    ("hyper_util", &["src/web/"]),
    ("tokio_rustls", &["src/web/", "src/hooks/"]),
    ("rustls", &["src/web/", "src/hooks/"]),
    ("rcgen", &["src/web/"]),
    ("qrcode", &["src/web/", "src/core/webauthn.rs"]),
    ("prometheus_client", &["src/core/metrics.rs", "src/core/kdf.rs"]),
];

/// Front ends must not name each other; inner layers must not name them.
const FRONT_ENDS: &[&str] = &["ssh", "cli", "web", "mail", "hooks", "export"];
const INNER: &[&str] = &["core", "store", "model", "acs", "config", "flow"];

/// Leaves: the only modules of the crate each may use. `model` and `acs`
/// use nothing; `config` only those two (so it never reaches into `core`).
const LEAVES: &[(&str, &[&str])] = &[("model", &[]), ("acs", &[]), ("config", &["model", "acs"])];

/// The top modules of the crate (`src/lib.rs`).
const MODULES: &[&str] = &["acs", "cli", "config", "core", "daemon", "export", "flow", "hooks", "mail", "model", "ssh", "store", "web"];

/// Whether `line` names the crate module `m` (`crate::m::x`, `crate::m;`,
/// `crate::m as y`, `crate::{m, ..}`).
fn names_module(line: &str, m: &str) -> bool {
    let mut start = 0;
    let pat = format!("crate::{m}");
    while let Some(i) = line[start..].find(&pat) {
        let at = start + i;
        let after = line[at + pat.len()..].chars().next();
        let before = line[..at].chars().last();
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') && !after.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return true;
        }
        start = at + pat.len();
    }
    if let Some(i) = line.find("crate::{") {
        let rest = &line[i + "crate::{".len()..];
        let inside = rest.split('}').next().unwrap_or("");
        if inside.split(',').any(|item| item.trim().split([':', ' ']).next() == Some(m)) {
            return true;
        }
    }
    false
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Whether `line` names `path` (e.g. `rusqlite::`) at a word boundary and
/// not as the tail of a longer path.
fn names(line: &str, path: &str) -> bool {
    let mut start = 0;
    while let Some(i) = line[start..].find(path) {
        let at = start + i;
        let before = line[..at].chars().last();
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            return true;
        }
        start = at + path.len();
    }
    false
}

fn offences_in(rel: &str, text: &str) -> Vec<String> {
    let module = rel.strip_prefix("src/").and_then(|r| r.split(['/', '.']).next()).unwrap_or("");
    let mut offences = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (krate, homes) in CRATE_HOMES {
            if names(code, &format!("{krate}::")) && !homes.iter().any(|h| rel.starts_with(h)) {
                offences.push(format!("{rel}:{}: names `{krate}` outside {}", n + 1, homes.join(", ")));
            }
        }
        if FRONT_ENDS.contains(&module) || INNER.contains(&module) {
            for f in FRONT_ENDS.iter().filter(|f| **f != module) {
                if names(code, &format!("crate::{f}::")) {
                    offences.push(format!("{rel}:{}: `{module}` must not use the front end `{f}`", n + 1));
                }
            }
        }
        if let Some((_, allowed)) = LEAVES.iter().find(|(leaf, _)| *leaf == module) {
            for m in MODULES.iter().filter(|m| **m != module && !allowed.contains(m)) {
                if names_module(code, m) {
                    offences.push(format!("{rel}:{}: the leaf `{module}` must not use `{m}`", n + 1));
                }
            }
        }
        // The engine runs the modules; a module that named the engine
        // would make a cycle (they share `flow::session` instead).
        if rel.starts_with("src/flow/") && rel != "src/flow/engine.rs" && rel != "src/flow/mod.rs" && (names(code, "super::engine") || names(code, "crate::flow::engine")) {
            offences.push(format!("{rel}:{}: flow modules must not use `engine` (use `session`)", n + 1));
        }
        if INNER.contains(&module) && names(code, "crate::daemon::") {
            offences.push(format!("{rel}:{}: `{module}` must not use `daemon`", n + 1));
        }
        let sql = ["SELECT ", "INSERT INTO", "UPDATE ", "DELETE FROM", "CREATE TABLE"];
        if !rel.starts_with("src/store/") && sql.iter().any(|s| code.contains(&format!("\"{s}"))) {
            offences.push(format!("{rel}:{}: SQL outside store", n + 1));
        }
    }
    offences
}

#[test]
fn crates_stay_in_their_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut offences = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(root).expect("relative").to_string_lossy().replace('\\', "/");
        offences.extend(offences_in(&rel, &std::fs::read_to_string(file).expect("read")));
    }
    assert!(offences.is_empty(), "layering broken:\n{}", offences.join("\n"));
}

#[test]
fn the_checker_catches_offences() {
    let cases: &[(&str, &str, usize)] = &[
        ("src/core/login.rs", "use rusqlite::params;", 1),
        ("src/core/devices.rs", "let p = woothee::parser::Parser::new();", 1),
        ("src/core/useragent.rs", "let p = woothee::parser::Parser::new();", 0),
        ("src/store/users.rs", "use rusqlite::params;", 0),
        ("src/ssh/handler.rs", "use crate::cli::output;", 1),
        ("src/core/x.rs", "let q = \"SELECT * FROM users\";", 1),
        ("src/core/x.rs", "// rusqlite:: in a comment", 0),
        ("src/core/x.rs", "crate::store::rusqlite_free::x", 0),
        ("src/flow/x.rs", "use crate::ssh::Thing;", 1),
        ("src/config/load.rs", "pub algorithm: crate::core::otp::Algorithm,", 1),
        ("src/config/load.rs", "use crate::core;", 1),
        ("src/config/load.rs", "use crate::{model, core::otp};", 1),
        ("src/config/load.rs", "use crate::model::OtpAlgorithm;", 0),
        ("src/config/menu.rs", "use crate::acs::Acs;", 0),
        ("src/config/menu.rs", "use crate::core_free::x;", 0),
        ("src/acs.rs", "use crate::model::User;", 1),
        ("src/model.rs", "use crate::store::Store;", 1),
        ("src/model.rs", "use crate::acs::Acs;", 1),
        ("src/flow/menu.rs", "use crate::acs::Acs;", 0),
        ("src/core/login.rs", "use crate::acs::Acs;", 0),
        ("src/flow/account.rs", "use super::engine::{actor, Session};", 1),
        ("src/flow/door.rs", "use super::session::Session;", 0),
        ("src/flow/engine.rs", "pub use super::session::Session;", 0),
    ];
    for (file, line, want) in cases {
        assert_eq!(offences_in(file, line).len(), *want, "{file}: {line}");
    }
}
