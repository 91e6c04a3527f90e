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

/// How often the webhook queue is checked for deliveries queued by the CLI
/// (deliveries queued in the daemon wake the worker at once).
const WEBHOOK_POLL: std::time::Duration = std::time::Duration::from_secs(1);

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
        metrics_from_loopback: w.metrics_from_loopback,
        http1_idle_timeout: w.http1_idle_timeout,
        http2_idle_timeout: w.http2_idle_timeout,
        http2_max_age: w.http2_max_age,
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
    let webhooks: Vec<_> = settings.webhooks.values().cloned().collect();
    for (key, e) in crate::hooks::check(&webhooks) {
        problems.push(format!("{}: {e}", config::locate(settings, &key)));
    }
    if let Some(dir) = &settings.templates_dir {
        let at = config::locate(settings, "templates_dir");
        let (p, w) = crate::core::mail::check_templates(dir);
        problems.extend(p.into_iter().map(|p| format!("{at}: {p}")));
        warnings.extend(w.into_iter().map(|w| format!("{at}: {w}")));
    }
    if settings.data_dir.starts_with("/etc") {
        warnings.push(format!(
            "{}: the data folder resolves to {}, under /etc, which is for configuration: set an absolute data_dir such as /var/lib/portcullis (a relative one follows the config file's folder)",
            config::locate(settings, "data_dir"),
            settings.data_dir.display()
        ));
    }
    if let Err(e) = crate::core::webauthn::attestation_roots(&settings.attestation_ca) {
        let at = config::locate(settings, "webauthn.attestation_ca");
        problems.extend(e.into_iter().map(|p| format!("{at}: {p}")));
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

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft
/// limit in force afterwards.
fn raise_descriptor_limit() -> std::io::Result<usize> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit reads only the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        } else {
            tracing::warn!(error = %std::io::Error::last_os_error(), soft = lim.rlim_cur, hard = lim.rlim_max, "cannot raise the descriptor limit");
        }
    }
    Ok(usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX))
}

/// Descriptors open in this process now.
fn descriptors_in_use() -> std::io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count())
}

