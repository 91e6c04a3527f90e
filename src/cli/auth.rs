//! `portcullis auth`: self-service account commands.

use crate::core::Core;
use crate::model::{Millis, Secret};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(super) enum AuthCmd {
    /// Create an account from an email address (username = local part).
    Signup {
        email: String,
        /// The password (visible to other local users in the process list;
        /// prefer `user add --password-stdin`).
        #[arg(long)]
        password: String,
    },
}

pub(super) async fn run(core: Core, cmd: AuthCmd) -> anyhow::Result<i32> {
    match cmd {
        AuthCmd::Signup { email, password } => {
            let local = email.split('@').next().unwrap_or("");
            eprintln!("warning: a password given on the command line can be seen by other local users");
            let user = core.add_user(local, Some(&email), &Secret::new(password), &[], &crate::cli::actor(), Millis::now()).await?;
            println!("created user {} (id {})", user.username, user.id);
            Ok(0)
        }
    }
}
