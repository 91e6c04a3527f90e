//! Outgoing mail: settings checks, the transport (SMTP through lettre, or a
//! file spool), and the worker that drains the durable outbox.
//!
//! lettre lives only in this module. Message bodies hold single-use links:
//! they never reach a log or an error; logs carry the mail id, the recipient
//! domain, the attempt number and the error.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::{drain, Core};
use crate::model::{Millis, FOREVER};

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, Mailboxes, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Longest accepted mailbox text (`Name <user@domain>`).
const MAX_MAILBOX_LEN: usize = 512;
/// Longest accepted subject, in bytes (RFC 5322 line limit).
const MAX_SUBJECT_LEN: usize = 998;
/// Mails fetched from the outbox at a time.
const BATCH: usize = 32;
/// Mails handled in one round before the worker sleeps again.
const MAX_PER_ROUND: usize = 1024;
/// Pooled SMTP connections (the worker sends one mail at a time).
const POOL_MAX: u32 = 2;
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Mail settings, as resolved from the configuration.
#[derive(Clone)]
pub struct MailSettings {
    /// `"Portcullis <gate@localhost>"` or `"gate@localhost"`.
    pub from: String,
    /// lettre URL: `smtp://host:port`, `smtps://...`,
    /// `smtp://user:pass@host:port?tls=required`; `None` means file spool.
    pub smtp: Option<String>,
    /// Allow plaintext `smtp://` to a non-loopback host.
    pub allow_plaintext: bool,
    /// Where `.eml` files go when `smtp` is `None` (created if missing, mode 0700).
    pub spool_dir: PathBuf,
    /// Limit for one send.
    pub timeout: Duration,
}

impl fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailSettings")
            .field("from", &self.from)
            .field("smtp", &self.smtp.as_deref().map(redact_url))
            .field("allow_plaintext", &self.allow_plaintext)
            .field("spool_dir", &self.spool_dir)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Checks settings without connecting: the from address parses; the URL
/// parses; a plaintext `smtp://` URL (no TLS: neither `smtps://` nor
/// `?tls=required` / `?tls=opportunistic`) to a host that is not loopback
/// (127.0.0.0/8, ::1, "localhost") is refused unless `allow_plaintext`.
/// Messages are lowercase, name the problem, and never contain the password
/// of the URL.
pub fn validate(s: &MailSettings) -> Result<(), String> {
    parse_mailbox(&s.from).map_err(|why| format!("from address {:?} {why}", s.from))?;
    if s.timeout.is_zero() {
        return Err("timeout must be greater than zero".to_string());
    }
    if let Some(url) = &s.smtp {
        check_url(url, s.allow_plaintext).map_err(|e| scrub(&e, url))?;
    }
    Ok(())
}

pub use crate::config::smtp::redact_url;

/// One mail from the outbox, as `core` hands it over (its `Debug`
/// shows sizes only: bodies hold single-use links).
pub use crate::core::mail::Outgoing as OutgoingMail;

/// Where mail goes.
pub enum Transport {
    /// An SMTP relay (pooled connections).
    Smtp(SmtpRelay),
    /// A folder of `.eml` files.
    Spool(PathBuf),
}

/// A pooled SMTP transport and its redacted URL.
pub struct SmtpRelay {
    inner: AsyncSmtpTransport<Tokio1Executor>,
    shown: String,
}

/// Builds and delivers mail.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    timeout: Duration,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("transport", &self.describe())
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a send failed.
#[derive(Debug)]
enum SendError {
    /// The mail itself is bad (recipient, subject): retrying cannot help.
    Invalid(String),
    /// The transport failed (outage, timeout, refusal): worth retrying.
    Transport(String),
}

impl SendError {
    fn message(&self) -> &str {
        match self {
            SendError::Invalid(m) | SendError::Transport(m) => m,
        }
    }
}