pub async fn serve(settings: Settings, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let problems = check(&settings);
    if !problems.is_empty() {
        anyhow::bail!("invalid configuration:\n  {}", problems.join("\n  "));
    }
    let descriptor_limit = raise_descriptor_limit().context("reading the descriptor limit (RLIMIT_NOFILE)")?;
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
    // Detection and the event export see each committed batch from the
    // writer, in memory.
    let mut feeds = Vec::new();
    let feed_rx = if settings.detection.any_enabled() {
        let (tx, rx) = crate::store::writer::feed(crate::core::detect::feed::HANDOFF_EVENTS);
        feeds.push(tx);
        Some(rx)
    } else {
        None
    };
    let export_rx = if crate::export::wanted(&settings.export) {
        let (tx, rx) = crate::store::writer::feed(settings.export.queue);
        feeds.push(tx);
        // Its own connection, as the detector's. Where the stream starts is
        // read now, before the writer can commit a batch.
        let export_store = Arc::new(Store::open(&db)?);
        let from = crate::export::head(&export_store);
        Some((rx, export_store, from))
    } else {
        None
    };
    let (writer, writer_thread) = EventWriter::start_with_feeds(&db, settings.event_batch, feeds)?;
    let host_key = crate::ssh::load_or_create_host_key(&settings.ssh.host_key)?;
    let listen = settings.ssh.listen;
    let keyring = crate::core::secrets::Keyring::load_or_create(&settings.data_dir).map_err(anyhow::Error::msg)?;
    let core = Arc::new(Core::new(store, settings, EventSink::Writer(writer.clone()), keyring));
    {
        let metrics = core.metrics.clone();
        writer.observe(Box::new(move |events, now| metrics.batch_committed(events, now)));
    }
    let exporter = match export_rx {
        Some((rx, export_store, from)) => Some(crate::export::start(core.settings().export.clone(), export_store, rx, from, core.export_counts.clone()).context("starting the event export")?),
        None => None,
    };
    core.rebuild_windows(Millis::now())?;
    let blocks = core.load_blocks(Millis::now()).context("loading address blocks")?;
    if blocks > 0 {
        tracing::info!(count = blocks, "address blocks loaded");
    }
    let (detection, findings_task) = start_detection(&core, &db, feed_rx)?;
    let ssh_config: crate::ssh::SharedConfig = Arc::new(std::sync::RwLock::new(Arc::new(crate::ssh::russh_config(&core, host_key.clone()))));
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding SSH listener {listen}"))?;
    let ssh_addr = listener.local_addr().context("reading the SSH listener address")?;

    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let settings = core.settings();
    let (web_addr, web_future) = crate::web::bind(&web_settings(&settings), core.clone(), stop_rx.clone())
        .await
        .map_err(|e| anyhow::anyhow!("starting the web server on {}: {e}", settings.web.listen))?;
    // Every listener and file is open now: what is left of the limit, less
    // the reserve, is what web connections may use.
    match descriptors_in_use() {
        Ok(in_use) => {
            core.web_connections.set_descriptors(descriptor_limit, in_use);
            tracing::info!(limit = descriptor_limit, in_use, reserve_for_ssh = settings.web.descriptor_reserve, web_budget = core.web_connections.descriptor_budget(), "file descriptors");
        }
        Err(e) => tracing::warn!(error = %e, "cannot count open descriptors; the web server has no descriptor budget"),
    }
    let mailer = Arc::new(crate::mail::Mailer::new(&mail_settings(&settings)).map_err(|e| anyhow::anyhow!("email: {e}"))?);
    if settings.email.smtp.is_none() {
        tracing::info!(spool = %settings.data_dir.join("mail").display(), "no SMTP server configured: mail is written as .eml files");
    } else {
        tracing::info!(via = %mailer.describe(), "mail gateway");
    }
    let backoff = crate::mail::Backoff { base: settings.email.retry_base, max: settings.email.retry_max, max_attempts: settings.email.max_attempts };
    let mail_task = tokio::spawn(crate::mail::run_worker(mailer, core.clone(), core.mail_queued.clone(), stop_rx.clone(), settings.email.poll, backoff));
    let hooks_task = tokio::spawn(crate::hooks::run_worker(core.clone(), core.webhook_queued.clone(), stop_rx.clone(), WEBHOOK_POLL));
    let web_task = tokio::spawn(web_future);
    let menus = crate::flow::menu::load(settings.menus.as_deref(), settings.art_dir.as_deref()).map_err(|e| anyhow::anyhow!("menus:\n  {}", e.join("\n  ")))?;
    let menus: crate::flow::menu::SharedMenus = Arc::new(std::sync::RwLock::new(Arc::new(menus)));
    let watch = crate::store::locks::ChangeWatch::open(&db).context("opening the change watcher's connection")?;
    let changes_task = tokio::spawn(follow_changes(core.clone(), watch, stop_rx.clone()));
    let escalations_task = tokio::spawn(follow_escalations(core.clone(), stop_rx.clone()));
    let daily_task = tokio::spawn(follow_daily(core.clone(), stop_rx.clone()));
    let ssh_task = tokio::spawn(crate::ssh::serve(listener, core.clone(), ssh_config.clone(), menus.clone(), stop_rx));
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
            _ = hup.recv() => {
                // logrotate renamed the events file: a new one is made.
                if let Some(x) = &exporter {
                    x.reopen();
                }
                reload(&core, &menus, config_path.as_deref(), &ssh_config, &host_key).await
            }
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Err(e) = changes_task.await {
        tracing::error!(error = %e, task = "changes", "a task failed");
    }
    for (name, task) in [("ssh", ssh_task), ("web", web_task), ("mail", mail_task), ("webhooks", hooks_task), ("escalations", escalations_task), ("daily", daily_task)] {
        if let Err(e) = task.await {
            tracing::error!(error = %e, task = name, "a task failed");
        }
    }
    if !writer.flush().await {
        tracing::error!("the last security events could not be written");
    }
    // Every event is committed: the detector reads what is left, then stops.
    if let Some(d) = detection {
        d.stop();
    }
    if let Err(e) = findings_task.await {
        tracing::error!(error = %e, task = "findings", "a task failed");
    }
    // The last findings' incidents and playbooks wrote events of their own:
    // committed before the export's last read. (The detector cannot see
    // them: it had to stop for the findings to end; the next start's
    // rebuild reads them.)
    if !writer.flush().await {
        tracing::error!("the security events of the last findings could not be written");
    }
    // The export streams what is left and the chain's head, then stops.
    if let Some(x) = exporter {
        x.stop();
    }
    drop(writer);
    drop(core);
    writer_thread.join();
    tracing::info!("stopped");
    Ok(())
}

