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

/// The web front end's view of `core`.
struct WebBackend(Arc<Core>);

impl crate::web::Backend for WebBackend {
    async fn otp_enrollment(&self, token: &str) -> Result<crate::web::EnrollView, crate::web::Refusal> {
        self.0
            .otp_enrollment_view(token, Millis::now())
            .map(|v| crate::web::EnrollView {
                username: v.username,
                method: v.method.as_str().to_owned(),
                secret_base32: v.secret_base32,
                otpauth_uri: v.otpauth_uri,
                digits: v.digits,
                issuer: v.issuer,
            })
            .map_err(web_refusal)
    }
    async fn otp_confirm(&self, token: &str, code: &str) -> Result<crate::web::Confirmed, crate::web::Refusal> {
        self.0.otp_confirm(token, code, Millis::now()).await.map(|backup_codes| crate::web::Confirmed { backup_codes }).map_err(web_refusal)
    }
    async fn metrics(&self) -> String {
        self.0.metrics_text()
    }
    async fn health(&self) -> Result<(), String> {
        self.0.health().map_err(|e| e.to_string())
    }
}

fn web_refusal(r: crate::core::mfa::LinkRefusal) -> crate::web::Refusal {
    use crate::core::mfa::LinkRefusal as L;
    match r {
        L::InvalidToken => crate::web::Refusal::InvalidToken,
        L::WrongCode { tries_left } => crate::web::Refusal::WrongCode { tries_left },
        L::TooManyTries => crate::web::Refusal::TooManyTries,
        L::Unavailable => crate::web::Refusal::Unavailable,
    }
}

/// The mail worker's view of the outbox in `core`.
struct MailOutbox(Arc<Core>);

impl crate::mail::Outbox for MailOutbox {
    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<crate::mail::OutgoingMail>, String> {
        let due = self.0.due_mail(Millis(now_ms), limit).map_err(|e| e.to_string())?;
        Ok(due
            .into_iter()
            .map(|m| crate::mail::OutgoingMail { id: m.id, to: m.to, subject: m.subject, text: m.body.text, html: Some(m.body.html), attempts: m.attempts })
            .collect())
    }
    fn sent(&self, id: i64, now_ms: i64) -> Result<(), String> {
        self.0.mail_sent(id, Millis(now_ms)).map_err(|e| e.to_string())
    }
    fn failed(&self, id: i64, error: &str, next_attempt_ms: i64, give_up: bool) -> Result<(), String> {
        let next = if give_up { crate::model::FOREVER } else { Millis(next_attempt_ms) };
        self.0.mail_failed(id, error, next).map_err(|e| e.to_string())
    }
}

pub fn mail_settings(settings: &Settings) -> crate::mail::MailSettings {
    crate::mail::MailSettings {
        from: settings.email.from.clone(),
        smtp: settings.email.smtp.clone(),
        allow_plaintext: settings.email.allow_plaintext,
        spool_dir: settings.data_dir.join("mail"),
        timeout: std::time::Duration::from_secs(30),
    }
}

fn web_settings(settings: &Settings) -> crate::web::WebSettings {
    let w = &settings.web;
    let mut hostnames = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let host = w.base_url.trim_start_matches("https://").split(['/', '?']).next().unwrap_or("");
    let host = if host.starts_with('[') { host.split(']').next().unwrap_or("").trim_start_matches('[') } else { host.split(':').next().unwrap_or("") };
    if !host.is_empty() && !hostnames.iter().any(|h| h == host) {
        hostnames.push(host.to_owned());
    }
    crate::web::WebSettings {
        listen: w.listen,
        base_url: w.base_url.clone(),
        cert_path: w.cert.clone(),
        key_path: w.key.clone(),
        generate_if_missing: !w.cert_configured,
        hostnames,
        metrics_token: w.metrics_token.clone(),
    }
}

/// Checks that go beyond the config file itself (menus and their art and
/// ACS, the mail gateway's URL, configured certificate files); `config
/// check` and `serve` share them. Returns the problems; warnings are logged.
pub fn check(settings: &Settings) -> Vec<String> {
    let (problems, warnings) = check_all(settings);
    for w in warnings {
        tracing::warn!("{w}");
    }
    problems
}