impl Mailer {
    /// Validates the settings and builds the transport. In SMTP mode this
    /// must run inside the tokio runtime (lettre's pool starts a task).
    pub fn new(s: &MailSettings) -> Result<Mailer, String> {
        validate(s)?;
        let from =
            parse_mailbox(&s.from).map_err(|why| format!("from address {:?} {why}", s.from))?;
        let transport = match &s.smtp {
            Some(url) => {
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(
                        "the smtp mailer must be created inside the tokio runtime".to_string()
                    );
                }
                let inner = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| {
                        scrub(
                            &format!("smtp url {:?} is not valid: {e}", redact_url(url)),
                            url,
                        )
                    })?
                    .timeout(Some(s.timeout))
                    .pool_config(PoolConfig::new().max_size(POOL_MAX).idle_timeout(POOL_IDLE))
                    .build();
                Transport::Smtp(SmtpRelay {
                    inner,
                    shown: redact_url(url),
                })
            }
            None => {
                ensure_spool_dir(&s.spool_dir)?;
                Transport::Spool(s.spool_dir.clone())
            }
        };
        Ok(Mailer {
            transport,
            from,
            timeout: s.timeout,
        })
    }

    /// `"smtp smtp://user:***@host:587"` or `"file spool /path/data/mail"`.
    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Smtp(r) => format!("smtp {}", r.shown),
            Transport::Spool(dir) => format!("file spool {}", dir.display()),
        }
    }

    /// Builds the message (text, plus html as an alternative when given) and
    /// delivers it. A bad recipient or subject is an error, never a panic.
    pub async fn send(&self, m: &OutgoingMail) -> Result<(), String> {
        self.deliver(m).await.map_err(|e| e.message().to_string())
    }

    async fn deliver(&self, m: &OutgoingMail) -> Result<(), SendError> {
        let message = self.build(m).map_err(SendError::Invalid)?;
        match &self.transport {
            Transport::Smtp(relay) => {
                match tokio::time::timeout(self.timeout, relay.inner.send(message)).await {
                    Ok(Ok(_response)) => Ok(()),
                    Ok(Err(e)) => Err(SendError::Transport(format!("smtp delivery failed: {e}"))),
                    Err(_) => Err(SendError::Transport(format!(
                        "smtp delivery timed out after {} ms",
                        self.timeout.as_millis()
                    ))),
                }
            }
            Transport::Spool(dir) => {
                let dir = dir.clone();
                let id = m.id;
                let bytes = message.formatted();
                tokio::task::spawn_blocking(move || write_spool(&dir, id, &bytes))
                    .await
                    .map_err(|e| SendError::Transport(format!("spool writer failed: {e}")))?
                    .map(|_path| ())
                    .map_err(SendError::Transport)
            }
        }
    }

    fn build(&self, m: &OutgoingMail) -> Result<Message, String> {
        let to = parse_mailbox(&m.to).map_err(|why| format!("recipient address {why}"))?;
        check_subject(&m.subject)?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(m.subject.clone())
            .message_id(None)
            .date_now();
        let text = SinglePart::builder().header(ContentType::TEXT_PLAIN).body(unbroken_body(&m.body.text));
        // An empty HTML part means a text-only mail.
        let built = match m.body.html.as_str() {
            "" => builder.singlepart(text),
            html => builder.multipart(
                MultiPart::alternative()
                    .singlepart(text)
                    .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(unbroken_body(html))),
            ),
        };
        built.map_err(|e| format!("cannot build message: {e}"))
    }
}

/// A body in 7bit, so a link stays on one line as written (quoted-printable
/// would fold lines over 76 characters with soft breaks, cutting a link in
/// a `.eml` file or a mail reader that copies the raw text). lettre picks
/// quoted-printable for any line of 76 characters or more, so the body is
/// given to it encoded: CRLF line ends, every line within RFC 5322's 998
/// bytes, ASCII without NUL — which every relay accepts as 7bit, with or
/// without 8BITMIME. A body that does not fit (non-ASCII text among them)
/// falls back to lettre's choice (quoted-printable or base64).
fn unbroken_body(text: &str) -> Body {
    let crlf = text.replace("\r\n", "\n").replace('\r', "\n").replace('\n', "\r\n");
    let fits = crlf.is_ascii() && !crlf.contains('\0') && crlf.split("\r\n").all(|line| line.len() <= 998);
    if fits {
        Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::SevenBit)
    } else {
        Body::new(text.to_owned())
    }
}

/// Retry schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    pub max_attempts: u32,
}