/// Starts the detection thread (when a rule is on) and the task that takes
/// its findings. Until the incident engine is wired in, a finding is logged
/// (warn) with its rule, type, subject and title.
fn start_detection(
    core: &Arc<Core>,
    db: &Path,
    feed: Option<crate::store::writer::FeedReceiver>,
) -> anyhow::Result<(Option<crate::core::detect::feed::DetectionThread>, tokio::task::JoinHandle<()>)> {
    use crate::core::detect::feed;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<crate::model::Finding>(1024);
    let settings = core.settings();
    let thread = match feed {
        Some(handoff) => {
            // Its own connection: catch-up reads never wait on the core's.
            let store = Arc::new(Store::open(db)?);
            let config = feed::FeedConfig { settings: settings.detection.clone(), ipv6_prefix: settings.ssh.penalties.ipv6_prefix, rebuild: true };
            Some(feed::start(store, config, handoff, core.spray_tags.take_receiver(), core.detection.clone(), tx).context("starting the detection thread")?)
        }
        None => {
            drop(tx);
            tracing::info!("detection is off (detection.enabled is false or every rule is off)");
            None
        }
    };
    let responder = core.clone();
    let task = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            tracing::warn!(
                rule = f.details.get("rule").and_then(|v| v.as_str()).unwrap_or(""),
                incident_type = f.incident_type.as_str(),
                severity = f.severity.as_str(),
                subject = %f.subject.key(),
                events = f.event_ids.len(),
                first_event_at = %f.first_event_at.rfc3339(),
                "detection finding: {}",
                f.title
            );
            // The incident, and for a new one its playbooks (core::response).
            match responder.respond_to_finding(f, Millis::now()).await {
                Ok(r) if r.created => tracing::warn!(incident = r.incident_id, "incident opened"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "a finding could not be reported as an incident"),
            }
        }
    });
    Ok((thread, task))
}

/// The keys whose change a reload cannot apply (listeners, files and
/// workers built once at start): they need a restart.
pub fn restart_needed(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let (o, n) = (old, new);
    let (ow, nw) = (&o.web, &n.web);
    let (oe, ne) = (&o.email, &n.email);
    [
        ("data_dir", o.data_dir != n.data_dir),
        ("ssh.listen", o.ssh.listen != n.ssh.listen),
        ("ssh.host_key", o.ssh.host_key != n.ssh.host_key),
        ("web.listen", ow.listen != nw.listen),
        ("web.base_url", ow.base_url != nw.base_url),
        ("web.tls_cert", ow.cert != nw.cert),
        ("web.tls_key", ow.key != nw.key),
        ("web.metrics_token", ow.metrics_token != nw.metrics_token),
        // Read once when the web server is bound.
        ("web.metrics_from_loopback", ow.metrics_from_loopback != nw.metrics_from_loopback),
        ("web.http1_idle_timeout", ow.http1_idle_timeout != nw.http1_idle_timeout),
        ("web.http2_idle_timeout", ow.http2_idle_timeout != nw.http2_idle_timeout),
        ("web.http2_max_age", ow.http2_max_age != nw.http2_max_age),
        ("kdf.workers", o.kdf_workers != n.kdf_workers),
        ("kdf.queue", o.kdf_queue != n.kdf_queue),
        ("events.batch", o.event_batch != n.event_batch),
        ("email.from", oe.from != ne.from),
        ("email.smtp", oe.smtp != ne.smtp),
        ("email.allow_plaintext", oe.allow_plaintext != ne.allow_plaintext),
        ("email.poll", oe.poll != ne.poll),
        ("email.retry_base", oe.retry_base != ne.retry_base),
        ("email.retry_max", oe.retry_max != ne.retry_max),
        ("email.max_attempts", oe.max_attempts != ne.max_attempts),
        // The detector is built once with its rules and windows.
        ("detection", format!("{:?}", o.detection) != format!("{:?}", n.detection)),
        // The export thread and its sinks are built once (SIGHUP reopens the file).
        ("export", o.export != n.export),
    ]
    .into_iter()
    .filter_map(|(k, changed)| changed.then_some(k))
    .collect()
}

/// How often the open incidents are checked for escalations that are due.
const ESCALATION_CHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs the playbooks' escalations (`escalate: { after }`) for incidents
/// still open, every `ESCALATION_CHECK`, until the gate stops.
async fn follow_escalations(core: Arc<Core>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ESCALATION_CHECK) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        match core.run_due_escalations(Millis::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "incident escalations ran"),
            Err(e) => tracing::warn!(error = %e, "checking incidents for escalation"),
        }
    }
}

