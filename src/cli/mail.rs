//! `portcullis mail`: the outgoing mail queue.

use super::output;
use crate::core::Core;
use crate::model::Millis;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(super) enum MailCmd {
    /// Mail waiting to be sent (with --all: also the last sent).
    Queue {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Make every waiting mail due now (the running gate sends it).
    Retry,
}

pub(super) fn run(core: Core, cmd: MailCmd) -> anyhow::Result<i32> {
    match cmd {
        MailCmd::Queue { all, json } => output::mail_queue(&core.mail_queue(all)?, json)?,
        MailCmd::Retry => println!("{} due now", crate::flow::pager::count(core.retry_mail(Millis::now())? as u64, "mail", "mails")),
    }
    Ok(0)
}