impl Backoff {
    /// `base * 2^attempts_so_far`, capped at `max` (overflow gives `max`).
    pub fn next_delay(&self, attempts_so_far: u32) -> Duration {
        1u32.checked_shl(attempts_so_far)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// Runs until `shutdown` turns true (or its sender is dropped): every `poll`
/// interval, or at once when `wake` is notified (use `notify_one`, which is
/// not lost while a round runs), sends every due mail (oldest first),
/// marking each sent or failed with the next attempt time (give up after
/// `max_attempts`, or at once when the mail itself is invalid). A failure of
/// one mail does not stop the others; an SMTP outage just reschedules.
pub async fn run_worker(
    mailer: Arc<Mailer>,
    outbox: Arc<Core>,
    wake: Arc<tokio::sync::Notify>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    poll: Duration,
    backoff: Backoff,
) {
    tracing::info!(transport = %mailer.describe(), "mail worker started");
    let outbox = Outbox { mailer, core: outbox, backoff };
    drain::run(&outbox, drain::Limits { batch: BATCH, max_per_round: MAX_PER_ROUND }, &wake, shutdown, poll).await;
    tracing::info!("mail worker stopped");
}

/// The outbox as the worker drains it.
struct Outbox {
    mailer: Arc<Mailer>,
    core: Arc<Core>,
    backoff: Backoff,
}

impl drain::Queue for Outbox {
    type Item = OutgoingMail;

    fn id(m: &OutgoingMail) -> i64 {
        m.id
    }

    async fn due(&self, n: usize) -> Option<Vec<OutgoingMail>> {
        let now = now_ms();
        match on_outbox(&self.core, move |o| o.due_mail(Millis(now), n)).await {
            Ok(due) => Some(due),
            Err(e) => {
                tracing::warn!(error = %e, "mail outbox: cannot read due mail");
                None
            }
        }
    }

    async fn send(&self, m: &OutgoingMail) {
        send_one(&self.mailer, &self.core, m, &self.backoff).await
    }
}

async fn send_one(mailer: &Mailer, outbox: &Arc<Core>, m: &OutgoingMail, backoff: &Backoff) {
    let id = m.id;
    let attempt = m.attempts.saturating_add(1);
    let domain = recipient_domain(&m.to);
    match mailer.deliver(m).await {
        Ok(()) => {
            tracing::info!(id, domain = %domain, attempt, "mail sent");
            let now = now_ms();
            if let Err(e) = on_outbox(outbox, move |o| o.mail_sent(id, Millis(now))).await {
                tracing::warn!(id, error = %e, "mail outbox: sent mail not recorded; it may be sent again");
            }
        }
        Err(err) => {
            let give_up = matches!(err, SendError::Invalid(_)) || attempt >= backoff.max_attempts;
            let delay_ms =
                i64::try_from(backoff.next_delay(m.attempts).as_millis()).unwrap_or(i64::MAX);
            let next = now_ms().saturating_add(delay_ms);
            let error = err.message().to_string();
            if give_up {
                tracing::warn!(id, domain = %domain, attempt, error = %error, "mail not sent, giving up");
            } else {
                tracing::warn!(id, domain = %domain, attempt, retry_in_ms = delay_ms, error = %error, "mail not sent, will retry");
            }
            if let Err(e) = on_outbox(outbox, move |o| o.mail_failed(id, &error, if give_up { FOREVER } else { Millis(next) })).await {
                tracing::warn!(id, error = %e, "mail outbox: failure not recorded");
            }
        }
    }
}

/// Runs one outbox call of `core` on the blocking pool (the outbox is SQLite).
async fn on_outbox<T, F>(outbox: &Arc<Core>, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce(&Core) -> crate::core::Result<T> + Send + 'static,
{
    let outbox = Arc::clone(outbox);
    tokio::task::spawn_blocking(move || f(&outbox).map_err(|e| e.to_string()))
        .await
        .map_err(|e| format!("outbox call failed: {e}"))?
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The domain of a recipient, for logs; anything odd becomes `<invalid>`.
fn recipient_domain(to: &str) -> String {
    let domain = to
        .trim()
        .trim_end_matches('>')
        .rsplit('@')
        .next()
        .unwrap_or("");
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if ok && to.contains('@') {
        domain.to_ascii_lowercase()
    } else {
        "<invalid>".to_string()
    }
}

/// Parses exactly one mailbox; the reason completes "X ...".
fn parse_mailbox(s: &str) -> Result<Mailbox, &'static str> {
    if s.trim().is_empty() {
        return Err("is empty");
    }
    if s.contains(['\r', '\n']) {
        return Err("contains a line break");
    }
    if s.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    if s.len() > MAX_MAILBOX_LEN {
        return Err("is too long");
    }
    if has_list_separator(s) {
        return Err("lists more than one mailbox");
    }
    let mailbox: Mailbox = s.parse().map_err(|_| "is not a valid mailbox")?;
    // lettre's parser stops after the first mailbox; refuse a list.
    let all: Mailboxes = s.parse().map_err(|_| "is not a valid mailbox")?;
    if all.iter().count() != 1 {
        return Err("lists more than one mailbox");
    }
    Ok(mailbox)
}

/// A `,` or `;` outside a quoted string separates mailboxes.
fn has_list_separator(s: &str) -> bool {
    let mut quoted = false;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if !quoted && (c == ',' || c == ';') {
            return true;
        }
    }
    false
}

fn check_subject(subject: &str) -> Result<(), String> {
    if subject.contains(['\r', '\n']) {
        return Err("subject contains a line break".to_string());
    }
    if subject.chars().any(|c| c.is_control() && c != '\t') {
        return Err("subject contains a control character".to_string());
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(format!("subject is longer than {MAX_SUBJECT_LEN} bytes"));
    }
    Ok(())
}

/// The URL's own rules live with the configuration (`config::smtp`); the
/// last word is lettre's parser (no connection is made).
fn check_url(url: &str, allow_plaintext: bool) -> Result<(), String> {
    crate::config::smtp::check_url(url, allow_plaintext)?;
    AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map(|_| ())
        .map_err(|e| format!("smtp url {:?} is not valid: {e}", redact_url(url)))
}

/// Belt and braces: removes the URL's password from a message if some
/// library text ever echoed it.
fn scrub(message: &str, url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let password = rest
        .rfind('@')
        .and_then(|at| rest[..at].split_once(':'))
        .map(|(_, p)| p)
        .filter(|p| p.len() >= 3);
    match password {
        Some(p) if message.contains(p) => message.replace(p, "***"),
        _ => message.to_string(),
    }
}

fn ensure_spool_dir(dir: &Path) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create mail spool {}: {e}", dir.display()))
}

/// Writes `<dir>/<id>-<unixmillis>.eml` (mode 0600) through a temporary
/// name and a rename, so readers never see half a file.
fn write_spool(dir: &Path, id: i64, bytes: &[u8]) -> Result<PathBuf, String> {
    ensure_spool_dir(dir)?;
    let ms = now_ms();
    let path = dir.join(format!("{id}-{ms}.eml"));
    let tmp = dir.join(format!(".{id}-{ms}.eml.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(format!(
            "cannot write mail spool file {}: {e}",
            path.display()
        ));
    }
    // Make the rename durable; a failure here loses nothing already written.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    // ---- helpers ----