/// The pause between two batches of retention's deletes: the event
/// writer takes the write lock in between.
const RETENTION_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// The daily jobs: at start and a minute after each UTC midnight, the
/// metrics rollups (the finished days not yet rolled up,
/// `rollups::BACKFILL_DAYS` back at most), then retention (events older
/// than `retention.events_days`, removed in short batches with a pause
/// between, stopped when the gate stops; a run that removed events is recorded
/// as `scan_completed`).
/// Rollups go first, so a day is rolled up before its events go. Both on
/// blocking threads: they read and delete many rows.
async fn follow_daily(core: Arc<Core>, mut stop: tokio::sync::watch::Receiver<bool>) {
    use crate::core::rollups;
    loop {
        let c = core.clone();
        match tokio::task::spawn_blocking(move || c.rollup_missing_days(Millis::now(), rollups::BACKFILL_DAYS)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(days = n, "daily metrics rolled up"),
            Ok(Err(e)) => tracing::warn!(error = %e, "rolling up daily metrics"),
            Err(e) => tracing::warn!(error = %e, "rolling up daily metrics"),
        }
        let (c, halt) = (core.clone(), stop.clone());
        let trimmed = tokio::task::spawn_blocking(move || {
            c.trim_old_events(Millis::now(), &mut |_| {
                std::thread::sleep(RETENTION_PAUSE);
                !*halt.borrow()
            })
        });
        match trimmed.await {
            // A run that removed nothing records nothing.
            Ok(Ok(Some(run))) if run.removed > 0 => {
                tracing::info!(removed = run.removed, first_id = run.first_id, days = run.days, interrupted = run.interrupted, "retention: old events removed");
                core.record_retention(&run, Millis::now()).await;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "retention: removing old events"),
            Err(e) => tracing::warn!(error = %e, "retention: removing old events"),
        }
        let now = Millis::now();
        let next = rollups::day_start(now).0 + rollups::DAY_MS + 60_000;
        let wait = std::time::Duration::from_millis((next - now.0).max(1_000) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// How often the change watcher looks at `PRAGMA data_version`.
const CHANGE_POLL: std::time::Duration = std::time::Duration::from_millis(200);
/// Expired blocks are looked for every this many polls (once a second).
const BLOCK_EXPIRY_TICKS: u64 = 5;
/// Live sessions' rows are refreshed every this many polls
/// (`core::scans::SESSION_REFRESH`), so `security scan sessions` closes
/// only rows no daemon serves.
const SESSION_REFRESH_TICKS: u64 = crate::core::scans::SESSION_REFRESH.as_millis() as u64 / CHANGE_POLL.as_millis() as u64;

/// Follows changes other processes make to the database (the CLI revoking
/// a session, locking or deleting an account): every `CHANGE_POLL` it reads
/// `PRAGMA data_version` on a connection of its own (no table is read) and,
/// only when another connection committed, asks `core` to catch up. The
/// daemon's own commits move it too, so what `on_database_change` does is
/// kept small.
async fn follow_changes(core: Arc<Core>, mut watch: crate::store::locks::ChangeWatch, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHANGE_POLL) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        ticks += 1;
        let changed = match watch.changed() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "reading the database's change counter");
                false
            }
        };
        if changed {
            match core.on_database_change(Millis::now()).await {
                Ok(c) if c.sessions_cut > 0 => tracing::info!(count = c.sessions_cut, "sessions ended by another process were cut"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "catching up with changes made by another process"),
            }
        }
        if ticks % SESSION_REFRESH_TICKS == 0 {
            if let Err(e) = core.refresh_live_sessions(Millis::now()) {
                tracing::warn!(error = %e, "refreshing live sessions");
            }
        }
        // Blocks, unblocks and penalty lifts made by the CLI when something
        // changed; expired blocks (an `ip_unblocked` each) once a second.
        if changed || ticks % BLOCK_EXPIRY_TICKS == 0 {
            if let Err(e) = core.sync_blocks(Millis::now()).await {
                tracing::warn!(error = %e, "following address blocks");
            }
        }
    }
}

