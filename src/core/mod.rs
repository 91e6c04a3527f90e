//! Every rule of the gate: passwords and policy, accounts, the login state
//! machine, admission control, events. No network I/O; time is passed in.

pub mod accounts;
pub mod admission;
pub mod blocks;
pub mod connections;
pub mod devices;
pub mod drain;
#[cfg(test)]
pub(crate) mod fixture;
pub mod incidents;
pub mod detect;
pub mod kdf;
pub mod locks;
pub mod login;
pub mod mail;
pub mod metrics;
pub mod mfa;
pub mod otp;
pub mod password;
pub mod playbooks;
pub mod response;
pub mod risk;
pub mod scans;
pub mod rollups;
pub mod retention;
pub mod secrets;
pub mod webauthn;
pub mod webhooks;
pub mod sessions;
pub mod useragent;

use crate::config::Settings;
use crate::model::{Event, Millis};
use crate::store::{EventWriter, Store};
use std::sync::{Arc, RwLock};

/// The closed set of things that can go wrong in `core`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such user: {0}")]
    NoSuchUser(String),
    #[error("invalid username {0:?}: use 1-32 letters, digits, '_', '-' or '.'")]
    InvalidUsername(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    PasswordRejected(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the password hashing pool is full; try again")]
    Busy,
    #[error("the security event log could not be written")]
    EventLog,
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Where events go: the daemon's writer thread, or (for short-lived CLI
/// commands) straight into the store.
#[derive(Clone)]
pub enum EventSink {
    Writer(EventWriter),
    Direct(Arc<Store>),
}

impl EventSink {
    pub async fn record(&self, event: Event) {
        match self {
            EventSink::Writer(w) => w.record(event).await,
            EventSink::Direct(s) => {
                if let Err(e) = s.insert_events(std::slice::from_ref(&event)) {
                    tracing::error!(error = %e, "security event could not be written");
                }
            }
        }
    }

    /// Returns once the events are committed; false if that failed.
    pub async fn record_committed(&self, events: Vec<Event>) -> bool {
        match self {
            EventSink::Writer(w) => {
                let mut ok = true;
                let n = events.len();
                for (i, e) in events.into_iter().enumerate() {
                    if i + 1 == n {
                        ok &= w.record_committed(e).await;
                    } else {
                        w.record(e).await;
                    }
                }
                ok
            }
            EventSink::Direct(s) => s.insert_events(&events).is_ok(),
        }
    }

    /// Records one event and waits for its commit: the id it got, or
    /// `None` if it could not be written.
    pub async fn record_committed_id(&self, event: Event) -> Option<i64> {
        match self {
            EventSink::Writer(w) => w.record_committed_id(event).await,
            EventSink::Direct(s) => s.insert_events(std::slice::from_ref(&event)).ok().and_then(|ids| ids.first().copied()),
        }
    }
}

pub struct Core {
    pub(crate) store: Arc<Store>,
    settings: RwLock<Arc<Settings>>,
    pub(crate) events: EventSink,
    pub(crate) kdf: kdf::KdfPool,
    pub admission: Arc<admission::Admission>,
    /// Caps on web connections and the descriptors kept for SSH.
    pub web_connections: Arc<connections::WebConnections>,
    pub(crate) keyring: Arc<secrets::Keyring>,
    /// Woken when a mail is queued, so the mail worker need not wait for
    /// its next poll.
    pub mail_queued: Arc<tokio::sync::Notify>,
    /// Woken when a webhook delivery is queued (the webhook worker).
    pub webhook_queued: Arc<tokio::sync::Notify>,
    /// Serialises one-time-code checks (see `check_login_code`).
    pub(crate) code_checks: std::sync::Mutex<()>,
    /// Live sessions of this process, so a revocation ends the connection.
    pub(crate) live: std::sync::Mutex<std::collections::HashMap<i64, Arc<sessions::LiveSession>>>,
    /// Address blocks in force, checked at every accept (`is_blocked`).
    pub blocks: Arc<blocks::BlockSet>,
    /// The last `ip_block_changes` id applied (see `sync_blocks`).
    pub(crate) block_feed: std::sync::Mutex<i64>,
    /// Keyed tags of failed passwords for the spraying rule (the key lives
    /// only in it); the daemon's detection thread takes its receiver.
    pub spray_tags: detect::spray::Tagger,
    /// What the detection thread has done (for `/metrics`).
    pub detection: Arc<detect::feed::LiveStats>,
    /// Live counters and histograms for `/metrics` (the daemon feeds the
    /// event writer's batches to it).
    pub metrics: metrics::Metrics,
    /// What the event export has done (`/metrics`; the daemon hands it to
    /// the export thread).
    pub export_counts: Arc<metrics::ExportCounts>,
    /// WebAuthn ceremonies waiting for the browser's answer.
    pub(crate) ceremonies: webauthn::Ceremonies,
    /// SSH logins waiting for a hardware key's touch.
    pub(crate) approvals: webauthn::Approvals,
}

impl Core {
    pub fn new(store: Arc<Store>, settings: Settings, events: EventSink, keyring: secrets::Keyring) -> Core {
        let kdf = kdf::KdfPool::new(settings.kdf_workers, settings.kdf_queue);
        let admission = Arc::new(admission::Admission::new(admission_limits(&settings)));
        let web_connections = Arc::new(connections::WebConnections::new(web_limits(&settings)));
        let block_set = Arc::new(blocks::BlockSet::new());
        block_set.set_exempt(&settings.blocks.never_block);
        let spray_tags = detect::spray::Tagger::new(settings.detection.password_spraying.queue);
        Core {
            spray_tags,
            detection: Default::default(),
            metrics: Default::default(),
            export_counts: Default::default(),
            web_connections,
            store,
            settings: RwLock::new(Arc::new(settings)),
            events,
            kdf,
            admission,
            keyring: Arc::new(keyring),
            mail_queued: Arc::new(tokio::sync::Notify::new()),
            webhook_queued: Arc::new(tokio::sync::Notify::new()),
            live: Default::default(),
            code_checks: std::sync::Mutex::new(()),
            blocks: block_set,
            block_feed: std::sync::Mutex::new(0),
            ceremonies: Default::default(),
            approvals: Default::default(),
        }
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies a reloaded config. Listener addresses and the data folder
    /// are fixed for the life of the process; everything else takes effect
    /// for the next connection.
    pub fn reload(&self, new: Settings) {
        self.admission.set_limits(admission_limits(&new));
        self.web_connections.set_limits(web_limits(&new));
        self.blocks.set_exempt(&new.blocks.never_block);
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
    }

    pub async fn record(&self, event: Event) {
        self.events.record(event).await
    }

    /// Rebuilds in-memory windows from the event log (at start).
    pub fn rebuild_windows(&self, now: Millis) -> Result<()> {
        let window = self.settings().ssh.penalties.window;
        let rows = self.store.failures_by_ip_since(now.minus(window))?;
        let mut parsed: Vec<_> = rows.into_iter().filter_map(|(ip, at)| ip.parse().ok().map(|ip| (ip, Millis(at)))).collect();
        // A hold-off lifted by `security ip unblock` stays lifted: the
        // failures before the lift are not replayed.
        let lifts: Vec<(crate::model::IpNetwork, Millis)> =
            self.store.lifts_since(now.minus(window))?.into_iter().filter_map(|(n, at)| crate::model::IpNetwork::parse(&n).ok().map(|n| (n, at))).collect();
        if !lifts.is_empty() {
            parsed.retain(|(ip, at)| !lifts.iter().any(|(n, lifted)| lifted >= at && n.contains(*ip)));
        }
        self.admission.replay_failures(&parsed, now);
        Ok(())
    }
}

fn web_limits(s: &Settings) -> connections::WebLimits {
    connections::WebLimits {
        max_total: s.web.max_connections,
        max_per_address: s.web.max_connections_per_address,
        descriptor_reserve: s.web.descriptor_reserve,
        ipv6_prefix: s.ssh.penalties.ipv6_prefix,
    }
}

fn admission_limits(s: &Settings) -> admission::Limits {
    admission::Limits {
        startups: s.ssh.startups,
        per_address: s.ssh.max_startups_per_address,
        penalties: s.ssh.penalties.clone(),
        never_penalised: s.blocks.never_block.clone().into(),
    }
}

/// A `Core` for tests: the config text given (what a test changes; the
/// tests' low hashing cost goes first), a fresh migrated store `t.db` in
/// `dir`, events written directly, a fixed key.
#[cfg(test)]
pub(crate) fn test_core(dir: &std::path::Path, config: &str) -> Core {
    let text = format!("passwords: {{\n  iterations: 1000\n}}\n{config}");
    let settings = crate::config::load::from_text(&text, "t.hjson", dir).expect("settings");
    let store = Arc::new(Store::open(&dir.join("t.db")).expect("open"));
    store.migrate(None).expect("migrate");
    Core::new(store.clone(), settings, EventSink::Direct(store), secrets::Keyring::from_key(&[3; 32]))
}
