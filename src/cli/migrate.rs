//! `portcullis migrate`: database migrations.

use super::output;
use crate::store::Store;
use clap::Subcommand;
use std::path::Path;

#[derive(Subcommand, Debug)]
pub(super) enum MigrateCmd {
    /// Apply pending migrations (up to NAME when given).
    Run { name: Option<String> },
    /// List migrations and when they were applied.
    Status {
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn run(path: Option<&Path>, cmd: MigrateCmd) -> anyhow::Result<i32> {
    let settings = super::load_settings(path)?;
    crate::daemon::ensure_data_dir(&settings.data_dir)?;
    let store = Store::open(&crate::daemon::database_path(&settings))?;
    match cmd {
        MigrateCmd::Run { name } => {
            let applied = store.migrate(name.as_deref())?;
            if applied.is_empty() {
                println!("nothing to apply");
            }
            for a in applied {
                println!("applied {a}");
            }
        }
        MigrateCmd::Status { json } => output::migrations(&store.migration_status()?, json)?,
    }
    Ok(0)
}
