//! Builds everything, binds every listener, prints the ready line, keeps
//! every task handle, reloads on SIGHUP and shuts down in order on
//! SIGTERM/SIGINT: stop accepting, tell users, flush events, close.

use crate::config::{self, Settings};
use crate::core::{Core, EventSink};
use crate::model::{Event, EventType, Millis, Severity};
use crate::store::{EventWriter, Store};
use anyhow::Context as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

pub const DATABASE_FILE: &str = "portcullis.db";

pub fn database_path(settings: &Settings) -> PathBuf {
    settings.data_dir.join(DATABASE_FILE)
}

/// Creates the data folder (mode 0700) if needed.
pub fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("creating data folder {}", dir.display()))?;
    }
    Ok(())
}

pub async fn serve(settings: Settings, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    ensure_data_dir(&settings.data_dir)?;
    let db = database_path(&settings);
    let store = Arc::new(Store::open(&db)?);
    let applied = store.migrate(None).context("applying migrations")?;
    if !applied.is_empty() {
        tracing::info!(migrations = ?applied, "applied migrations");
    }
    let orphans = store.end_orphaned_sessions("daemon stopped unexpectedly")?;
    if orphans > 0 {
        tracing::warn!(count = orphans, "closed sessions left open by an earlier run");
    }
    let (writer, writer_thread) = EventWriter::start_joinable(&db, settings.event_batch)?;
    let host_key = crate::ssh::load_or_create_host_key(&settings.ssh.host_key)?;
    let listen = settings.ssh.listen;
    let keyring = crate::core::secrets::Keyring::load_or_create(&settings.data_dir).map_err(anyhow::Error::msg)?;
    let core = Arc::new(Core::new(store, settings, EventSink::Writer(writer.clone()), keyring));
    core.rebuild_windows(Millis::now())?;
    let ssh_config = Arc::new(crate::ssh::russh_config(&core, host_key));
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding SSH listener {listen}"))?;
    let ssh_addr = listener.local_addr().context("reading the SSH listener address")?;

    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ssh_task = tokio::spawn(crate::ssh::serve(listener, core.clone(), ssh_config, stop_rx));
    tracing::info!(ssh = %ssh_addr, config = %core.settings().source, "portcullis is up");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready ssh={ssh_addr} web=off").context("writing the ready line")?;
        out.flush().context("writing the ready line")?;
    }

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&core, config_path.as_deref()).await,
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Err(e) = ssh_task.await {
        tracing::error!(error = %e, "SSH listener task failed");
    }
    if !writer.flush().await {
        tracing::error!("the last security events could not be written");
    }
    drop(writer);
    drop(core);
    writer_thread.join();
    tracing::info!("stopped");
    Ok(())
}

async fn reload(core: &Core, path: Option<&Path>) {
    let now = Millis::now();
    match config::load(path) {
        Ok(new) => {
            let old = core.settings();
            if new.ssh.listen != old.ssh.listen || new.data_dir != old.data_dir {
                tracing::warn!("listener addresses and data_dir take effect only after a restart");
            }
            core.reload(new);
            tracing::info!("configuration reloaded");
            core.record(Event::new(EventType::ConfigReloaded, Severity::Info, "configuration reloaded", now)).await;
        }
        Err(problems) => {
            for p in &problems {
                tracing::error!(problem = %p, "new configuration refused; keeping the old one");
            }
            let e = Event::new(EventType::ConfigReloaded, Severity::Medium, "configuration reload refused; the old configuration stays", now)
                .detail("problems", problems);
            core.record(e).await;
        }
    }
}
