//! `portcullis completions SHELL` and `portcullis man DIR`: shell
//! completion scripts and manual pages made from the argument parser's own
//! definitions (clap_complete, clap_mangen), so they name every command
//! and flag there is. Neither reads the configuration.

use anyhow::Context as _;
use clap::CommandFactory;
use std::path::Path;

pub(super) fn completions(shell: clap_complete::Shell) -> anyhow::Result<i32> {
    use std::io::Write as _;
    // Made in memory first: the generator panics on a write error, and a
    // reader that stops early (`| head`) is not one.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut super::Cli::command(), "portcullis", &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(anyhow::Error::new(e).context("writing the completion script")),
        _ => Ok(0),
    }
}

pub(super) fn man(dir: &Path) -> anyhow::Result<i32> {
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    let cmd = super::Cli::command();
    clap_mangen::generate_to(cmd, dir).with_context(|| format!("writing the manual pages into {}", dir.display()))?;
    let pages = std::fs::read_dir(dir).map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "1")).count()).unwrap_or(0);
    println!("wrote {pages} manual pages into {}", dir.display());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand's path (`["security", "webauthn", "enroll"]`).
    fn paths(cmd: &clap::Command, above: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut p = above.to_vec();
            p.push(sub.get_name().to_owned());
            out.push(p.clone());
            paths(sub, &p, out);
        }
    }

    #[test]
    fn completions_name_every_subcommand() {
        let mut all = Vec::new();
        paths(&super::super::Cli::command(), &[], &mut all);
        assert!(all.len() > 40, "{all:?}");
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut super::super::Cli::command(), "portcullis", &mut buf);
            let text = String::from_utf8(buf).expect("utf-8");
            for p in &all {
                let name = p.last().expect("a name");
                assert!(text.contains(name.as_str()), "{shell}: no {} in the script", p.join(" "));
            }
        }
    }

    #[test]
    fn a_manual_page_per_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(man(dir.path()).unwrap(), 0);
        let main = std::fs::read_to_string(dir.path().join("portcullis.1")).expect("portcullis.1");
        assert!(main.contains(".TH portcullis 1"), "{main}");
        let mut all = Vec::new();
        paths(&super::super::Cli::command(), &[], &mut all);
        for p in &all {
            let file = dir.path().join(format!("portcullis-{}.1", p.join("-")));
            let page = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(page.contains(p.last().unwrap().as_str()) && page.len() > 100, "{}", file.display());
        }
        // The top page lists the commands.
        for top in ["serve", "config", "user", "security", "mail", "completions"] {
            assert!(main.contains(top), "portcullis.1 does not name {top}");
        }
    }
}
