//! `portcullis security webhooks`: the configured webhooks, their delivery
//! queue, and a signed test delivery through that queue.

use crate::cli::output;
use crate::core::Core;
use crate::model::Millis;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(in crate::cli) enum WebhooksCmd {
    /// The webhooks of the config (their URLs' paths are not shown).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Deliveries waiting to be sent (with --all: also the last sent or
    /// given up), with their attempts and last error.
    Queue {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Queue a signed test delivery to webhook NAME; the running gate
    /// sends it (and retries it) like any other.
    Test { name: String },
}

pub(super) fn run(core: Core, cmd: WebhooksCmd) -> anyhow::Result<i32> {
    match cmd {
        WebhooksCmd::List { json } => output::webhooks(&core.webhooks(), json)?,
        WebhooksCmd::Queue { all, json } => output::webhook_queue(&core.webhook_queue(all)?, json)?,
        WebhooksCmd::Test { name } => {
            let id = core.queue_test_webhook(&name, Millis::now())?;
            println!("test delivery {id} to webhook {name} queued (the running gate sends it; see `security webhooks queue`)");
        }
    }
    Ok(0)
}
