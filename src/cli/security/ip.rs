//! `portcullis security ip`: address blocks (list, block, unblock, import).

use crate::cli::{output, usage};
use crate::core::blocks::{block_key, BlockChange, BlockFor, BlockOutcome, BlockRequest, BlockSource};
use crate::core::Core;
use crate::model::{escape_control, parse_duration, Millis};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub(in crate::cli) enum IpCmd {
    /// The blocks in force, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Block an address or network (ADDR or ADDR/BITS; IPv6 per /64) until
    /// unblocked, or for a duration. The running daemon drops it within a
    /// second, right after the TCP accept.
    Block {
        #[arg(value_name = "ADDR[/BITS]")]
        address: String,
        /// How long, e.g. "30m", "2h", "7d" (default: until unblocked).
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        #[arg(long, default_value = "blocked by sysop")]
        reason: String,
    },
    /// Lift the block of an address or network, and any penalty hold-off
    /// the running daemon has on it (within a second).
    Unblock {
        #[arg(value_name = "ADDR[/BITS]")]
        address: String,
    },
    /// Block every address and network of a file: one per line, `#` or `;`
    /// starts a comment. A file with a bad line imports nothing.
    Import {
        file: PathBuf,
        /// How long, e.g. "7d" (default: until unblocked).
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// Default: "imported from FILE".
        #[arg(long)]
        reason: Option<String>,
    },
}

fn duration_flag(d: Option<&str>) -> anyhow::Result<Option<std::time::Duration>> {
    match d {
        None => Ok(None),
        Some(text) => match parse_duration(text) {
            Ok(d) if d.is_zero() => Err(usage("--for: must be longer than 0s")),
            Ok(d) => Ok(Some(d)),
            Err(e) => Err(usage(format!("--for: {e}"))),
        },
    }
}

fn until(t: Option<Millis>) -> String {
    match t {
        Some(t) => format!("until {}", t.rfc3339()),
        None => "until unblocked".to_owned(),
    }
}

pub(super) async fn run(core: Core, cmd: IpCmd) -> anyhow::Result<i32> {
    let now = Millis::now();
    let actor = crate::cli::actor();
    let prefix = core.settings().ssh.penalties.ipv6_prefix;
    match cmd {
        IpCmd::List { json } => output::blocks(&core.list_blocks(now)?, json)?,
        IpCmd::Block { address, duration, reason } => {
            // A bad address is a usage error, like a bad flag value.
            block_key(&address, prefix).map_err(usage)?;
            let duration = match duration_flag(duration.as_deref())? {
                Some(d) => BlockFor::For(d),
                None => BlockFor::UntilLifted,
            };
            let req = BlockRequest { target: &address, duration, reason: &reason, incident_id: None, source: BlockSource::Manual };
            match core.block_address(&req, &actor, now).await? {
                BlockOutcome::NeverBlock { network, listed } => {
                    anyhow::bail!("{network} is on blocks.never_block ({listed}): not blocked");
                }
                BlockOutcome::Blocked(b) => {
                    if let Some(note) = &b.widened_from {
                        println!("note: {note}");
                    }
                    let repeat = if b.repeat > 0 { format!(" (blocked {} time(s) before)", b.repeat) } else { String::new() };
                    match b.change {
                        BlockChange::New => println!("blocked {} {}{repeat}", b.network, until(b.expires_at)),
                        BlockChange::Changed | BlockChange::Unchanged => println!("{} was already blocked; now blocked {}", b.network, until(b.expires_at)),
                    }
                }
            }
        }
        IpCmd::Unblock { address } => {
            block_key(&address, prefix).map_err(usage)?;
            let u = core.unblock_address(&address, &actor, now).await?;
            match &u.removed {
                Some(b) => println!("unblocked {} (blocked since {}: {})", u.network, crate::cli::output::at(b.created_at), escape_control(&b.reason)),
                None => println!("{} was not blocked", u.network),
            }
            println!("any penalty hold-off on {} is lifted (in the running daemon within a second)", u.network);
            if let Some(wider) = u.still_blocked_by {
                println!("note: {} is still inside the block of {wider} (`portcullis security ip unblock {wider}`)", u.network);
            }
        }
        IpCmd::Import { file, duration, reason } => {
            let duration = duration_flag(duration.as_deref())?;
            let name = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("reading {}: {e}", escape_control(&name)))?;
            let reason = reason.unwrap_or_else(|| format!("imported from {name}"));
            match core.import_blocks(&name, &text, duration, &reason, &actor, now).await {
                Ok(o) => {
                    for s in &o.skipped {
                        eprintln!("note: {}", escape_control(s));
                    }
                    let until = match duration {
                        Some(d) => until(Some(now.plus(d))),
                        None => until(None),
                    };
                    println!("imported {} from {}: {} new, {} already blocked and extended, {} already blocked for longer; {until}", o.added + o.changed + o.unchanged, escape_control(&name), o.added, o.changed, o.unchanged);
                }
                Err(crate::core::Error::Invalid(problems)) => {
                    // One problem per line (FILE:LINE: ...), the summary last.
                    let lines: Vec<&str> = problems.lines().collect();
                    if let Some((last, each)) = lines.split_last() {
                        for l in each {
                            eprintln!("{}", escape_control(l));
                        }
                        eprintln!("error: {}", escape_control(last));
                    }
                    return Ok(1);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(0)
}
