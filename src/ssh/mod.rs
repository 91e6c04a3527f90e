//! The SSH front end (russh). It owns the accept loop so that admission
//! control runs right after TCP accept, before any handshake work; it
//! turns each auth callback into a `core` login step; after login it hands
//! the channel to `flow` through the `Terminal` trait.

mod handler;
mod quickack;
// Public (hidden) for the fuzz targets in fuzz/.
#[doc(hidden)]
pub mod sniff;

use crate::core::Core;
use crate::model::Millis;
use russh::keys::ssh_key::{self, LineEnding, PrivateKey};
use russh::server::Config;
use russh::{MethodKind, MethodSet, SshId};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The host key, as the daemon holds it (to rebuild the config on reload).
pub type HostKey = PrivateKey;

/// Loads the ed25519 host key, creating it (mode 0600) on first start.
pub fn load_or_create_host_key(path: &Path) -> anyhow::Result<PrivateKey> {
    use anyhow::Context as _;
    if path.exists() {
        crate::core::secrets::check_private(path).map_err(anyhow::Error::msg)?;
        let text = std::fs::read_to_string(path).with_context(|| format!("reading host key {}", path.display()))?;
        return PrivateKey::from_openssh(text.trim()).with_context(|| format!("parsing host key {}", path.display()));
    }
    let key = PrivateKey::random(&mut rand::rng(), ssh_key::Algorithm::Ed25519).context("generating the host key")?;
    let pem = key.to_openssh(LineEnding::LF).context("encoding the host key")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_private(path, pem.as_bytes()).with_context(|| format!("writing host key {}", path.display()))?;
    tracing::info!(path = %path.display(), fingerprint = %key.public_key().fingerprint(ssh_key::HashAlg::Sha256), "created SSH host key");
    Ok(key)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Ciphers offered: AEAD only (their integrity is built in).
pub const CIPHERS: &[russh::cipher::Name] = &[russh::cipher::CHACHA20_POLY1305, russh::cipher::AES_256_GCM, russh::cipher::AES_128_GCM];
/// MACs offered: encrypt-then-MAC only (ssh-audit warns about the
/// encrypt-and-MAC `hmac-sha2-256` and `hmac-sha2-512`). With the AEAD
/// ciphers above no MAC is used at all; the list is what is advertised.
pub const MACS: &[russh::mac::Name] = &[russh::mac::HMAC_SHA512_ETM, russh::mac::HMAC_SHA256_ETM];

/// The russh configuration from our settings.
pub fn russh_config(core: &Core, host_key: PrivateKey) -> Config {
    let s = core.settings();
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    methods.push(MethodKind::KeyboardInteractive);
    methods.push(MethodKind::Password);
    Config {
        server_id: SshId::Standard(s.ssh.server_id.clone().into()),
        methods,
        auth_rejection_time: s.ssh.auth_rejection_time,
        // OpenSSH first probes with "none": answer that at once.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        // We count attempts ourselves (and record them); this is a backstop
        // that also covers public-key probes and "none".
        max_auth_attempts: (s.ssh.max_auth_tries as usize).saturating_mul(4).max(20),
        inactivity_timeout: Some(s.ssh.idle_timeout),
        keepalive_interval: Some(Duration::from_secs(60)),
        keepalive_max: 3,
        nodelay: true,
        preferred: russh::Preferred { cipher: std::borrow::Cow::Borrowed(CIPHERS), mac: std::borrow::Cow::Borrowed(MACS), ..russh::Preferred::DEFAULT },
        ..Default::default()
    }
}

/// The russh configuration new connections get; replaced on reload
/// (connections already open keep theirs).
pub type SharedConfig = Arc<std::sync::RwLock<Arc<Config>>>;

/// Accepts connections until `shutdown` turns true, then tells connected
/// users, waits briefly for their sessions to end, and returns.
pub async fn serve(listener: TcpListener, core: Arc<Core>, config: SharedConfig, menus: crate::flow::menu::SharedMenus, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let now = Millis::now();
                // A blocked address is closed at once: no banner, no
                // handshake, no slot; refusals are recorded rate-limited.
                if core.is_blocked(peer.ip(), now) {
                    drop(stream);
                    core.blocked_connection(peer.ip(), "ssh", now).await;
                    continue;
                }
                let roll = rand::random_range(0..100u32);
                match core.admission.admit(peer.ip(), now, roll) {
                    Ok(ticket) => {
                        let _ = stream.set_nodelay(true);
                        let config = config.read().unwrap_or_else(|p| p.into_inner()).clone();
                        connections.spawn(handler::connection(core.clone(), config, menus.clone(), stream, peer, ticket, shutdown.clone()));
                    }
                    Err(refusal) => {
                        drop(stream);
                        core.connection_refused(peer.ip(), refusal, now).await;
                    }
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    // Each connection sees the same shutdown signal and says goodbye.
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = connections.join_next() => if next.is_none() { break },
            _ = &mut deadline => {
                connections.abort_all();
                break;
            }
        }
    }
}
