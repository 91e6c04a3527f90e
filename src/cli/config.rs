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
        ConfigCmd::Show { json } => {
            let s = super::load_settings(path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s.effective)?);
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
        serde_json::Value::String(key.to_owned()).to_string()
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
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => out.push_str(&v.to_string()),
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
        // Scalars as JSON writes them (strings quoted and escaped).
        other => out.push_str(&other.to_string()),
    }
}
