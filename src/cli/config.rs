//! `portcullis config`: check the configuration, and show the effective
//! one (as `sshd -T` does).

use crate::config;
use crate::model::escape_control;
use clap::Subcommand;
use std::path::Path;

#[derive(Subcommand, Debug)]
pub(super) enum ConfigCmd {
    /// Load everything `serve` would and report every problem.
    Check,
    /// Write the documented default configuration into DIR for editing:
    /// portcullis.hjson (pointing at the files beside it), menu.hjson,
    /// playbooks.hjson, art/ and templates/. Refuses to overwrite a file.
    Init {
        /// The folder (made if missing).
        dir: std::path::PathBuf,
    },
    /// Print the effective configuration: every key, the file's values
    /// over the defaults, durations and paths resolved, secrets redacted.
    Show {
        /// JSON instead of hjson.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn run(path: Option<&Path>, cmd: ConfigCmd) -> anyhow::Result<i32> {
    match cmd {
        ConfigCmd::Init { dir } => init(&dir),
        ConfigCmd::Show { json } => {
            let s = super::load_settings(path)?;
            if json {
                println!("{}", crate::model::json_terminal_safe(serde_json::to_string_pretty(&s.effective)?));
            } else {
                print!("{}", hjson_text(&s));
            }
            Ok(0)
        }
        ConfigCmd::Check => match config::load(path).and_then(|s| {
            let (problems, warnings) = crate::daemon::check_all(&s);
            for w in &warnings {
                eprintln!("warning: {}", escape_control(w));
            }
            if problems.is_empty() { Ok(s) } else { Err(problems) }
        }) {
            Ok(s) => {
                println!("config ok: {}", s.source);
                Ok(0)
            }
            Err(problems) => {
                for p in &problems {
                    eprintln!("{}", escape_control(p));
                }
                eprintln!("{} problem{} found", problems.len(), if problems.len() == 1 { "" } else { "s" });
                Ok(1)
            }
        },
    }
}

/// The effective configuration as hjson that `config check` accepts: a
/// header naming the file, then every key (strings quoted as JSON does,
/// which hjson reads unchanged).
fn hjson_text(s: &config::Settings) -> String {
    let mut out = format!("# The effective configuration of {} (portcullis config show).\n", escape_control(&s.source));
    out.push_str("# Paths are resolved, defaults filled in, secrets shown as <redacted>.\n");
    if s.effective.get("playbooks").is_none() {
        let names: Vec<&str> = s.playbooks.iter().map(|p| p.name.as_str()).collect();
        out.push_str(&format!("# playbooks: {} ({}: {})\n", escape_control(&s.playbooks_source), names.len(), escape_control(&names.join(", "))));
    }
    if let Some(map) = s.effective.as_object() {
        for (k, v) in map {
            write_entry(&mut out, k, v, 0);
        }
    }
    out
}

fn write_entry(out: &mut String, key: &str, v: &serde_json::Value, depth: usize) {
    out.push_str(&"  ".repeat(depth));
    out.push_str(&hjson_key(key));
    out.push_str(": ");
    write_value(out, v, depth);
    out.push('\n');
}

fn hjson_key(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        key.to_owned()
    } else {
        crate::model::json_terminal_safe(serde_json::Value::String(key.to_owned()).to_string())
    }
}

fn write_value(out: &mut String, v: &serde_json::Value, depth: usize) {
    use serde_json::Value;
    match v {
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            out.push_str("{\n");
            for (k, v) in map {
                write_entry(out, k, v, depth + 1);
            }
            out.push_str(&"  ".repeat(depth));
            out.push('}');
        }
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => out.push_str(&crate::model::json_terminal_safe(v.to_string())),
        Value::Array(items) => {
            out.push_str("[\n");
            for i in items {
                out.push_str(&"  ".repeat(depth + 1));
                write_value(out, i, depth + 1);
                out.push('\n');
            }
            out.push_str(&"  ".repeat(depth));
            out.push(']');
        }
        // Scalars as JSON writes them (strings quoted and escaped, C1,
        // DEL and bidi overrides too: hjson reads them back the same).
        other => out.push_str(&crate::model::json_terminal_safe(other.to_string())),
    }
}

/// The shipped config as `config init` writes it: data, art, menus,
/// templates and playbooks in the folder of the file.
fn init_config() -> String {
    let mut text = config::DEFAULT_CONFIG.to_owned();
    for (from, to) in [
        ("  data_dir: ../data\n", "  data_dir: data\n"),
        ("  # art_dir: ../art\n", "  art_dir: art\n"),
        ("  # menus: menu.hjson\n", "  menus: menu.hjson\n"),
        ("  # templates_dir: ../templates\n", "  templates_dir: templates\n"),
        ("  # playbooks: playbooks.hjson\n", "  playbooks: playbooks.hjson\n"),
    ] {
        assert!(text.contains(from), "the shipped config lost {from:?}");
        text = text.replacen(from, to, 1);
    }
    text
}

/// Every file `config init` writes, relative to its folder.
fn init_files() -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = vec![
        ("portcullis.hjson".into(), init_config().into_bytes()),
        ("menu.hjson".into(), config::menu::DEFAULT_MENUS.as_bytes().to_vec()),
        ("playbooks.hjson".into(), config::playbooks::DEFAULT_PLAYBOOKS.as_bytes().to_vec()),
    ];
    files.extend(crate::flow::art::built_in_files().map(|(name, bytes)| (Path::new("art").join(name), bytes.to_vec())));
    files.extend(crate::core::mail::built_in_template_files().into_iter().map(|(name, text)| (Path::new("templates").join(name), text.into_bytes())));
    files
}

fn init(dir: &Path) -> anyhow::Result<i32> {
    use anyhow::Context as _;
    let files = init_files();
    let existing: Vec<String> = files.iter().map(|(p, _)| dir.join(p)).filter(|p| p.exists()).map(|p| escape_control(&p.display().to_string())).collect();
    if !existing.is_empty() {
        eprintln!("error: refusing to overwrite {} existing file{} (nothing was written): {}", existing.len(), if existing.len() == 1 { "" } else { "s" }, existing.join(", "));
        return Ok(1);
    }
    for (rel, bytes) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("making {}", parent.display()))?;
        }
        // create_new: a file that appeared meanwhile is not overwritten either.
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&path).with_context(|| format!("writing {}", path.display()))?;
        std::io::Write::write_all(&mut f, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    let conf = dir.join("portcullis.hjson");
    println!("wrote {} files into {}", files.len(), escape_control(&dir.display().to_string()));
    println!("check them with: portcullis --config {} config check", escape_control(&conf.display().to_string()));
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn init_points_the_config_at_the_files_beside_it() {
        let text = super::init_config();
        for line in ["  data_dir: data\n", "  art_dir: art\n", "  menus: menu.hjson\n", "  templates_dir: templates\n", "  playbooks: playbooks.hjson\n"] {
            assert!(text.contains(line), "{line:?}");
        }
        let names: Vec<String> = super::init_files().iter().map(|(p, _)| p.display().to_string()).collect();
        for want in ["menu.hjson", "playbooks.hjson", "art/WELCOME.asc", "templates/otp_enroll.subject", "templates/otp_enroll.txt", "templates/otp_enroll.html"] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
    }
}