    /// A fresh, empty temporary folder, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let p = std::env::temp_dir().join(format!(
                "portcullis-mail-{tag}-{}-{nanos}-{n}",
                std::process::id()
            ));
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn settings(smtp: Option<&str>, allow_plaintext: bool) -> MailSettings {
        MailSettings {
            from: "Portcullis <gate@localhost>".to_string(),
            smtp: smtp.map(str::to_string),
            allow_plaintext,
            spool_dir: PathBuf::from("/nonexistent/spool"),
            timeout: Duration::from_secs(5),
        }
    }

    fn mail(id: i64, to: &str, html: bool) -> OutgoingMail {
        OutgoingMail {
            id,
            to: to.to_string(),
            subject: format!("Portcullis test {id}"),
            body: crate::core::mail::Body {
                text: format!("Plain body {id}: https://gate.example/verify/SECRETTOKEN{id}"),
                html: if html { format!("<p>Html body {id}</p>") } else { String::new() },
            },
            attempts: 0,
        }
    }

    fn free_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    async fn wait_until(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) {
        let end = Instant::now() + deadline;
        while !ok() {
            assert!(
                Instant::now() < end,
                "timed out after {deadline:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A running aiosmtpd that stores mail in a Maildir; killed on drop.
    struct SmtpServer {
        child: Child,
        maildir: PathBuf,
        _cwd: TempDir,
        _root: TempDir,
    }

    impl SmtpServer {
        /// `None` (with a message) when aiosmtpd is not installed.
        async fn start(port: u16) -> Option<SmtpServer> {
            let probe = Command::new("python3")
                .args(["-c", "import aiosmtpd"])
                .current_dir(std::env::temp_dir())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !probe.is_ok_and(|s| s.success()) {
                eprintln!("SKIPPED: aiosmtpd is not installed (pip install aiosmtpd)");
                return None;
            }
            let root = TempDir::new("maildir");
            let cwd = TempDir::new("cwd"); // empty: no stray .py can shadow a module
            let maildir = root.0.join("box");
            let child = Command::new("python3")
                .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(&maildir)
                .current_dir(&cwd.0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start aiosmtpd");
            let mut server = SmtpServer {
                child,
                maildir,
                _cwd: cwd,
                _root: root,
            };
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let end = Instant::now() + Duration::from_secs(20);
            loop {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    break;
                }
                if let Ok(Some(status)) = server.child.try_wait() {
                    panic!("aiosmtpd exited early: {status}");
                }
                assert!(
                    Instant::now() < end,
                    "aiosmtpd did not listen on {addr} within 20 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some(server)
        }

        fn delivered(&self) -> Vec<String> {
            let Ok(entries) = fs::read_dir(self.maildir.join("new")) else {
                return Vec::new();
            };
            entries
                .filter_map(|e| fs::read_to_string(e.ok()?.path()).ok())
                .collect()
        }
    }

    impl Drop for SmtpServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!("aiosmtpd (pid {}) did not exit within 5 s", self.child.id());
        }
    }

    /// The durable outbox: a real `Core` on a temporary store.
    struct TestOutbox {
        core: Arc<Core>,
        _dir: TempDir,
    }

    #[derive(Clone, Debug, PartialEq)]
    enum State {
        Pending,
        Sent,
        GaveUp,
    }

    impl TestOutbox {
        fn new() -> TestOutbox {
            let dir = TempDir::new("outbox");
            let settings = crate::config::load::from_text("passwords: {\n  iterations: 1000\n}\n", "t.hjson", &dir.0).unwrap();
            let store = Arc::new(crate::store::Store::open(&dir.0.join("t.db")).unwrap());
            store.migrate(None).unwrap();
            let keyring = crate::core::secrets::Keyring::from_key(&[5; 32]);
            let core = Arc::new(Core::new(store.clone(), settings, crate::core::EventSink::Direct(store), keyring));
            TestOutbox { core, _dir: dir }
        }
        /// Queues `m` (its id is the store's); returns the id.
        fn push(&self, m: OutgoingMail) -> i64 {
            self.core.queue_prepared_mail(&m.to, &m.subject, &m.body, Millis(now_ms())).unwrap()
        }
        fn row(&self, id: i64) -> crate::store::mfa::OutboxRow {
            self.core.mail_queue(true).unwrap().into_iter().find(|r| r.id == id).unwrap()
        }
        fn state(&self, id: i64) -> State {
            let row = self.row(id);
            if row.sent_at.is_some() {
                State::Sent
            } else if row.next_attempt_at == FOREVER.rfc3339() {
                State::GaveUp
            } else {
                State::Pending
            }
        }
    }

    struct Worker {
        handle: tokio::task::JoinHandle<()>,
        wake: Arc<tokio::sync::Notify>,
        stop: tokio::sync::watch::Sender<bool>,
    }

    impl Worker {
        fn start(mailer: Mailer, outbox: Arc<Core>, backoff: Backoff) -> Worker {
            let wake = Arc::new(tokio::sync::Notify::new());
            let (stop, rx) = tokio::sync::watch::channel(false);
            let handle = tokio::spawn(run_worker(
                Arc::new(mailer),
                outbox,
                Arc::clone(&wake),
                rx,
                Duration::from_millis(100),
                backoff,
            ));
            Worker { handle, wake, stop }
        }
        async fn stop(self) {
            self.stop.send(true).unwrap();
            tokio::time::timeout(Duration::from_secs(10), self.handle)
                .await
                .expect("worker stops within 10 s")
                .expect("worker did not panic");
        }
    }

    // ---- settings ----

    #[test]
    fn validate_table() {
        const REFUSED: &str = "; use smtps:// or ?tls=required, or set allow_plaintext";
        type Case<'a> = (&'a str, Option<&'a str>, bool, Result<(), String>);
        let cases: &[Case] = &[
            ("gate@localhost", None, false, Ok(())),
            ("Portcullis <gate@localhost>", Some("smtp://127.0.0.1:2525"), false, Ok(())),
            ("gate@localhost", Some("smtp://localhost:25"), false, Ok(())),
            ("gate@localhost", Some("smtp://LOCALHOST:25"), false, Ok(())),
            ("gate@localhost", Some("smtp://127.8.9.10:25"), false, Ok(())),
            ("gate@localhost", Some("smtp://[::1]:25"), false, Ok(())),
            ("gate@localhost", Some("smtp://user:hunter2pw@127.0.0.1:2525"), false, Ok(())),
            (
                "gate@localhost",
                Some("smtp://mail.example.org:25"),
                false,
                Err(format!("smtp url \"smtp://mail.example.org:25\" would send mail unencrypted to mail.example.org{REFUSED}")),
            ),
            (
                "gate@localhost",
                Some("smtp://user:hunter2pw@mail.example.org:25"),
                false,
                Err(format!(
                    "smtp url \"smtp://user:***@mail.example.org:25\" would send mail unencrypted to mail.example.org{REFUSED}"
                )),
            ),
            (
                "gate@localhost",
                Some("smtp://10.0.0.5"),
                false,
                Err(format!("smtp url \"smtp://10.0.0.5\" would send mail unencrypted to 10.0.0.5{REFUSED}")),
            ),
            (
                "gate@localhost",
                Some("smtp://localhost.example.org"),
                false,
                Err(format!(
                    "smtp url \"smtp://localhost.example.org\" would send mail unencrypted to localhost.example.org{REFUSED}"
                )),
            ),
            ("gate@localhost", Some("smtp://mail.example.org:25"), true, Ok(())),
            ("gate@localhost", Some("smtps://mail.example.org"), false, Ok(())),
            ("gate@localhost", Some("smtps://user:hunter2pw@mail.example.org:465"), false, Ok(())),
            ("gate@localhost", Some("smtp://user:hunter2pw@mail.example.org:587?tls=required"), false, Ok(())),
            ("gate@localhost", Some("smtp://mail.example.org?tls=opportunistic"), false, Ok(())),
            (
                "gate@localhost",
                Some("smtp://user:hunter2pw@mail.example.org?tls=always"),
                false,
                Err("smtp url \"smtp://user:***@mail.example.org?tls=always\" has unknown tls mode \"always\" (expected required or opportunistic)".to_string()),
            ),
            (
                "gate@localhost",
                Some("not a url"),
                false,
                Err("smtp url \"not a url\" contains whitespace or a control character".to_string()),
            ),
            (
                "gate@localhost",
                Some("user:hunter2pw@mail.example.org"),
                false,
                Err("smtp url \"user:***@mail.example.org\" is not a url (expected smtp://host:port or smtps://host:port)".to_string()),
            ),
            (
                "gate@localhost",
                Some("http://user:hunter2pw@mail.example.org"),
                false,
                Err("smtp url \"http://user:***@mail.example.org\" has unknown scheme \"http\" (expected smtp or smtps)".to_string()),
            ),
            (
                "gate@localhost",
                Some("smtp://user:hunter2pw@:25"),
                false,
                Err("smtp url \"smtp://user:***@:25\" has no host".to_string()),
            ),
            (
                "gate@localhost",
                Some("smtp://user:hunter2pw@127.0.0.1:99999"),
                false,
                Err("smtp url \"smtp://user:***@127.0.0.1:99999\" has an invalid port \"99999\"".to_string()),
            ),
            (
                "gate@localhost",
                Some("smtp://user:hunter2pw@bad%host"),
                true,
                Err("smtp url \"smtp://user:***@bad%host\" has an invalid host".to_string()),
            ),
            (
                "gate@localhost",
                Some("smtp://user:hunter2pw@[::1"),
                false,
                Err("smtp url \"smtp://user:***@[::1\" has an invalid host".to_string()),
            ),
            // A password with '/' cuts the authority short: still hidden.
            (
                "gate@localhost",
                Some("smtp://user:hun/ter2pw@mail.example.org"),
                true,
                Err("smtp url \"smtp://user:***@mail.example.org\" has an invalid port \"hun\"".to_string()),
            ),
            ("not an address", None, false, Err("from address \"not an address\" is not a valid mailbox".to_string())),
            ("", None, false, Err("from address \"\" is empty".to_string())),
            (
                "gate@localhost\r\nBcc: x@evil.example",
                None,
                false,
                Err("from address \"gate@localhost\\r\\nBcc: x@evil.example\" contains a line break".to_string()),
            ),
            (
                "a@localhost, b@localhost",
                None,
                false,
                Err("from address \"a@localhost, b@localhost\" lists more than one mailbox".to_string()),
            ),
        ];
        for (from, smtp, allow, want) in cases {
            let mut s = settings(*smtp, *allow);
            s.from = (*from).to_string();
            let got = validate(&s);
            assert_eq!(
                &got, want,
                "from={from:?} smtp={smtp:?} allow_plaintext={allow}"
            );
            if let Err(msg) = got {
                assert!(
                    !msg.contains("hunter2pw") && !msg.contains("ter2pw"),
                    "password leaked: {msg}"
                );
                assert!(
                    msg.starts_with(|c: char| c.is_lowercase()),
                    "lowercase: {msg}"
                );
            }
        }
        let mut s = settings(None, false);
        s.timeout = Duration::ZERO;
        assert_eq!(
            validate(&s),
            Err("timeout must be greater than zero".to_string())
        );
    }

    #[test]
    fn messages_start_lowercase() {
        for url in [
            "smtp://mail.example.org",
            "ftp://x",
            "smtp://x:0",
            "smtp://x?tls=no",
            "x",
        ] {
            let e = validate(&settings(Some(url), false)).unwrap_err();
            assert!(e.starts_with(|c: char| c.is_lowercase()), "{e}");
        }
    }

    #[test]
    fn long_links_stay_on_one_line() {
        let spool = tempfile::tempdir().unwrap();
        let mut s = settings(None, false);
        s.spool_dir = spool.path().to_path_buf();
        let mailer = Mailer::new(&s).unwrap();
        let link = format!("https://gate.example.org/otp/enroll/{}", "AbCd0123456789-_".repeat(6));
        for html in [false, true] {
            let mut m = mail(1, "alice@example.org", html);
            m.body.text = format!("Hello alice,\n\nOpen this link within 30 minutes:\n\n  {link}\n\nThe link works once.\n");
            m.body.html = if html { format!("<p><a href=\"{link}\">{link}</a></p>") } else { String::new() };
            let raw = String::from_utf8(mailer.build(&m).unwrap().formatted()).unwrap();
            assert!(raw.lines().any(|l| l == format!("  {link}")), "the link is one line of the text part:\n{raw}");
            assert!(!raw.contains("quoted-printable") && !raw.contains("=\r\n"), "no soft line breaks:\n{raw}");
            assert!(raw.contains("Content-Transfer-Encoding: 7bit") && !raw.contains("8bit"), "{raw}");
        }
        // Non-ASCII text is never declared 8bit (a relay without 8BITMIME
        // would have to refuse or mangle it): lettre encodes it.
        let mut m = mail(1, "alice@example.org", false);
        m.body.text = "Grüße, alice\n".into();
        let raw = String::from_utf8(mailer.build(&m).unwrap().formatted()).unwrap();
        assert!(!raw.contains("8bit") && (raw.contains("quoted-printable") || raw.contains("base64")), "{raw}");
    }

    #[test]
    fn redact_url_table() {
        let cases = [
            ("smtp://user:pass@host:25", "smtp://user:***@host:25"),
            ("smtps://user:p%40ss@host", "smtps://user:***@host"),
            (
                "smtp://user:p@ss@host:25?tls=required",
                "smtp://user:***@host:25?tls=required",
            ),
            ("smtp://user:pa/ss@host", "smtp://user:***@host"),
            ("smtp://user:@host", "smtp://user:***@host"),
            ("smtp://user@host:25", "smtp://user@host:25"),
            ("smtp://host:25", "smtp://host:25"),
            ("user:pass@host", "user:***@host"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(redact_url(input), want, "{input}");
        }
        let shown = format!("{:?}", settings(Some("smtp://u:hunter2pw@h"), false));
        assert!(!shown.contains("hunter2pw"), "{shown}");
    }

    #[test]
    fn backoff_table() {
        let b = Backoff {
            base: Duration::from_millis(200),
            max: Duration::from_secs(60),
            max_attempts: 5,
        };
        let cases = [
            (0, 200),
            (1, 400),
            (2, 800),
            (3, 1_600),
            (8, 51_200),
            (9, 60_000),
            (31, 60_000),
            (32, 60_000),
            (u32::MAX, 60_000),
        ];
        for (attempts, ms) in cases {
            assert_eq!(
                b.next_delay(attempts),
                Duration::from_millis(ms),
                "attempts={attempts}"
            );
        }
        let huge = Backoff {
            base: Duration::MAX,
            max: Duration::from_secs(1),
            max_attempts: 1,
        };
        assert_eq!(huge.next_delay(1), Duration::from_secs(1));
    }

    #[test]
    fn recipient_domain_table() {
        let cases = [
            ("alice@Example.ORG", "example.org"),
            ("Alice <alice@example.org>", "example.org"),
            ("no-at-sign", "<invalid>"),
            ("x@evil\r\nBcc: y", "<invalid>"),
            ("", "<invalid>"),
        ];
        for (to, want) in cases {
            assert_eq!(recipient_domain(to), want, "{to:?}");
        }
    }

    #[test]
    fn smtp_mailer_needs_runtime() {
        let e = Mailer::new(&settings(Some("smtp://127.0.0.1:2525"), false)).unwrap_err();
        assert_eq!(
            e,
            "the smtp mailer must be created inside the tokio runtime"
        );
    }

    // ---- spool ----

    #[tokio::test]
    async fn spool_writes_eml_with_mode_0600() {
        let tmp = TempDir::new("spool");
        let dir = tmp.0.join("data").join("mail");
        let mut s = settings(None, false);
        s.spool_dir = dir.clone();
        let mailer = Mailer::new(&s).unwrap();
        assert_eq!(mailer.describe(), format!("file spool {}", dir.display()));
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );

        mailer
            .send(&mail(42, "Alice <alice@example.org>", true))
            .await
            .unwrap();
        let files: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
        let (id, rest) = name.split_once('-').unwrap();
        assert_eq!(id, "42");
        let ms: i64 = rest.strip_suffix(".eml").unwrap().parse().unwrap();
        assert!((now_ms() - ms).abs() < 60_000);
        assert_eq!(
            fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let eml = fs::read_to_string(&files[0]).unwrap();
        let (head, body) = eml.split_once("\r\n\r\n").expect("header/body separator");
        for want in [
            "From: Portcullis <gate@localhost>",
            "To: Alice <alice@example.org>",
            "Subject: Portcullis test 42",
            "Message-ID: <",
            "Date: ",
            "MIME-Version: 1.0",
            "Content-Type: multipart/alternative",
        ] {
            assert!(head.contains(want), "missing {want:?} in\n{head}");
        }
        for want in [
            "text/plain",
            "text/html",
            "Plain body 42",
            "<p>Html body 42</p>",
        ] {
            assert!(body.contains(want), "missing {want:?} in\n{body}");
        }

        // Text only: a plain single part.
        mailer
            .send(&mail(43, "bob@example.org", false))
            .await
            .unwrap();
        let eml = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("43-"))
            .map(|p| fs::read_to_string(p).unwrap())
            .unwrap();
        assert!(eml.contains("Content-Type: text/plain"), "{eml}");
        assert!(!eml.contains("text/html"), "{eml}");
        assert!(eml.contains("Plain body 43"), "{eml}");
        // No temporary file is left behind.
        assert!(fs::read_dir(&dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")));
    }

    #[tokio::test]
    async fn bad_recipient_or_subject_is_an_error() {
        let tmp = TempDir::new("inject");
        let mut s = settings(None, false);
        s.spool_dir = tmp.0.clone();
        let mailer = Mailer::new(&s).unwrap();
        let cases = [
            (
                "alice@example.org\r\nBcc: eve@evil.example",
                None,
                "recipient address contains a line break",
            ),
            (
                "alice@example.org\nBcc: eve@evil.example",
                None,
                "recipient address contains a line break",
            ),
            (
                "alice@example.org, eve@evil.example",
                None,
                "recipient address lists more than one mailbox",
            ),
            (
                "not an address",
                None,
                "recipient address is not a valid mailbox",
            ),
            ("", None, "recipient address is empty"),
            (
                "alice@example.org",
                Some("hi\r\nBcc: eve@evil.example"),
                "subject contains a line break",
            ),
            (
                "alice@example.org",
                Some("hi\u{7}"),
                "subject contains a control character",
            ),
        ];
        for (to, subject, want) in cases {
            let mut m = mail(7, to, true);
            if let Some(sub) = subject {
                m.subject = sub.to_string();
            }
            assert_eq!(
                mailer.send(&m).await,
                Err(want.to_string()),
                "to={to:?} subject={subject:?}"
            );
        }
        assert_eq!(fs::read_dir(&tmp.0).unwrap().count(), 0, "nothing spooled");
    }

    // ---- worker over the spool ----

    #[tokio::test]
    async fn worker_gives_up_on_invalid_mail_and_sends_the_rest() {
        let tmp = TempDir::new("worker-spool");
        let mut s = settings(None, false);
        s.spool_dir = tmp.0.clone();
        let outbox = TestOutbox::new();
        let bad = outbox.push(mail(1, "bad\r\nBcc: eve@evil.example", false));
        let good = outbox.push(mail(2, "carol@example.org", true));
        let backoff = Backoff {
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
            max_attempts: 5,
        };
        let worker = Worker::start(Mailer::new(&s).unwrap(), Arc::clone(&outbox.core), backoff);
        worker.wake.notify_one();
        wait_until("mail 2 sent", Duration::from_secs(10), || {
            outbox.state(good) == State::Sent
        })
        .await;
        wait_until("mail 1 given up", Duration::from_secs(10), || {
            outbox.state(bad) == State::GaveUp
        })
        .await;
        // One failed attempt, on the bad mail, and it gave up at once.
        let f = outbox.row(bad);
        assert_eq!((f.attempts, outbox.row(good).attempts), (1, 1), "{f:?}");
        assert_eq!(f.last_error.as_deref(), Some("recipient address contains a line break"));
        worker.stop().await;
        assert_eq!(fs::read_dir(&tmp.0).unwrap().count(), 1);
    }

    // ---- real SMTP (aiosmtpd) ----

    #[tokio::test]
    async fn smtp_round_trip() {
        let port = free_port();
        let Some(server) = SmtpServer::start(port).await else {
            return;
        };
        let url = format!("smtp://127.0.0.1:{port}");
        let mailer = Mailer::new(&settings(Some(&url), false)).unwrap();
        assert_eq!(mailer.describe(), format!("smtp {url}"));
        mailer
            .send(&mail(9, "Dave <dave@example.org>", true))
            .await
            .unwrap();
        let got = server.delivered();
        assert_eq!(got.len(), 1, "one mail in {}/new", server.maildir.display());
        for want in [
            "Subject: Portcullis test 9",
            "To: Dave <dave@example.org>",
            "Plain body 9",
            "<p>Html body 9</p>",
            "Message-ID: <",
        ] {
            assert!(got[0].contains(want), "missing {want:?} in\n{}", got[0]);
        }
        // A second mail reuses the pool.
        mailer
            .send(&mail(10, "erin@example.org", false))
            .await
            .unwrap();
        assert_eq!(server.delivered().len(), 2);
        drop(server);
    }

    #[tokio::test]
    async fn worker_reschedules_during_outage_then_delivers() {
        let port = free_port(); // nothing listens here yet
        let url = format!("smtp://127.0.0.1:{port}");
        let mut s = settings(Some(&url), false);
        s.timeout = Duration::from_secs(3);
        let mailer = Mailer::new(&s).unwrap();
        let outbox = TestOutbox::new();
        let id = outbox.push(mail(5, "frank@example.org", true));
        let backoff = Backoff {
            base: Duration::from_millis(200),
            max: Duration::from_secs(1),
            max_attempts: 100,
        };
        let before = now_ms();
        let worker = Worker::start(mailer, Arc::clone(&outbox.core), backoff);
        worker.wake.notify_one();

        wait_until("a failed attempt", Duration::from_secs(10), || {
            outbox.row(id).attempts > 0
        })
        .await;
        let first = outbox.row(id);
        assert!(
            first.next_attempt_at >= Millis(before + 150).rfc3339(),
            "about base backoff, in the future: {first:?}"
        );
        let error = first.last_error.clone().unwrap_or_default();
        assert!(error.starts_with("smtp delivery failed"), "{error}");
        assert!(!error.contains("SECRETTOKEN"));
        assert_eq!(outbox.state(id), State::Pending);

        let Some(server) = SmtpServer::start(port).await else {
            worker.stop().await;
            return;
        };
        wait_until("mail 5 sent", Duration::from_secs(20), || {
            outbox.state(id) == State::Sent
        })
        .await;
        wait_until("mail 5 in the maildir", Duration::from_secs(5), || {
            server.delivered().len() == 1
        })
        .await;
        assert!(server.delivered()[0].contains("Subject: Portcullis test 5"));
        // Never given up: a given-up mail is not tried again, so it would not be sent.
        worker.stop().await;
        drop(server);
    }

    #[tokio::test]
    async fn worker_gives_up_after_max_attempts() {
        let port = free_port();
        let mailer =
            Mailer::new(&settings(Some(&format!("smtp://127.0.0.1:{port}")), false)).unwrap();
        let outbox = TestOutbox::new();
        let id = outbox.push(mail(6, "gina@example.org", false));
        let backoff = Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(50),
            max_attempts: 3,
        };
        let worker = Worker::start(mailer, Arc::clone(&outbox.core), backoff);
        worker.wake.notify_one();
        wait_until("mail 6 given up", Duration::from_secs(10), || {
            outbox.state(id) == State::GaveUp
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Three attempts, the third gave up, and none came after it.
        assert_eq!((outbox.row(id).attempts, outbox.state(id)), (3, State::GaveUp));
        worker.stop().await;
    }

    #[tokio::test]
    async fn worker_stops_when_shutdown_sender_is_dropped() {
        let tmp = TempDir::new("drop");
        let mut s = settings(None, false);
        s.spool_dir = tmp.0.clone();
        let worker = Worker::start(
            Mailer::new(&s).unwrap(),
            Arc::clone(&TestOutbox::new().core),
            Backoff {
                base: Duration::from_millis(10),
                max: Duration::from_millis(10),
                max_attempts: 1,
            },
        );
        drop(worker.stop);
        tokio::time::timeout(Duration::from_secs(5), worker.handle)
            .await
            .expect("stops")
            .unwrap();
    }
}