/// Problems and warnings (warnings do not stop a start).
pub fn check_all(settings: &Settings) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    match crate::flow::menu::load(settings.menus.as_deref(), settings.art_dir.as_deref()) {
        Ok(m) => warnings.extend(m.warnings),
        Err(e) => problems.extend(e),
    }
    if let Err(e) = crate::mail::validate(&mail_settings(settings)) {
        let key = if e.starts_with("from address") {
            "email.from"
        } else if e.starts_with("smtp url") {
            "email.smtp"
        } else {
            "email"
        };
        problems.push(format!("{}: {e}", config::locate(settings, key)));
    }
    if settings.web.cert_configured {
        for (what, p) in [("web.tls_cert", &settings.web.cert), ("web.tls_key", &settings.web.key)] {
            if let Err(e) = std::fs::metadata(p) {
                problems.push(format!("{}: cannot read {}: {e}", config::locate(settings, what), p.display()));
            }
        }
    }
    (problems, warnings)
}

pub async fn serve(settings: Settings, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let problems = check(&settings);
    if !problems.is_empty() {
        anyhow::bail!("invalid configuration:\n  {}", problems.join("\n  "));
    }
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
    let settings = core.settings();
    let (web_addr, web_future) = crate::web::bind(&web_settings(&settings), Arc::new(WebBackend(core.clone())), stop_rx.clone())
        .await
        .map_err(|e| anyhow::anyhow!("starting the web server on {}: {e}", settings.web.listen))?;
    let mailer = Arc::new(crate::mail::Mailer::new(&mail_settings(&settings)).map_err(|e| anyhow::anyhow!("email: {e}"))?);
    if settings.email.smtp.is_none() {
        tracing::info!(spool = %settings.data_dir.join("mail").display(), "no SMTP server configured: mail is written as .eml files");
    } else {
        tracing::info!(via = %mailer.describe(), "mail gateway");
    }
    let backoff = crate::mail::Backoff { base: settings.email.retry_base, max: settings.email.retry_max, max_attempts: settings.email.max_attempts };
    let mail_task = tokio::spawn(crate::mail::run_worker(mailer, Arc::new(MailOutbox(core.clone())), core.mail_queued.clone(), stop_rx.clone(), settings.email.poll, backoff));
    let web_task = tokio::spawn(web_future);
    let menus = crate::flow::menu::load(settings.menus.as_deref(), settings.art_dir.as_deref()).map_err(|e| anyhow::anyhow!("menus:\n  {}", e.join("\n  ")))?;
    let menus: crate::flow::menu::SharedMenus = Arc::new(std::sync::RwLock::new(Arc::new(menus)));
    let sessions_task = tokio::spawn(follow_session_ends(core.clone(), stop_rx.clone()));
    let ssh_task = tokio::spawn(crate::ssh::serve(listener, core.clone(), ssh_config, menus.clone(), stop_rx));
    tracing::info!(ssh = %ssh_addr, web = %web_addr, config = %settings.source, "portcullis is up");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready ssh={ssh_addr} web={web_addr}").context("writing the ready line")?;
        out.flush().context("writing the ready line")?;
    }

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&core, &menus, config_path.as_deref()).await,
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Err(e) = sessions_task.await {
        tracing::error!(error = %e, task = "sessions", "a task failed");
    }
    for (name, task) in [("ssh", ssh_task), ("web", web_task), ("mail", mail_task)] {
        if let Err(e) = task.await {
            tracing::error!(error = %e, task = name, "a task failed");
        }
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

/// Cuts live sessions whose rows another process ended or removed (the
/// CLI deleting an account), twice a second, until the gate stops.
async fn follow_session_ends(core: Arc<Core>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        match core.cut_vanished_sessions() {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "sessions ended by another process were cut"),
            Err(e) => tracing::warn!(error = %e, "checking live sessions"),
        }
    }
}

async fn reload(core: &Core, menus: &crate::flow::menu::SharedMenus, path: Option<&Path>) {
    let now = Millis::now();
    match config::load(path) {
        Ok(new) if !check(&new).is_empty() => {
            let problems = check(&new);
            for p in &problems {
                tracing::error!(problem = %p, "new configuration refused; keeping the old one");
            }
            let e = Event::new(EventType::ConfigReloaded, Severity::Medium, "configuration reload refused; the old configuration stays", now).detail("problems", problems);
            core.record(e).await;
        }
        Ok(new) => {
            let old = core.settings();
            if new.ssh.listen != old.ssh.listen || new.data_dir != old.data_dir {
                tracing::warn!("listener addresses and data_dir take effect only after a restart");
            }
            match crate::flow::menu::load(new.menus.as_deref(), new.art_dir.as_deref()) {
                Ok(m) => *menus.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(m),
                // `check` compiled them a moment ago; a file changed in between.
                Err(e) => tracing::error!(problems = ?e, "menus changed during reload; keeping the old ones"),
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
