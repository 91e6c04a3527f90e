//! `portcullis config`: check the configuration.

use crate::config;
use crate::model::escape_control;
use clap::Subcommand;
use std::path::Path;

#[derive(Subcommand, Debug)]
pub(super) enum ConfigCmd {
    /// Load everything `serve` would and report every problem.
    Check,
}

pub(super) fn run(path: Option<&Path>, cmd: ConfigCmd) -> anyhow::Result<i32> {
    match cmd {
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