async fn reload(core: &Core, menus: &crate::flow::menu::SharedMenus, path: Option<&Path>, ssh_config: &crate::ssh::SharedConfig, host_key: &crate::ssh::HostKey) {
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
            let restart = restart_needed(&old, &new);
            if !restart.is_empty() {
                tracing::warn!(keys = %restart.join(", "), "changed settings that need a restart to take effect; the running values stay: {}", restart.join(", "));
            }
            match crate::flow::menu::load(new.menus.as_deref(), new.art_dir.as_deref()) {
                Ok(m) => *menus.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(m),
                // `check` compiled them a moment ago; a file changed in between.
                Err(e) => tracing::error!(problems = ?e, "menus changed during reload; keeping the old ones"),
            }
            core.reload(new);
            // SSH settings (version string, rejection delay, timeouts,
            // attempts) apply to every connection from now on.
            *ssh_config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(crate::ssh::russh_config(core, host_key.clone()));
            tracing::info!("configuration reloaded");
            let mut e = Event::new(EventType::ConfigReloaded, Severity::Info, "configuration reloaded", now);
            if !restart.is_empty() {
                e = e.detail("restart_needed", restart);
            }
            core.record(e).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("junk.pem"), "not a certificate\n").unwrap();
        let text = "webhooks: {\n  a: {\n    url: \"https://h.example.org/\"\n    secret: 0123456789abcdef\n    ca_file: missing.pem\n  }\n  b: {\n    url: \"https://h.example.org/\"\n    secret: 0123456789abcdef\n    ca_file: junk.pem\n  }\n}\n";
        let path = dir.path().join("t.hjson");
        std::fs::write(&path, text).unwrap();
        let settings = crate::config::load_file(&path).unwrap_or_else(|e| panic!("{e:?}"));
        let (problems, _) = check_all(&settings);
        let (file, folder) = (path.display().to_string(), dir.path().display().to_string());
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with(&format!("{file}:5:5: webhooks.a.ca_file: cannot read {folder}/missing.pem: ")), "{problems:#?}");
        assert_eq!(problems[1], format!("{file}:10:5: webhooks.b.ca_file: {folder}/junk.pem: holds no usable certificate"));
    }

    #[test]
    fn restart_needed_names_what_a_reload_cannot_apply() {
        let settings = |text: &str| crate::config::load::from_text(text, "t.hjson", Path::new("/etc/portcullis")).unwrap_or_else(|e| panic!("{e:?}"));
        let base = settings("");
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            // Applied at once: SSH settings, policies, penalties.
            ("ssh: {\n  server_id: SSH-2.0-Other\n  auth_rejection_time: 2s\n  login_grace_time: 30s\n  max_auth_tries: 3\n  penalties: {\n    ipv6_prefix: 48\n  }\n}\npasswords: {\n  iterations: 700000\n}\nmfa: {\n  lockout: 1m\n}\n", &[]),
            ("ssh: {\n  listen: \"127.0.0.1:1\"\n}\n", &["ssh.listen"]),
            ("ssh: {\n  host_key: /keys/other\n}\n", &["ssh.host_key"]),
            // The files that live in it move with it.
            ("data_dir: /var/lib/other\n", &["data_dir", "ssh.host_key", "web.tls_cert", "web.tls_key"]),
            ("kdf: {\n  workers: 7\n  queue: 3\n}\n", &["kdf.workers", "kdf.queue"]),
            ("web: {\n  listen: \"127.0.0.1:1\"\n}\nemail: {\n  from: \"x@example.org\"\n}\n", &["web.listen", "email.from"]),
            // Turning loopback access to /metrics off must not look applied.
            ("web: {\n  metrics_from_loopback: false\n  http1_idle_timeout: 9s\n  http2_idle_timeout: 9s\n  http2_max_age: 9m\n}\n", &["web.metrics_from_loopback", "web.http1_idle_timeout", "web.http2_idle_timeout", "web.http2_max_age"]),
            // Applied at once: block durations and never_block (read per block; the penalties' exemption is rebuilt on reload).
            ("blocks: {\n  first: 1h\n  max: 2d\n  never_block: [\"10.0.0.0/8\"]\n}\n", &[]),
            // Applied at once (core's caps).
            ("web: {\n  max_connections: 7\n  max_connections_per_address: 3\n  descriptor_reserve: 99\n}\n", &[]),
            // Playbooks and webhooks are read at each incident and delivery.
            ("playbooks: []\nwebhooks: {\n  ops: {\n    url: \"https://hooks.example.org/x\"\n    secret: 0123456789abcdef\n  }\n}\n", &[]),
            // The detector is built once, with its rules.
            ("detection: {\n  brute_force_ip: {\n    failures: 20\n  }\n}\n", &["detection"]),
            ("detection: {\n  enabled: false\n}\n", &["detection"]),
        ];
        for (text, want) in cases {
            assert_eq!(restart_needed(&base, &settings(text)), *want, "{text:?}");
        }
    }
}
